"""Products with a constant matrix on the last two axes: :class:`MatMul` (ONNX MatMul / Gemm with one constant
operand)."""
from __future__ import annotations

import torch

from relaxations.layers.base import Layer


class MatMul(Layer):
    """Product with a constant matrix ``W`` on the last two axes: ``y = x @ W`` (``side='right'``, ``W``: ``(k, n)``,
    per-sample ``(..., k) -> (..., n)``) or ``y = W @ x`` (``side='left'``, ``W``: ``(M, k)``, per-sample
    ``(..., k, n) -> (..., M, n)``)."""

    def __init__(self, weight: torch.Tensor, in_shape, side="right"):
        in_shape = tuple(int(s) for s in in_shape)
        if side == "right":
            if not in_shape or in_shape[-1] != weight.shape[0]:
                raise ValueError(f"x @ W with x {in_shape} and W {tuple(weight.shape)}")
            out = (*in_shape[:-1], weight.shape[1])
        else:
            if len(in_shape) < 2 or in_shape[-2] != weight.shape[1]:
                raise ValueError(f"W @ x with W {tuple(weight.shape)} and x {in_shape}")
            out = (*in_shape[:-2], weight.shape[0], in_shape[-1])
        super().__init__(in_shape, out)
        self.weight, self.side = weight, side

    @property
    def n_forward(self):
        return self.weight.shape[0] if self.side == "right" else self.weight.shape[1]

    @property
    def n_backward(self):
        return self.weight.shape[1] if self.side == "right" else self.weight.shape[0]

    def _apply(self, x, W):
        return torch.matmul(x, W) if self.side == "right" else torch.matmul(W, x)

    def forward(self, x):
        """``(N, *in) -> (N, *out)``."""
        return self._apply(x, self.weight)

    linear = forward

    def abs_linear(self, r):
        return self._apply(r, self.weight.abs())

    def offset(self):
        return torch.zeros((), dtype=self.weight.dtype, device=self.weight.device)

    def backward(self, A):
        """``A``: ``(N, m, *out)`` -> ``(A W^T or W^T A: (N, m, *in), None)``."""
        return (torch.matmul(A, self.weight.T) if self.side == "right" else torch.matmul(self.weight.T, A)), None

    def dense(self):
        n = self.in_size
        eye = torch.eye(n, dtype=self.weight.dtype, device=self.weight.device).reshape(n, *self.in_shape)
        return self.forward(eye).reshape(n, -1).T.contiguous(), torch.zeros(self.out_size, dtype=self.weight.dtype)
