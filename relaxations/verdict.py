"""The one place that decides "verified": a bound proves a domain only as a finite number above the margin.

Every decision of the verifier that a domain, a polytope or a whole box is safe goes through :func:`proven`.
NaN (from ``inf - inf``, ``0 * inf``, overflow) and infinities never verify anything; the only other proof is a
rigorous infeasibility (``BoundResult.infeasible``: a split phase contradicts the domain's bounds).
"""
from __future__ import annotations

import torch


def proven(values: torch.Tensor, margin: float = 0.0, infeasible: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean tensor of ``values``' shape: ``values > margin`` as finite numbers, or the domain (first
    dimension) is ``infeasible`` ``(N,)``."""
    ok = torch.isfinite(values) & (values > margin)
    if infeasible is not None:
        ok = ok | infeasible.reshape(infeasible.shape + (1,) * (values.dim() - 1))
    return ok
