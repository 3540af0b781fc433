"""Index maps: :class:`Gather`, ``y.flat[j] = x.flat[index[j]]`` (or 0), the layer behind Slice, Split, Gather
with constant indices, Transpose, zero Pad and one part of a Concat in a lowered computation graph."""
from __future__ import annotations

import torch

from relaxations.fp import err_coeff
from relaxations.layers.base import Layer


class Gather(Layer):
    """``y.flat[j] = x.flat[index[j]]`` (``index[j] = -1``: ``y.flat[j] = 0``): Slice, Split, Gather with constant
    indices, Transpose, zero Pad, one part of a Concat. Exact in the forward direction; its backward sums the
    coefficients of repeated indices (rounding bounded in :meth:`err_weight`)."""

    def __init__(self, in_shape, out_shape, index):
        super().__init__(in_shape, out_shape)
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if index.numel() != self.out_size or bool((index >= self.in_size).any()) or bool((index < -1).any()):
            raise ValueError(f"Gather index does not fit {self.in_shape} -> {self.out_shape}")
        self.index = torch.where(index < 0, torch.full_like(index, self.in_size), index)  # the zero column
        counts = torch.bincount(index[index >= 0], minlength=self.in_size) if self.in_size else torch.zeros(0)
        self.repeats = int(counts.max()) if counts.numel() else 0

    def forward(self, x):
        """``(N, *in) -> (N, *out)``."""
        B = x.shape[0]
        flat = torch.cat([x.reshape(B, -1), x.new_zeros(B, 1)], dim=1)
        return flat[:, self.index].reshape(B, *self.out_shape)

    linear = abs_linear = magnitude = reach_out = forward

    def interval(self, l, u):
        """``(N, *in)`` bounds to ``(N, *out)``: gathered (exact)."""
        return self.forward(l), self.forward(u)

    def offset(self):
        return torch.zeros((), dtype=torch.float64, device=self.index.device)

    def backward(self, A):
        """``A``: ``(N, m, *out)`` -> ``(N, m, *in)`` (scatter-add); no constant."""
        N, m = A.shape[:2]
        out = A.new_zeros(N, m, self.in_size + 1)
        out.index_add_(2, self.index, A.reshape(N, m, -1))
        return out[..., :self.in_size].reshape(N, m, *self.in_shape), None

    def err_weight(self, r):
        """A zero weight when no index repeats (never None: crown's backward carries pending weights through a
        None layer by reshaping them, which only a reshape allows); a coefficient summed from ``k`` repeats errs
        by ``<= gamma_k sum |A_j| |x_index(j)|``."""
        under = torch.zeros(r.shape[0], 1, dtype=r.dtype, device=r.device)
        g = err_coeff(self.repeats, r.dtype) if self.repeats > 1 else 0.0
        return g * self.forward(r), under

    def to(self, device=None, dtype=None):
        self.index = self.index.to(device=device)
        return self

    def dense(self):
        W = torch.zeros(self.out_size, self.in_size + 1, dtype=torch.float64)
        W[torch.arange(self.out_size), self.index.cpu()] = 1.0
        return W[:, :self.in_size], torch.zeros(self.out_size, dtype=torch.float64)
