"""VNN-LIB 1.0 parser (the SMT-LIB subset used by VNN-COMP).

Supported: ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)``; ``(assert F)`` where ``F`` is
built from ``and``, ``or`` and atoms ``(<= a b)``, ``(>= a b)``, ``(= a b)``; terms are numbers,
variables, ``(+ ...)``, ``(- ...)`` and ``(* c t)`` / ``(/ t c)`` by constants. Input atoms must bound a
single ``X_i`` (input sets are boxes); output atoms are any linear constraint on the ``Y_j``. All
assertions together are brought to disjunctive normal form and grouped by input box, giving a
:class:`~bnb.io.spec.Property`. Every error names the file and the line.
"""
from __future__ import annotations

import re
from bisect import bisect_right
from pathlib import Path

import numpy as np

from bnb.errors import SpecError
from bnb.io.spec import InputSpec, Polytope, Property, check_sizes

MAX_DISJUNCTS = 100_000
_TOKEN = re.compile(r"\(|\)|;[^\n]*|[^\s();]+")
_VAR = re.compile(r"([XY])_(\d+)$")


class _Parser:
    def __init__(self, text: str, path: str):
        self.text, self.path = text, path
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def line(self, pos: int) -> int:
        return bisect_right(self.newlines, pos) + 1

    def err(self, pos: int, msg: str) -> SpecError:
        return SpecError(msg, self.path, self.line(pos))

    def sexprs(self):
        """Top-level s-expressions as nested lists of ``(token, pos)`` leaves; lists carry their pos."""
        stack: list[list] = []
        out = []
        for m in _TOKEN.finditer(self.text):
            tok, pos = m.group(), m.start()
            if tok[0] == ";":
                continue
            if tok == "(":
                stack.append(_List(pos))
            elif tok == ")":
                if not stack:
                    raise self.err(pos, "unbalanced ')'")
                done = stack.pop()
                (stack[-1] if stack else out).append(done)
            else:
                if not stack:
                    raise self.err(pos, f"unexpected token {tok!r} outside parentheses")
                stack[-1].append((tok, pos))
        if stack:
            raise self.err(stack[-1].pos, "unbalanced '(' (file truncated?)")
        return out


class _List(list):
    def __init__(self, pos):
        super().__init__()
        self.pos = pos


def _pos(e):
    return e.pos if isinstance(e, _List) else e[1]


def parse_vnnlib(path, n_inputs: int | None = None, n_outputs: int | None = None) -> Property:
    """Parse a VNN-LIB file; with ``n_inputs``/``n_outputs`` check it against the network."""
    path = Path(path)
    return parse_vnnlib_text(read_spec_text(path), str(path), n_inputs, n_outputs)


