"""VNN-LIB 2.0 queries -> :class:`~bnb.io.spec.Property` (the 1.0 files stay with :mod:`bnb.io.vnnlib`).

The ``vnnlib`` package (an optional dependency, extra ``vnnlib2``) parses and type-checks a query; this module
keeps what bnb can decide and refuses the rest with one line naming the file, the line where known, and the
standard's theory that would be needed (chapter 4 of the standard). Supported, in those terms:

- one network (``SNET``) with one input and one output (``SIO``) and no hidden nodes (``NH``);
- every comparison within one node (``SNC``): constraints on the input bound single input elements
  (``BND``), constraints on the output are any linear ones (``OUTC`` and more), combined with ``and``/``or``;
- non-strict comparisons ``<=``, ``>=`` and ``==`` (a strict ``<``, ``>`` or ``!=`` is refused: a
  counterexample on its boundary would be reported ``sat`` for a query that excludes it);
- the element types ``real`` and ``float32``, the same for the input and the output. ``real``: the network in
  real arithmetic (``docs/soundness.md``); a ``sat`` may rest on an exact input that float32 cannot hold
  (:mod:`bnb.io.witness`). ``float32``: the network as onnxruntime computes it: a ``sat`` is a float32 input
  whose onnxruntime output satisfies the constraints, an ``unsat`` is proven for the real network with a margin
  that covers the float32 evaluation error of every summation order (:mod:`relaxations.float_error`).

A query's input and output are the network's (flattened row-major, as the ONNX tensors); their declared
shapes are checked against the model by :func:`check_model`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from bnb.errors import BnbError, SpecError
from bnb.io.spec import Property
from bnb.io.vnnlib import MAX_DISJUNCTS, build_property, read_spec_text

# What bnb supports of each theory set of the standard (answers of `bnb-vnnlib supports`).
THEORIES = {
    "hidden-node": ("NH",),
    "multiple-input-output": ("SIO",),
    "multiple-network": ("SNET",),
    "multiple-node-comparison": ("SNC",),
    "arithmetic-complexity": ("BND", "OUTC"),
}
ELEMENT_TYPES = ("real", "float32")
VNNLIB_VERSIONS = ("2.0", "2.0")

# the parser's element type enum -> the standard's spelling
_TYPE_NAMES = {
    "Real": "real", "F16": "float16", "F32": "float32", "F64": "float64", "BF16": "bfloat16",
    "F8E4M3FN": "float8e4m3fn", "F8E5M2": "float8e5m2", "F8E4M3FNUZ": "float8e4m3fnuz",
    "F8E5M2FNUZ": "float8e5m2fnuz", "F4E2M1": "float4e2m1", "I8": "int8", "I16": "int16", "I32": "int32",
    "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64", "C64": "complex64",
    "C128": "complex128", "Bool": "bool", "String": "string",
}
_COMPARISONS = {"LessEqual": "<=", "GreaterEqual": ">=", "Equal": "=="}
_STRICT = {"LessThan": "<", "GreaterThan": ">", "NotEqual": "!="}


@dataclass(frozen=True)
class Declaration:
    """A declared input or output: its name, element type (the standard's spelling) and shape."""

    name: str
    element_type: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def element(self, flat: int) -> str:
        """The name of the element at row-major position ``flat``, e.g. ``X[0,3]``."""
        idx = np.unravel_index(flat, self.shape) if self.shape else ()
        return f"{self.name}[{','.join(str(int(i)) for i in idx)}]"


@dataclass
class Query:
    """A VNN-LIB 2.0 query bnb can decide: its one network, input and output, and the property."""

    path: str
    network: str
    input: Declaration
    output: Declaration
    prop: Property


def read_query(path) -> Query:
    """Read and convert a VNN-LIB 2.0 query file (``*.gz`` decompressed); bad input raises SpecError."""
    return parse_query_text(read_spec_text(path), str(path))


def parse_query_text(text: str, path: str = "<string>") -> Query:
    vnnlib = _vnnlib()
    try:
        parsed = vnnlib.parse_query_string(text)
    except vnnlib.VNNLibException as e:
        raise _parse_error(e, text, path) from None
    if parsed is None:  # the parser gave no reason
        raise SpecError("the VNN-LIB 2.0 parser could not read the query", path)

    networks = list(parsed.networks)
    if len(networks) != 1:
        raise SpecError(f"declares {len(networks)} networks; bnb verifies queries on one network "
                        "(theory SNET; MNET, MENET and MINET are not supported)", path)
    net = networks[0]
    if net.hidden:
        h = net.hidden[0]
        raise SpecError(f"declares the hidden node {h.name}; bnb supports no hidden-node declarations (theory NH)",
                        path, _line_of(text, "declare-hidden", h.name))
    if len(net.inputs) != 1 or len(net.outputs) != 1:
        raise SpecError(f"network {net.name} declares {len(net.inputs)} input(s) and {len(net.outputs)} output(s); "
                        "bnb supports one of each (theory SIO)", path)
    x = _declaration(net.inputs[0], "input", text, path)
    y = _declaration(net.outputs[0], "output", text, path)
    if x.element_type != y.element_type:
        raise SpecError(f"declares the input {x.name} as {x.element_type} and the output {y.name} as "
                        f"{y.element_type}; bnb decides queries whose input and output have one element type "
                        "(both real or both float32)", path, _line_of(text, "declare-output", y.name))

    atoms: list[tuple] = []
    dnf: list[list[int]] = [[]]
    for assertion in parsed.assertions:
        conjunctions = [_conjunction(conj, atoms, x, y, path) for conj in assertion.expr.to_dnf()]
        if len(dnf) * len(conjunctions) > MAX_DISJUNCTS:
            raise SpecError(f"disjunctive normal form exceeds {MAX_DISJUNCTS} disjuncts", path)
        dnf = [c + d for c in dnf for d in conjunctions]
    if x.size == 0:
        raise SpecError(f"input {x.name} has no elements (shape {_dims(x.shape)})", path)

    def name(kind: str, i: int) -> str:
        return (x if kind == "X" else y).element(i)

    prop = build_property(atoms, dnf, x.size, y.size, path, lambda line, msg: SpecError(msg, path, line), name)
    prop.float32 = x.element_type == "float32"
    return Query(path, net.name, x, y, prop)


def check_model(query: Query, onnx_input_shape, n_outputs: int) -> None:
    """Refuse a query whose declared input shape or output size does not match the network."""
    shape = tuple(int(d) for d in onnx_input_shape)
    if query.input.shape != shape:
        raise SpecError(f"declares the input {query.input.name} with shape {_dims(query.input.shape)} but the "
                        f"network's input has shape {_dims(shape)}", query.path)
    if query.output.size != n_outputs:
        raise SpecError(f"declares the output {query.output.name} with {query.output.size} element(s) "
                        f"(shape {_dims(query.output.shape)}) but the network has {n_outputs} outputs", query.path)


def assignment_lines(query: Query, x: np.ndarray, y: np.ndarray) -> list[str]:
    """A satisfying assignment in the command-line format of section 5.3.1: for each declared variable, in
    declaration order, ``NAME TYPE [d1,d2]`` and then its values row-major, one a line."""
    lines = []
    for decl, values in ((query.input, x), (query.output, y)):
        lines.append(f"{decl.name} {decl.element_type} {_dims(decl.shape)}")
        lines += [repr(float(v)) for v in np.asarray(values, np.float64).reshape(-1)]
    return lines


# element type -> the ONNX TensorProto.DataType of its serialised assignment: real values as float64
_SERIALISED_TYPES = {"real": 11, "float32": 1}


def serialised_assignment(query: Query, x: np.ndarray, y: np.ndarray) -> list[tuple[str, bytes]]:
    """A satisfying assignment in the serialised format of section 5.3.1: for each declared variable, in
    declaration order, ``(NAME.pb, a serialised ONNX TensorProto)`` of the variable's shape and element type
    (``real`` as float64, which holds every value bnb reports exactly)."""
    from bnb.io.onnx_proto import tensor_bytes
    files = []
    for decl, values in ((query.input, x), (query.output, y)):
        onnx_type = _SERIALISED_TYPES[decl.element_type]
        values = np.asarray(values, np.float64).reshape(decl.shape)
        files.append((f"{decl.name}.pb", tensor_bytes(decl.name, values, onnx_type)))
    return files


# ------------------------------------------------------------------------------------------ helpers
def _vnnlib():
    try:
        import vnnlib
    except ImportError:
        raise BnbError("reading VNN-LIB 2.0 queries needs the 'vnnlib' package "
                       "(pip install 'bnb-verifier[vnnlib2]')") from None
    return vnnlib


def _dims(shape) -> str:
    return "[" + ",".join(str(int(d)) for d in shape) + "]"


def _line_of(text: str, command: str, name: str) -> int | None:
    m = re.search(rf"\(\s*{re.escape(command)}\s+{re.escape(name)}\b", text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _declaration(d, kind: str, text: str, path: str) -> Declaration:
    line = _line_of(text, f"declare-{kind}", d.name)
    etype = _TYPE_NAMES.get(d.dtype.name)
    if etype is None:
        raise SpecError(f"{kind} {d.name} has an element type the standard does not define (element types are "
                        "lower case: real, float32, ...)", path, line)
    if etype not in ELEMENT_TYPES:
        raise SpecError(f"{kind} {d.name} is declared {etype}; bnb decides queries declared real (the network in "
                        "real arithmetic) or float32 (as onnxruntime computes it), not other element types "
                        "(standard 5.3.2)", path, line)
    return Declaration(d.name, etype, tuple(int(s) for s in d.shape))


def _conjunction(comparisons, atoms: list, x: Declaration, y: Declaration, path: str) -> list[int]:
    out: list[int] = []
    for c in comparisons:
        op = type(c).__name__
        line = _first_line(c)
        if op in _STRICT:
            raise SpecError(f"strict comparison ({_STRICT[op]} ...) is not supported: bnb decides non-strict "
                            "constraints (<=, >=, ==)", path, line)
        if op not in _COMPARISONS:
            raise SpecError(f"unsupported comparison {op}", path, line)
        coefs, const = _difference(c, path, line)
        kinds = {k for k, _ in coefs}
        if len(kinds) > 1:
            raise SpecError(f"the constraint {_show(c)} compares the input {x.name} with the output {y.name}; "
                            "bnb supports comparisons within one node (theory SNC)", path, line)
        if kinds == {"X"} and len(coefs) > 1:
            raise SpecError(f"the constraint {_show(c)} is a linear constraint on several input elements; bnb supports "
                            "bounds on single input elements (input sets are boxes; theories BND, OUTC)", path, line)
        kind = kinds.pop() if kinds else "const"
        sides = []
        if _COMPARISONS[op] in ("<=", "=="):
            sides.append((coefs, const))
        if _COMPARISONS[op] in (">=", "=="):
            sides.append(({v: -k for v, k in coefs.items()}, -const))
        for cf, k in sides:
            atoms.append((kind, cf, k, line))
            out.append(len(atoms) - 1)
    return out


def _difference(c, path: str, line):
    """``lhs - rhs`` of a comparison as ({(kind, flat index): coefficient}, constant)."""
    (lc, lk), (rc, rk) = _linear(c.lhs, c, path, line), _linear(c.rhs, c, path, line)
    coefs = dict(lc)
    for v, k in rc.items():
        coefs[v] = coefs.get(v, 0.0) - k
    coefs = {v: k for v, k in coefs.items() if k != 0.0}
    return coefs, lk - rk


def _linear(e, c, path: str, line) -> tuple[dict, float]:
    """An arithmetic expression as ({(kind, flat index): coefficient}, constant), walked here in float64: the
    package's own ``to_linear_expr`` drops coefficients below 1e-9, which would change the property."""
    kind = type(e).__name__
    if kind == "Var":
        name = _KINDS.get(e.kind.name)
        if name is None:
            raise SpecError(f"{e.name} is not an input or output variable (hidden nodes are not supported)", path, line)
        return {(name, _flat(e.indices, e.shape)): 1.0}, 0.0
    if kind in ("Float", "Int", "IntExpr"):
        return {}, float(e.value)
    if kind == "Literal":
        return {}, float(e.lexeme)
    if kind == "Negate":
        cf, k = _linear(e.expr, c, path, line)
        return {v: -a for v, a in cf.items()}, -k
    if kind in ("Plus", "Minus"):
        parts = [(1.0, a) for a in e.args] if kind == "Plus" else [(1.0, e.head)] + [(-1.0, a) for a in e.rest]
        coefs, const = {}, 0.0
        for sign, a in parts:
            cf, k = _linear(a, c, path, line)
            for v, x in cf.items():
                coefs[v] = coefs.get(v, 0.0) + sign * x
            const += sign * k
        return coefs, const
    if kind == "Multiply":
        coefs, const = None, 1.0
        for a in e.args:
            cf, k = _linear(a, c, path, line)
            if cf:
                if coefs is not None:
                    raise SpecError(f"the constraint {_show(c)} is not linear (a product of variables); bnb supports "
                                    "linear constraints (theory POLY is not supported)", path, line)
                coefs, scale = cf, k
            else:
                const *= k
        if coefs is None:
            return {}, const
        return {v: x * const for v, x in coefs.items()}, scale * const  # (a x + b) k
    raise SpecError(f"the constraint {_show(c)} holds an unsupported term ({kind}); bnb supports linear "
                    "constraints", path, line)


_KINDS = {"Input": "X", "Output": "Y"}


def _flat(indices, shape) -> int:
    flat = 0
    for i, d in zip(indices, shape):
        flat = flat * int(d) + int(i)
    return flat


def _first_line(node):
    """The line of the first variable in ``node`` (the parser keeps lines on variables only)."""
    line = getattr(node, "line", None) if type(node).__name__ == "Var" else None
    if line is not None:
        return int(line)
    for child in node.children():
        line = _first_line(child)
        if line is not None:
            return line
    return None


def _show(c) -> str:
    """A comparison as written, e.g. ``(<= (+ X[0] Y[0]) 1.0)``."""
    return re.sub(r"(\w) \[", r"\1[", str(c).strip())


def _parse_error(e, text: str, path: str) -> SpecError:
    """One line for the parser's exception: plain text for a syntax error, a JSON report for a semantic one."""
    body = str(e).strip()
    try:
        report = json.loads(body)
    except ValueError:
        report = None
    if isinstance(report, dict) and report.get("errors"):
        errors = report["errors"]
        first = errors[0]
        msg = str(first.get("message", "invalid query"))
        if first.get("hint"):
            msg += f" ({first['hint']})"
        if len(errors) > 1:
            msg += f"; and {len(errors) - 1} more problem(s)"
        return SpecError(msg, path, first.get("line"))
    m = re.search(r"at line (\d+), column (\d+): (.*)$", body)
    if "vnnlib-version" not in text and "declare-const" in text:
        return SpecError("this is a VNN-LIB 1.0 file (declare-const, no vnnlib-version); bnb-vnnlib reads VNN-LIB 2.0 "
                         "queries, `bnb verify NET PROP` reads 1.0 files", path)
    if m:
        near = m.group(3).strip()
        near = "at the end of the input" if near in ("", "''") else f"at {near}"
        return SpecError(f"syntax error {near} (column {m.group(2)})", path, int(m.group(1)))
    return SpecError(body.splitlines()[0] if body else "the VNN-LIB 2.0 parser refused the query", path)
