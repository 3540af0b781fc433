"""Scores for ReLU branching (fixing an unstable neuron active or inactive).

- ``babsr`` (Bunel et al. 2020, simplified): for an unstable neuron with bounds ``l < 0 < u`` and
  coefficient ``lam`` of the final lower bound on its output, splitting removes the upper-relaxation
  intercept ``-l u / (u - l)`` that the bound pays with weight ``min(lam, 0)``, and changes the slope term;
  the score is ``|min(lam, 0)| * (-l u / (u - l)) + |lam| * 1e-4`` (the second term breaks ties).
- ``width``: the interval width ``u - l`` of unstable neurons (the classic "largest interval" rule).
- ``acs`` (active constraint score, MN-BaB): with multi-neuron constraints ``Pz y + Px z + p <= 0`` taken with
  multipliers ``gamma``, a neuron scores ``sum_c gamma_c (|Pz_cj| + |Px_cj|)``: the constraints the bound leans
  on most involve it, and splitting it makes them exact. ``babsr`` breaks ties (and decides alone where no
  constraint is active).
"""
from __future__ import annotations

import torch

RELU_HEURISTICS = ("babsr", "width", "acs")


def relu_scores(name: str, pre_bounds, coeffs, splits, gammas=None, constraints=None):
    """``pre_bounds``: per layer ``(l, u)`` ``(N, n_i)``; ``coeffs``: per layer ``(N, n_i)`` (the deciding
    row's coefficient on the ReLU output); ``splits``: per layer ``(N, n_i)`` int8 or None; ``gammas``: per
    layer the deciding row's constraint multipliers ``(N, c_i)`` or None, for ``constraints`` (per layer
    :class:`relaxations.multineuron.LayerConstraints` or None; ``acs`` only).

    Returns one ``(N, n_i)`` score tensor per layer; ``-inf`` marks neurons that cannot be split.
    """
    out = []
    for i, (l, u) in enumerate(pre_bounds):
        unstable = (l < 0) & (u > 0)
        if splits is not None:
            unstable &= splits[i] == 0
        if name in ("babsr", "acs"):
            lam = coeffs[i]
            intercept = -l * u / (u - l).clamp(min=1e-12)
            s = lam.clamp(max=0).abs() * intercept + 1e-4 * lam.abs()
            if name == "acs" and gammas is not None and gammas[i] is not None and constraints[i] is not None:
                c = constraints[i]
                active = gammas[i] @ (c.Pz.abs() + c.Px.abs())  # (N, n_i)
                s = active + 1e-3 * s
        elif name == "width":
            s = u - l
        else:
            raise ValueError(f"unknown ReLU heuristic {name!r}; choose from {', '.join(RELU_HEURISTICS)}")
        out.append(torch.where(unstable, s, torch.full_like(s, -float("inf"))))
    return out
