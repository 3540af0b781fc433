"""The operator table: every supported ONNX operator, converted into ops on named tensors (:mod:`bnb.io.onnx_dataflow`).

:data:`OPERATORS` maps an operator name to its converter ``convert(g, node, attrs, ins, out)`` (``g``: the
:class:`~bnb.io.onnx_dataflow.Dataflow`, ``attrs``: the node's attributes, ``ins``: its input names, ``out``: its
first output name). :func:`read_node` dispatches one node: a node whose inputs are all constants is evaluated
(:func:`~bnb.io.onnx_nodes.fold_constant`); ``Shape`` of a data tensor is a constant; anything else is one error
naming the operator and the node. :data:`REFUSED` names the operators users meet that bnb does not convert, each
with the reason its error gives (products and quotients of two tensors computed from the input are refused by
``Mul``, ``Div``, ``MatMul`` and ``Gemm`` themselves).
"""
from __future__ import annotations

import math

import numpy as np

from bnb.io.onnx_dataflow import Dataflow, as_tensor, gather_layer, positions
from bnb.io.onnx_nodes import attributes, fold_constant, tensor_value
from relaxations.layers import Conv2d, ConvTranspose2d, ElementwiseAffine, Linear, MatMul, Reshape

FLOAT_TYPES = (1, 10, 11)  # float, float16, double: a Cast to them is the identity on the data path


def read_node(g: Dataflow, node):
    """Convert one node (nodes come in topological order)."""
    op, ins = node.op_type, list(node.input)
    out = node.output[0] if node.output else None
    if op != "Constant" and not any([g.act(i) for i in ins]):
        if all((not i) or i in g.consts for i in ins):
            g.consts[out] = fold_constant(node, g.consts, g.path, REFUSED.get(op))
            return
        raise g.err(node, "an input is neither a constant nor computed from the network input")
    convert = OPERATORS.get(op)
    if convert is None:
        if op in REFUSED:
            raise g.err(node, f"unsupported operator {op!r}: {REFUSED[op]}")
        raise g.err(node, f"unsupported operator {op!r}; supported: {', '.join(OPERATORS)}")
    convert(g, node, attributes(node, g.path), ins, out)


# ------------------------------------------------------------------------------------ constants, identities
def constant(g: Dataflow, node, a, ins, out):
    if "value" not in a:
        raise g.err(node, "only tensor-valued Constant nodes are supported")
    g.consts[out] = tensor_value(a["value"], g.path, node)


def identity(g: Dataflow, node, a, ins, out):
    g.alias[out] = g.name(ins[0])


def cast(g: Dataflow, node, a, ins, out):
    if int(a.get("to", 0)) not in FLOAT_TYPES:
        raise g.err(node, f"Cast of the data to type {a.get('to')} (not a float type) is not supported")
    identity(g, node, a, ins, out)


def shape(g: Dataflow, node, a, ins, out):
    g.consts[out] = np.array(g.shape(ins[0]), dtype=np.int64)[a.get("start", 0):a.get("end", None)]


def relu(g: Dataflow, node, a, ins, out):
    g.relu(ins[0], out)


def sigmoid(g: Dataflow, node, a, ins, out):
    g.activation(ins[0], out, "sigmoid")


def tanh(g: Dataflow, node, a, ins, out):
    g.activation(ins[0], out, "tanh")


def softplus(g: Dataflow, node, a, ins, out):
    g.activation(ins[0], out, "softplus")


def leaky_relu(g: Dataflow, node, a, ins, out):
    alpha = float(a.get("alpha", 0.01))
    if not 0.0 <= alpha <= 1.0:
        raise g.err(node, f"LeakyRelu with alpha={alpha} is not supported (only alpha in [0, 1]: a convex activation)")
    g.activation(ins[0], out, "leaky_relu", alpha)


