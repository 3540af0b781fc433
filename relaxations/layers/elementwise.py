"""Elementwise affine map ``y = x * scale + shift`` (input normalisation, folded BatchNorm)."""
from __future__ import annotations

import torch

from relaxations.fp import err_coeff, tiny
from relaxations.layers.base import Layer


class ElementwiseAffine(Layer):
    """``y = x * scale + shift`` with ``scale`` and ``shift`` of the full per-sample shape."""

    n_forward = 2  # one product and one sum per output

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        assert scale.shape == shift.shape
        super().__init__(scale.shape, scale.shape)
        self.scale = scale
        self.shift = shift

    @property
    def n_backward(self):
        return self.in_size + 1

    def forward(self, x):
        """``(N, *s) -> (N, *s)``."""
        return x * self.scale + self.shift

    def linear(self, x):
        return x * self.scale

    def abs_linear(self, r):
        return r * self.scale.abs()

    def offset(self):
        return self.shift

    def backward(self, A):
        """``A``: ``(N, m, *s)`` -> ``(A * scale, sum(A * shift))``."""
        dims = tuple(range(2, A.dim()))
        return A * self.scale, (A * self.shift).sum(dim=dims)

    def err_weight(self, r):
        """The coefficients ``A * scale`` round once each; only the constant is a long sum."""
        dt = r.dtype
        n = self.n_backward
        w = err_coeff(1, dt, self.rep_err) * r * self.scale.abs() + err_coeff(n, dt, self.rep_err) * self.shift.abs()
        under = (n + 4) * tiny(dt) * (1 + r.reshape(r.shape[0], -1).sum(-1, keepdim=True))
        return w, under
