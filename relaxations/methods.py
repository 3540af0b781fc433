"""The registry of bounding methods, by the names used in configs and on the command line.

``bound_rows`` is the single entry point the verifier uses: lower bounds of ``C y`` for a batch of domains.
"""
from __future__ import annotations

import numpy as np
import torch

from relaxations.crown import SLOPE_MODES, concretize, crown
from relaxations.fp import finite_or_neg_inf, to_dtype_down, to_dtype_up
from relaxations.ibp import ibp
from relaxations.names import LP_METHODS, METHODS, SINGLE_NEURON_METHODS, SMOOTH_LP_METHODS  # noqa: F401
from relaxations.optimize import optimized
from relaxations.options import DEFAULTS, BoundOptions
from relaxations.state import BoundResult, DomainState

# defaults of the LP methods' options where the library's are too slow for interactive use
# (Anderson cuts: <= 4 separation rounds, as measured in docs/lp.md; ~10 s on ACAS Xu, 5 outputs)
LP_DEFAULTS = {"anderson": {"max_rounds": 4}}


def bound_rows(net, state: DomainState, C: torch.Tensor, method: str, opts: BoundOptions = DEFAULTS, *, iters=30,
               optimize_intermediate=True, want_upper=False, settled=None, should_stop=None) -> BoundResult:
    """Bounds of ``C y`` (``C``: ``(m, n_out)`` or ``(N, m, n_out)``) over each domain of ``state``.

    ``opts``: what is fixed for the run (:class:`relaxations.options.BoundOptions`); with ``opts.rigorous``
    (the default) every single-neuron bound carries its floating-point error bound (:mod:`relaxations.fp`);
    the LP methods' bounds are dual certificates. Bounds that are NaN or infinite come back as ``-inf``: they
    prove nothing. ``iters``: optimisation steps of alpha/beta-CROWN and mn-crown; ``optimize_intermediate``:
    alpha-CROWN optimises the intermediate layers' slopes too. ``settled(lb, infeasible) -> (N, m) bool``: rows
    that need no more work, so that alpha/beta-CROWN stop when all are (:func:`relaxations.optimize.optimized`);
    ``should_stop()``: stop optimising now (a deadline), with the best bound so far."""
    relu_only = getattr(net, "relu_only", True)
    if not relu_only and method in LP_METHODS:
        net.require_relu(f"bounding method {method!r}")
    if method == "mn-crown":
        res = mn_crown(net, state, C, opts, iters=iters, want_upper=want_upper, settled=settled,
                       should_stop=should_stop)
    else:
        res = _bound_rows(net, state, C, method, opts, iters, optimize_intermediate, want_upper, settled, should_stop)
    if not relu_only and method != "ibp":  # fixed lines of a smooth activation can be worse than IBP: its floor
        floor = _bound_rows(net, state, C, "ibp", opts, iters, optimize_intermediate, want_upper, None, None)
        res.lb = torch.maximum(res.lb, floor.lb)
        if res.ub is not None:
            res.ub = torch.minimum(res.ub, floor.ub)
    res.lb = finite_or_neg_inf(res.lb)
    if res.infeasible is None:  # IBP and the LP methods prove no domain empty
        res.infeasible = torch.zeros(state.size, dtype=torch.bool, device=res.lb.device)
    if res.ub is not None:
        res.ub = -finite_or_neg_inf(-res.ub)
    return res


def _bound_rows(net, state, C, method, opts, iters, optimize_intermediate, want_upper, settled, should_stop):
    if method == "ibp":
        lb, ub, pre = ibp(net, state.lower, state.upper)
        Cn = C if C.dim() == 3 else C.expand(state.size, *C.shape)
        zero = torch.zeros(Cn.shape[:2], dtype=lb.dtype, device=lb.device)
        lo = concretize(Cn, zero, lb, ub, zero)  # C y over the output box, rounding bounded
        hi = -concretize(-Cn, zero, lb, ub, zero) if want_upper else None
        return BoundResult(lo, hi, [(l.reshape(state.size, -1), u.reshape(state.size, -1)) for l, u in pre])
    if method in SLOPE_MODES:
        slope = opts.lower_slope if method == "crown" else SLOPE_MODES[method]
        return crown(net, state, C, slope, opts.intermediate, want_upper, opts.rigorous)
    if method in ("alpha", "beta"):
        return optimized(net, state, C, opts, iters=iters, use_beta=(method == "beta"),
                         optimize_intermediate=optimize_intermediate, want_upper=want_upper, settled=settled,
                         should_stop=should_stop)
    if method in LP_METHODS:
        return lp_rows(net, state, C, method, opts, want_upper=want_upper)
    if method in SMOOTH_LP_METHODS:
        return smooth_lp_rows(net, state, C, method, want_upper=want_upper)
    raise ValueError(f"unknown bounding method {method!r}; choose from {', '.join(METHODS)}")


