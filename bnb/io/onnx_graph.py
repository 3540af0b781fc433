"""ONNX computation graphs (residual ``Add``, ``Concat``, ``Slice``, ``Split``, ``Gather``, ``Pad``, ...) lowered to
a chain :class:`relaxations.network.Network`.

:func:`bnb.io.onnx_loader.load_onnx` tries the sequential converter first (a chain keeps exactly the layers and the
speed it had); a graph it cannot read as a chain comes here. Two passes:

1. **Ops.** Every node on the data path becomes one or more ops on named tensors (full ONNX shapes, the leading
   batch dimension of size 1 included, so that an op may act on any axis): ``("affine", out, [(in, layer), ...])``
   (``out`` = the sum of the terms; a layer from :mod:`relaxations.layers`) or ``("relu", out, in)``. Constants
   are folded; ``Shape`` of a tensor is a constant. Anything else is one error naming the op and the node.
2. **Lowering.** Walking the ops in topological order, the chain's state is the flat concatenation of the tensors
   still needed later. An affine op becomes a :class:`~relaxations.layers.Stage` (carried tensors are identity
   terms, a tensor used twice is read by two terms). A ReLU acts on the whole state: a carried tensor that is
   the output of a ReLU is non-negative and passes unchanged (``relu(t) = t``, a stable active neuron); any
   other carried tensor ``t`` is carried as ``(t, -t)`` and recombined as ``relu(t) - relu(-t) = t`` after it
   (exact in real arithmetic; the pair is relaxed like any two neurons, and BaB may split it). Where only one
   tensor is live the op's own layer is emitted, so chain-shaped parts keep their chain form.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from bnb.errors import ModelError
from bnb.io.onnx_proto import to_array
from relaxations.layers import (Conv2d, ConvTranspose2d, ElementwiseAffine, Gather, Linear, MatMul, ReLU,
                                Reshape, Stage)
from relaxations.network import Network

GRAPH_OPS = ("Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Neg", "Relu", "Flatten", "Reshape", "Constant",
             "Identity", "Dropout", "Cast", "Conv", "ConvTranspose", "BatchNormalization", "AveragePool",
             "Transpose", "Squeeze", "Unsqueeze", "Concat", "Slice", "Split", "Gather", "Pad", "Shape")
_FLOAT_TYPES = (1, 10, 11)  # float, float16, double: a Cast to them is the identity on the data path


def convert_graph(model, path):
    """``(network, onnx_input_shape, input_name, batchable)``; see the module docstring."""
    from bnb.io.onnx_loader import _network_input, _tensor
    consts = {t.name: _tensor(t, path) for t in model.graph.initializer}
    inp, onnx_in_shape, batchable = _network_input(model, consts, path)
    g = _Ops(consts, path)
    g.shapes[inp.name] = tuple(onnx_in_shape)
    for node in model.graph.node:
        g.node(node)
    outs = [o.name for o in model.graph.output]
    if len(outs) != 1:
        raise ModelError(f"expected exactly one network output, found {len(outs)}", path)
    out = g.alias.get(outs[0], outs[0])
    if out not in g.shapes:
        raise ModelError(f"graph output {outs[0]!r} is not computed from the input by supported ops", path)
    try:
        layers = _lower(g.ops, inp.name, out, g.shapes)
        net = Network(_adapt(layers, tuple(onnx_in_shape[1:])), onnx_in_shape[1:]).simplified()
    except ValueError as e:
        raise ModelError(f"inconsistent shapes: {e}", path) from None
    return net, tuple(onnx_in_shape), inp.name, batchable


# ------------------------------------------------------------------------------------------- pass 1: ops
def _t(a):
    return torch.from_numpy(np.array(a, dtype=np.float64))  # a writable copy (broadcasts are read-only views)


def _gather(shape, index_array, out_shape=None) -> Gather:
    """The Gather that picks ``index_array`` (int array of flat positions of ``shape``, -1 for zeros)."""
    index_array = np.asarray(index_array)
    return Gather(shape, index_array.shape if out_shape is None else out_shape, torch.from_numpy(
        np.ascontiguousarray(index_array.reshape(-1), dtype=np.int64)))


def _positions(shape):
    return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)


class _Ops:
    def __init__(self, consts, path):
        self.consts, self.path = consts, path
        self.shapes: dict[str, tuple] = {}  # tensor on the data path -> full ONNX shape
        self.alias: dict[str, str] = {}
        self.ops: list[tuple] = []
        self._tmp = 0

    def err(self, node, msg):
        return ModelError(f"node {node.name or '(unnamed)'} ({node.op_type}): {msg}", self.path)

    def name(self, n):
        return self.alias.get(n, n)

    def act(self, n):
        return bool(n) and self.name(n) in self.shapes

    def const(self, node, n):
        if n not in self.consts:
            raise self.err(node, f"input {n!r} must be a constant here")
        return self.consts[n]

    def emit(self, terms, out=None, shape=None):
        """Add ``out = sum of layer(in)``; returns ``out`` (a fresh name when None)."""
        if out is None:
            self._tmp += 1
            out = f"__bnb_tmp{self._tmp}"
        shape = tuple(shape if shape is not None else (1, *terms[0][1].out_shape))
        self.shapes[out] = shape
        self.ops.append(("affine", out, [(self.name(i), layer) for i, layer in terms]))
        return out

    def elementwise(self, node, x, scale, shift, out=None):
        shape = self.shapes[self.name(x)]
        try:
            full = np.broadcast_shapes(np.shape(scale), np.shape(shift), shape)
        except ValueError:
            raise self.err(node, f"constant does not broadcast to the data shape {shape}") from None
        if tuple(full) != shape:
            raise self.err(node, f"constant would change the data shape {shape} to {tuple(full)}")
        layer = ElementwiseAffine(_t(np.broadcast_to(scale, shape)), _t(np.broadcast_to(shift, shape)))
        return self.emit([(x, layer)], out, shape)

    def reshape(self, x, new_shape, out=None):
        shape = self.shapes[self.name(x)]
        return self.emit([(x, Reshape(shape, tuple(int(s) for s in new_shape)))], out, new_shape)

    def gather(self, x, index_array, out=None):
        return self.emit([(x, _gather(self.shapes[self.name(x)], index_array))], out, np.shape(index_array))

    # ---------------------------------------------------------------------------------------------- nodes
    def node(self, node):
        from bnb.io.onnx_loader import _attrs, _fold_constant, _tensor
        op, ins = node.op_type, list(node.input)
        out = node.output[0] if node.output else None
        if op == "Constant":
            a = _attrs(node, self.path)
            if "value" not in a:
                raise self.err(node, "only tensor-valued Constant nodes are supported")
            self.consts[out] = _tensor(a["value"], self.path, node)
            return
        if not any(self.act(i) for i in ins):
            if all((not i) or i in self.consts for i in ins):
                self.consts[out] = _fold(self, node, _fold_constant)
                return
            raise self.err(node, "an input is neither a constant nor computed from the network input")
        if op not in GRAPH_OPS:
            raise self.err(node, f"unsupported operator {op!r}; supported: {', '.join(GRAPH_OPS)}")
        a = _attrs(node, self.path)
        getattr(self, f"op_{op}", self.op_generic)(node, a, ins, out)

    def op_generic(self, node, a, ins, out):  # pragma: no cover - GRAPH_OPS and the op_ methods are kept in step
        raise self.err(node, f"unsupported operator {node.op_type!r}")

    def op_Identity(self, node, a, ins, out):
        self.alias[out] = self.name(ins[0])

    op_Dropout = op_Identity

    def op_Cast(self, node, a, ins, out):
        if int(a.get("to", 0)) not in _FLOAT_TYPES:
            raise self.err(node, f"Cast of the data to type {a.get('to')} (not a float type) is not supported")
        self.op_Identity(node, a, ins, out)

    def op_Shape(self, node, a, ins, out):
        shape = np.array(self.shapes[self.name(ins[0])], dtype=np.int64)
        start, end = a.get("start", 0), a.get("end", None)
        self.consts[out] = shape[start:end]

    def op_Relu(self, node, a, ins, out):
        x = self.name(ins[0])
        self.shapes[out] = self.shapes[x]
        self.ops.append(("relu", out, x))

    def op_Add(self, node, a, ins, out, sign=1.0):
        if self.act(ins[0]) and self.act(ins[1]):
            s0, s1 = self.shapes[self.name(ins[0])], self.shapes[self.name(ins[1])]
            if s0 != s1:
                raise self.err(node, f"sum of two tensors of shapes {s0} and {s1} (broadcasting) is not supported")
            second = Reshape(s1, s1) if sign > 0 else ElementwiseAffine(_t(-np.ones(s1)), _t(np.zeros(s1)))
            self.emit([(ins[0], Reshape(s0, s0)), (ins[1], second)], out, s0)
            return
        first = self.act(ins[0])
        x, c = (ins[0], self.const(node, ins[1])) if first else (ins[1], self.const(node, ins[0]))
        if sign > 0:
            self.elementwise(node, x, 1.0, c, out)
        else:  # x - c or c - x
            self.elementwise(node, x, 1.0 if first else -1.0, -c if first else c, out)

    def op_Sub(self, node, a, ins, out):
        self.op_Add(node, a, ins, out, sign=-1.0)

    def op_Mul(self, node, a, ins, out):
        if self.act(ins[0]) and self.act(ins[1]):
            raise self.err(node, "product of two tensors computed from the input is not linear; unsupported")
        x, c = (ins[0], self.const(node, ins[1])) if self.act(ins[0]) else (ins[1], self.const(node, ins[0]))
        self.elementwise(node, x, c, 0.0, out)

    def op_Div(self, node, a, ins, out):
        if not self.act(ins[0]) or self.act(ins[1]):
            raise self.err(node, "division by a tensor computed from the input is not supported")
        c = np.asarray(self.const(node, ins[1]), np.float64)
        if np.any(c == 0):
            raise self.err(node, "division by zero")
        self.elementwise(node, ins[0], 1.0 / c, 0.0, out)

    def op_Neg(self, node, a, ins, out):
        self.elementwise(node, ins[0], -1.0, 0.0, out)

    def _matmul(self, node, x, W, side, out=None, bias=None):
        shape = self.shapes[self.name(x)]
        W = np.asarray(W, np.float64)
        if W.ndim != 2:
            raise self.err(node, f"product with a constant of shape {W.shape} (only matrices) is not supported")
        try:
            if side == "right" and len(shape) == 2 and shape[0] == 1:
                layer = Linear(_t(W.T), None if bias is None else _t(np.broadcast_to(bias, (1, W.shape[1])).reshape(-1)))
                bias = None
            else:
                layer = MatMul(_t(W), shape, side)
        except ValueError as e:
            raise self.err(node, str(e)) from None
        oshape = (1, *layer.out_shape) if isinstance(layer, Linear) else layer.out_shape
        if bias is None:
            return self.emit([(x, layer)], out, oshape)
        y = self.emit([(x, layer)], None, oshape)
        return self.elementwise(node, y, 1.0, bias, out)

    def _transposed(self, x):
        shape = self.shapes[self.name(x)]
        if len(shape) != 2:
            raise ModelError("transposed operand of rank other than 2", self.path)
        return self.gather(x, _positions(shape).T)

    def op_MatMul(self, node, a, ins, out):
        if self.act(ins[0]) and self.act(ins[1]):
            raise self.err(node, "product of two tensors computed from the input is not linear; unsupported")
        if self.act(ins[0]):
            self._matmul(node, ins[0], self.const(node, ins[1]), "right", out)
        else:
            self._matmul(node, ins[1], self.const(node, ins[0]), "left", out)

    def op_Gemm(self, node, a, ins, out):
        if self.act(ins[0]) and self.act(ins[1]):
            raise self.err(node, "product of two tensors computed from the input is not linear; unsupported")
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        bias = beta * np.asarray(self.const(node, ins[2]), np.float64) if len(ins) > 2 and ins[2] else None
        if self.act(ins[0]):
            x = self._transposed(ins[0]) if a.get("transA", 0) else ins[0]
            W = self.const(node, ins[1])
            W = alpha * (W.T if a.get("transB", 0) else W)
            self._matmul(node, x, W, "right", out, bias)
        else:
            x = self._transposed(ins[1]) if a.get("transB", 0) else ins[1]
            W = self.const(node, ins[0])
            W = alpha * (W.T if a.get("transA", 0) else W)
            self._matmul(node, x, W, "left", out, bias)

    def op_Flatten(self, node, a, ins, out):
        shape = self.shapes[self.name(ins[0])]
        axis = a.get("axis", 1)
        axis = axis + len(shape) if axis < 0 else axis
        self.reshape(ins[0], (math.prod(shape[:axis]), math.prod(shape[axis:])), out)

    def op_Reshape(self, node, a, ins, out):
        shape = self.shapes[self.name(ins[0])]
        target = [int(s) for s in self.const(node, ins[1])]
        target = [shape[i] if (s == 0 and not a.get("allowzero", 0)) else s for i, s in enumerate(target)]
        try:
            new_shape = np.empty(shape, dtype=np.int8).reshape(target).shape
        except ValueError:
            raise self.err(node, f"cannot reshape {shape} to {target}") from None
        self.reshape(ins[0], new_shape, out)

    def op_Transpose(self, node, a, ins, out):
        shape = self.shapes[self.name(ins[0])]
        perm = list(a.get("perm", reversed(range(len(shape)))))
        self.gather(ins[0], np.transpose(_positions(shape), perm), out)

    def _axes(self, node, a, ins):
        return a.get("axes") if len(ins) < 2 or not ins[1] else [int(x) for x in self.const(node, ins[1])]

    def op_Squeeze(self, node, a, ins, out):
        shape = self.shapes[self.name(ins[0])]
        axes = self._axes(node, a, ins)
        if axes is None:
            axes = [i for i, s in enumerate(shape) if s == 1]
        axes = [x + len(shape) if x < 0 else x for x in axes]
        if any(shape[x] != 1 for x in axes):
            raise self.err(node, f"cannot squeeze axes {axes} of shape {shape}")
        self.reshape(ins[0], [s for i, s in enumerate(shape) if i not in axes], out)

    def op_Unsqueeze(self, node, a, ins, out):
        shape = self.shapes[self.name(ins[0])]
        axes = self._axes(node, a, ins)
        rank = len(shape) + len(axes)
        new = list(shape)
        for x in sorted(x + rank if x < 0 else x for x in axes):
            new.insert(x, 1)
        self.reshape(ins[0], new, out)

    def op_Concat(self, node, a, ins, out):
        parts = [(i, self.shapes[self.name(i)] if self.act(i) else np.shape(self.const(node, i))) for i in ins]
        axis = int(a["axis"])
        try:
            full = np.concatenate([np.zeros(s) for _, s in parts], axis=axis).shape
        except ValueError as e:
            raise self.err(node, f"cannot concatenate: {e}") from None
        terms, shift = [], np.zeros(full)
        for k, (name, s) in enumerate(parts):
            blocks = [(_positions(s2) if j == k else -np.ones(s2, np.int64)) for j, (_, s2) in enumerate(parts)]
            if self.act(name):
                terms.append((name, _gather(s, np.concatenate(blocks, axis=axis))))
            else:
                mask = np.concatenate([np.full(s2, j == k, bool) for j, (_, s2) in enumerate(parts)], axis=axis)
                shift[mask] = np.asarray(self.const(node, name), np.float64).reshape(-1)
        if not np.any(shift):
            self.emit(terms, out, full)
        else:
            self.elementwise(node, self.emit(terms, None, full), 1.0, shift, out)

    def _slice(self, node, x, slices, out):
        self.gather(x, _positions(self.shapes[self.name(x)])[tuple(slices)], out)

    def op_Slice(self, node, a, ins, out):
        shape = self.shapes[self.name(ins[0])]
        if len(ins) > 1:  # opset >= 10: starts, ends, axes, steps as inputs
            vals = [None if len(ins) <= k or not ins[k] else [int(v) for v in self.const(node, ins[k])]
                    for k in range(1, 5)]
            starts, ends, axes, steps = vals
        else:
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        sl = [slice(None)] * len(shape)
        for s, e, ax, st in zip(starts, ends, axes, steps):
            ax = ax + len(shape) if ax < 0 else ax
            if st == 0:
                raise self.err(node, "slice step 0")
            n = shape[ax]
            s, e = max(-n - 1, min(n + 1, s)), max(-n - 1, min(n + 1, e))  # ONNX clamps; Python would too
            sl[ax] = slice(s, None if (st < 0 and e < -n) else e, st)
        self._slice(node, ins[0], sl, out)

    def op_Split(self, node, a, ins, out):
        shape = self.shapes[self.name(ins[0])]
        axis = int(a.get("axis", 0))
        axis = axis + len(shape) if axis < 0 else axis
        if len(ins) > 1 and ins[1]:
            sizes = [int(v) for v in self.const(node, ins[1])]
        elif "split" in a:
            sizes = [int(v) for v in a["split"]]
        else:
            k = len(node.output)
            step = -(-shape[axis] // k)
            sizes = [min(step, shape[axis] - i * step) for i in range(k)]
        if sum(sizes) != shape[axis] or len(sizes) != len(node.output):
            raise self.err(node, f"split sizes {sizes} do not fit axis {axis} of {shape}")
        start = 0
        for o, n in zip(node.output, sizes):
            sl = [slice(None)] * len(shape)
            sl[axis] = slice(start, start + n)
            start += n
            if o:
                self._slice(node, ins[0], sl, o)

    def op_Gather(self, node, a, ins, out):
        if not self.act(ins[0]) or self.act(ins[1]):
            raise self.err(node, "only Gather of a tensor with constant indices is supported")
        shape = self.shapes[self.name(ins[0])]
        axis = int(a.get("axis", 0))
        idx = np.asarray(self.const(node, ins[1]), np.int64)
        if np.any(idx >= shape[axis]) or np.any(idx < -shape[axis]):
            raise self.err(node, f"index out of range for axis {axis} of {shape}")
        self.gather(ins[0], np.take(_positions(shape), idx, axis=axis), out)

    def _pads(self, node, a, ins, rank):
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise self.err(node, f"Pad mode {mode!r} is not supported (only constant)")
        pads = [int(v) for v in self.const(node, ins[1])] if len(ins) > 1 and ins[1] else list(a["pads"])
        value = float(np.asarray(self.const(node, ins[2])).reshape(-1)[0]) if len(ins) > 2 and ins[2] \
            else float(a.get("value", 0.0))
        axes = [int(v) for v in self.const(node, ins[3])] if len(ins) > 3 and ins[3] else list(range(rank))
        axes = [x + rank if x < 0 else x for x in axes]
        full = [0] * (2 * rank)
        for k, ax in enumerate(axes):
            full[ax], full[rank + ax] = pads[k], pads[len(axes) + k]
        return full, value

    def pad(self, node, x, full, value, out=None):
        shape = self.shapes[self.name(x)]
        rank = len(shape)
        pos = _positions(shape)
        sl = tuple(slice(max(0, -full[i]), shape[i] - max(0, -full[rank + i])) for i in range(rank))
        pos = pos[sl]  # negative pads crop
        width = [(max(0, full[i]), max(0, full[rank + i])) for i in range(rank)]
        idx = np.pad(pos, width, constant_values=-1)
        if value == 0.0:
            return self.gather(x, idx, out)
        return self.elementwise(node, self.gather(x, idx), 1.0, np.where(idx < 0, value, 0.0), out)

    def op_Pad(self, node, a, ins, out):
        rank = len(self.shapes[self.name(ins[0])])
        full, value = self._pads(node, a, ins, rank)
        self.pad(node, ins[0], full, value, out)

    def op_BatchNormalization(self, node, a, ins, out):
        shape = self.shapes[self.name(ins[0])]
        if len(shape) < 2:
            raise self.err(node, "BatchNormalization needs a channel dimension")
        gamma, beta, mean, var = (np.asarray(self.const(node, i), np.float64) for i in ins[1:5])
        scale = gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        bshape = (1, -1) + (1,) * (len(shape) - 2)
        self.elementwise(node, ins[0], scale.reshape(bshape), (beta - mean * scale).reshape(bshape), out)

    def _spatial(self, node, x, a, kernel):
        """``(x as (1, C, H, W), 2-D attrs, restore)``: a 1-D op runs as a 2-D one on ``(C, 1, L)``."""
        shape = self.shapes[self.name(x)]
        if len(shape) not in (3, 4) or shape[0] != 1:
            raise self.err(node, f"only 1-D and 2-D {node.op_type} on (1, C, ...) inputs are supported "
                                 f"(input shape {shape})")
        one_d = len(shape) == 3
        nd = len(shape) - 2
        pads = list(a.get("pads", [0] * 2 * nd))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto not in ("NOTSET", "VALID"):
            raise self.err(node, f"auto_pad={auto!r} is not supported")
        attrs = {k: list(a.get(k, [d] * nd)) for k, d in (("strides", 1), ("dilations", 1))}
        if list(pads[:nd]) != list(pads[nd:]):  # asymmetric: an explicit zero Pad first
            full = [0, 0] + list(pads[:nd]) + [0, 0] + list(pads[nd:])
            x = self.pad(node, x, full, 0.0)
            pads = [0] * (2 * nd)
        if one_d:
            c, L = self.shapes[self.name(x)][1:]
            x = self.reshape(x, (1, c, 1, L))
            attrs = {k: [1] + v for k, v in attrs.items()}
            pads = [0] + pads[:1]
        else:
            pads = pads[:2]
        return x, attrs["strides"], pads, attrs["dilations"], one_d

    def _restore(self, y, one_d, out):
        if not one_d:
            self.alias[out] = y
            return
        s = self.shapes[y]
        self.reshape(y, (1, s[1], s[3]), out)

    def op_Conv(self, node, a, ins, out):
        w = np.asarray(self.const(node, ins[1]), np.float64)
        b = np.asarray(self.const(node, ins[2]), np.float64) if len(ins) > 2 and ins[2] else None
        x, strides, pads, dil, one_d = self._spatial(node, ins[0], a, w.shape[2:])
        if one_d:
            w = w[:, :, None, :]
        shape = self.shapes[self.name(x)]
        groups = int(a.get("group", 1))
        if w.shape[1] * groups != shape[1]:
            raise self.err(node, f"weight {w.shape} with group {groups} does not fit input channels {shape[1]}")
        layer = Conv2d(_t(w), None if b is None else _t(b), shape[1:], strides, pads, dil, groups)
        self._restore(self.emit([(x, layer)]), one_d, out)

    def op_ConvTranspose(self, node, a, ins, out):
        if "output_shape" in a:
            raise self.err(node, "ConvTranspose with output_shape is not supported (give pads instead)")
        w = np.asarray(self.const(node, ins[1]), np.float64)
        b = np.asarray(self.const(node, ins[2]), np.float64) if len(ins) > 2 and ins[2] else None
        shape = self.shapes[self.name(ins[0])]
        if len(shape) != 4 or shape[0] != 1:
            raise self.err(node, f"only 2-D ConvTranspose on (1, C, H, W) inputs is supported (input shape {shape})")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[:2] != pads[2:]:
            raise self.err(node, f"asymmetric padding {pads} is not supported")
        auto = a.get("auto_pad", b"NOTSET")
        if (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "VALID"):
            raise self.err(node, f"auto_pad={auto!r} is not supported")
        layer = ConvTranspose2d(_t(w), None if b is None else _t(b), shape[1:], list(a.get("strides", [1, 1])),
                                pads[:2], list(a.get("output_padding", [0, 0])), list(a.get("dilations", [1, 1])),
                                int(a.get("group", 1)))
        self.emit([(ins[0], layer)], out)

    def op_AveragePool(self, node, a, ins, out):
        k = list(a["kernel_shape"])
        if a.get("ceil_mode", 0):
            raise self.err(node, "AveragePool with ceil_mode=1 is not supported")
        if any(a.get("pads", [0])) and not a.get("count_include_pad", 0):
            raise self.err(node, "AveragePool with padding and count_include_pad=0 is not supported")
        c = self.shapes[self.name(ins[0])][1]
        x, strides, pads, dil, one_d = self._spatial(node, ins[0], a, k)
        kk = [1] + k if one_d else k
        w = np.full((c, 1, *kk), 1.0 / math.prod(k))
        layer = Conv2d(_t(w), None, self.shapes[self.name(x)][1:], strides, pads, dil, c)
        self._restore(self.emit([(x, layer)]), one_d, out)


def _fold(g: _Ops, node, chain_fold):
    """A node whose inputs are all constants: the chain loader's folding plus the ops graphs add."""
    from bnb.io.onnx_loader import _attrs
    op, a = node.op_type, _attrs(node, g.path)
    vals = [g.consts[i] if i else None for i in node.input]
    try:
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
        if op == "Slice" and len(vals) > 1:
            x = vals[0]
            starts, ends = vals[1], vals[2]
            axes = vals[3] if len(vals) > 3 and vals[3] is not None else range(len(starts))
            steps = vals[4] if len(vals) > 4 and vals[4] is not None else [1] * len(starts)
            sl = [slice(None)] * x.ndim
            for s, e, ax, st in zip(starts, ends, axes, steps):
                sl[int(ax)] = slice(int(s), int(e), int(st))
            return x[tuple(sl)]
    except Exception as e:
        raise g.err(node, f"cannot evaluate on constants: {e}") from None
    holder = type("G", (), {})()
    holder.consts, holder.path, holder.err = g.consts, g.path, g.err
    chain_fold(holder, node)
    return g.consts[node.output[0]]


