"""The data path of an ONNX model as ops on named tensors, the form every operator converts into
(:mod:`bnb.io.onnx_ops`) and the lowering reads (:mod:`bnb.io.onnx_lowering`).

A tensor on the data path is computed from the network input; every other tensor is a constant. Data tensors
keep their full ONNX shapes (the leading batch dimension of size 1 included, so that an op may act on any axis).
An op is either ``("affine", out, [(in, layer), ...])``, ``out`` the sum of the terms (a layer from
:mod:`relaxations.layers` applied to a data tensor), ``("relu", out, in)`` or ``("act", out, in, (kind, param))``
(another activation: ``sigmoid``, ``tanh``, ``softplus``, ``leaky_relu`` with its slope). Elementwise maps and
reshapes of a tensor with a batch dimension of 1 act on its per-sample shape (:func:`sample_form`), as the layers of
a chain do.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from bnb.io.onnx_nodes import node_error
from relaxations.layers import ElementwiseAffine, Gather, Reshape


def as_tensor(a) -> torch.Tensor:
    """A C-contiguous, writable ``float64`` tensor of ``a`` (copied only where it has to be)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    if not a.flags.writeable:  # a broadcast view
        a = a.copy()
    return torch.from_numpy(a)


def sample_form(shape: tuple) -> tuple:
    """The shape a shape-agnostic layer (elementwise map, reshape) takes for a tensor of full ONNX shape ``shape``:
    the per-sample shape where the leading dimension is a batch of 1, else the full shape."""
    return tuple(shape[1:]) if len(shape) > 1 and shape[0] == 1 else tuple(shape)


def positions(shape) -> np.ndarray:
    """The flat position of every element of ``shape``: an index map's identity."""
    return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)


def gather_layer(shape, index_array) -> Gather:
    """The Gather from a tensor of shape ``shape`` to one of ``index_array``'s shape that picks ``index_array``
    (flat positions in ``shape``, ``-1`` for zeros)."""
    index_array = np.asarray(index_array)
    return Gather(shape, index_array.shape, torch.from_numpy(
        np.ascontiguousarray(index_array.reshape(-1), dtype=np.int64)))


def _filled(value, shape: tuple, form: tuple) -> torch.Tensor:
    """``value`` (a number or an array that broadcasts to ``shape``) broadcast to ``shape``, in the form ``form``."""
    if np.ndim(value) == 0:
        return torch.full(form, float(value), dtype=torch.float64)
    return as_tensor(np.broadcast_to(value, shape).reshape(form))


class Dataflow:
    """Constants, data tensors and the ops computing them, for one model (file ``path``, for errors)."""

    def __init__(self, consts: dict, path):
        self.consts, self.path = consts, path
        self.shapes: dict[str, tuple] = {}  # data tensor -> full ONNX shape
        self.alias: dict[str, str] = {}  # output of an identity op -> the tensor it passes on
        self.ops: list[tuple] = []
        self._tmp = 0

    def err(self, node, msg):
        """The one-line error about ``node`` (:func:`~bnb.io.onnx_nodes.node_error`)."""
        return node_error(node, msg, self.path)

    def name(self, n: str) -> str:
        """The tensor that ``n`` names (an identity op's output names its input)."""
        return self.alias.get(n, n)

    def act(self, n: str) -> bool:
        """Whether ``n`` is a data tensor (computed from the input)."""
        return bool(n) and self.alias.get(n, n) in self.shapes

    def shape(self, n: str) -> tuple:
        """The full ONNX shape of data tensor ``n``."""
        return self.shapes[self.name(n)]

    def const(self, node, n: str) -> np.ndarray:
        """The value of ``n``, an input of ``node`` that must be a constant."""
        if n not in self.consts:
            raise self.err(node, f"input {n!r} must be a constant here")
        return self.consts[n]

    def relu(self, x: str, out: str):
        """``out = relu(x)``."""
        x = self.name(x)
        self.shapes[out] = self.shapes[x]
        self.ops.append(("relu", out, x))

    def activation(self, x: str, out: str, kind: str, param=None):
        """``out = f(x)`` for a non-ReLU activation ``kind`` (``param``: LeakyRelu's slope)."""
        x = self.name(x)
        self.shapes[out] = self.shapes[x]
        self.ops.append(("act", out, x, (kind, param)))

    def emit(self, terms, out=None, shape=None) -> str:
        """Add ``out = sum of layer(in)`` over ``terms`` ``[(in, layer)]``, of full shape ``shape`` (by default
        ``(1, *out_shape)`` of the first layer); returns ``out`` (a fresh name when None)."""
        if out is None:
            self._tmp += 1
            out = f"__bnb_tmp{self._tmp}"
        shape = tuple(shape if shape is not None else (1, *terms[0][1].out_shape))
        self.shapes[out] = shape
        self.ops.append(("affine", out, [(self.name(i), layer) for i, layer in terms]))
        return out

    def elementwise(self, node, x: str, scale, shift, out=None) -> str:
        """``out = scale * x + shift``, the constants broadcast to ``x``'s shape (never beyond it)."""
        shape = self.shape(x)
        arrays = [np.shape(v) for v in (scale, shift) if np.ndim(v)]
        if arrays:
            try:
                full = np.broadcast_shapes(*arrays, shape)
            except ValueError:
                raise self.err(node, f"constant does not broadcast to the data shape {shape}") from None
            if tuple(full) != shape:
                raise self.err(node, f"constant would change the data shape {shape} to {tuple(full)}")
        form = sample_form(shape)
        layer = ElementwiseAffine(_filled(scale, shape, form), _filled(shift, shape, form))
        return self.emit([(x, layer)], out, shape)

    def reshape(self, x: str, new_shape, out=None) -> str:
        """``out`` = ``x`` in the full ONNX shape ``new_shape`` (same size, row-major order)."""
        shape, new_shape = self.shape(x), tuple(int(s) for s in new_shape)
        if len(shape) > 1 and len(new_shape) > 1 and shape[0] == new_shape[0] == 1:
            layer = Reshape(shape[1:], new_shape[1:])
        else:
            layer = Reshape(shape, new_shape)
        return self.emit([(x, layer)], out, new_shape)

    def gather(self, x: str, index_array, out=None) -> str:
        """``out`` = the elements of ``x`` at ``index_array`` (flat positions, ``-1``: zero)."""
        return self.emit([(x, gather_layer(self.shape(x), index_array))], out, np.shape(index_array))

    def pad(self, node, x: str, full, value: float, out=None) -> str:
        """Constant padding by ``full`` (ONNX ``pads`` for every axis: all begins, then all ends; negative crops)."""
        shape = self.shape(x)
        rank = len(shape)
        pos = positions(shape)
        sl = tuple(slice(max(0, -full[i]), shape[i] - max(0, -full[rank + i])) for i in range(rank))
        pos = pos[sl]
        width = [(max(0, full[i]), max(0, full[rank + i])) for i in range(rank)]
        idx = np.pad(pos, width, constant_values=-1)
        if value == 0.0:
            return self.gather(x, idx, out)
        return self.elementwise(node, self.gather(x, idx), 1.0, np.where(idx < 0, value, 0.0), out)