# ------------------------------------------------------------------------------------------- elementwise
def add(g: Dataflow, node, a, ins, out, sign=1.0):
    if g.act(ins[0]) and g.act(ins[1]):
        s0, s1 = g.shape(ins[0]), g.shape(ins[1])
        if s0 != s1:
            raise g.err(node, f"sum of two tensors of shapes {s0} and {s1} (broadcasting) is not supported")
        second = Reshape(s1, s1) if sign > 0 else ElementwiseAffine(as_tensor(-np.ones(s1)), as_tensor(np.zeros(s1)))
        g.emit([(ins[0], Reshape(s0, s0)), (ins[1], second)], out, s0)
        return
    first = g.act(ins[0])
    x, c = (ins[0], g.const(node, ins[1])) if first else (ins[1], g.const(node, ins[0]))
    if sign > 0:
        g.elementwise(node, x, 1.0, c, out)
    else:  # x - c or c - x
        g.elementwise(node, x, 1.0 if first else -1.0, -c if first else c, out)


def sub(g: Dataflow, node, a, ins, out):
    add(g, node, a, ins, out, sign=-1.0)


def mul(g: Dataflow, node, a, ins, out):
    if g.act(ins[0]) and g.act(ins[1]):
        raise g.err(node, "product of two tensors computed from the input is not linear; unsupported")
    x, c = (ins[0], g.const(node, ins[1])) if g.act(ins[0]) else (ins[1], g.const(node, ins[0]))
    g.elementwise(node, x, c, 0.0, out)


def div(g: Dataflow, node, a, ins, out):
    if not g.act(ins[0]) or g.act(ins[1]):
        raise g.err(node, "division by a tensor computed from the input is not supported")
    c = np.asarray(g.const(node, ins[1]), np.float64)
    if np.any(c == 0):
        raise g.err(node, "division by zero")
    g.elementwise(node, ins[0], 1.0 / c, 0.0, out)


def neg(g: Dataflow, node, a, ins, out):
    g.elementwise(node, ins[0], -1.0, 0.0, out)


def batch_normalization(g: Dataflow, node, a, ins, out):
    s = g.shape(ins[0])
    if len(s) < 2:
        raise g.err(node, "BatchNormalization needs a channel dimension")
    gamma, beta, mean, var = (np.asarray(g.const(node, i), np.float64) for i in ins[1:5])
    scale = gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))
    bshape = (1, -1) + (1,) * (len(s) - 2)
    # two steps, (x - mean) then scale * . + beta: the same real map (simplification folds them into one), but the
    # float32 error bound sees the terms onnxruntime rounds, |mean| and |beta|, not only their difference
    centred = g.elementwise(node, ins[0], 1.0, -mean.reshape(bshape))
    g.elementwise(node, centred, scale.reshape(bshape), beta.reshape(bshape), out)


# ------------------------------------------------------------------------------------------ matrix products
def _matmul(g: Dataflow, node, x, W, side, out=None, bias=None):
    """``x @ W`` (``side`` right) or ``W @ x`` (left), plus ``bias``: a dense layer where ``x`` is ``(1, n)``."""
    s = g.shape(x)
    W = np.asarray(W, np.float64)
    if W.ndim != 2:
        raise g.err(node, f"product with a constant of shape {W.shape} (only matrices) is not supported")
    if len(s) >= 2 and (s[-1] if side == "right" else s[-2]) != W.shape[0 if side == "right" else 1]:
        raise g.err(node, f"{node.op_type} of data {s} with weight {W.shape} ({side} factor) does not fit")
    try:
        if side == "right" and len(s) == 2 and s[0] == 1:
            b = None if bias is None else as_tensor(np.broadcast_to(bias, (1, W.shape[1])).reshape(-1))
            layer, bias = Linear(as_tensor(W.T), b), None
        else:
            layer = MatMul(as_tensor(W), s, side)
    except ValueError as e:
        raise g.err(node, str(e)) from None
    oshape = (1, *layer.out_shape) if isinstance(layer, Linear) else layer.out_shape
    if bias is None:
        return g.emit([(x, layer)], out, oshape)
    return g.elementwise(node, g.emit([(x, layer)], None, oshape), 1.0, bias, out)


