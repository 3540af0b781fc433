#!/bin/bash
# VNN-COMP run_instance.sh for bnb: `run_instance.sh v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT`.
# Writes RESULTS as VNN-COMP expects: one of sat (followed by the counterexample, ((X_0 v) ... (Y_0 v) ...),
# replayed on the ONNX model), unsat, timeout, unknown, error. bnb gets TIMEOUT less BNB_VNNCOMP_MARGIN
# seconds (default 2: the interpreter's and torch's start-up) and is killed 5 s past TIMEOUT at the latest.
set -u
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
check_version "${1:-}"
if [ $# -ne 6 ]; then
    echo "usage: $0 v1 CATEGORY ONNX VNNLIB RESULTS TIMEOUT" >&2
    exit 1
fi
CATEGORY="$2"
RESULTS="$5"
TIMEOUT="$6"
rm -f "$RESULTS"

fail() {  # an answer that is no verdict on the property
    echo "$1" > "$RESULTS"
    exit "${2:-1}"
}
ONNX="$(plain_file "$3")" || fail error
VNNLIB="$(plain_file "$4")" || fail error
if ! awk -v t="$TIMEOUT" 'BEGIN { exit !(t + 0 > 0) }'; then
    echo "bnb: TIMEOUT must be a number of seconds, got '$TIMEOUT'" >&2
    fail error
fi
LIMIT="$(awk -v t="$TIMEOUT" -v m="${BNB_VNNCOMP_MARGIN:-2}" 'BEGIN { l = t - m; if (l < t / 2) l = t / 2; printf "%.3f", l }')"
KILL_AFTER="$(awk -v t="$TIMEOUT" 'BEGIN { printf "%d", t + 5.999 }')"
if [ ! -x "$PY" ]; then
    echo "bnb: no Python environment at $VENV (run install_tool.sh v1 first)" >&2
    fail error
fi

CONFIG="$(config_for "$CATEGORY")"
ARGS=(verify "$ONNX" "$VNNLIB" --timeout "$LIMIT" --results-file "$RESULTS")
if [ -n "$CONFIG" ]; then ARGS+=(--config "$CONFIG"); fi
echo "bnb: category '$CATEGORY', onnx '$ONNX', vnnlib '$VNNLIB', timeout $TIMEOUT s (bnb: $LIMIT s), config '${CONFIG:-defaults}'"

PYTHONPATH="$TOOL_DIR${PYTHONPATH:+:$PYTHONPATH}" timeout -k 2 "$KILL_AFTER" "$PY" -m bnb.cli.main "${ARGS[@]}"
RC=$?
if [ ! -s "$RESULTS" ]; then
    case $RC in
        124|137) fail timeout 0 ;;  # killed at the limit
        *) fail error ;;            # bad input (exit 2, reason on stderr), an internal error or a crash
    esac
fi
echo "bnb: result $(head -n 1 "$RESULTS")"
case $RC in
    0|10|20|30) exit 0 ;;
    *) exit 1 ;;
esac
