"""ONNX -> :class:`relaxations.network.Network`, checked against onnxruntime after every load.

The loader walks the graph in its (topological) node order and tracks one data path: every tensor is
either a constant (initialisers, ``Constant`` nodes and anything computed only from them) or the
activation. Each node on the activation becomes one of a small set of layers; anything else is a
:class:`~bnb.errors.ModelError` naming the op and the node. Shapes on the activation are ONNX shapes
``(1, *per_sample)``: the leading batch dimension must be 1 (or symbolic).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from bnb.errors import ModelError, unreadable
from bnb.io.onnx_proto import attribute_value, parse_model, to_array
from relaxations.layers import Conv2d, ElementwiseAffine, Linear, ReLU, Reshape
from relaxations.network import Network

SUPPORTED_OPS = ("Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Neg", "Relu", "Flatten", "Reshape",
                 "Constant", "Identity", "Dropout", "Conv", "BatchNormalization", "Transpose",
                 "Squeeze", "Unsqueeze")


class LoadedModel:
    """A converted network together with what is needed to replay points on the original model."""

    def __init__(self, path: Path, network: Network, onnx_input_shape, input_name: str, batchable: bool,
                 model_bytes: bytes):
        self.path = path
        self.network = network
        self.onnx_input_shape = tuple(onnx_input_shape)
        self.input_name = input_name
        self.batchable = batchable
        self._bytes = model_bytes
        self._session = None
        self._net32 = None  # float32 copy of the network, for the check's rounding scale
        self.load_checked = False  # set by the first check that passes (every check batch holds the load box)

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(self._bytes, opts, providers=["CPUExecutionProvider"])
        return self._session

    def run_onnx(self, x: np.ndarray) -> np.ndarray:
        """Evaluate the original ONNX model on float32 points ``(N, in_size)`` -> ``(N, out_size)`` float64."""
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        sess = self.session
        if self.batchable and len(x) > 1:
            out = sess.run(None, {self.input_name: x.reshape(len(x), *self.onnx_input_shape[1:])})[0]
            return out.reshape(len(x), -1).astype(np.float64)
        rows = [sess.run(None, {self.input_name: xi.reshape(self.onnx_input_shape)})[0].reshape(-1)
                for xi in x]
        return np.stack(rows).astype(np.float64)

    def _rounding_scale(self, x: np.ndarray, boxes: list[int]) -> np.ndarray:
        """``(K, 1)``: how far float32 rounding moves this network's outputs at points like ``x`` ``(K, n_in)``:
        per box (``boxes[k]``: the box of point ``k``), the largest ``|f64(x) - f32(x)|`` of the converted network
        evaluated in both precisions. onnxruntime rounds the same sums in another order, so its error is of the
        same size; it is measured at the points themselves, so a box far from the origin gets the large
        rounding it really has, and a deep network is not charged for worst-case growth it does not show."""
        if self._net32 is None:
            self._net32 = self.network.to(dtype=torch.float32)
        with torch.no_grad():
            y64 = self.network.forward(torch.from_numpy(x.astype(np.float64))).numpy()
            y32 = self._net32.forward(torch.from_numpy(x.astype(np.float32))).double().numpy()
        dev = np.abs(y64 - y32).max(axis=1)
        dev = np.where(np.isfinite(dev), dev, np.inf)
        ids = np.asarray(boxes)
        per_box = np.array([dev[ids == b].max() for b in range(ids.max() + 1)])
        return per_box[ids][:, None]

    def load_box(self):
        """The box of the load check: inputs near the usual ranges of normalised data, ``[-1, 1]``."""
        lo = -np.ones(self.network.in_size)
        return lo, -lo

    def check_load(self):
        """The check every load gets (verify folds it into :meth:`check_property`'s batch)."""
        self.check_boxes([self.load_box()])
        self.load_checked = True

    def check_property(self, boxes, seed: int = 0):
        """Check the property's ``boxes``, with the load box too on this model's first check: one batch."""
        first = [] if self.load_checked else [self.load_box()]
        self.check_boxes(first + list(boxes), seed=seed)
        self.load_checked = True

    def check(self, lower: np.ndarray, upper: np.ndarray, n_random: int = 64, seed: int = 0,
              rtol: float = 1e-4, atol: float = 1e-4):
        """:meth:`check_boxes` on one box."""
        self.check_boxes([(lower, upper)], n_random, seed, rtol, atol)

    def check_boxes(self, boxes, n_random: int = 64, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-4,
                    slack: float = 100.0):
        """Compare the converted network with onnxruntime on random points, the centre and corners of each box
        ``(lower, upper)``: one batch of points, one forward pass and one onnxruntime run (one session per model).

        Raises :class:`ModelError` on a mismatch beyond ``atol + rtol |onnx| + slack * s``, where ``s`` is the
        rounding scale of the box (:meth:`_rounding_scale`: how much float32 evaluation moves the converted
        network's outputs there). A misread model errs by about the size of the outputs; rounding, by ``s``.
        """
        rng = np.random.default_rng(seed)
        pts, ids = [], []
        for b, (lower, upper) in enumerate(boxes):
            lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
            n = lower.size
            box_pts = [lower + (upper - lower) * rng.random((n_random, n)), ((lower + upper) / 2)[None]]
            if n <= 8:  # every corner
                bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None]) & 1
            else:  # a sample of corners
                bits = rng.integers(0, 2, size=(32, n))
            box_pts.append(np.where(bits == 1, upper, lower))
            pts += box_pts
            ids += [b] * sum(len(p) for p in box_pts)
        x = np.concatenate(pts).astype(np.float32)
        ours = self.network.forward(torch.from_numpy(x.astype(np.float64))).numpy()
        ref = self.run_onnx(x)
        err = np.abs(ours - ref)
        tol = atol + rtol * np.abs(ref) + slack * self._rounding_scale(x, ids)
        if not np.all(err <= tol):  # (NaN anywhere fails too)
            worst = float(np.nanmax(err - tol)) if np.isfinite(err - tol).any() else float("nan")
            raise ModelError(f"converted network disagrees with onnxruntime (max excess error {worst:.3g}); "
                             "refusing to verify a misread model", self.path)