def _transposed(g: Dataflow, node, x):
    s = g.shape(x)
    if len(s) != 2:
        raise g.err(node, "transposed operand of rank other than 2")
    return g.gather(x, positions(s).T)


def matmul(g: Dataflow, node, a, ins, out):
    if g.act(ins[0]) and g.act(ins[1]):
        raise g.err(node, "product of two tensors computed from the input is not linear; unsupported")
    if g.act(ins[0]):
        _matmul(g, node, ins[0], g.const(node, ins[1]), "right", out)
    else:
        _matmul(g, node, ins[1], g.const(node, ins[0]), "left", out)


def gemm(g: Dataflow, node, a, ins, out):
    if g.act(ins[0]) and g.act(ins[1]):
        raise g.err(node, "product of two tensors computed from the input is not linear; unsupported")
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    bias = beta * np.asarray(g.const(node, ins[2]), np.float64) if len(ins) > 2 and ins[2] else None
    if g.act(ins[0]):
        x = _transposed(g, node, ins[0]) if a.get("transA", 0) else ins[0]
        W = g.const(node, ins[1])
        W = W.T if a.get("transB", 0) else W
        _matmul(g, node, x, W if alpha == 1.0 else alpha * W, "right", out, bias)
    else:
        x = _transposed(g, node, ins[1]) if a.get("transB", 0) else ins[1]
        W = g.const(node, ins[0])
        W = W.T if a.get("transA", 0) else W
        _matmul(g, node, x, W if alpha == 1.0 else alpha * W, "left", out, bias)


# ------------------------------------------------------------------------------------------------- shapes
def flatten(g: Dataflow, node, a, ins, out):
    s = g.shape(ins[0])
    axis = a.get("axis", 1)
    axis = axis + len(s) if axis < 0 else axis
    g.reshape(ins[0], (math.prod(s[:axis]), math.prod(s[axis:])), out)


def reshape(g: Dataflow, node, a, ins, out):
    s = g.shape(ins[0])
    target = [int(v) for v in g.const(node, ins[1])]
    target = [s[i] if (v == 0 and not a.get("allowzero", 0)) else v for i, v in enumerate(target)]
    try:
        new_shape = np.empty(s, dtype=np.int8).reshape(target).shape
    except ValueError:
        raise g.err(node, f"cannot reshape {s} to {target}") from None
    g.reshape(ins[0], new_shape, out)


def transpose(g: Dataflow, node, a, ins, out):
    s = g.shape(ins[0])
    perm = list(a.get("perm", reversed(range(len(s)))))
    moved = [p for p in perm if s[p] != 1]
    if moved == sorted(moved):  # only unit axes move: the data keeps its order
        g.reshape(ins[0], [s[p] for p in perm], out)
    else:
        g.gather(ins[0], np.transpose(positions(s), perm), out)


def _squeeze_axes(g: Dataflow, node, a, ins):
    return a.get("axes") if len(ins) < 2 or not ins[1] else [int(x) for x in g.const(node, ins[1])]


def squeeze(g: Dataflow, node, a, ins, out):
    s = g.shape(ins[0])
    axes = _squeeze_axes(g, node, a, ins)
    if axes is None:
        axes = [i for i, n in enumerate(s) if n == 1]
    axes = [x + len(s) if x < 0 else x for x in axes]
    if any(s[x] != 1 for x in axes):
        raise g.err(node, f"cannot squeeze axes {axes} of shape {s}")
    g.reshape(ins[0], [n for i, n in enumerate(s) if i not in axes], out)


def unsqueeze(g: Dataflow, node, a, ins, out):
    s = g.shape(ins[0])
    axes = _squeeze_axes(g, node, a, ins)
    rank = len(s) + len(axes)
    new = list(s)
    for x in sorted(x + rank if x < 0 else x for x in axes):
        new.insert(x, 1)
    g.reshape(ins[0], new, out)


