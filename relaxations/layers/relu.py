"""ReLU: the only non-linear layer. Its linear relaxation lives here too.

For a neuron with pre-activation bounds ``l <= x <= u``:

- stable active (``l >= 0``): ``y = x``; stable inactive (``u <= 0``): ``y = 0``;
- unstable (``l < 0 < u``): upper bound the chord ``y <= u (x - l) / (u - l)``, lower bound
  ``y >= a x`` for any slope ``a`` in ``[0, 1]``.
"""
from __future__ import annotations

import torch

from relaxations.fp import tiny, unit_roundoff
from relaxations.layers.base import Layer

LOWER_SLOPES = ("zero", "one", "adaptive")


class ReLU(Layer):
    affine = False

    def __init__(self, shape):
        super().__init__(shape, shape)

    def forward(self, x):
        return torch.relu(x)

    def interval(self, l, u):
        return torch.relu(l), torch.relu(u)  # exact: no rounding


def upper_relaxation(l: torch.Tensor, u: torch.Tensor):
    """Slope and intercept of the upper linear bound, elementwise; shapes of ``l``.

    Stable neurons get the exact line (slope 1 / 0, intercept 0). For unstable ones the slope is the rounded
    chord slope ``u / (u - l)``, which lies in ``[0, 1]``; the line ``s x + t`` lies above the ReLU on
    ``[l, u]`` iff it does at both ends (``t >= -s l`` and ``t >= u - s u``), so the intercept is the larger
    of the two, each computed with at most three roundings, raised by ``8 u (|l| + |u|)`` (and the smallest
    normal number, for underflow): valid in real arithmetic for the float ``s``, ``l``, ``u``.
    """
    unstable = (l < 0) & (u > 0)
    active = l >= 0
    denom = torch.where(unstable, u - l, torch.ones_like(u))
    slope = torch.where(unstable, u / denom, active.to(u.dtype))
    t = torch.maximum(-slope * l, u - slope * u)
    t = t + 8 * unit_roundoff(l.dtype) * (l.abs() + u.abs()) + tiny(l.dtype)
    intercept = torch.where(unstable, t, torch.zeros_like(l))
    return slope, intercept


def default_lower_slope(l: torch.Tensor, u: torch.Tensor, mode: str) -> torch.Tensor:
    """Lower-bound slope (intercept is always 0): exact for stable neurons, by ``mode`` otherwise.

    ``zero``: DeepPoly-0; ``one``: DeepPoly-1; ``adaptive``: 1 where ``u >= -l`` (smaller area). Any slope in
    ``[0, 1]`` is a valid lower bound ``relu(x) >= a x`` for every real ``x``.
    """
    if mode == "zero":
        unstable_slope = torch.zeros_like(l)
    elif mode == "one":
        unstable_slope = torch.ones_like(l)
    elif mode == "adaptive":
        unstable_slope = (u >= -l).to(l.dtype)
    else:
        raise ValueError(f"unknown lower slope mode {mode!r}; choose from {LOWER_SLOPES}")
    return torch.where(l >= 0, torch.ones_like(l), torch.where(u <= 0, torch.zeros_like(l), unstable_slope))