def read_spec_text(path) -> str:
    """The text of a property file; ``*.gz`` is decompressed (VNN-COMP ships ``.vnnlib.gz``)."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            import gzip
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text()
    except FileNotFoundError:
        raise SpecError("no such file", path) from None
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise SpecError(f"cannot read: {e}", path) from None


def parse_vnnlib_text(text: str, path: str = "<string>", n_inputs=None, n_outputs=None) -> Property:
    p = _Parser(text, path)
    declared: dict[str, set[int]] = {"X": set(), "Y": set()}
    atoms: list[tuple] = []  # (kind, coefficient dict, constant, pos): sum coef*var + const <= 0
    dnf: list[list[int]] = [[]]  # conjunctions of atom indices

    for cmd in p.sexprs():
        if not isinstance(cmd, _List) or not cmd or isinstance(cmd[0], _List):
            raise p.err(_pos(cmd), "expected a command such as (declare-const ...) or (assert ...)")
        head, pos = cmd[0]
        if head == "declare-const":
            if len(cmd) != 3 or isinstance(cmd[1], _List):
                raise p.err(pos, "malformed declare-const")
            name, npos = cmd[1]
            m = _VAR.match(name)
            if not m:
                raise p.err(npos, f"unsupported variable name {name!r} (expected X_i or Y_j)")
            if isinstance(cmd[2], _List) or cmd[2][0] != "Real":
                raise p.err(npos, f"variable {name} must be declared Real")
            declared[m.group(1)].add(int(m.group(2)))
        elif head == "assert":
            if len(cmd) != 2:
                raise p.err(pos, "assert takes exactly one formula")
            f = _formula(p, cmd[1], declared, atoms)
            if len(dnf) * len(f) > MAX_DISJUNCTS:
                raise p.err(pos, f"disjunctive normal form exceeds {MAX_DISJUNCTS} disjuncts")
            if len(f) == 1:  # the common case: extend every conjunction in place (linear time)
                for c in dnf:
                    c.extend(f[0])
            else:
                dnf = [c + d for c in dnf for d in f]
        elif head in ("set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"):
            continue
        else:
            raise p.err(pos, f"unsupported command {head!r}")

    for kind in "XY":
        ids = declared[kind]
        if ids and ids != set(range(len(ids))):
            missing = min(set(range(max(ids) + 1)) - ids)
            raise SpecError(f"{kind}_{missing} is not declared (variables must be {kind}_0..{kind}_{max(ids)})", path)
    nx, ny = len(declared["X"]), len(declared["Y"])
    if nx == 0:
        raise SpecError("no input variables X_i declared", path)
    check_sizes(nx, ny, n_inputs, n_outputs, path)
    return _build(p, atoms, dnf, nx, ny)


def _formula(p: _Parser, e, declared, atoms) -> list[list[int]]:
    """DNF of a formula: a list of conjunctions (lists of atom indices)."""
    if not isinstance(e, _List) or not e or isinstance(e[0], _List):
        raise p.err(_pos(e), "expected a formula such as (<= a b), (and ...) or (or ...)")
    op, pos = e[0]
    if op == "and":
        out = [[]]
        for sub in e[1:]:
            f = _formula(p, sub, declared, atoms)
            if len(out) * len(f) > MAX_DISJUNCTS:
                raise p.err(pos, f"disjunctive normal form exceeds {MAX_DISJUNCTS} disjuncts")
            out = [c + d for c in out for d in f]
        return out
    if op == "or":
        out = []
        for sub in e[1:]:
            out.extend(_formula(p, sub, declared, atoms))
        if not out:
            raise p.err(pos, "empty (or)")
        return out
    if op in ("<=", ">=", "="):
        if len(e) != 3:
            raise p.err(pos, f"({op} a b) takes two terms")
        ca, ka = _term(p, e[1], declared)
        cb, kb = _term(p, e[2], declared)
        diff = dict(ca)
        for v, c in cb.items():
            diff[v] = diff.get(v, 0.0) - c
        const = ka - kb  # constraint: diff . vars + const (op) 0
        idx = []
        if op in ("<=", "="):
            idx.append(_atom(p, pos, diff, const, atoms))
        if op in (">=", "="):
            idx.append(_atom(p, pos, {v: -c for v, c in diff.items()}, -const, atoms))
        return [idx]
    if op in ("<", ">", "not", "=>", "xor", "distinct"):
        raise p.err(pos, f"operator {op!r} is not part of VNN-LIB 1.0 (use <=, >=, and, or)")
    raise p.err(pos, f"unknown operator {op!r}")


def _atom(p, pos, coefs, const, atoms) -> int:
    coefs = {v: c for v, c in coefs.items() if c != 0.0}
    kinds = {v[0] for v in coefs}
    if len(kinds) > 1:
        raise p.err(pos, "constraints that mix inputs X and outputs Y are not supported")
    if kinds == {"X"} and len(coefs) > 1:
        raise p.err(pos, "only box constraints on single inputs are supported (found a linear input constraint)")
    kind = kinds.pop() if kinds else "const"
    atoms.append((kind, coefs, const, pos))
    return len(atoms) - 1


def _term(p: _Parser, e, declared):
    """Linear term -> (coefficients {(kind, index): c}, constant)."""
    if not isinstance(e, _List):
        tok, pos = e
        m = _VAR.match(tok)
        if m:
            kind, i = m.group(1), int(m.group(2))
            if i not in declared[kind]:
                raise p.err(pos, f"variable {tok} is used before it is declared")
            return {(kind, i): 1.0}, 0.0
        try:
            return {}, float(tok)
        except ValueError:
            raise p.err(pos, f"unknown symbol {tok!r}") from None
    if not e or isinstance(e[0], _List):
        raise p.err(_pos(e), "expected a term")
    op, pos = e[0]
    args = [_term(p, a, declared) for a in e[1:]]
    if op == "+" or (op == "-" and len(args) >= 1):
        if not args:
            raise p.err(pos, f"({op}) needs arguments")
        coefs, const = dict(args[0][0]), args[0][1]
        sign = -1.0 if op == "-" else 1.0
        if op == "-" and len(args) == 1:
            return {v: -c for v, c in coefs.items()}, -const
        for c2, k2 in args[1:]:
            for v, c in c2.items():
                coefs[v] = coefs.get(v, 0.0) + sign * c
            const += sign * k2
        return coefs, const
    if op in ("*", "/"):
        if len(args) != 2:
            raise p.err(pos, f"({op} a b) takes two terms")
        (c1, k1), (c2, k2) = args
        if op == "/":
            if c2 or k2 == 0:
                raise p.err(pos, "division only by a non-zero constant")
            return {v: c / k2 for v, c in c1.items()}, k1 / k2
        if c1 and c2:
            raise p.err(pos, "product of two variables is not linear")
        if c1:
            return {v: c * k2 for v, c in c1.items()}, k1 * k2
        return {v: c * k1 for v, c in c2.items()}, k1 * k2
    raise p.err(pos, f"unknown operator {op!r} in a term")


def _build(p: _Parser, atoms, dnf, nx, ny) -> Property:
    return build_property(atoms, dnf, nx, ny, p.path, lambda pos, msg: p.err(pos, msg))


def _flat_name(kind: str, i: int) -> str:
    return f"{kind}_{i}"


def build_property(atoms, dnf, nx: int, ny: int, path: str, err, name=_flat_name) -> Property:
    """The :class:`Property` of a formula in disjunctive normal form, grouped by input box.

    ``atoms``: ``(kind, {(kind, index): coefficient}, constant, pos)`` meaning ``sum c v + constant <= 0``,
    ``kind`` one of ``"X"`` (one input element), ``"Y"`` (outputs) or ``"const"``; ``dnf``: conjunctions
    of atom indices. ``err(pos, message)`` makes the error of an atom at ``pos``; ``name(kind, index)``
    names a flat input or output element in messages (shared by the VNN-LIB 1.0 and 2.0 readers)."""
    groups: dict[bytes, InputSpec] = {}
    for conj in dnf:
        lo, hi = np.full(nx, -np.inf), np.full(nx, np.inf)
        rows, rhs, trivial_false = [], [], False
        for a in conj:
            kind, coefs, const, pos = atoms[a]
            if kind == "const":  # 0 <= -const
                trivial_false |= const > 0
                continue
            if kind == "X":
                ((_, i), c), = coefs.items()
                bound = -const / c
                if c > 0:
                    hi[i] = min(hi[i], bound)
                else:
                    lo[i] = max(lo[i], bound)
            else:
                row = np.zeros(ny)
                for (_, j), c in coefs.items():
                    if j >= ny:
                        raise err(pos, f"{name('Y', j)} is out of range ({ny} outputs)")
                    row[j] = c
                rows.append(row)
                rhs.append(-const)
        if trivial_false:
            continue
        free = np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi)))
        if free.size:
            i = int(free[0])
            side = "lower" if not np.isfinite(lo[i]) else "upper"
            raise SpecError(f"input {name('X', i)} has no {side} bound (input sets must be bounded boxes)", path)
        empty = np.flatnonzero(lo > hi)
        if empty.size:
            i = int(empty[0])
            raise SpecError(f"empty input box: {name('X', i)} has lower bound {lo[i]} > upper bound {hi[i]}", path)
        key = lo.tobytes() + hi.tobytes()
        spec = groups.setdefault(key, InputSpec(lo, hi, []))
        C = np.array(rows).reshape(len(rows), ny)
        spec.disjuncts.append(Polytope(C, np.array(rhs, dtype=np.float64)))
    if not groups:
        raise SpecError("the assertions are unsatisfiable on their own (no input box remains)", path)
    return Property(list(groups.values()), nx, ny, path)