# ------------------------------------------------------------------------------------------ index maps
def concat(g: Dataflow, node, a, ins, out):
    parts = [(i, g.shape(i) if g.act(i) else np.shape(g.const(node, i))) for i in ins]
    axis = int(a["axis"])
    try:
        full = np.concatenate([np.zeros(s) for _, s in parts], axis=axis).shape
    except ValueError as e:
        raise g.err(node, f"cannot concatenate: {e}") from None
    terms, shift = [], np.zeros(full)
    for k, (name, s) in enumerate(parts):
        blocks = [(positions(s2) if j == k else -np.ones(s2, np.int64)) for j, (_, s2) in enumerate(parts)]
        if g.act(name):
            terms.append((name, gather_layer(s, np.concatenate(blocks, axis=axis))))
        else:
            mask = np.concatenate([np.full(s2, j == k, bool) for j, (_, s2) in enumerate(parts)], axis=axis)
            shift[mask] = np.asarray(g.const(node, name), np.float64).reshape(-1)
    if not np.any(shift):
        g.emit(terms, out, full)
    else:
        g.elementwise(node, g.emit(terms, None, full), 1.0, shift, out)


def _slice(g: Dataflow, x, slices, out):
    g.gather(x, positions(g.shape(x))[tuple(slices)], out)


def slice_(g: Dataflow, node, a, ins, out):
    s = g.shape(ins[0])
    if len(ins) > 1:  # opset >= 10: starts, ends, axes, steps as inputs
        starts, ends, axes, steps = [None if len(ins) <= k or not ins[k] else [int(v) for v in g.const(node, ins[k])]
                                     for k in range(1, 5)]
    else:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    sl = [slice(None)] * len(s)
    for st, en, ax, step in zip(starts, ends, axes, steps):
        ax = ax + len(s) if ax < 0 else ax
        if step == 0:
            raise g.err(node, "slice step 0")
        n = s[ax]
        st, en = max(-n - 1, min(n + 1, st)), max(-n - 1, min(n + 1, en))  # ONNX clamps; Python would too
        sl[ax] = slice(st, None if (step < 0 and en < -n) else en, step)
    _slice(g, ins[0], sl, out)


