#!/bin/bash
# VNN-COMP install_tool.sh for bnb: `install_tool.sh v1`.
# Creates a virtual environment in <repo>/.venv with torch and bnb (editable), unless BNB_VENV names an
# existing environment to use as it is. BNB_TORCH (default torch==2.13.0) and BNB_TORCH_INDEX (a pip index
# URL, e.g. for a CUDA build) choose the torch wheel. Ends by importing the verifier.
set -u
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
check_version "${1:-}"

if [ -z "${BNB_VENV:-}" ]; then
    if [ ! -x "$PY" ]; then
        if ! python3 -m venv "$VENV"; then
            if command -v apt-get > /dev/null && [ "$(id -u)" = 0 ]; then
                apt-get update && apt-get install -y python3-venv python3-pip && python3 -m venv "$VENV" || exit 1
            else
                echo "bnb: cannot create a virtual environment (install python3-venv)" >&2
                exit 1
            fi
        fi
    fi
    "$PY" -m pip install --upgrade pip || exit 1
    if [ -n "${BNB_TORCH_INDEX:-}" ]; then
        "$PY" -m pip install "${BNB_TORCH:-torch==2.13.0}" --index-url "$BNB_TORCH_INDEX" || exit 1
    else
        "$PY" -m pip install "${BNB_TORCH:-torch==2.13.0}" || exit 1
    fi
    "$PY" -m pip install -e "$TOOL_DIR[vnnlib2]" || exit 1
fi

if ! PYTHONPATH="$TOOL_DIR" "$PY" -c "import bnb, bnb.pipeline.verify, onnxruntime; print('bnb', bnb.__version__, 'ready')"; then
    echo "bnb: the environment $VENV cannot import the verifier" >&2
    exit 1
fi