def mn_crown(net, state: DomainState, C, opts: BoundOptions = DEFAULTS, *, iters=30, want_upper=False, settled=None,
             should_stop=None) -> BoundResult:
    """alpha-CROWN, then multi-neuron constraints of every ReLU layer taken with multipliers optimised jointly
    with the slopes (``iters`` steps each; beta too where the domains carry splits). ``opts.mn.cuts``: ``hull``
    (the k-neuron group hulls of :func:`relaxations.multineuron.group_hull_constraints`), ``anderson`` (the
    Anderson cuts of :func:`relaxations.multineuron.anderson_constraints`, at most ``opts.mn.rounds`` separation
    rounds per open row, worst first) or ``both``; each source within ``opts.mn.time_budget`` seconds, on each
    domain's box and alpha bounds. On sigmoid / tanh / softplus layers the constraints are the multi-input hull
    cuts of each neuron over its input box (:mod:`relaxations.hull_cuts`, at most ``opts.mn.hull_cuts`` per layer).
    Domains that already carry ``state.constraints`` (children of a split) skip the first two steps. The result
    keeps the constraints (``constraints``) and multipliers (``gammas``) for the children."""
    kw = dict(iters=iters, use_beta=True, want_upper=want_upper, settled=settled, should_stop=should_stop)
    if state.constraints is not None:
        res = optimized(net, state, C, opts, optimize_intermediate=False, **kw)
        res.constraints = state.constraints
        return res
    if state.size > 1:  # constraints are shared by the domains of a batch: one domain at a time
        parts = [mn_crown(net, _select_state(state, i), C if C.dim() == 2 else C[i:i + 1], opts, iters=iters,
                          want_upper=want_upper, settled=settled, should_stop=should_stop)
                 for i in range(state.size)]
        lb = torch.cat([p.lb for p in parts])
        ub = torch.cat([p.ub for p in parts]) if want_upper else None
        pre = [(torch.cat([p.pre_bounds[j][0] for p in parts]), torch.cat([p.pre_bounds[j][1] for p in parts]))
               for j in range(len(parts[0].pre_bounds))]
        return BoundResult(lb, ub, pre, infeasible=torch.cat([p.infeasible for p in parts]))
    first = optimized(net, state, C, opts, **kw)
    if settled is not None and bool(settled(first.lb, first.infeasible).all()):
        return first  # proven without the constraints
    cons, pre, stats, hints = _mn_constraints(net, state, C, first, settled, opts)
    if opts.mn.tighten and getattr(net, "relu_only", True):
        stats = {"mn_unstable_before": _unstable_counts(first.pre_bounds), "mn_unstable_after": _unstable_counts(pre)}
    if all(c is None for c in cons) and pre is first.pre_bounds:
        first.stats = stats
        return first
    warm = {"final": first.alphas["final"]} if first.alphas is not None else None
    mn_state = DomainState(state.lower, state.upper, state.splits, pre, warm, state.betas,
                           constraints=None if all(c is None for c in cons) else cons)
    res = optimized(net, mn_state, C, opts, optimize_intermediate=False, **kw)
    better = (res.lb >= first.lb)[..., None]  # rows whose reported bound is this pass's
    res.lb = torch.maximum(res.lb, first.lb)  # both are valid bounds
    if not getattr(net, "relu_only", True):
        res, mn_state = _more_hull_rounds(net, mn_state, C, res, settled, opts, kw)
    if want_upper:
        res.ub = torch.minimum(res.ub, first.ub)
    res.infeasible = res.infeasible | first.infeasible
    if opts.certify and res.lb_alphas is not None and first.lb_alphas is not None:
        # each row's multipliers: those of the pass whose bound lb reports (gamma 0 where it is the first's)
        res.lb_alphas = [torch.where(better, a, b) for a, b in zip(res.lb_alphas, first.lb_alphas)]
        if res.lb_betas is not None and first.lb_betas is not None:
            res.lb_betas = [torch.where(better, a, b) for a, b in zip(res.lb_betas, first.lb_betas)]
        res.lb_gammas = None if res.lb_gammas is None else [
            None if g is None else torch.where(better, g, torch.zeros_like(g)) for g in res.lb_gammas]
        # the intermediate bounds: alpha-CROWN's, or tightened ones with the hint rows that prove them
        res.pre_hints, res.pre_hint_rows = first.pre_hints, hints
        res.lb_pre_exact = first.lb_pre_exact and (pre is first.pre_bounds or hints is not None)
    res.constraints = mn_state.constraints
    res.stats = stats
    res.base_lb = first.lb
    return res