def split(g: Dataflow, node, a, ins, out):
    s = g.shape(ins[0])
    axis = int(a.get("axis", 0))
    axis = axis + len(s) if axis < 0 else axis
    if len(ins) > 1 and ins[1]:
        sizes = [int(v) for v in g.const(node, ins[1])]
    elif "split" in a:
        sizes = [int(v) for v in a["split"]]
    else:
        k = len(node.output)
        step = -(-s[axis] // k)
        sizes = [min(step, s[axis] - i * step) for i in range(k)]
    if sum(sizes) != s[axis] or len(sizes) != len(node.output):
        raise g.err(node, f"split sizes {sizes} do not fit axis {axis} of {s}")
    start = 0
    for o, n in zip(node.output, sizes):
        sl = [slice(None)] * len(s)
        sl[axis] = slice(start, start + n)
        start += n
        if o:
            _slice(g, ins[0], sl, o)


def gather(g: Dataflow, node, a, ins, out):
    if not g.act(ins[0]) or g.act(ins[1]):
        raise g.err(node, "only Gather of a tensor with constant indices is supported")
    s = g.shape(ins[0])
    axis = int(a.get("axis", 0))
    idx = np.asarray(g.const(node, ins[1]), np.int64)
    if np.any(idx >= s[axis]) or np.any(idx < -s[axis]):
        raise g.err(node, f"index out of range for axis {axis} of {s}")
    g.gather(ins[0], np.take(positions(s), idx, axis=axis), out)


def pad(g: Dataflow, node, a, ins, out):
    rank = len(g.shape(ins[0]))
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise g.err(node, f"Pad mode {mode!r} is not supported (only constant)")
    pads = [int(v) for v in g.const(node, ins[1])] if len(ins) > 1 and ins[1] else list(a["pads"])
    value = float(np.asarray(g.const(node, ins[2])).reshape(-1)[0]) if len(ins) > 2 and ins[2] \
        else float(a.get("value", 0.0))
    axes = [int(v) for v in g.const(node, ins[3])] if len(ins) > 3 and ins[3] else list(range(rank))
    axes = [x + rank if x < 0 else x for x in axes]
    full = [0] * (2 * rank)
    for k, ax in enumerate(axes):
        full[ax], full[rank + ax] = pads[k], pads[len(axes) + k]
    g.pad(node, ins[0], full, value, out)


# ---------------------------------------------------------------------------------------------- convolutions
def _auto_pad(g: Dataflow, node, a):
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", "VALID"):
        raise g.err(node, f"auto_pad={auto!r} is not supported")


def _spatial(g: Dataflow, node, x, a):
    """``(x as (1, C, H, W), strides, pads, dilations, one_d)``: a 1-D op runs as a 2-D one on ``(C, 1, L)``;
    asymmetric padding becomes an explicit zero Pad first."""
    s = g.shape(x)
    if len(s) not in (3, 4) or s[0] != 1:
        raise g.err(node, f"only 1-D and 2-D {node.op_type} on (1, C, ...) inputs are supported (input shape {s})")
    one_d = len(s) == 3
    nd = len(s) - 2
    pads = list(a.get("pads", [0] * 2 * nd))
    _auto_pad(g, node, a)
    attrs = {k: list(a.get(k, [d] * nd)) for k, d in (("strides", 1), ("dilations", 1))}
    if list(pads[:nd]) != list(pads[nd:]):
        x = g.pad(node, x, [0, 0] + list(pads[:nd]) + [0, 0] + list(pads[nd:]), 0.0)
        pads = [0] * (2 * nd)
    if one_d:
        c, length = g.shape(x)[1:]
        x = g.reshape(x, (1, c, 1, length))
        attrs = {k: [1] + v for k, v in attrs.items()}
        pads = [0] + pads[:1]
    else:
        pads = pads[:2]
    return x, attrs["strides"], pads, attrs["dilations"], one_d


def _restore(g: Dataflow, y, one_d, out):
    """The result of :func:`_spatial`'s op back in the input's rank."""
    if not one_d:
        g.alias[out] = y
        return
    s = g.shapes[y]
    g.reshape(y, (1, s[1], s[3]), out)


def conv(g: Dataflow, node, a, ins, out):
    w = np.asarray(g.const(node, ins[1]), np.float64)
    b = np.asarray(g.const(node, ins[2]), np.float64) if len(ins) > 2 and ins[2] else None
    x, strides, pads, dil, one_d = _spatial(g, node, ins[0], a)
    if one_d:
        w = w[:, :, None, :]
    s = g.shape(x)
    groups = int(a.get("group", 1))
    if w.shape[1] * groups != s[1]:
        raise g.err(node, f"weight {w.shape} with group {groups} does not fit input channels {s[1]}")
    layer = Conv2d(as_tensor(w), None if b is None else as_tensor(b), s[1:], strides, pads, dil, groups)
    _restore(g, g.emit([(x, layer)]), one_d, out)


def conv_transpose(g: Dataflow, node, a, ins, out):
    if "output_shape" in a:
        raise g.err(node, "ConvTranspose with output_shape is not supported (give pads instead)")
    w = np.asarray(g.const(node, ins[1]), np.float64)
    b = np.asarray(g.const(node, ins[2]), np.float64) if len(ins) > 2 and ins[2] else None
    s = g.shape(ins[0])
    if len(s) != 4 or s[0] != 1:
        raise g.err(node, f"only 2-D ConvTranspose on (1, C, H, W) inputs is supported (input shape {s})")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:]:
        raise g.err(node, f"asymmetric padding {pads} is not supported")
    _auto_pad(g, node, a)
    layer = ConvTranspose2d(as_tensor(w), None if b is None else as_tensor(b), s[1:], list(a.get("strides", [1, 1])),
                            pads[:2], list(a.get("output_padding", [0, 0])), list(a.get("dilations", [1, 1])),
                            int(a.get("group", 1)))
    g.emit([(ins[0], layer)], out)


