"""Activation splitting: which neuron of each domain to split at which point of its pre-activation interval.

A split of neuron ``z`` with bounds ``l < u`` at ``p`` makes two children, ``z <= p`` and ``z >= p``; each child's
relaxation of that neuron is built on its own, narrower interval. The split point (:func:`split_points`) is 0
where the interval crosses it (the inflection point of sigmoid / tanh, the kink of ReLU / LeakyReLU: each child
is then convex or concave, or linear), else the midpoint (a piecewise-linear neuron that does not cross 0 is
linear already: never split).

Every rule scores per layer ``(N, n_i)`` (``-inf``: cannot be split); the best position wins. Notation: ``lam``
the deciding row's coefficient on the neuron's output in the last bound (its lower line is used where
``lam > 0``, its upper line where ``lam < 0``), ``gap(a, b)`` an estimate of the vertical distance between the
two lines of the relaxation on ``[a, b]`` (:func:`gap`):

- ``interval``: ``u - l`` (the largest interval first; a baseline that reads no bound);
- ``gap``: ``|lam| gap(l, u)`` (BaBSR's idea for general activations: what the neuron's looseness costs the
  bound);
- ``gap-gain``: ``|lam| (gap(l, u) - max(gap(l, p), gap(p, u)))``: what the split saves in its worse child.
"""
from __future__ import annotations

import torch

from heuristics.base import ActivationBatch
from heuristics.relu_split import flat_choice

KIND = "activation"  # the strategy these heuristics serve (heuristics.registry reads KIND and HEURISTICS)
NEG = -float("inf")
PIECEWISE = ("relu", "leaky")


def value(kind: str, z: torch.Tensor, slope: float = 0.0) -> torch.Tensor:
    """``f(z)`` in floating point (a heuristic's estimate, not rigorous)."""
    if kind == "sigmoid":
        return torch.sigmoid(z)
    if kind == "tanh":
        return torch.tanh(z)
    if kind == "softplus":
        return torch.nn.functional.softplus(z)
    if kind in PIECEWISE:
        return torch.where(z >= 0, z, (slope if kind == "leaky" else 0.0) * z)
    raise ValueError(f"unknown activation kind {kind!r}")


def deriv(kind: str, z: torch.Tensor, slope: float = 0.0) -> torch.Tensor:
    """``f'(z)`` in floating point."""
    if kind == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if kind == "tanh":
        return 1 - torch.tanh(z) ** 2
    if kind == "softplus":
        return torch.sigmoid(z)
    if kind in PIECEWISE:
        return torch.where(z >= 0, torch.ones_like(z), torch.full_like(z, slope if kind == "leaky" else 0.0))
    raise ValueError(f"unknown activation kind {kind!r}")


def split_points(kind: str, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``(N, n)``: where to split each neuron of bounds ``l``/``u`` ``(N, n)``: 0 where ``l < 0 < u``, else the
    midpoint (a value in ``[l, u]``; a caller checks ``l < p < u`` before splitting)."""
    mid = l + (u - l) / 2
    return torch.where((l < 0) & (u > 0), torch.zeros_like(l), mid)


def gap(kind: str, a: torch.Tensor, b: torch.Tensor, slope: float = 0.0) -> torch.Tensor:
    """Estimated vertical distance between the upper and lower lines of ``f`` on ``[a, b]`` (0 where ``b <= a``):
    where ``[a, b]`` crosses 0 (ReLU-like or S-shaped), the smaller of the range ``f(b) - f(a)`` and the gap of the
    parallel endpoint lines (slope ``min(f'(a), f'(b))``); else (convex or concave) the largest distance between
    the chord and the tangent at the midpoint, at the ends."""
    w = (b - a).clamp(min=0)
    fa, fb = value(kind, a, slope), value(kind, b, slope)
    rng = (fb - fa).abs()
    lam = torch.minimum(deriv(kind, a, slope), deriv(kind, b, slope))
    cross_gap = torch.minimum(rng, (rng - lam * w).clamp(min=0))
    m = a + w / 2
    fm, km = value(kind, m, slope), deriv(kind, m, slope)
    side = torch.maximum((fa - (fm + km * (a - m))).abs(), (fb - (fm + km * (b - m))).abs())
    if kind in PIECEWISE:
        side = torch.zeros_like(side)  # linear off the kink
    out = side if kind == "softplus" else torch.where((a < 0) & (b > 0), cross_gap, side)
    return torch.where(w > 0, out, torch.zeros_like(out))


def _scored(batch: ActivationBatch, fn) -> torch.Tensor:
    """``(N,)`` the best flat position by per-layer scores ``fn(i, kind, slope, l, u, p, lam)``."""
    per_layer = []
    for i, ((l, u), lam, ok, p) in enumerate(zip(batch.pre_bounds, batch.coeffs, batch.ok, batch.points)):
        kind, slope = batch.kinds[i]
        s = fn(kind, slope, l, u, p, lam)
        per_layer.append(torch.where(ok & torch.isfinite(s), s, torch.full_like(s, NEG)))
    return flat_choice(torch.cat(per_layer, dim=1))


def widest(batch: ActivationBatch) -> torch.Tensor:
    return _scored(batch, lambda kind, slope, l, u, p, lam: u - l)


def gap_score(batch: ActivationBatch) -> torch.Tensor:
    # (1e-9 of the width breaks ties where the coefficient is 0)
    return _scored(batch, lambda kind, slope, l, u, p, lam: lam.abs() * gap(kind, l, u, slope) + 1e-9 * (u - l))


def gap_gain(batch: ActivationBatch) -> torch.Tensor:
    def score(kind, slope, l, u, p, lam):
        worse = torch.maximum(gap(kind, l, p, slope), gap(kind, p, u, slope))
        return lam.abs() * (gap(kind, l, u, slope) - worse).clamp(min=0) + 1e-9 * (u - l)
    return _scored(batch, score)


def choose_by_scores(batch: ActivationBatch, scores: list) -> torch.Tensor:
    """``(N,)`` the best flat position by a plug-in's per-layer scores ``(N, n_i)`` (only splittable neurons)."""
    flat = torch.cat([torch.where(ok, s, torch.full_like(s, NEG)) for ok, s in zip(batch.ok, scores)], dim=1)
    return flat_choice(flat)


HEURISTICS = {"interval": widest, "gap": gap_score, "gap-gain": gap_gain}
