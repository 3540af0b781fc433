"""Scores for ReLU branching (fixing an unstable neuron active or inactive).

- ``babsr`` (Bunel et al. 2020, simplified): for an unstable neuron with bounds ``l < 0 < u`` and
  coefficient ``lam`` of the final lower bound on its output, splitting removes the upper-relaxation
  intercept ``-l u / (u - l)`` that the bound pays with weight ``min(lam, 0)``, and changes the slope term;
  the score is ``|min(lam, 0)| * (-l u / (u - l)) + |lam| * 1e-4`` (the second term breaks ties).
- ``width``: the interval width ``u - l`` of unstable neurons (the classic "largest interval" rule).
"""
from __future__ import annotations

import torch

RELU_HEURISTICS = ("babsr", "width")


def relu_scores(name: str, pre_bounds, coeffs, splits):
    """``pre_bounds``: per layer ``(l, u)`` ``(N, n_i)``; ``coeffs``: per layer ``(N, n_i)`` (the deciding
    row's coefficient on the ReLU output); ``splits``: per layer ``(N, n_i)`` int8 or None.

    Returns one ``(N, n_i)`` score tensor per layer; ``-inf`` marks neurons that cannot be split.
    """
    out = []
    for i, (l, u) in enumerate(pre_bounds):
        unstable = (l < 0) & (u > 0)
        if splits is not None:
            unstable &= splits[i] == 0
        if name == "babsr":
            lam = coeffs[i]
            intercept = -l * u / (u - l).clamp(min=1e-12)
            s = lam.clamp(max=0).abs() * intercept + 1e-4 * lam.abs()
        elif name == "width":
            s = u - l
        else:
            raise ValueError(f"unknown ReLU heuristic {name!r}; choose from {', '.join(RELU_HEURISTICS)}")
        out.append(torch.where(unstable, s, torch.full_like(s, -float("inf"))))
    return out
