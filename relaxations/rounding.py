"""A hedge against floating-point rounding in the single-neuron bounds.

CROWN, alpha- and beta-CROWN run in plain torch arithmetic (float32 by default) without directed rounding, so a
bound ``A x + b`` can be off by a few units in the last place of the terms it sums. The verifier proves a domain
only when its lower bound stays positive after lowering it by ``rel`` times the magnitude of those terms,
``|b| + sum_j |A_j| max(|l_j|, |u_j|)``. This is a safety margin, not a proof: the LP methods, whose bounds
come with a rigorous error bound (:mod:`relaxations.lp.sound`), are the ones to use where that matters.
"""
from __future__ import annotations

import torch

from relaxations.state import BoundResult


def lower_by_magnitude(res: BoundResult, lower: torch.Tensor, upper: torch.Tensor, rel: float) -> BoundResult:
    """Lower ``res.lb`` and ``res.bias`` ``(N, m)`` in place by ``rel`` times each row's magnitude over the
    boxes ``lower``/``upper`` ``(N, n_in)``. Results without linear bounds (IBP, the LP methods) are unchanged."""
    if rel <= 0 or res.A_input is None or res.bias is None:
        return res
    reach = torch.maximum(lower.abs(), upper.abs())                      # (N, n_in)
    mag = res.bias.abs() + torch.einsum("bmn,bn->bm", res.A_input.abs(), reach)
    res.lb = res.lb - rel * mag
    res.bias = res.bias - rel * mag
    return res
