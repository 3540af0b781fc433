"""Check a VNN-COMP results file the way the competition's counterexample checker does, independently of bnb.

For a ``sat`` results file: onnxruntime's output at the witness ``X`` (read into float32, as the checker does)
must match the file's ``Y`` within ``RTOL`` (relative, with ``ATOL`` absolute), and the VNN-LIB 1.0 property,
every ``assert`` of it evaluated at ``X`` and that output, must hold with every comparison allowed ``ATOL``.
The property is evaluated by this file's own small s-expression reader (not bnb's parser, and not turned into
boxes and polytopes), so a misreading in bnb cannot hide itself. Tolerances are VNN-COMP's
(``COUNTEREXAMPLE_ATOL = 1e-4``, ``COUNTEREXAMPLE_RTOL = 1e-3`` in its checker).

    python benchmarks/check_witness.py NET.onnx PROP.vnnlib RESULTS.txt   # prints ok or the reason; exit 0 / 1
"""
from __future__ import annotations

import gzip
import re
import sys

import numpy as np

ATOL = 1e-4
RTOL = 1e-3
_ENTRY = re.compile(r"\(\s*([XY])_(\d+)\s+([^\s()]+)\s*\)")


def read_results(text: str):
    """``(verdict, X, Y)`` of a results file (X, Y float64 arrays; empty unless sat)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    values = {"X": {}, "Y": {}}
    for name, i, v in _ENTRY.findall("\n".join(lines[1:])):
        values[name][int(i)] = float(v)
    arr = lambda d: np.array([d[i] for i in range(len(d))], np.float64)  # noqa: E731
    return (lines[0] if lines else ""), arr(values["X"]), arr(values["Y"])


def _tokens(text: str):
    text = re.sub(r";[^\n]*", " ", text)
    return re.findall(r"\(|\)|[^\s()]+", text)


def read_asserts(path: str) -> list:
    """The ``assert`` bodies of a VNN-LIB 1.0 file as nested lists of tokens."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        toks = _tokens(f.read())
    stack, top = [[]], []
    for t in toks:
        if t == "(":
            stack.append([])
        elif t == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(t)
    top = stack[0]
    return [e[1] for e in top if isinstance(e, list) and e and e[0] == "assert"]


def _value(e, env) -> float:
    if isinstance(e, str):
        m = re.fullmatch(r"([XY])_(\d+)", e)
        return float(env[m[1]][int(m[2])]) if m else float(e)
    op, args = e[0], [_value(a, env) for a in e[1:]]
    if op == "+":
        return float(sum(args))
    if op == "-":
        return -args[0] if len(args) == 1 else args[0] - sum(args[1:])
    if op == "*":
        return float(np.prod(args))
    raise ValueError(f"unsupported term {op}")


def holds(e, env) -> bool:
    """The formula ``e`` at the point ``env`` ({"X": x, "Y": y}), every comparison allowed ``ATOL``."""
    op = e[0]
    if op == "and":
        return all(holds(a, env) for a in e[1:])
    if op == "or":
        return any(holds(a, env) for a in e[1:])
    a, b = _value(e[1], env), _value(e[2], env)
    if op in ("<=", "<"):
        return a <= b + ATOL
    if op in (">=", ">"):
        return a >= b - ATOL
    if op == "=":
        return abs(a - b) <= ATOL
    raise ValueError(f"unsupported formula {op}")


def check(onnx_path: str, vnnlib_path: str, results_text: str) -> str:
    """``"ok"`` or the reason the witness fails (for ``sat``); ``"not sat"`` for other verdicts."""
    import onnxruntime as ort
    verdict, X, Y = read_results(results_text)
    if verdict != "sat":
        return "not sat"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [s if isinstance(s, int) else 1 for s in inp.shape]
    if int(np.prod(shape)) != X.size:
        return f"X has {X.size} values, the network's input {int(np.prod(shape))}"
    y = sess.run(None, {inp.name: X.astype(np.float32).reshape(shape)})[0].reshape(-1).astype(np.float64)
    if y.size != Y.size or not np.allclose(y, Y, rtol=RTOL, atol=ATOL):
        return f"onnxruntime's output {y} differs from the file's Y {Y}"
    env = {"X": X, "Y": y}
    for i, a in enumerate(read_asserts(vnnlib_path)):
        if not holds(a, env):
            return f"assert number {i + 1} does not hold at X and onnxruntime's output"
    return "ok"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    with open(argv[2]) as f:
        msg = check(argv[0], argv[1], f.read())
    print(msg)
    return 0 if msg == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
