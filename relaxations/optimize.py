"""alpha-CROWN (optimised ReLU slopes) and beta-CROWN (split multipliers): projected Adam over
:func:`relaxations.crown.final_bounds`'s back-substitution, batched over domains.

Every ``alpha`` in ``[0, 1]`` and ``beta >= 0`` gives a valid bound, so every iterate is sound and the best
bound seen is returned. The optimisation stops as soon as the caller's ``settled`` test says that every row
of every domain needs no more work (for the verifier: every output polytope is refuted), and spends its
iterations only on what is not settled: settled rows leave the loss, and when the intermediate bounds are
fixed (children of a split, whose pre-activation bounds are given) domains whose rows are all settled leave
the batch, so the remaining steps cost only what is still open.
"""
from __future__ import annotations

import torch

from relaxations.crown import Relaxations, final_bounds, intermediate_bounds, output_errors, unstable_rows
from relaxations.options import DEFAULTS, BoundOptions
from relaxations.state import BoundResult, DomainState


def _select(weights, idx):
    """A layer's rounding weights ``(w, under)`` (each ``(N, ...)`` or None; None for a ReLU) on domains ``idx``."""
    if weights is None:
        return None
    return tuple(None if t is None else t[idx] for t in weights)


class _Adam:
    """Adam (as ``torch.optim.Adam`` with its defaults) over parameters whose first dimension indexes
    domains; ``step`` updates only the domains ``idx`` (None: all), with gradients of that subset."""

    def __init__(self, params, lrs, b1=0.9, b2=0.999, eps=1e-8):
        self.params, self.lrs = params, lrs
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.b1, self.b2, self.eps, self.t = b1, b2, eps, 0

    @torch.no_grad()
    def step(self, grads, idx=None):
        self.t += 1
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, m, v, g, lr in zip(self.params, self.m, self.v, grads, self.lrs):
            if g is None:
                continue
            if idx is None:
                m.mul_(self.b1).add_(g, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                p.sub_(lr * (m / c1) / ((v / c2).sqrt() + self.eps))
            else:
                mi = m[idx].mul_(self.b1).add_(g, alpha=1 - self.b1)
                vi = v[idx].mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
                m[idx], v[idx] = mi, vi
                p[idx] = p[idx] - lr * (mi / c1) / ((vi / c2).sqrt() + self.eps)


def optimized(net, state: DomainState, C, opts: BoundOptions = DEFAULTS, *, iters=20, use_beta=True,
              optimize_intermediate=True, want_upper=False, settled=None, should_stop=None):
    """alpha-CROWN (and beta-CROWN when ``use_beta`` and the domains carry ReLU splits, or given intermediate
    bounds on a network with general activations: the multipliers of their interval constraints) bounds of ``C y``
    (``C``: ``(m, n_out)`` or ``(N, m, n_out)``), ``iters`` projected Adam steps.

    Slopes are optimised per domain, per bounded row and per neuron, for the final bound and (with
    ``optimize_intermediate`` and no fixed ``state.pre_bounds``) for every intermediate layer. Returns
    the best bound found over the iterations (every iterate is sound). From ``opts``: the step sizes
    (``alpha_lr``, ``beta_lr``, ``gamma_lr``), the default lower slope, and ``rigorous``.

    ``settled(lb (N, m), infeasible (N,)) -> (N, m) bool``: rows that need no more work (e.g. their
    polytope is refuted); the optimisation stops when all are. ``should_stop()``: stop early (e.g. at a
    deadline) with the best bound so far, which is still sound.

    With ``state.constraints`` (multi-neuron constraints, :mod:`relaxations.multineuron`) their multipliers
    ``gamma >= 0`` are optimised too (step ``opts.gamma_lr``), warm-started from ``state.gammas``.
    """
    if want_upper:
        kw = dict(iters=iters, use_beta=use_beta, optimize_intermediate=optimize_intermediate,
                  should_stop=should_stop)
        lo = optimized(net, state, C, opts, settled=settled, **kw)
        hi = optimized(net, state, -C, opts, **kw)
        lo.ub = -hi.lb
        return lo
    lr, lr_beta, lr_gamma = opts.alpha_lr, opts.beta_lr, opts.gamma_lr
    lower_slope, rigorous = opts.lower_slope, opts.rigorous
    N = state.size
    Cn = C.expand(N, *C.shape[-2:]) if C.dim() == 2 else C
    m = Cn.shape[1]
    with torch.no_grad():
        ref_relax = intermediate_bounds(net, state, lower_slope, "crown", rigorous=rigorous)
    reference = [(r.l, r.u) for r in ref_relax] if state.pre_bounds is None else None
    opt_inter = optimize_intermediate and state.pre_bounds is None
    relus = net.activation_indices()
    sizes = [r.l.shape[1] for r in ref_relax]
    dt, dev = Cn.dtype, Cn.device

    # parameters, flat; ``layout`` maps each alpha key (and "beta") to its positions in ``params``
    params, lrs, layout = [], [], {}

    def add(key, tensors, rate):
        layout[key] = list(range(len(params), len(params) + len(tensors)))
        params.extend(tensors)
        lrs.extend([rate] * len(tensors))

    def init_alpha(rows, upto, key):
        """Slopes ``(N, rows, n_i)`` of the ReLU layers before ``upto``: the warm start where it fits."""
        warm = None if state.alphas is None else state.alphas.get(key)
        add(key, [ref_relax[i].initial_alpha(rows, None if warm is None else warm[i]) for i in range(upto)], lr)

    init_alpha(m, len(relus), "final")
    alpha_rows = {}  # intermediate slopes only for the neurons the reference leaves unstable (stable ones stay)
    if opt_inter:
        for j in range(1, len(relus)):
            sel = unstable_rows(ref_relax[j].l, ref_relax[j].u, net.layers[relus[j]])
            if sel is not None:
                alpha_rows[j] = sel
                init_alpha(2 * sel.shape[1], j, j)
    has_splits = state.splits is not None and any(bool((s != 0).any()) for s in state.splits)
    def warm_or_zeros(warm, i, shape):
        """Multipliers of ReLU layer ``i``: the warm start ``warm[i]`` where it fits ``shape``, else zeros."""
        w = None if warm is None else warm[i]
        return w.detach().clone() if w is not None and w.shape == shape else torch.zeros(shape, dtype=dt, device=dev)

    # activation splits (children with given intermediate bounds, some narrowed by a split): multipliers of each
    # general activation's interval constraints, (N, m, 2, n) per layer (unused on piecewise-linear layers)
    interval_beta = use_beta and not has_splits and state.pre_bounds is not None and \
        any(getattr(r, "general_lines", False) for r in ref_relax)
    if use_beta and has_splits:
        add("beta", [warm_or_zeros(state.betas, i, (N, m, n)) for i, n in enumerate(sizes)], lr_beta)
    elif interval_beta:
        add("beta", [warm_or_zeros(state.betas, i, (N, m, 2, n)) for i, n in enumerate(sizes)], lr_beta)
    cons = state.constraints
    gamma_layers = [] if cons is None else [i for i, c in enumerate(cons) if c is not None]
    if gamma_layers:
        add("gamma", [warm_or_zeros(state.gammas, i, (N, m, cons[i].count)) for i in gamma_layers], lr_gamma)
    adam = _Adam(params, lrs)

    def views(ts):
        alphas = {k: [ts[i] for i in pos] for k, pos in layout.items() if k not in ("beta", "gamma")}
        betas = [ts[i] for i in layout["beta"]] if "beta" in layout else None
        gammas = None
        if "gamma" in layout:
            gammas = [None] * len(relus)
            for i, pos in zip(gamma_layers, layout["gamma"]):
                gammas[i] = ts[pos]
        return alphas, betas, gammas

    # with fixed intermediate bounds, the batch can shrink to the open domains: their rounding weights are fixed too
    errors = output_errors(net, state, ref_relax) if rigorous and not opt_inter else None
    best_lb = torch.full((N, m), -float("inf"), dtype=dt, device=dev)
    best_A = torch.zeros(N, m, state.lower.shape[1], dtype=dt, device=dev)
    best_bias = torch.full((N, m), -float("inf"), dtype=dt, device=dev)  # until a finite bound: proves nothing
    best_coeffs = [torch.zeros(N, m, n, dtype=dt, device=dev) for n in sizes]
    best_pre = reference if reference is not None else [(r.l, r.u) for r in ref_relax]
    best_infeasible = torch.zeros(N, dtype=torch.bool, device=dev)
    # with opts.certify, the final rows' slopes and split multipliers of the iterate each row's best bound comes from
    # (a certificate's hints must prove the very bound reported; the last iterate's are for warm starts)
    best_alpha = [torch.zeros_like(params[i]) for i in layout["final"]] if opts.certify else []
    best_beta = [torch.zeros_like(params[i]) for i in layout["beta"]] if opts.certify and "beta" in layout else None
    best_gamma = [torch.zeros_like(params[i]) for i in layout["gamma"]] if opts.certify and "gamma" in layout else []
    open_rows = torch.ones(N, m, dtype=torch.bool, device=dev)
    sub = None  # the domains being optimised (None: all)
    for it in range(iters + 1):
        if sub is None:
            leaves = [p.requires_grad_(True) for p in params]
            st, Cs, rs, relax = state, Cn, errors, None
        else:
            leaves = [p[sub].detach().requires_grad_(True) for p in params]
            st = DomainState(state.lower[sub], state.upper[sub], constraints=state.constraints)
            Cs, rs = Cn[sub], None if errors is None else [_select(r, sub) for r in errors]
            relax = Relaxations(r.select(sub) for r in ref_relax)
        alphas, betas, gammas = views(leaves)
        if opt_inter:
            relax = intermediate_bounds(net, state, lower_slope, "crown", alphas, reference, rigorous, alpha_rows)
        elif relax is None:
            relax = ref_relax
        lb, A_in, bias, coeffs, infeasible = final_bounds(net, st, Cs, relax, alphas["final"], betas, collect=True,
                                                          rigorous=rigorous, errors=rs, gammas=gammas)
        with torch.no_grad():
            at = slice(None) if sub is None else sub
            # a rigorous split contradiction at any iterate proves the domain empty
            best_infeasible[at] = best_infeasible[at] | infeasible
            improved = lb > best_lb[at]
            best_lb[at] = torch.where(improved, lb, best_lb[at])
            best_A[at] = torch.where(improved[..., None], A_in.detach(), best_A[at])
            best_bias[at] = torch.where(improved, bias.detach(), best_bias[at])
            for c, b in zip(coeffs, best_coeffs):
                b[at] = torch.where(improved[..., None], c.detach(), b[at])
            gs = [gammas[i] for i in gamma_layers] if best_gamma else []
            for a, b in zip(alphas["final"] + (betas or []) + gs, best_alpha + (best_beta or []) + best_gamma):
                b[at] = torch.where(improved.reshape(improved.shape + (1,) * (a.dim() - 2)), a.detach(), b[at])
            if opt_inter:
                best_pre = [(torch.maximum(bl, r.l.detach()), torch.minimum(bu, r.u.detach()))
                            for (bl, bu), r in zip(best_pre, relax)]
            if settled is not None:
                open_rows = ~settled(best_lb, best_infeasible)
        done = not bool(open_rows.any())
        if it == iters or done or (should_stop is not None and should_stop()) or not lb.requires_grad:
            break  # (nothing to optimise: a network without ReLUs is bounded exactly in one pass)
        mask = open_rows if sub is None else open_rows[sub]
        loss = -torch.where(torch.isfinite(lb) & mask, lb, torch.zeros_like(lb)).sum()
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        with torch.no_grad():
            if sub is None:
                for p in params:
                    p.requires_grad_(False)
            adam.step(grads, sub)
            for key, pos in layout.items():
                for i, slot in enumerate(pos):  # (an alpha key's i-th tensor belongs to ReLU layer i)
                    if key in ("beta", "gamma"):
                        params[slot].clamp_(min=0.0)
                    else:
                        ref_relax[i].project_(params[slot])
            if not opt_inter:
                live = open_rows.any(dim=1)
                if int(live.sum()) <= 0.75 * (N if sub is None else sub.numel()):
                    sub = torch.nonzero(live).flatten()  # the settled domains leave the batch
    for p in params:
        p.requires_grad_(False)
    alphas, betas, gammas = views([p.detach() for p in params])
    hints = None
    if opts.certify and opt_inter:
        # bounds a certificate can prove (docs/certificates.md): best_pre intersects iterates of different
        # slopes and earlier-layer bounds, so recompute the intermediate bounds once, layer by layer, with the
        # last slopes over the final bounds of the earlier layers (no reference), and the final rows on them
        with torch.no_grad():
            relax = intermediate_bounds(net, state, lower_slope, "crown", alphas, None, rigorous, alpha_rows, True,
                                        certify=True)
            best_lb, best_A, best_bias, best_coeffs, best_infeasible = final_bounds(
                net, state, Cn, relax, best_alpha, best_beta, collect=True, rigorous=rigorous,
                gammas=_per_layer(best_gamma, gamma_layers, len(relus)) if best_gamma else gammas)
        best_pre = [(r.l, r.u) for r in relax]
        hints = {j: (sel, alphas[j]) for j, sel in alpha_rows.items()}
        opt_inter = False
    # split phases are reflected in the returned pre-activation bounds
    pre = best_pre
    if state.splits is not None:
        pre = [(torch.where(s > 0, l.clamp(min=0), l), torch.where(s < 0, u.clamp(max=0), u))
               for (l, u), s in zip(best_pre, state.splits)]
    return BoundResult(best_lb, None, [(l.detach(), u.detach()) for l, u in pre], best_A, best_bias, best_coeffs,
                       alphas, betas, best_infeasible, gammas, lb_alphas=best_alpha if opts.certify else None,
                       lb_betas=best_beta, lb_gammas=_per_layer(best_gamma, gamma_layers, len(relus)) if best_gamma
                       else None,
                       lb_pre_exact=not opt_inter, pre_hints=hints)


def _per_layer(tensors, layers, n):
    """``tensors`` of the ReLU layers ``layers`` as a list over all ``n`` ReLU layers (None elsewhere)."""
    out = [None] * n
    for i, t in zip(layers, tensors):
        out[i] = t
    return out
