"""Reading ONNX nodes: constant tensors and attributes, the network's one input, the evaluation of nodes whose
inputs are all constants (shape arithmetic in exported graphs), and the one-line error naming a node.

Every error here is a :class:`~bnb.errors.ModelError` that names the file; one about a node reads
``"model.onnx: node NAME (Op): problem"`` (:func:`node_error`). Constant tensors are NumPy arrays, floats as
``float64``; shapes are ONNX shapes (the network input's leading batch dimension included).
"""
from __future__ import annotations

import numpy as np

from bnb.errors import ModelError
from bnb.io.onnx_proto import attribute_value, to_array


def node_error(node, message: str, path) -> ModelError:
    """``"path: node NAME (Op): message"`` (``(unnamed)`` for a node without a name)."""
    return ModelError(f"node {node.name or '(unnamed)'} ({node.op_type}): {message}", path)


def tensor_value(t, path, node=None) -> np.ndarray:
    """The value of a ``TensorProto`` (of ``node``, to name it in an error), floats as ``float64``."""
    try:
        return to_array(t, np.float64)
    except ValueError as e:
        raise (ModelError(str(e), path) if node is None else node_error(node, str(e), path)) from None


def attributes(node, path) -> dict:
    """The node's attributes by name, as Python values (numbers, bytes, tensors, lists)."""
    try:
        return {a.name: attribute_value(a) for a in node.attribute}
    except ValueError as e:
        raise node_error(node, str(e), path) from None


def initializers(model, path) -> dict[str, np.ndarray]:
    """The graph's initialisers by name."""
    return {t.name: tensor_value(t, path) for t in model.graph.initializer}


def network_input(model, consts: dict, path):
    """``(input ValueInfo, ONNX input shape (1, *per_sample), batchable)``: the one graph input that is not an
    initialiser, with a static per-sample shape and a batch dimension of 1 or symbolic (then ``batchable``)."""
    inputs = [i for i in model.graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise ModelError(f"expected exactly one network input, found {len(inputs)}", path)
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if not shape or any(s is None for s in shape[1:]):
        raise ModelError(f"input {inp.name!r} needs a static shape (got {shape})", path)
    batchable = shape[0] is None or dims[0].HasField("dim_param")
    if shape[0] not in (None, 1):
        raise ModelError(f"input {inp.name!r} has batch size {shape[0]}; only 1 is supported", path)
    if len(shape) < 2:
        raise ModelError(f"input {inp.name!r} of shape {shape} has no batch dimension", path)
    return inp, (1, *shape[1:]), batchable


def fold_constant(node, consts: dict, path, reason: str | None = None) -> np.ndarray:
    """The output of ``node``, all of whose inputs are in ``consts`` (an empty input name: an omitted one).
    ``reason``: why bnb refuses the operator, if it does (:data:`bnb.io.onnx_ops.REFUSED`), for the error when it
    cannot be evaluated here either."""
    op, a = node.op_type, attributes(node, path)
    vals = [consts[i] if i else None for i in node.input]
    try:
        return _evaluate(op, a, vals)
    except _Unsupported:
        why = reason or f"constants are evaluated through {', '.join(FOLDED)} only"
        raise node_error(node, f"unsupported operator {op!r} on constants: {why}", path) from None
    except Exception as e:
        raise node_error(node, f"cannot evaluate on constants: {e}", path) from None


class _Unsupported(Exception):
    pass


# the operators :func:`_evaluate` knows (shape arithmetic and elementwise arithmetic in exported graphs)
FOLDED = ("Identity", "Dropout", "Cast", "Add", "Sub", "Mul", "Div", "Neg", "Reshape", "Transpose", "Unsqueeze",
          "Squeeze", "Concat", "Gather", "Shape", "ConstantOfShape", "Slice")


def _axes(a: dict, vals: list):
    """Squeeze / Unsqueeze axes: the attribute (opset < 13) or the second input."""
    return a.get("axes", None) if len(vals) < 2 else [int(x) for x in vals[1]]


def _evaluate(op: str, a: dict, vals: list):
    if op in ("Identity", "Dropout", "Cast"):
        return vals[0]
    if op == "Add":
        return vals[0] + vals[1]
    if op == "Sub":
        return vals[0] - vals[1]
    if op == "Mul":
        return vals[0] * vals[1]
    if op == "Div":
        return vals[0] / vals[1]
    if op == "Neg":
        return -vals[0]
    if op == "Reshape":
        return vals[0].reshape([int(s) for s in vals[1]])
    if op == "Transpose":
        return np.transpose(vals[0], a.get("perm"))
    if op == "Unsqueeze":
        r = vals[0]
        for ax in sorted(_axes(a, vals)):
            r = np.expand_dims(r, ax)
        return r
    if op == "Squeeze":
        axes = _axes(a, vals)
        return np.squeeze(vals[0], axis=None if axes is None else tuple(axes))
    if op == "Concat":
        return np.concatenate(vals, axis=int(a["axis"]))
    if op == "Gather":
        return np.take(vals[0], np.asarray(vals[1], np.int64), axis=int(a.get("axis", 0)))
    if op == "Shape":
        return np.array(np.shape(vals[0]), dtype=np.int64)[a.get("start", 0):a.get("end", None)]
    if op == "ConstantOfShape":
        v = a.get("value")
        fill = 0.0 if v is None else np.asarray(to_array(v)).reshape(-1)[0]
        return np.full([int(s) for s in vals[0]], fill)
    if op == "Slice" and len(vals) > 1:  # opset >= 10: starts, ends, axes, steps as inputs
        x, starts, ends = vals[0], vals[1], vals[2]
        axes = vals[3] if len(vals) > 3 and vals[3] is not None else range(len(starts))
        steps = vals[4] if len(vals) > 4 and vals[4] is not None else [1] * len(starts)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            sl[int(ax)] = slice(int(s), int(e), int(st))
        return x[tuple(sl)]
    raise _Unsupported
