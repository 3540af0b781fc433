# Shared by the VNN-COMP scripts of bnb (sourced, not run): where the tool and its Python are, the
# calling convention's version check, .gz inputs, and the configuration of a category.

VERSION_STRING=v1
TOOL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# BNB_VENV: an existing environment with bnb's dependencies (install_tool.sh then installs nothing)
VENV="${BNB_VENV:-$TOOL_DIR/.venv}"
PY="$VENV/bin/python"
# decompressed copies of .onnx.gz / .vnnlib.gz inputs
CACHE_DIR="${BNB_VNNCOMP_CACHE:-${TMPDIR:-/tmp}/bnb-vnncomp-$(id -u)}"

check_version() {
    if [ "$1" != "$VERSION_STRING" ]; then
        echo "bnb: expected first argument (version string) '$VERSION_STRING', got '$1'" >&2
        exit 1
    fi
}

# plain_file PATH: PATH itself, or for PATH.gz a decompressed copy in CACHE_DIR (made once, kept while
# newer than the .gz); prints the path to use, non-zero status if the file cannot be read.
plain_file() {
    local src="$1"
    if [ ! -r "$src" ]; then
        echo "bnb: cannot read '$src'" >&2
        return 1
    fi
    case "$src" in
        *.gz) ;;
        *) echo "$src"; return 0 ;;
    esac
    local abs key out
    abs="$(cd "$(dirname "$src")" && pwd)/$(basename "$src")"
    key="$(printf '%s' "$abs" | sha1sum | cut -c1-16)"
    out="$CACHE_DIR/$key/$(basename "${src%.gz}")"
    if [ ! -s "$out" ] || [ "$src" -nt "$out" ]; then
        mkdir -p "$CACHE_DIR/$key" || return 1
        gzip -dc "$src" > "$out.tmp.$$" && mv -f "$out.tmp.$$" "$out" || { rm -f "$out.tmp.$$"; echo "bnb: cannot decompress '$src'" >&2; return 1; }
    fi
    echo "$out"
}

# config_for CATEGORY: the YAML file for a benchmark category, or nothing (bnb's defaults):
# configs/CATEGORY.yaml if it exists, acasxu* -> acasxu.yaml, mnist_fc* -> mnist_fc.yaml, oval21* -> oval21.yaml.
# BNB_VNNCOMP_CONFIG overrides the choice.
config_for() {
    if [ -n "${BNB_VNNCOMP_CONFIG:-}" ]; then echo "$BNB_VNNCOMP_CONFIG"; return; fi
    local c
    c="$(echo "$1" | tr '[:upper:]' '[:lower:]')"
    if [ -f "$TOOL_DIR/configs/$c.yaml" ] && [ "$c" != default ]; then echo "$TOOL_DIR/configs/$c.yaml"; return; fi
    case "$c" in
        acasxu*) echo "$TOOL_DIR/configs/acasxu.yaml" ;;
        mnist_fc*) echo "$TOOL_DIR/configs/mnist_fc.yaml" ;;
        oval21*) echo "$TOOL_DIR/configs/oval21.yaml" ;;
    esac
}
