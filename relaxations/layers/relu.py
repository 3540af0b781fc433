"""ReLU, the one activation so far, and its linear relaxation (:class:`ReluRelaxation`).

For a neuron with pre-activation bounds ``l <= x <= u``:

- stable active (``l >= 0``): ``y = x``; stable inactive (``u <= 0``): ``y = 0``;
- unstable (``l < 0 < u``): upper bound the chord ``y <= u (x - l) / (u - l)``, lower bound
  ``y >= a x`` for any slope ``a`` in ``[0, 1]`` (the parameter alpha-CROWN optimises).
"""
from __future__ import annotations

import torch

from relaxations.fp import reach, tiny, unit_roundoff
from relaxations.layers.activation import Activation, ActivationRelaxation

LOWER_SLOPES = ("zero", "one", "adaptive")


class ReLU(Activation):
    """``y = max(x, 0)`` elementwise; per-sample shape ``(*s) -> (*s)``."""

    def forward(self, x):
        """``(N, *s) -> (N, *s)``."""
        return torch.relu(x)

    def interval(self, l, u):
        """``(relu(l), relu(u))``, each ``(N, *s)``: exact (no rounding)."""
        return torch.relu(l), torch.relu(u)

    def float_error(self, e, l, u):
        """``(N, *s)``: ``e`` (ReLU is 1-Lipschitz and computed exactly), 0 where ``u + e < 0`` (both the real and
        the computed input are negative there: both outputs are 0)."""
        return torch.where(u + e < 0, torch.zeros_like(e), e)

    def relaxation(self, l, u, split=None, lower_slope="adaptive") -> "ReluRelaxation":
        """:class:`ReluRelaxation` of input bounds ``(N, n)``."""
        return ReluRelaxation(l, u, split, lower_slope)


class ReluRelaxation(ActivationRelaxation):
    """Linear bounds of one ReLU layer for N domains, from (split-tightened) pre-activation bounds.

    ``l``/``u``: ``(N, n)`` rigorous bounds of the pre-activation on each domain; ``split``: ``(N, n)`` int8 or
    None. ``infeasible`` ``(N,)`` is True only where a split phase contradicts these bounds by more than a
    rounding margin (a fixed-active neuron with ``u < -tol``, a fixed-inactive one with ``l > tol``): then no
    point of the domain exists. Bounds that merely cross (by rounding, or on an unsplit neuron) are repaired
    to the interval between them, never turned into a proof. A domain without splits is never infeasible.

    Upper bound: :func:`upper_relaxation`; lower bound ``a x`` with ``a`` from :func:`default_lower_slope`, or on
    the unstable neurons (``optimisable``) any ``alpha`` in ``[0, 1]``.
    """

    def __init__(self, l, u, split, lower_slope: str):
        self.infeasible = torch.zeros(l.shape[0], dtype=torch.bool, device=l.device)
        if split is not None:
            act, ina = split > 0, split < 0
            tol = 8 * unit_roundoff(l.dtype) * reach(l, u) + tiny(l.dtype)
            self.infeasible = ((act & (u < -tol)) | (ina & (l > tol))).any(dim=1)
            l = torch.where(act, l.clamp(min=0), l)
            u = torch.where(ina, u.clamp(max=0), u)
        l, u = torch.minimum(l, u), torch.maximum(l, u)  # repair a crossing: never a proof by itself
        self.l, self.u = l, u
        self.split = None if split is None or not bool((split != 0).any()) else split.to(l.dtype)
        self.unstable = (l < 0) & (u > 0)
        self.up_slope, self.up_int = upper_relaxation(l, u)
        self.low_slope = default_lower_slope(l, u, lower_slope)

    @property
    def optimisable(self):
        """``(N, n)`` bool: the unstable neurons (stable ones have exact, fixed lines)."""
        return self.unstable

    def lower_slope(self, alpha=None):
        """``(N, 1, n)`` default slopes, or ``(N, m, n)`` with ``alpha`` on the unstable neurons."""
        if alpha is None:
            return self.low_slope[:, None]
        return torch.where(self.unstable[:, None], alpha, self.low_slope[:, None])

    def initial_alpha(self, rows, warm=None):
        """``(N, rows, n)``: a copy of ``warm`` where its shape fits, else the default slopes."""
        N, n = self.low_slope.shape
        if warm is not None and warm.shape == (N, rows, n):
            return warm.detach().clone()
        return self.low_slope[:, None].expand(N, rows, n).clone()

    def project_(self, alpha):
        """Every slope in ``[0, 1]`` gives ``relu(x) >= a x`` for all real ``x``: clamp ``(N, m, n)`` in place."""
        return alpha.clamp_(0.0, 1.0)

    def out_reach(self):
        """``(N, n)``: ``0 <= relu(z) <= max(u, 0)``."""
        return self.u.clamp(min=0)


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
