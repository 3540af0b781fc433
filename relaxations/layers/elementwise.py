"""Elementwise affine map ``y = x * scale + shift`` (input normalisation, folded BatchNorm)."""
from __future__ import annotations

import torch

from relaxations.layers.base import Layer


class ElementwiseAffine(Layer):
    """``y = x * scale + shift`` with ``scale`` and ``shift`` of the full per-sample shape."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        assert scale.shape == shift.shape
        super().__init__(scale.shape, scale.shape)
        self.scale = scale
        self.shift = shift

    def forward(self, x):
        """``(N, *s) -> (N, *s)``."""
        return x * self.scale + self.shift

    def interval(self, l, u):
        a, b = l * self.scale + self.shift, u * self.scale + self.shift
        return torch.minimum(a, b), torch.maximum(a, b)

    def backward(self, A):
        """``A``: ``(N, m, *s)`` -> ``(A * scale, sum(A * shift))``."""
        dims = tuple(range(2, A.dim()))
        return A * self.scale, (A * self.shift).sum(dim=dims)

    def dense(self):
        return torch.diag(self.scale.flatten()), self.shift.flatten()
