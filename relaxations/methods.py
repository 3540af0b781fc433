"""The registry of bounding methods, by the names used in configs and on the command line.

``bound_rows`` is the single entry point the verifier uses: lower bounds of ``C y`` for a batch of domains.
"""
from __future__ import annotations

import torch

from relaxations.crown import SLOPE_MODES, crown, optimized
from relaxations.ibp import ibp
from relaxations.state import BoundResult, DomainState

METHODS = ("ibp", "crown", "dp0", "dp1", "alpha", "beta")


def bound_rows(net, state: DomainState, C: torch.Tensor, method: str, *, intermediate="crown",
               lower_slope="adaptive", iters=30, lr=0.1, lr_beta=0.05, optimize_intermediate=True,
               want_upper=False, stop_threshold=None) -> BoundResult:
    """Bounds of ``C y`` (``C``: ``(m, n_out)`` or ``(N, m, n_out)``) over each domain of ``state``."""
    if method == "ibp":
        lb, ub, pre = ibp(net, state.lower, state.upper)
        Cn = C if C.dim() == 3 else C.expand(state.size, *C.shape)
        Cp, Cm = Cn.clamp(min=0), Cn.clamp(max=0)
        lo = torch.einsum("bmn,bn->bm", Cp, lb) + torch.einsum("bmn,bn->bm", Cm, ub)
        hi = torch.einsum("bmn,bn->bm", Cp, ub) + torch.einsum("bmn,bn->bm", Cm, lb) if want_upper else None
        return BoundResult(lo, hi, [(l.reshape(state.size, -1), u.reshape(state.size, -1)) for l, u in pre])
    if method in SLOPE_MODES:
        slope = lower_slope if method == "crown" else SLOPE_MODES[method]
        return crown(net, state, C, slope, intermediate, want_upper)
    if method in ("alpha", "beta"):
        return optimized(net, state, C, iters, lr, lr_beta, use_beta=(method == "beta"),
                         optimize_intermediate=optimize_intermediate, want_upper=want_upper,
                         lower_slope=lower_slope, stop_threshold=stop_threshold)
    raise ValueError(f"unknown bounding method {method!r}; choose from {', '.join(METHODS)}")


def output_bounds(net, lower: torch.Tensor, upper: torch.Tensor, method: str, cfg=None):
    """Elementwise bounds ``(N, out_size)`` of the outputs over boxes ``(N, in_size)``."""
    C = torch.eye(net.out_size, dtype=lower.dtype, device=lower.device)
    kw = {}
    if cfg is not None:
        b = cfg.bounds
        kw = dict(intermediate=b.intermediate, lower_slope=b.lower_slope, iters=b.alpha_iters, lr=b.alpha_lr,
                  lr_beta=b.beta_lr)
    r = bound_rows(net, DomainState(lower, upper), C, method, want_upper=True, **kw)
    return r.lb, r.ub
