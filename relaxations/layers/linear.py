"""Fully connected layer ``y = W x + b`` on a vector."""
from __future__ import annotations

import torch

from relaxations.layers.base import Layer


class Linear(Layer):
    """``y = W x + b`` with ``W`` of shape ``(out, in)``; per-sample shapes ``(in,) -> (out,)``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__((weight.shape[1],), (weight.shape[0],))
        self.weight = weight
        self.bias = torch.zeros(weight.shape[0], dtype=weight.dtype) if bias is None else bias

    def forward(self, x):
        """``(N, in) -> (N, out)``."""
        return x @ self.weight.T + self.bias

    def interval(self, l, u):
        """Centre/radius form: ``W c + b +- |W| r``."""
        c, r = (u + l) / 2, (u - l) / 2
        yc = c @ self.weight.T + self.bias
        yr = r @ self.weight.abs().T
        return yc - yr, yc + yr

    def backward(self, A):
        """``A``: ``(N, m, out)`` -> ``(A W: (N, m, in), A b: (N, m))``."""
        return A @ self.weight, A @ self.bias

    def dense(self):
        return self.weight, self.bias