def load_onnx(path, check: bool = True) -> LoadedModel:
    """Load and convert an ONNX file; with ``check``, compare with onnxruntime on random points."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise unreadable(e, path) from None
    try:
        model = parse_model(data)
    except Exception as e:  # protobuf raises several types
        raise ModelError(f"not a readable ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'parse error'})", path) from None
    if len(model.graph.node) == 0:
        raise ModelError("not a readable ONNX model (empty graph)", path)
    net, in_shape, in_name, batchable = _convert(model, path)
    loaded = LoadedModel(path, net, in_shape, in_name, batchable, data)
    if check:
        loaded.check_load()
    return loaded


# ---------------------------------------------------------------------------------------- conversion
class _Graph:
    def __init__(self, model, path):
        self.path = path
        self.consts: dict[str, np.ndarray] = {t.name: _tensor(t, path) for t in model.graph.initializer}
        self.act_name: str | None = None
        self.act_shape: tuple | None = None  # ONNX shape (1, *per_sample)
        self.layers = []

    def err(self, node, msg):
        return ModelError(f"node {node.name or '(unnamed)'} ({node.op_type}): {msg}", self.path)

    def const(self, node, name):
        if name not in self.consts:
            raise self.err(node, f"input {name!r} must be a constant here")
        return self.consts[name]

    def is_act(self, name):
        return name == self.act_name

    def push(self, layer, out_name):
        self.layers.append(layer)
        self.act_name = out_name
        self.act_shape = (1, *layer.out_shape)

    def per_sample(self, node, arr):
        """Broadcast a constant against the activation; returns it at per-sample shape."""
        arr = np.asarray(arr, dtype=np.float64)
        try:
            full = np.broadcast_shapes(arr.shape, self.act_shape)
        except ValueError:
            raise self.err(node, f"constant of shape {arr.shape} does not broadcast to {self.act_shape}") from None
        if tuple(full) != tuple(self.act_shape):
            raise self.err(node, f"constant of shape {arr.shape} would change the data shape {self.act_shape}")
        return np.broadcast_to(arr, self.act_shape)[0].copy()


def _tensor(t, path, node=None) -> np.ndarray:
    """A constant tensor, floats as float64."""
    try:
        v = to_array(t)
    except ValueError as e:
        where = f"node {node.name or '(unnamed)'} ({node.op_type}): " if node is not None else ""
        raise ModelError(f"{where}{e}", path) from None
    return v.astype(np.float64) if v.dtype.kind == "f" else v


def _attrs(node, path=None):
    try:
        return {a.name: attribute_value(a) for a in node.attribute}
    except ValueError as e:
        raise ModelError(f"node {node.name or '(unnamed)'} ({node.op_type}): {e}", path) from None


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


class _GraphNeeded(ModelError):
    """The sequential converter cannot read this model as a chain; :mod:`bnb.io.onnx_graph` may."""


def _network_input(model, consts, path):
    """``(input ValueInfo, ONNX input shape (1, *per_sample), batchable)``; the one network input, checked."""
    inputs = [i for i in model.graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise ModelError(f"expected exactly one network input, found {len(inputs)}", path)
    inp = inputs[0]
    dims = inp.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if not shape or any(s is None for s in shape[1:]):
        raise ModelError(f"input {inp.name!r} needs a static shape (got {shape})", path)
    batchable = shape[0] is None or (dims[0].HasField("dim_param"))
    if shape[0] not in (None, 1):
        raise ModelError(f"input {inp.name!r} has batch size {shape[0]}; only 1 is supported", path)
    if len(shape) < 2:
        raise ModelError(f"input {inp.name!r} of shape {shape} has no batch dimension", path)
    onnx_in_shape = (1, *shape[1:])
    return inp, onnx_in_shape, batchable


def _convert(model, path):
    """The sequential converter first; a model that is not a chain of supported ops goes to the graph one."""
    try:
        return _convert_chain(model, path)
    except _GraphNeeded:
        from bnb.io.onnx_graph import convert_graph
        return convert_graph(model, path)


def _convert_chain(model, path):
    g = _Graph(model, path)
    inp, onnx_in_shape, batchable = _network_input(model, g.consts, path)
    g.act_name, g.act_shape = inp.name, onnx_in_shape
    per_sample_in = onnx_in_shape[1:]

    for node in model.graph.node:
        op = node.op_type
        ins = [i for i in node.input]
        out = node.output[0] if node.output else None
        uses_act = any(g.is_act(i) for i in ins if i)
        if op == "Constant":
            a = _attrs(node, path)
            if "value" not in a:
                raise g.err(node, "only tensor-valued Constant nodes are supported")
            g.consts[out] = _tensor(a["value"], path, node)
            continue
        if not uses_act:
            if all((not i) or i in g.consts for i in ins):
                _fold_constant(g, node)
                continue
            raise _GraphNeeded("does not act on the network's data path", path)
        if op not in SUPPORTED_OPS:
            raise _GraphNeeded(f"operator {op!r}", path)
        if any(i and not g.is_act(i) and i not in g.consts for i in ins):
            raise _GraphNeeded("an input computed earlier on the data path", path)
        if op in ("Add", "Sub", "Mul", "MatMul", "Gemm") and all(g.is_act(i) for i in ins if i):
            raise _GraphNeeded("two tensors on the data path", path)
        _convert_node(g, node, op, ins, out)

    outs = [o.name for o in model.graph.output]
    if len(outs) != 1:
        raise ModelError(f"expected exactly one network output, found {len(outs)}", path)
    if outs[0] != g.act_name:
        raise _GraphNeeded(f"graph output {outs[0]!r} is not computed from the input by supported ops", path)
    try:
        net = Network(g.layers, per_sample_in).simplified()
    except ValueError as e:
        raise ModelError(f"inconsistent shapes: {e}", path) from None
    return net, onnx_in_shape, inp.name, batchable


def _fold_constant(g: _Graph, node):
    """Evaluate a node whose inputs are all constants (shape arithmetic in exported graphs)."""
    op, a = node.op_type, _attrs(node, g.path)
    vals = [g.consts[i] if i else None for i in node.input]
    try:
        if op in ("Identity", "Dropout"):
            r = vals[0]
        elif op == "Add":
            r = vals[0] + vals[1]
        elif op == "Sub":
            r = vals[0] - vals[1]
        elif op == "Mul":
            r = vals[0] * vals[1]
        elif op == "Div":
            r = vals[0] / vals[1]
        elif op == "Neg":
            r = -vals[0]
        elif op == "Reshape":
            r = vals[0].reshape([int(s) for s in vals[1]])
        elif op == "Transpose":
            r = np.transpose(vals[0], a.get("perm"))
        elif op == "Unsqueeze":
            axes = a.get("axes", None) if len(vals) < 2 else [int(x) for x in vals[1]]
            r = vals[0]
            for ax in sorted(axes):
                r = np.expand_dims(r, ax)
        elif op == "Squeeze":
            axes = a.get("axes", None) if len(vals) < 2 else [int(x) for x in vals[1]]
            r = np.squeeze(vals[0], axis=None if axes is None else tuple(axes))
        elif op == "Cast":
            r = vals[0]
        else:
            raise g.err(node, f"unsupported operator {op!r} on constants")
    except ModelError:
        raise
    except Exception as e:
        raise g.err(node, f"cannot evaluate on constants: {e}") from None
    g.consts[node.output[0]] = r


def _reshape_to(g: _Graph, node, new_shape, out):
    new_shape = tuple(int(s) for s in new_shape)
    if math.prod(new_shape) != math.prod(g.act_shape):
        raise g.err(node, f"cannot reshape {g.act_shape} to {new_shape}")
    if len(new_shape) < 2 or new_shape[0] != 1:
        raise _GraphNeeded(g.err(node, f"result shape {new_shape} loses the batch dimension").message, g.path)
    g.push(Reshape(g.act_shape[1:], new_shape[1:]), out)


def _convert_node(g: _Graph, node, op, ins, out):
    a = _attrs(node, g.path)
    shape = g.act_shape
    if op in ("Identity", "Dropout"):
        g.act_name = out
    elif op == "Relu":
        g.push(ReLU(shape[1:]), out)
    elif op == "Flatten":
        axis = a.get("axis", 1)
        axis = axis + len(shape) if axis < 0 else axis
        if axis > 1:
            raise _GraphNeeded(g.err(node, f"Flatten with axis {axis} keeps per-sample dimensions apart; only axis 0/1").message, g.path)
        _reshape_to(g, node, (1, math.prod(shape[1:])), out)
    elif op == "Reshape":
        target = [int(s) for s in g.const(node, ins[1])]
        target = [shape[i] if (s == 0 and not a.get("allowzero", 0)) else s for i, s in enumerate(target)]
        try:
            new_shape = np.empty(shape, dtype=np.int8).reshape(target).shape
        except ValueError:
            raise g.err(node, f"cannot reshape {shape} to {target}") from None
        _reshape_to(g, node, new_shape, out)
    elif op == "Transpose":
        perm = list(a.get("perm", reversed(range(len(shape)))))
        moved = [p for p in perm if shape[p] != 1]
        if moved != sorted(moved):
            raise _GraphNeeded(g.err(node, f"Transpose with perm {perm} on shape {shape} reorders data; unsupported").message, g.path)
        _reshape_to(g, node, [shape[p] for p in perm], out)
    elif op in ("Squeeze", "Unsqueeze"):
        axes = a.get("axes") if len(ins) < 2 else [int(x) for x in g.const(node, ins[1])]
        if op == "Squeeze":
            if axes is None:
                axes = [i for i, s in enumerate(shape) if s == 1 and i > 0]
            axes = [x + len(shape) if x < 0 else x for x in axes]
            if any(shape[x] != 1 for x in axes):
                raise g.err(node, f"cannot squeeze axes {axes} of shape {shape}")
            new = [s for i, s in enumerate(shape) if i not in axes]
        else:
            rank = len(shape) + len(axes)
            axes = sorted(x + rank if x < 0 else x for x in axes)
            new = list(shape)
            for x in axes:
                new.insert(x, 1)
        _reshape_to(g, node, new, out)
    elif op in ("Add", "Sub", "Mul", "Div", "Neg"):
        _elementwise(g, node, op, ins, out)
    elif op == "MatMul":
        if not g.is_act(ins[0]):
            raise _GraphNeeded(g.err(node, "MatMul with the activation as second operand is not supported").message, g.path)
        w = g.const(node, ins[1])
        if len(shape) != 2 or w.ndim != 2 or w.shape[0] != shape[1]:
            raise _GraphNeeded(g.err(node, f"MatMul of activation {shape} with weight {w.shape} is not a supported dense layer").message, g.path)
        g.push(Linear(_t(w.T), None), out)
    elif op == "Gemm":
        if not g.is_act(ins[0]):
            raise _GraphNeeded(g.err(node, "Gemm with the activation as B is not supported").message, g.path)
        if a.get("transA", 0):
            raise _GraphNeeded(g.err(node, "Gemm with transA=1 on the activation is not supported").message, g.path)
        w = g.const(node, ins[1])
        w = w.T if a.get("transB", 0) else w  # now (in, out)
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if len(shape) != 2 or w.ndim != 2 or w.shape[0] != shape[1]:
            raise g.err(node, f"Gemm of activation {shape} with weight {w.shape} does not fit")
        bias = None
        if len(ins) > 2 and ins[2]:
            c = np.asarray(g.const(node, ins[2]), np.float64)
            bias = beta * np.broadcast_to(c, (1, w.shape[1])).reshape(-1)
        g.push(Linear(_t(alpha * w.T), None if bias is None else _t(bias)), out)
    elif op == "Conv":
        _conv(g, node, a, ins, out)
    elif op == "BatchNormalization":
        if len(shape) < 2:
            raise g.err(node, "BatchNormalization needs a channel dimension")
        gamma, beta, mean, var = (np.asarray(g.const(node, i), np.float64) for i in ins[1:5])
        eps = float(a.get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        bshape = (1, -1) + (1,) * (len(shape) - 2)
        g.push(ElementwiseAffine(_t(g.per_sample(node, scale.reshape(bshape))),
                                 _t(g.per_sample(node, shift.reshape(bshape)))), out)
    else:  # pragma: no cover - SUPPORTED_OPS and this dispatch are kept in step
        raise g.err(node, f"unsupported operator {op!r}")


def _elementwise(g: _Graph, node, op, ins, out):
    shape = g.act_shape
    if op == "Neg":
        scale, shift = -np.ones(shape[1:]), np.zeros(shape[1:])
    else:
        act_first = g.is_act(ins[0])
        c = g.per_sample(node, g.const(node, ins[1] if act_first else ins[0]))
        one, zero = np.ones(shape[1:]), np.zeros(shape[1:])
        if op == "Add":
            scale, shift = one, c
        elif op == "Sub":
            scale, shift = (one, -c) if act_first else (-one, c)
        elif op == "Mul":
            scale, shift = c, zero
        else:  # Div
            if not act_first:
                raise g.err(node, "division by the activation is not supported")
            if np.any(c == 0):
                raise g.err(node, "division by zero")
            scale, shift = 1.0 / c, zero
    g.push(ElementwiseAffine(_t(scale), _t(shift)), out)


def _conv(g: _Graph, node, a, ins, out):
    shape = g.act_shape
    if len(shape) != 4:
        raise _GraphNeeded(g.err(node, f"only 2-D convolutions are supported (input shape {shape})").message, g.path)
    w = g.const(node, ins[1])
    b = g.const(node, ins[2]) if len(ins) > 2 and ins[2] else None
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise g.err(node, f"auto_pad={a['auto_pad']!r} is not supported")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise _GraphNeeded(g.err(node, f"asymmetric padding {pads} is not supported").message, g.path)
    groups = int(a.get("group", 1))
    if w.shape[1] * groups != shape[1]:
        raise g.err(node, f"weight {w.shape} with group {groups} does not fit input channels {shape[1]}")
    layer = Conv2d(_t(w), None if b is None else _t(b), shape[1:], tuple(a.get("strides", [1, 1])),
                   (pads[0], pads[1]), tuple(a.get("dilations", [1, 1])), groups)
    g.push(layer, out)
