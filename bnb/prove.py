"""Proving stage of the pipeline: bound every (box, polytope) pair of the property.

A polytope ``C y <= d`` is unreachable from a box when some row has ``min (C y - d) > 0`` over the box.
"""
from __future__ import annotations

import torch

from bnb.results import Verdict
from relaxations.ibp import ibp


def row_lower_bounds(lb: torch.Tensor, ub: torch.Tensor, C: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Lower bounds of ``C y - d`` from elementwise output bounds: ``(N, m)`` from ``(N, n_out)``."""
    Cp, Cn = C.clamp(min=0), C.clamp(max=0)
    return lb @ Cp.T + ub @ Cn.T - d


def prove(model, net, prop, cfg, deadline, stats, log):
    """Returns ``(verdict, counterexample, message)``; ``unknown`` when something stays open."""
    open_pairs = 0
    net64 = net.to(dtype=torch.float64)
    for spec in prop.specs:
        lo = torch.tensor(spec.lower, dtype=torch.float64, device=net64.device)[None]
        hi = torch.tensor(spec.upper, dtype=torch.float64, device=net64.device)[None]
        lb, ub, _ = ibp(net64, lo, hi)
        for poly in spec.disjuncts:
            if len(poly.d) == 0:
                open_pairs += 1
                continue
            C = torch.tensor(poly.C, dtype=torch.float64, device=net64.device)
            d = torch.tensor(poly.d, dtype=torch.float64, device=net64.device)
            if not bool((row_lower_bounds(lb, ub, C, d) > 0).any()):
                open_pairs += 1
        deadline.check()
    stats["open_disjuncts"] = open_pairs
    if open_pairs == 0:
        return Verdict.UNSAT, None, "every output polytope is unreachable (IBP)"
    return Verdict.UNKNOWN, None, f"{open_pairs} of {prop.n_disjuncts} disjunct(s) not refuted by {cfg.bounds.method}"