def _more_hull_rounds(net, mn_state, C, res, settled, opts, kw):
    """``opts.mn.hull_rounds - 1`` more separation rounds of the hull cuts (smooth layers): cuts at the points the
    last pass's coefficients select, joined to the constraints so far, then the bound again, warm-started (slopes,
    interval multipliers, the old constraints' multipliers; the new ones start at 0). Every pass's bound is valid:
    the best is kept. Returns ``(res, state)``."""
    from relaxations.multineuron import join
    for _ in range(opts.mn.hull_rounds - 1):
        if settled is not None and bool(settled(res.lb, res.infeasible).all()):
            break
        if kw.get("should_stop") is not None and kw["should_stop"]():
            break
        new, *_ = _mn_constraints(net, mn_state, C, res, settled, opts)
        if all(c is None for c in new):
            break
        old = mn_state.constraints or [None] * len(new)
        cons = [join(a, b) for a, b in zip(old, new)]
        M = res.lb.shape[1]
        gammas = []
        for c, g, n in zip(cons, res.gammas or [None] * len(cons), new):
            if c is None:
                gammas.append(None)
                continue
            prev = g if g is not None else res.lb.new_zeros(1, M, c.count - (0 if n is None else n.count))
            gammas.append(torch.cat([prev, res.lb.new_zeros(1, M, 0 if n is None else n.count)], dim=-1))
        warm = {"final": res.alphas["final"]} if res.alphas is not None else None
        mn_state = DomainState(mn_state.lower, mn_state.upper, mn_state.splits, mn_state.pre_bounds, warm, res.betas,
                               constraints=cons, gammas=gammas)
        again = optimized(net, mn_state, C, opts, optimize_intermediate=False, **kw)
        again.lb = torch.maximum(again.lb, res.lb)
        again.infeasible = again.infeasible | res.infeasible
        res = again
    return res, mn_state


def _unstable_counts(pre_bounds) -> str:
    """Unstable neurons per ReLU layer of one domain's bounds, as ``a/b/c``."""
    return "/".join(str(int(((l[0] < 0) & (u[0] > 0)).sum())) for l, u in pre_bounds)


