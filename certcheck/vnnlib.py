"""VNN-LIB 1 subset reader: one input box and output polytopes, every number an exact Fraction.

`load(path, n_in, n_out)` -> [(lo, hi, polys)] per input box: lo, hi lists of Fractions (n_in,); polys a list of
polytopes, each a list of rows (c, d) meaning c . y <= d, c a dict {output index: Fraction}, in file order.
"""
import re
from fractions import Fraction

from .onnxnet import Unsupported

Reject = type("Reject", (Exception,), {})  # the certificate (or the files it names) is wrong


def _parse(text):
    toks = re.findall(r"\(|\)|[^\s()]+", re.sub(r";[^\n]*", "", text))
    stack = [[]]
    for t in toks:
        if t == "(":
            stack.append([])
        elif t != ")":
            stack[-1].append(t)
        elif len(stack) > 1:
            stack[-2].append(stack.pop())
        else:
            raise Reject("vnnlib: unbalanced parentheses")
    if len(stack) != 1:
        raise Reject("vnnlib: unbalanced parentheses")
    return stack[0]


def _term(a):
    """('X'|'Y', index) or ('c', Fraction)."""
    if isinstance(a, str) and re.fullmatch(r"[XY]_\d+", a):
        return a[0], int(a[2:])
    try:
        return "c", Fraction(a)
    except (TypeError, ValueError, ZeroDivisionError):
        raise Unsupported(f"vnnlib term {a!r}") from None


def _lin(e):
    """A linear expression (variables, numbers, +, -, * by a number) -> {('X'|'Y', index) or 'c': Fraction}."""
    if not isinstance(e, list):
        t = _term(e)
        return {"c": t[1]} if t[0] == "c" else {t: Fraction(1)}
    op, parts = (e[0], [_lin(x) for x in e[1:]]) if e else (None, [])
    if op == "*" and len(parts) == 2 and any(set(p) <= {"c"} for p in parts):
        k, other = (parts[0].get("c", 0), parts[1]) if set(parts[0]) <= {"c"} else (parts[1].get("c", 0), parts[0])
        return {v: k * c for v, c in other.items()}
    if op in ("+", "-") and parts:
        out = dict(parts[0]) if op == "+" or len(parts) > 1 else {v: -c for v, c in parts[0].items()}
        for p in parts[1:]:
            for v, c in p.items():
                out[v] = out.get(v, 0) + (c if op == "+" else -c)
        return out
    raise Unsupported(f"vnnlib expression {str(e)[:60]}")


def _cmp(e):
    """A comparison -> ('X', i, lower?, value) for an input bound, or ('Y', coef dict, d) for an output row."""
    if not (isinstance(e, list) and len(e) == 3 and e[0] in ("<=", ">=", "<", ">")):
        raise Unsupported(f"vnnlib expression {e!r}")
    a, b = (e[1], e[2]) if e[0] in ("<=", "<") else (e[2], e[1])  # now a <= b
    f = _lin(a)
    for v, c in _lin(b).items():
        f[v] = f.get(v, 0) - c
    k = f.pop("c", Fraction(0))
    f = {v: c for v, c in f.items() if c != 0}
    if f and all(v[0] == "Y" for v in f):
        return "Y", {v[1]: c for v, c in f.items()}, -k
    if len(f) == 1 and next(iter(f))[0] == "X":  # c x + k <= 0
        (_, i), c = next(iter(f.items()))
        return "X", i, c < 0, -k / c
    raise Unsupported(f"vnnlib comparison {e!r}")


def _args(e, op):
    return e[1:] if isinstance(e, list) and e[:1] == [op] else [e]


def load(path, n_in, n_out, limit=4096):
    """-> [(lo, hi, polys)]: the disjunctive normal form of the asserts (in order), its conjunctions grouped by
    their exact input box (first appearance first), each conjunction one polytope of its box."""
    with open(path, encoding="utf-8") as f:
        forms = _parse(f.read())
    dnf, declared = [[]], set()
    for fm in forms:
        if isinstance(fm, list) and fm[:1] == ["declare-const"] and len(fm) == 3:
            declared.add(_term(fm[1]))
            continue
        if not (isinstance(fm, list) and fm[:1] == ["assert"] and len(fm) == 2):
            raise Unsupported(f"vnnlib form {str(fm)[:60]}")
        alts = [[_cmp(x) for x in _args(d, "and")] for d in _args(fm[1], "or")]
        if len(dnf) * len(alts) > limit:
            raise Unsupported("vnnlib: too many disjuncts")
        dnf = [c + a for c in dnf for a in alts]
    if declared != {("X", i) for i in range(n_in)} | {("Y", i) for i in range(n_out)}:
        raise Reject("vnnlib: declared variables do not match the network's input and output sizes")
    boxes = {}
    for conj in dnf:
        lo, hi, rows = [None] * n_in, [None] * n_in, []
        for r in conj:
            if r[0] == "Y":
                rows.append(r[1:])
            elif r[1] >= n_in:
                raise Reject(f"vnnlib: X_{r[1]} out of range")
            elif r[2]:
                lo[r[1]] = r[3] if lo[r[1]] is None else max(lo[r[1]], r[3])
            else:
                hi[r[1]] = r[3] if hi[r[1]] is None else min(hi[r[1]], r[3])
        if any(v is None for v in lo + hi) or any(a > b for a, b in zip(lo, hi)):
            raise Unsupported("vnnlib: an input without both bounds, or an empty box")
        boxes.setdefault((tuple(lo), tuple(hi)), []).append(rows)
    return [(list(lo), list(hi), polys) for (lo, hi), polys in boxes.items()]