# --------------------------------------------------------------------------------------- pass 2: lowering
def _live_ops(ops, out):
    """The ops the output depends on, in order."""
    needed, keep = {out}, []
    for op in reversed(ops):
        if op[1] in needed:
            keep.append(op)
            needed.update([t[0] for t in op[2]] if op[0] == "affine" else [op[2]])
    return keep[::-1]


def _lower(ops, inp, out, shapes):
    """The chain of layers (see the module docstring) computing ``out`` from ``inp``."""
    ops = _live_ops(ops, out)
    uses: dict[str, int] = {out: 1}
    for op in ops:
        for name in ([t[0] for t in op[2]] if op[0] == "affine" else [op[2]]):
            uses[name] = uses.get(name, 0) + 1
    size = {k: math.prod(v) for k, v in shapes.items()}
    live, nonneg, layers = [inp], set(), []

    def stage(in_slots, out_slots, terms):
        """Append a Stage from ``in_slots`` to ``out_slots`` (names; terms (j, s, layer)) unless it is the identity."""
        if in_slots == out_slots and all(isinstance(t[2], Reshape) for t in terms) and len(terms) == len(in_slots):
            return
        if len(in_slots) == 1 and len(out_slots) == 1 and len(terms) == 1:
            layers.append(terms[0][2])  # a chain step: the op's own layer
            return
        layers.append(Stage([size[n] for n in in_slots], [size[n] for n in out_slots], terms))

    def carry(names, slots):
        return [(slots.index(n), names.index(n), Reshape((size[n],), (size[n],))) for n in names if n in slots]

    for kind, name, arg in ops:
        consumed = [t[0] for t in arg] if kind == "affine" else [arg]
        for c in consumed:
            uses[c] -= 1
        kept = [n for n in live if uses[n] > 0]
        if kind == "affine":
            outs = kept + [name]
            terms = carry(live, kept) + [(len(kept), live.index(i), layer) for i, layer in arg]
            stage(live, outs, terms)
            live = outs
            continue
        # ReLU on the whole state: the non-negative tensors pass; any other carried tensor t goes as (t, -t)
        pre, terms, post_terms = [], [], []
        for n in kept:
            s = live.index(n)
            pre.append(n)
            terms.append((len(pre) - 1, s, Reshape((size[n],), (size[n],))))
            if n not in nonneg:
                pre.append(f"{n}__neg")
                terms.append((len(pre) - 1, s, ElementwiseAffine(-torch.ones(size[n], dtype=torch.float64),
                                                                 torch.zeros(size[n], dtype=torch.float64))))
        pre.append(name)
        terms.append((len(pre) - 1, live.index(arg), Reshape((size[arg],), (size[arg],))))
        size[name] = size[arg]
        for p in pre:
            size.setdefault(p, size.get(p[:-5], 0) if p.endswith("__neg") else size[p])
        stage(live, pre, terms)
        layers.append(ReLU((sum(size[p] for p in pre),)))
        outs = kept + [name]
        for j, n in enumerate(outs):
            post_terms.append((j, pre.index(n), Reshape((size[n],), (size[n],))))
            if n in kept and n not in nonneg:
                post_terms.append((j, pre.index(f"{n}__neg"),
                                   ElementwiseAffine(-torch.ones(size[n], dtype=torch.float64),
                                                     torch.zeros(size[n], dtype=torch.float64))))
        stage(pre, outs, post_terms)
        nonneg.add(name)
        live = outs
    if live != [out]:
        stage(live, [out], carry(live, [out]))
    return _merge_stages(layers)


