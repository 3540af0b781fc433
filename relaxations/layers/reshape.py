"""Reshape / flatten: a change of per-sample shape that keeps the row-major data order."""
from __future__ import annotations

import torch

from relaxations.layers.base import Layer


class Reshape(Layer):
    """``(N, *in) -> (N, *out)`` with the same number of elements in row-major order (exact: no rounding)."""

    def forward(self, x):
        """``(N, *in) -> (N, *out)``."""
        return x.reshape(x.shape[0], *self.out_shape)

    def interval(self, l, u):
        """``(N, *in)`` bounds to ``(N, *out)``: the same numbers (exact)."""
        return self.forward(l), self.forward(u)

    def linear(self, x):
        return self.forward(x)

    def abs_linear(self, r):
        return self.forward(r)

    def offset(self):
        return torch.zeros(())

    def magnitude(self, r):
        return self.forward(r)

    def reach_out(self, r):
        return self.forward(r)

    def backward(self, A):
        """``A``: ``(N, m, *out)`` -> ``(N, m, *in)``; no constant."""
        return A.reshape(A.shape[0], A.shape[1], *self.in_shape), None

    def err_weight(self, r):
        return None, None  # exact

    def dense(self):
        n = self.in_size
        return torch.eye(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