def _mn_constraints(net, state, C, first, settled, opts):
    """:func:`mn_constraints` of one domain (``state.size == 1``) for :func:`mn_crown`: Anderson cuts for its
    open rows, the worst-bounded first; on a network with other activations than ReLU, the hull cuts of its
    smooth layers (:func:`relaxations.hull_cuts.smooth_hull_constraints`) separated at the points those rows'
    coefficients select, whatever ``opts.mn.cuts`` says (the k-neuron hulls and Anderson cuts are ReLU's).
    Returns ``(constraints, pre_bounds, stats, hints)``: ``stats`` the hull cuts kept and tried per layer and
    their seconds (None for ReLU networks), ``hints`` those of :func:`mn_constraints`."""
    rows = C[0] if C.dim() == 3 else C
    lb = first.lb[0]
    open_rows = ~settled(first.lb, first.infeasible)[0] if settled is not None else torch.ones_like(lb, dtype=bool)
    order = [int(j) for j in torch.argsort(lb) if bool(open_rows[j])]
    if not getattr(net, "relu_only", True):
        from relaxations.hull_cuts import smooth_hull_constraints
        if not order or first.relu_coeffs is None:
            return [None] * len(first.pre_bounds), first.pre_bounds, None, None
        cons, info = smooth_hull_constraints(net, state.lower, state.upper, first.pre_bounds,
                                             [c[0, order] for c in first.relu_coeffs], first.A_input[0, order],
                                             opts.mn.hull_cuts, opts.mn.time_budget)
        return cons, first.pre_bounds, {"hull_cuts_kept": "/".join(map(str, info["cuts_kept"])),
                                        "hull_cuts_tried": "/".join(map(str, info["cuts_tried"])),
                                        "time_hull_cuts": round(info["seconds"], 3)}, None
    cons, pre, hints = mn_constraints(net, state.lower, state.upper, first.pre_bounds, rows[order], opts,
                                      first.pre_hints)
    return cons, pre, None, hints


def mn_constraints(net, lower, upper, pre_bounds, rows, opts: BoundOptions = DEFAULTS, warm=None):
    """Multi-neuron constraints per ReLU layer (None where a layer has none) valid on the box ``lower``/
    ``upper`` ``(1, n_in)`` with rigorous bounds ``pre_bounds``: k-neuron group hulls (``opts.mn.cuts``
    ``hull`` or ``both``) and Anderson cuts separated for the output ``rows`` ``(m, n_out)`` in that order
    (``anderson`` or ``both``), each source within ``opts.mn.time_budget`` seconds. With ``opts.mn.tighten``
    (and hulls) the hulls are built on intermediate bounds tightened layer by layer
    (:func:`relaxations.multineuron.tightened_hull_constraints`), and the Anderson cuts on those bounds.
    Returns ``(constraints, pre_bounds, hints)``: the bounds the constraints were built on (never looser than the
    given ``pre_bounds``; the same object when not tightened) and, tightened with ``opts.certify``, per layer the
    hint rows that prove the tightened bounds (:func:`relaxations.multineuron.rebound_unstable`; else None).
    ``warm``: the slopes behind ``pre_bounds`` (``BoundResult.pre_hints``), which start that re-bounding."""
    from relaxations.multineuron import anderson_constraints, group_hull_constraints, join, tightened_hull_constraints
    mn = opts.mn
    hull = anderson = [None] * len(pre_bounds)
    hints = None
    if mn.cuts in ("hull", "both"):
        if mn.tighten:
            hull, pre_bounds, _, hints = tightened_hull_constraints(
                net, lower, upper, pre_bounds, mn.k, mn.max_groups, mn.time_budget, mn.octa_iters, mn.tighten_time,
                certify=opts.certify, warm=warm)
        else:
            hull, _ = group_hull_constraints(net, lower, upper, pre_bounds, mn.k, mn.max_groups, mn.time_budget,
                                             mn.octa_iters, certify=opts.certify)
    if mn.cuts in ("anderson", "both") and rows.shape[0]:
        anderson, _ = anderson_constraints(net, lower, upper, pre_bounds, rows, mn.rounds, mn.time_budget)
    cons = [join(a, b) for a, b in zip(hull, anderson)]
    return cons, pre_bounds, hints


def _select_state(state: DomainState, i: int) -> DomainState:
    """Domain ``i`` of ``state`` alone (for methods that work one domain at a time)."""
    pick = lambda ts: None if ts is None else [t[i:i + 1] for t in ts]  # noqa: E731
    return DomainState(state.lower[i:i + 1], state.upper[i:i + 1], pick(state.splits),
                       None if state.pre_bounds is None else [(l[i:i + 1], u[i:i + 1]) for l, u in state.pre_bounds],
                       None, pick(state.betas))