def _compose(a: Stage, b: Stage):
    """One Stage computing ``b(a(x))``, when every term of ``b`` meets only reshapes (a carried tensor) on one side:
    then each composed term is still a single primitive layer. None otherwise."""
    by_slot: dict[int, list] = {}
    for t in a.terms:
        by_slot.setdefault(t[0], []).append(t)
    terms = []
    for j, k, lb in b.terms:
        if k is None:
            return None
        if isinstance(lb, Reshape):  # b carries slot k: a's terms for it go to slot j
            terms += [(j, s, la) for _, s, la in by_slot[k]]
        elif len(by_slot[k]) == 1 and isinstance(by_slot[k][0][2], Reshape):  # a carried what b maps
            terms.append((j, by_slot[k][0][1], lb))
        elif len(by_slot[k]) == 1 and isinstance(by_slot[k][0][2], Gather) and isinstance(lb, Gather):
            ga = by_slot[k][0][2]  # two index maps: one
            idx = torch.cat([ga.index, torch.tensor([-1])])[lb.index.clamp(max=ga.out_size)]
            idx = torch.where(lb.index >= lb.in_size, -1, torch.where(idx >= ga.in_size, -1, idx))
            terms.append((j, by_slot[k][0][1], Gather(ga.in_shape, lb.out_shape, idx)))
        else:
            return None
    return Stage(a.in_sizes, b.out_sizes, terms)


def _merge_stages(layers):
    """Compose consecutive Stages where :func:`_compose` can (fewer, larger steps: less work per back-substitution)."""
    out = []
    for layer in layers:
        if out and isinstance(out[-1], Stage) and isinstance(layer, Stage):
            merged = _compose(out[-1], layer)
            if merged is not None:
                out[-1] = merged
                continue
        out.append(layer)
    return [l.terms[0][2] if isinstance(l, Stage) and len(l.terms) == 1 and len(l.in_sizes) == 1
            and l.terms[0][1] is not None else l for l in out]


def _adapt(layers, in_shape):
    """Reshapes between consecutive layers whose shapes differ only in form (same size)."""
    out, shape = [], tuple(in_shape)
    for layer in layers:
        if layer.in_shape != shape:
            if math.prod(layer.in_shape) != math.prod(shape):
                raise ValueError(f"layer {layer!r} expects {layer.in_shape}, gets {shape}")
            out.append(Reshape(shape, layer.in_shape))
        out.append(layer)
        shape = layer.out_shape
    if len(shape) != 1:
        out.append(Reshape(shape, (math.prod(shape),)))
    return out
