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

    @property
    def n_forward(self):
        return self.weight.shape[1]

    @property
    def n_backward(self):
        return self.weight.shape[0]

    def forward(self, x):
        """``(N, in) -> (N, out)``."""
        return x @ self.weight.T + self.bias

    def linear(self, x):
        return x @ self.weight.T

    def abs_linear(self, r):
        return r @ self.weight.abs().T

    def offset(self):
        return self.bias

    def backward(self, A):
        """``A``: ``(N, m, out)`` -> ``(A W: (N, m, in), A b: (N, m))``."""
        return A @ self.weight, A @ self.bias

    def dense(self):
        return self.weight, self.bias