def output_bounds(net, lower: torch.Tensor, upper: torch.Tensor, method: str, opts: BoundOptions = DEFAULTS, *,
                  iters=30):
    """Elementwise bounds ``(N, out_size)`` of the outputs over boxes ``(N, in_size)`` (``iters``: optimisation
    steps of the methods that optimise)."""
    C = torch.eye(net.out_size, dtype=lower.dtype, device=lower.device)
    if method in LP_METHODS:  # the LP values as they are (an empty box gives lb = +inf, ub = -inf)
        r = lp_rows(net, DomainState(lower, upper), C, method, opts, want_upper=True)
        return r.lb, r.ub
    r = bound_rows(net, DomainState(lower, upper), C, method, opts, iters=iters, want_upper=True)
    return r.lb, r.ub


def _lp_pre_bounds(net, state: DomainState, C: torch.Tensor):
    """``(C3, pre)``: ``C`` per domain ``(N, m, n_out)`` and the LPs' intermediate bounds: CROWN's (rigorous, much
    tighter than IBP, see docs/lp.md) intersected with ``state.pre_bounds``."""
    C3 = C if C.dim() == 3 else C.expand(state.size, *C.shape)
    pre = crown(net, state, C3, "adaptive", "crown", False).pre_bounds
    if state.pre_bounds is not None:
        pre = [(torch.maximum(l, l0.reshape(l.shape)), torch.minimum(u, u0.reshape(u.shape)))
               for (l, u), (l0, u0) in zip(pre, state.pre_bounds)]
    return C3, pre


def smooth_lp_rows(net, state: DomainState, C: torch.Tensor, method: str, *, want_upper=False,
                   **options) -> BoundResult:
    """Bounds of ``C y`` by the LPs of sigmoid/tanh/softplus chains (``hull1d``, ``hull``:
    :mod:`relaxations.lp.smooth`), one domain at a time, on CROWN's rigorous intermediate bounds intersected with
    ``state.pre_bounds``; dual-certified. ``options``: ``tol``, ``max_rounds``."""
    from relaxations.lp.smooth import smooth_kinds, smooth_lp_bounds

    smooth_kinds(net, method)  # refuses other networks by name before any work
    N = state.size
    C3, pre = _lp_pre_bounds(net, state, C)
    np64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    out = [smooth_lp_bounds(net, method, np64(state.lower[k]), np64(state.upper[k]),
                            [(np64(l[k]).reshape(-1), np64(u[k]).reshape(-1)) for l, u in pre], np64(C3[k]),
                            want_upper, **options) for k in range(N)]
    ref = state.lower
    lo = to_dtype_down(torch.as_tensor(np.stack([o[0] for o in out])), ref.dtype, ref.device)
    hi = to_dtype_up(torch.as_tensor(np.stack([o[1] for o in out])), ref.dtype, ref.device) if want_upper else None
    return BoundResult(lo, hi, [(l, u) for l, u in pre])


def lp_rows(net, state: DomainState, C: torch.Tensor, method: str, opts: BoundOptions = DEFAULTS, *,
            want_upper=False, **method_options) -> BoundResult:
    """Bounds of ``C y`` by an LP method of :mod:`relaxations.lp` (``lp``, ``mn``, ``p1``, ``anderson``,
    ``milp``) with the solver ``opts.lp_solver``, one domain at a time, with CROWN's intermediate bounds (much
    tighter than the IBP default of :func:`relaxations.lp.lp_method_bounds`, see docs/lp.md) intersected with
    ``state.pre_bounds``. ``method_options``: the LP method's own (over :data:`LP_DEFAULTS`).
    The LP methods' bounds are dual-certified; ``milp``'s are exact solver values (an oracle, not a
    proof). ``p1`` raises :class:`relaxations.lp.layer_hull.P1TooLarge` on large layers.
    """
    import numpy as np

    from relaxations.lp import lp_method_bounds
    from relaxations.lp.model import NetworkLP

    N = state.size
    C3, pre = _lp_pre_bounds(net, state, C)
    solver = opts.lp_solver
    kw0 = {**LP_DEFAULTS.get(method, {}), **method_options}
    kw0.setdefault("solver", "HIGHS" if method == "milp" else solver)  # the MILP needs a MIP solver
    model = NetworkLP(net, solver) if method == "lp" else None
    lbs, ubs = [], []
    for k in range(N):
        splits = None if state.splits is None else [s[k].detach().cpu().numpy().astype(np.int8)
                                                    for s in state.splits]
        kw = dict(kw0)
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
