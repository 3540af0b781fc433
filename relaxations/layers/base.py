"""The common layer interface."""
from __future__ import annotations

import math

import torch


class Layer:
    """One operation of a network, acting on a batch of per-sample tensors.

    Every layer knows its per-sample ``in_shape`` and ``out_shape`` (no batch dimension) and offers:

    - ``forward(x)``: ``(N, *in) -> (N, *out)``.
    - ``interval(l, u)``: elementwise bounds ``(N, *in)`` to ``(N, *out)``; sound for any input in
      the box.
    - ``backward(A)`` (affine layers only): for ``A`` of shape ``(N, m, *out)`` return ``(A', c)`` with
      ``A'`` of shape ``(N, m, *in)`` and ``c`` of shape ``(N, m)`` (or ``None`` for no constant), such
      that ``A . layer(x) = A' . x + c`` for every ``x``.
    """

    affine = True  # False for the non-linear layers (ReLU), which bounding methods relax themselves

    def __init__(self, in_shape, out_shape):
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_shape = tuple(int(s) for s in out_shape)

    @property
    def in_size(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def interval(self, l: torch.Tensor, u: torch.Tensor):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, A: torch.Tensor):  # pragma: no cover - interface
        raise NotImplementedError

    def to(self, device=None, dtype=None) -> "Layer":
        """Move every tensor attribute; returns self."""
        for k, v in vars(self).items():
            if isinstance(v, torch.Tensor):
                setattr(self, k, v.to(device=device, dtype=dtype))
        return self

    def dense(self):
        """``(W, b)`` with ``W`` of shape ``(out_size, in_size)`` so that ``flat(out) = W flat(in) + b``.

        For affine layers only: used by the LP and MILP encodings.
        """
        raise NotImplementedError(type(self).__name__)

    def __repr__(self):
        return f"{type(self).__name__}({self.in_shape} -> {self.out_shape})"