def average_pool(g: Dataflow, node, a, ins, out):
    k = list(a["kernel_shape"])
    if a.get("ceil_mode", 0):
        raise g.err(node, "AveragePool with ceil_mode=1 is not supported")
    if any(a.get("pads", [0])) and not a.get("count_include_pad", 0):
        raise g.err(node, "AveragePool with padding and count_include_pad=0 is not supported")
    c = g.shape(ins[0])[1]
    x, strides, pads, dil, one_d = _spatial(g, node, ins[0], a)
    w = np.full((c, 1, *([1] + k if one_d else k)), 1.0 / math.prod(k))
    layer = Conv2d(as_tensor(w), None, g.shape(x)[1:], strides, pads, dil, c)
    _restore(g, g.emit([(x, layer)]), one_d, out)


# the table, in the order an error lists the supported operators
OPERATORS = {
    "Gemm": gemm, "MatMul": matmul, "Add": add, "Sub": sub, "Mul": mul, "Div": div, "Neg": neg, "Relu": relu,
    "Sigmoid": sigmoid, "Tanh": tanh, "Softplus": softplus, "LeakyRelu": leaky_relu,
    "Flatten": flatten, "Reshape": reshape, "Constant": constant, "Identity": identity, "Dropout": identity,
    "Cast": cast, "Conv": conv, "ConvTranspose": conv_transpose, "BatchNormalization": batch_normalization,
    "AveragePool": average_pool, "Transpose": transpose, "Squeeze": squeeze, "Unsqueeze": unsqueeze,
    "Concat": concat, "Slice": slice_, "Split": split, "Gather": gather, "Pad": pad, "Shape": shape,
}

# operators users meet that bnb does not convert, each with the reason its error gives (none is in OPERATORS)
_COMPARISON = "comparisons give booleans, not values a ReLU network computes"
_LOGICAL = "logical operators act on booleans, not values a ReLU network computes"
_MAXPOOL = "max pooling is not supported yet (no max layer; only ReLU; AveragePool is supported)"
_MAX = "maxima and minima are not supported yet (no max layer; only ReLU)"
_ARG = "the index of an extreme value is not a value a ReLU network computes (state the property on the scores)"
_SOFTMAX = "softmax is neither linear nor ReLU (state the property on the scores before it: same order)"
_NOT_S_SHAPED = ("an activation with more than one inflection (neither convex nor S-shaped) is not supported "
                 "(ReLU, LeakyRelu, Softplus, Sigmoid and Tanh are)")
REFUSED = {
    **dict.fromkeys(("Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"), _COMPARISON),
    **dict.fromkeys(("And", "Or", "Not", "Xor"), _LOGICAL),
    "Where": "selection by a condition is not supported (its condition is a comparison, which gives booleans)",
    "Softmax": _SOFTMAX, "LogSoftmax": _SOFTMAX,
    "Max": _MAX, "Min": _MAX,
    "MaxPool": _MAXPOOL, "GlobalMaxPool": _MAXPOOL,
    "ArgMax": _ARG, "ArgMin": _ARG,
    **dict.fromkeys(("Gelu", "Mish", "HardSwish"), _NOT_S_SHAPED),
    "HardSigmoid": "HardSigmoid is not supported yet (a clipped linear map: not converted)",
    "Elu": "Elu is not supported yet (convex only for alpha <= 1; not converted)",
    "Selu": "Selu is not supported yet (not converted)",
}
