"""The common layer interface."""
from __future__ import annotations

import copy
import math

import torch

from relaxations.fp import err_coeff, tiny, unit_roundoff


class Layer:
    """One operation of a network, acting on a batch of per-sample tensors.

    Every layer knows its per-sample ``in_shape`` and ``out_shape`` (no batch dimension) and offers:

    - ``forward(x)``: ``(N, *in) -> (N, *out)``.
    - ``interval(l, u)``: elementwise bounds ``(N, *in)`` to ``(N, *out)``; rigorous: they hold in real
      arithmetic for any input in the box, the rounding of their own computation included.
    - ``backward(A)`` (affine layers only): for ``A`` of shape ``(N, m, *out)`` return ``(A', c)`` with
      ``A'`` of shape ``(N, m, *in)`` and ``c`` of shape ``(N, m)`` (or ``None`` for no constant), such
      that ``A . layer(x) = A' . x + c`` for every ``x`` (up to the rounding that ``err_weight`` bounds).
    - ``linear(x)``, ``abs_linear(r)``, ``offset()`` (affine layers): ``W x``, ``|W| r`` and ``b``.
    - ``magnitude(r)`` (affine layers): ``|W| r + |b|`` ``(N, *in) -> (N, *out)`` for ``r >= 0``, the size of
      the terms the layer sums when ``|x| <= r``; ``reach_out(r)``: a rigorous bound on ``|layer(x)|``.
    - ``err_weight(r)`` (affine layers): ``(w (N, *out) or None, under (N, 1))`` such that
      ``<|A|, w> + under`` bounds ``|A . layer(x) - (A' . x + c)|`` for the computed ``A'``, ``c`` and every
      ``|x| <= r`` (``r``: ``(N, *in)``); a weight rather than a value, so that back-substitution can add it to
      the other weights on the same ``|A|`` and take one product.

    ``rep_err`` is the relative error with which the layer's tensors represent the network's real parameters:
    0 unless :meth:`to` cast them to a dtype that could not hold them exactly.
    """

    affine = True  # False for the non-linear layers (ReLU), which bounding methods relax themselves
    rep_err = 0.0

    def __init__(self, in_shape, out_shape):
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)

    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)

    # summation lengths: terms per output of forward/interval, per coefficient or constant of backward
    n_forward = 1
    n_backward = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def linear(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Affine layers: the linear part alone, ``W x`` ``(N, *in) -> (N, *out)``."""
        raise NotImplementedError

    def abs_linear(self, r: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Affine layers: ``|W| r`` ``(N, *in) -> (N, *out)``."""
        raise NotImplementedError

    def offset(self) -> torch.Tensor:  # pragma: no cover - interface
        """Affine layers: the constant ``b``, broadcastable to ``(N, *out)``."""
        raise NotImplementedError

    def interval(self, l: torch.Tensor, u: torch.Tensor):
        """Centre/radius form ``W c + b +- |W| r``, widened by the rounding bound :meth:`fp_err`."""
        c, r = (u + l) / 2, (u - l) / 2
        yc = self.forward(c)
        yr = self.abs_linear(r)
        e = self.fp_err(c.abs() + r)
        return yc - yr - e, yc + yr + e

    def backward(self, A: torch.Tensor):  # pragma: no cover - interface
        raise NotImplementedError

    def magnitude(self, r: torch.Tensor) -> torch.Tensor:
        return self.abs_linear(r) + self.offset().abs()

    def fp_err(self, r: torch.Tensor) -> torch.Tensor:
        """``(N, *out)``: rounding error bound of any evaluation of the layer on inputs with ``|x| <= r``."""
        n = self.n_forward
        return err_coeff(n, r.dtype, self.rep_err) * self.magnitude(r) + (n + 4) * tiny(r.dtype)

    def reach_out(self, r: torch.Tensor) -> torch.Tensor:
        """``(N, *out)``: a rigorous bound on ``|layer(x)|`` for ``|x| <= r``."""
        n = self.n_forward
        return self.magnitude(r) * (1 + err_coeff(n, r.dtype, self.rep_err)) + (n + 4) * tiny(r.dtype)

    @property
    def n_coefficient(self):
        """Products summed in one coefficient of ``backward``'s ``A'`` (at most ``n_backward``, which also counts
        the constant's sum)."""
        return self.n_backward

    def err_weight(self, r: torch.Tensor):
        """The coefficients' rounding (``n_coefficient`` products each, times ``|W| r``) and the constant's
        (``n_backward``, times ``|b|``)."""
        n = self.n_backward
        dt = r.dtype
        under = (n + 4) * tiny(dt) * (1 + r.reshape(r.shape[0], -1).sum(-1, keepdim=True))
        return err_coeff(self.n_coefficient, dt, self.rep_err) * self.abs_linear(r) \
            + err_coeff(n, dt, self.rep_err) * self.offset().abs(), under

    def to(self, device=None, dtype=None) -> "Layer":
        """Move every tensor attribute; returns self. A cast that changes a value sets ``rep_err``."""
        for k, v in list(vars(self).items()):
            if isinstance(v, torch.Tensor):
                w = v.to(device=device, dtype=dtype)
                if dtype is not None and w.dtype != v.dtype and v.is_floating_point():
                    if not bool((w.to(v.dtype) == v).all()):
                        self.rep_err = max(self.rep_err, unit_roundoff(w.dtype))
                setattr(self, k, w)
        return self

    def dense(self):
        """``(W, b)`` with ``W`` of shape ``(out_size, in_size)`` so that ``flat(out) = W flat(in) + b``.

        For affine layers only: used by the LP and MILP encodings.
        """
        raise NotImplementedError(type(self).__name__)

    def __repr__(self):
        return f"{type(self).__name__}({self.in_shape} -> {self.out_shape})"


def dense_map(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W (out_size, in_size), b (out_size,))`` float64 of an affine layer; from its ``linear`` on the identity
    when it has no ``dense`` of its own (ElementwiseAffine)."""
    try:
        W, b = layer.dense()
    except NotImplementedError:
        n = layer.in_size
        eye = torch.eye(n, dtype=torch.float64).reshape(n, *layer.in_shape)
        W = copy.deepcopy(layer).to(dtype=torch.float64).linear(eye).reshape(n, -1).T
        b = copy.deepcopy(layer).to(dtype=torch.float64).offset()
    b = torch.as_tensor(b).detach().cpu().double()
    b = b.reshape(-1) if b.numel() == layer.out_size else torch.broadcast_to(b, layer.out_shape).reshape(-1)
    return W.detach().cpu().double(), b
