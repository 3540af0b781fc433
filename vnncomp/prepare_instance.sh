#!/bin/bash
# VNN-COMP prepare_instance.sh for bnb: `prepare_instance.sh v1 CATEGORY ONNX VNNLIB`.
# bnb keeps no state between instances: this only checks the files and decompresses .onnx.gz / .vnnlib.gz
# inputs once (run_instance.sh reuses the copies).
set -u
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
check_version "${1:-}"
if [ $# -ne 4 ]; then
    echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2
    exit 1
fi
CATEGORY="$2"
plain_file "$3" > /dev/null || exit 1
plain_file "$4" > /dev/null || exit 1
echo "bnb: prepared instance of category '$CATEGORY' (config: $(config_for "$CATEGORY"))"
exit 0
