"""The registry of bounding methods, by the names used in configs and on the command line.

``bound_rows`` is the single entry point the verifier uses: lower bounds of ``C y`` for a batch of domains.
"""
from __future__ import annotations

import torch

from relaxations.crown import SLOPE_MODES, concretize, crown
from relaxations.fp import finite_or_neg_inf, to_dtype_down, to_dtype_up
from relaxations.ibp import ibp
from relaxations.names import LP_METHODS, METHODS, SINGLE_NEURON_METHODS  # noqa: F401 (re-exported)
from relaxations.optimize import optimized
from relaxations.state import BoundResult, DomainState

# defaults of the LP methods' options where the library's are too slow for interactive use
# (Anderson cuts: <= 4 separation rounds, as measured in docs/lp.md; ~10 s on ACAS Xu, 5 outputs)
LP_DEFAULTS = {"anderson": {"max_rounds": 4}}


def bound_rows(net, state: DomainState, C: torch.Tensor, method: str, *, intermediate="crown",
               lower_slope="adaptive", iters=30, lr=0.1, lr_beta=0.05, optimize_intermediate=True,
               want_upper=False, settled=None, should_stop=None, rigorous=True) -> BoundResult:
    """Bounds of ``C y`` (``C``: ``(m, n_out)`` or ``(N, m, n_out)``) over each domain of ``state``.

    With ``rigorous`` (the default) every single-neuron bound carries its floating-point error bound
    (:mod:`relaxations.fp`); the LP methods' bounds are dual certificates. Bounds that are NaN or infinite
    come back as ``-inf``: they prove nothing. ``settled(lb, infeasible) -> (N, m) bool``: rows that need no
    more work, so that alpha/beta-CROWN stop when all are (:func:`relaxations.optimize.optimized`)."""
    res = _bound_rows(net, state, C, method, intermediate, lower_slope, iters, lr, lr_beta, optimize_intermediate,
                      want_upper, settled, should_stop, rigorous)
    res.lb = finite_or_neg_inf(res.lb)
    if res.infeasible is None:  # IBP and the LP methods prove no domain empty
        res.infeasible = torch.zeros(state.size, dtype=torch.bool, device=res.lb.device)
    if res.ub is not None:
        res.ub = -finite_or_neg_inf(-res.ub)
    return res


def _bound_rows(net, state, C, method, intermediate, lower_slope, iters, lr, lr_beta, optimize_intermediate,
                want_upper, settled, should_stop, rigorous):
    if method == "ibp":
        lb, ub, pre = ibp(net, state.lower, state.upper)
        Cn = C if C.dim() == 3 else C.expand(state.size, *C.shape)
        zero = torch.zeros(Cn.shape[:2], dtype=lb.dtype, device=lb.device)
        lo = concretize(Cn, zero, lb, ub, zero)  # C y over the output box, rounding bounded
        hi = -concretize(-Cn, zero, lb, ub, zero) if want_upper else None
        return BoundResult(lo, hi, [(l.reshape(state.size, -1), u.reshape(state.size, -1)) for l, u in pre])
    if method in SLOPE_MODES:
        slope = lower_slope if method == "crown" else SLOPE_MODES[method]
        return crown(net, state, C, slope, intermediate, want_upper, rigorous)
    if method in ("alpha", "beta"):
        return optimized(net, state, C, iters, lr, lr_beta, use_beta=(method == "beta"),
                         optimize_intermediate=optimize_intermediate, want_upper=want_upper,
                         lower_slope=lower_slope, settled=settled, should_stop=should_stop,
                         rigorous=rigorous)
    if method in LP_METHODS:
        return lp_rows(net, state, C, method, want_upper=want_upper)
    raise ValueError(f"unknown bounding method {method!r}; choose from {', '.join(METHODS)}")


def output_bounds(net, lower: torch.Tensor, upper: torch.Tensor, method: str, cfg=None):
    """Elementwise bounds ``(N, out_size)`` of the outputs over boxes ``(N, in_size)``."""
    C = torch.eye(net.out_size, dtype=lower.dtype, device=lower.device)
    kw = {}
    if cfg is not None:
        b = cfg.bounds
        kw = dict(intermediate=b.intermediate, lower_slope=b.lower_slope, iters=b.alpha_iters, lr=b.alpha_lr,
                  lr_beta=b.beta_lr)
    if method in LP_METHODS:
        solver = cfg.bounds.lp_solver if cfg is not None else "HIGHS"
        r = lp_rows(net, DomainState(lower, upper), C, method, want_upper=True, solver=solver)
        return r.lb, r.ub
    r = bound_rows(net, DomainState(lower, upper), C, method, want_upper=True, **kw)
    return r.lb, r.ub


def lp_rows(net, state: DomainState, C: torch.Tensor, method: str, want_upper=False, solver="HIGHS",
            **opts) -> BoundResult:
    """Bounds of ``C y`` by an LP method of :mod:`relaxations.lp` (``lp``, ``mn``, ``p1``, ``anderson``,
    ``milp``), one domain at a time, with CROWN's intermediate bounds (much tighter than the IBP default
    of :func:`relaxations.lp.lp_method_bounds`, see docs/lp.md) intersected with ``state.pre_bounds``.
    The LP methods' bounds are dual-certified; ``milp``'s are exact solver values (an oracle, not a
    proof). ``p1`` raises :class:`relaxations.lp.layer_hull.P1TooLarge` on large layers.
    """
    import numpy as np

    from relaxations.lp import lp_method_bounds
    from relaxations.lp.model import NetworkLP

    N = state.size
    C3 = C if C.dim() == 3 else C.expand(N, *C.shape)
    pre = crown(net, state, C3, "adaptive", "crown", False).pre_bounds
    if state.pre_bounds is not None:
        pre = [(torch.maximum(l, l0.reshape(l.shape)), torch.minimum(u, u0.reshape(u.shape)))
               for (l, u), (l0, u0) in zip(pre, state.pre_bounds)]
    opts = {**LP_DEFAULTS.get(method, {}), **opts}
    opts.setdefault("solver", "HIGHS" if method == "milp" else solver)  # the MILP needs a MIP solver
    model = NetworkLP(net, solver) if method == "lp" else None
    lbs, ubs = [], []
    for k in range(N):
        splits = None if state.splits is None else [s[k].detach().cpu().numpy().astype(np.int8)
                                                    for s in state.splits]
        kw = dict(opts)
        if model is not None:
            kw["model"] = model
        lb, ub = lp_method_bounds(method, net, state.lower[k].detach().cpu().double().numpy(),
                                  state.upper[k].detach().cpu().double().numpy(),
                                  C=C3[k].detach().cpu().double().numpy(),
                                  pre_bounds=[(l[k:k + 1].detach().cpu().double().numpy(),
                                               u[k:k + 1].detach().cpu().double().numpy()) for l, u in pre],
                                  splits=splits, **kw)
        lbs.append(np.asarray(lb, dtype=np.float64))
        ubs.append(np.asarray(ub, dtype=np.float64))
    ref = state.lower
    lo = to_dtype_down(np.stack(lbs), ref.dtype, ref.device)  # float64 certificates, never rounded inward
    hi = to_dtype_up(np.stack(ubs), ref.dtype, ref.device) if want_upper else None
    return BoundResult(lo, hi, [(l, u) for l, u in pre])
