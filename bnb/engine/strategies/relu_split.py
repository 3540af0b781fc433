"""ReLU splitting: each open domain fixes one unstable neuron active / inactive (the heuristic of
:mod:`heuristics.relu_split` choosing it); the children are bounded with beta-CROWN (split multipliers),
warm-started from the parent's slopes and multipliers, only on the rows whose polytope the parent left open;
with ``bab.relu_method: lp`` tightened by the triangle LP, with ``mn-crown`` under the root's multi-neuron
constraints.

A domain carries ``score``, ``depth``, the deciding ``row``, the bound ``lb`` ``(M,)`` of every row, and per
ReLU layer (lists): the split phases ``split`` (+1 active, -1 inactive, 0 free), the intermediate bounds
``pl``/``pu``, the deciding row's coefficients ``coef`` on the layer's output, per row the slopes ``alpha``
and split multipliers ``beta``, and, with multi-neuron constraints, their multipliers ``gamma`` (None on
layers without constraints).
"""
from __future__ import annotations

import time

import torch

from bnb.engine.strategies import Children, Strategy
from heuristics import ReluBatch
from relaxations.polytope import box_min
from relaxations.state import BoundResult, DomainState

PER_LAYER = ("split", "pl", "pu", "coef", "alpha", "beta", "gamma")


def relu_biases(net, pre_shapes):
    """Per ReLU layer the bias ``(n_i,)`` of the dense, convolutional or elementwise affine layer right before it
    (None where there is none, e.g. a graph stage); what ``babsr-bias`` scores. ``pre_shapes``: per ReLU
    layer ``(n_i, ...)``, to check the sizes."""
    layers = getattr(net, "layers", None)
    relus = net.relu_indices() if hasattr(net, "relu_indices") else []
    if layers is None or len(relus) != len(pre_shapes):
        return None
    out = []
    with torch.no_grad():
        for idx, (l, _) in zip(relus, pre_shapes):
            prev = layers[idx - 1] if idx > 0 else None
            b = None
            if prev is not None and prev.affine and type(prev).__name__ in ("Linear", "Conv2d", "ElementwiseAffine"):
                try:  # a heuristic's input: where the layer cannot say, there is no bias term
                    zero = torch.zeros((1, *prev.in_shape), dtype=net.dtype, device=net.device)
                    b = prev.forward(zero).reshape(-1)
                except Exception:
                    b = None
                if b is not None and b.numel() != l:
                    b = None
            out.append(b)
    return out


def _tile(v, reps):
    if isinstance(v, list):
        return [None if t is None else _tile(t, reps) for t in v]
    return v.repeat(reps, *([1] * (v.dim() - 1)))


def relu_children(dom, pos, sizes):
    """Both children of splitting, in each domain of ``dom`` (``n`` domains), the neuron at flat position
    ``pos`` ``(k n,)`` (over the concatenated ReLU layers of ``sizes`` neurons; ``dom`` is tiled ``k``
    times): ``2 k n`` domains, all active halves first, then all inactive halves."""
    n = dom["score"].shape[0]
    reps = pos.shape[0] // n
    dev = pos.device
    offsets = torch.tensor([0] + list(sizes), device=dev).cumsum(0)
    layer = torch.searchsorted(offsets, pos, right=True) - 1
    idx = pos - offsets[layer]
    m = pos.shape[0]
    ar = torch.arange(m, device=dev)
    child = {key: _tile(v, 2 * reps) for key, v in dom.items()}
    for i in range(len(sizes)):
        sel = layer == i
        if bool(sel.any()):
            rows_i, cols_i = ar[sel], idx[sel]
            child["split"][i][rows_i, cols_i] = 1          # first half: active
            child["split"][i][rows_i + m, cols_i] = -1     # second half: inactive
            child["pl"][i][rows_i, cols_i] = child["pl"][i][rows_i, cols_i].clamp(min=0)
            child["pu"][i][rows_i + m, cols_i] = child["pu"][i][rows_i + m, cols_i].clamp(max=0)
    child["depth"] = child["depth"] + 1
    return child


def retighten(net, child, lo, hi, max_depth):
    """Re-bound, in place, the intermediate bounds ``pl``/``pu`` of the children (fields as in
    :func:`relu_children`) at most ``max_depth`` deep: CROWN with their split phases (a split neuron's exact
    phase tightens every layer after it), intersected with the inherited bounds, which hold on a child too.
    Where the intersection would be empty (bounds crossing, possibly by rounding) a neuron keeps its inherited
    bounds: an empty domain is left for the bound's rigorous infeasibility test. Returns how many children
    were re-bounded."""
    from relaxations.crown import intermediate_bounds
    sel = torch.nonzero(child["depth"] <= max_depth).flatten()
    k = sel.numel()
    if k == 0:
        return 0
    ref = [(pl[sel], pu[sel]) for pl, pu in zip(child["pl"], child["pu"])]
    state = DomainState(lo.expand(k, -1), hi.expand(k, -1), [s[sel] for s in child["split"]], None, ref_bounds=ref)
    with torch.no_grad():
        relax = intermediate_bounds(net, state)
    for i, (r, (l0, u0)) in enumerate(zip(relax, ref)):
        ln, un = torch.maximum(r.l, l0), torch.minimum(r.u, u0)
        bad = ~(ln <= un)  # crossing or NaN: keep what was inherited
        child["pl"][i][sel] = torch.where(bad, l0, ln)
        child["pu"][i][sel] = torch.where(bad, u0, un)
    return k


def _gammas(child, cons, ci=None, ri=None):
    """Per ReLU layer the children's constraint multipliers (None where a layer has no constraints); with
    ``ci``/``ri`` ``(U,)``, those of the (child, row) units, ``(U, 1, c_i)``."""
    if cons is None:
        return None
    pick = (lambda t: t) if ci is None else (lambda t: t[ci, ri][:, None])  # noqa: E731
    return [None if c is None else pick(g) for c, g in zip(cons, child["gamma"])]


def live_constraints(child, cons, ci, lo, hi):
    """The constraints the units' children ``ci`` ``(U,)`` still need: per ReLU layer the constraints of ``cons``
    not implied by the box of every one of them (:func:`relaxations.multineuron.implied_by_box`: once a split
    made a group's neurons linear, its hull constraint may say nothing the box does not), as
    ``(constraints, keep)``: the restricted :class:`LayerConstraints` (None where none is left) and the kept
    indices ``(c'_i,)`` (None where the layer has none). Leaving constraints out never invalidates a bound; it
    saves two products per constraint, layer and optimisation step."""
    from relaxations.multineuron import implied_by_box
    out, keep = [], []
    for i, c in enumerate(cons):
        if c is None:
            out.append(None)
            keep.append(None)
            continue
        l, u = child["pl"][i][ci], child["pu"][i][ci]
        hl = hu = None
        if c.Ph is not None:
            if i == 0:
                hl, hu = lo.reshape(1, -1).expand(l.shape[0], -1), hi.reshape(1, -1).expand(l.shape[0], -1)
            else:
                hl, hu = child["pl"][i - 1][ci].clamp(min=0), child["pu"][i - 1][ci].clamp(min=0)
            if hl.shape[1] != c.Ph.shape[1]:  # not the layer before (a graph): the constraints' own |h| bound
                hl = hu = None
        k = torch.nonzero(~implied_by_box(c, l, u, hl, hu).all(dim=0)).flatten()
        out.append(c.rows(k) if k.numel() else None)
        keep.append(k if k.numel() else None)
    return out, keep


def relu_state(child, lo, hi, cons=None):
    N = child["score"].shape[0]
    return DomainState(lo.expand(N, -1), hi.expand(N, -1), child["split"], list(zip(child["pl"], child["pu"])),
                       {"final": child["alpha"]}, child["beta"], constraints=cons, gammas=_gammas(child, cons))


def bound_open_rows(net, child, rows, lo, hi, cfg, stats, deadline, cons=None):
    """beta-CROWN bounds of ``N`` children (fields as in :func:`relu_children`), only of the rows whose polytope
    the parent's bound ``child["lb"]`` ``(N, M)`` left open. With the intermediate bounds fixed, each row is a
    problem of its own (its own slopes and multipliers), so every open (child, row) pair is one unit of the
    batch and rows already refuted cost nothing. Returns a BoundResult over all ``N x M`` rows: ``lb`` is the
    better of the parent's and the new bound (a few warm-started steps can end below the parent's, which holds
    on its children too); ``A_input``/``relu_coeffs`` are zero and alphas/betas/gammas the parent's on rows not
    bounded; ``infeasible`` ``(N,)``. ``cons``: the root's multi-neuron constraints (``mn-crown``), or None."""
    from bnb.engine.bab import _bound
    N, M = child["lb"].shape
    L = len(child["split"])
    ci, ri = torch.nonzero(~rows.settled(child["lb"], None, cfg.bab.verify_margin), as_tuple=True)
    U = ci.numel()
    if U == 0:  # (a parent pushed although refuted: its children are too)
        ci, ri = torch.zeros(1, dtype=torch.long, device=lo.device), torch.zeros(1, dtype=torch.long, device=lo.device)
        U = 1
    floor = child["lb"][ci, ri][:, None]
    live, keep, gam = None, None, None
    if cons is not None:
        live, keep = live_constraints(child, cons, ci, lo, hi)
        gam = [None if k is None else g[..., k] for g, k in zip(_gammas(child, cons, ci, ri), keep)]
        total = sum(c.count for c in cons if c is not None)
        stats.add("constraints_dropped", total - sum(c.count for c in live if c is not None))
        stats.add("constraints_offered", total)
        if all(c is None for c in live):
            live = gam = None
    state = DomainState(lo.expand(U, -1), hi.expand(U, -1), [s[ci] for s in child["split"]],
                        [(pl[ci], pu[ci]) for pl, pu in zip(child["pl"], child["pu"])],
                        {"final": [a[ci, ri][:, None] for a in child["alpha"]]},
                        [b[ci, ri][:, None] for b in child["beta"]],
                        constraints=live, gammas=gam)
    method = "beta" if live is None else "mn-crown"
    r = _bound(net, state, rows, method, cfg, cfg.bab.beta_iters, False, stats, deadline, floor, ri)
    stats.add("domains_bounded", N)
    stats.add("rows_bounded", U)
    lb = child["lb"].clone()
    lb[ci, ri] = torch.maximum(r.lb[:, 0], floor[:, 0])
    infeasible = torch.zeros(N, dtype=torch.int32, device=lb.device).index_add_(0, ci, r.infeasible.int()) > 0
    A = torch.zeros(N, M, r.A_input.shape[-1], dtype=lb.dtype, device=lb.device)
    A[ci, ri] = r.A_input[:, 0]
    coeffs, alphas, betas, pre = [], [], [], []
    for i in range(L):
        c = torch.zeros_like(child["alpha"][i])
        c[ci, ri] = r.relu_coeffs[i][:, 0]
        coeffs.append(c)
        a = child["alpha"][i].clone()
        a[ci, ri] = r.alphas["final"][i][:, 0]
        alphas.append(a)
        b = child["beta"][i].clone()
        if r.betas is not None:
            b[ci, ri] = r.betas[i][:, 0]
        betas.append(b)
        pl, pu = child["pl"][i].clone(), child["pu"][i].clone()
        pl[ci], pu[ci] = r.pre_bounds[i]  # the same on every unit of a child: its split phases applied
        pre.append((pl, pu))
    gammas = None
    if cons is not None:
        gammas = [None] * L
        for i in range(L):
            if cons[i] is not None:
                gammas[i] = child["gamma"][i].clone()
                got = torch.zeros(U, cons[i].count, dtype=gammas[i].dtype, device=gammas[i].device)
                if live is not None and live[i] is not None and r.gammas is not None and r.gammas[i] is not None:
                    got[:, keep[i]] = r.gammas[i][:, 0]
                gammas[i][ci, ri] = got  # zero on the constraints left out: implied by the box from here on
    return BoundResult(lb, None, pre, A, None, coeffs, {"final": alphas}, betas, infeasible, gammas)


class ReluSplitting(Strategy):
    def __init__(self, ctx, r, gv, coef):
        from bnb.engine.bab import heuristic
        from relaxations.verdict import proven
        super().__init__(ctx)
        cfg, net, rows, lo, hi = ctx.cfg, ctx.net, ctx.rows, ctx.lo, ctx.hi
        self.chooser = heuristic("relu", cfg.bab.relu_heuristic)
        if r.relu_coeffs is None:
            # IBP and the LP methods give no coefficients to branch on: start ReLU splitting from a CROWN bound
            c = ctx.bound(DomainState(lo, hi), "crown", 0, False)
            c.lb = torch.maximum(c.lb, r.lb)
            c.infeasible = c.infeasible | r.infeasible
            r = c
            if bool(proven(rows.score(r.lb)[0], cfg.bab.verify_margin, r.infeasible)[0]):
                self.verdict = "unsat"
                return
        if cfg.bab.relu_method == "mn-crown" and r.constraints is None:
            # children with multi-neuron constraints although the root had none: compute them on the root's bounds
            from bnb.engine.bound_options import bound_options
            from relaxations.methods import mn_constraints
            t0 = time.monotonic()
            margin_rows = r.lb[0] - rows.d
            order = [int(j) for j in torch.argsort(margin_rows) if bool(margin_rows[j] <= 0)]
            r.constraints = mn_constraints(net, lo, hi, r.pre_bounds, rows.C[order], bound_options(cfg))
            ctx.timed("time_constraints", t0)
            if all(c is None for c in r.constraints):
                r.constraints = None
        if r.constraints is not None and r.gammas is not None:
            from relaxations.multineuron import active_only
            r.constraints, r.gammas = active_only(r.constraints, r.gammas)
            if all(c is None for c in r.constraints):
                r.constraints = r.gammas = None
            else:
                ctx.stats["constraints"] = sum(c.count for c in r.constraints if c is not None)
        self.cons = r.constraints
        self.L = len(r.pre_bounds)
        self.sizes = [l.shape[1] for l, _ in r.pre_bounds]
        self.biases = relu_biases(net, [(l.shape[1], None) for l, _ in r.pre_bounds])
        score, row, _ = rows.score(r.lb)
        dev, M = lo.device, rows.C.shape[0]
        one = torch.arange(1, device=dev)
        zeros = lambda l: torch.zeros(1, M, l.shape[1], dtype=l.dtype, device=dev)  # noqa: E731
        self._root = {"score": score, "depth": torch.zeros(1, device=dev), "row": row, "lb": r.lb,
                      "split": [torch.zeros_like(l, dtype=torch.int8) for l, _ in r.pre_bounds],
                      "pl": [l for l, _ in r.pre_bounds], "pu": [u for _, u in r.pre_bounds],
                      "coef": [c[one, row] for c in r.relu_coeffs],
                      "alpha": r.alphas["final"] if r.alphas is not None else [zeros(l) for l, _ in r.pre_bounds],
                      "beta": [zeros(l) for l, _ in r.pre_bounds]}
        if self.cons is not None:
            self._root["gamma"] = [None if c is None else (
                r.gammas[i] if r.gammas is not None and r.gammas[i] is not None else
                torch.zeros(1, M, c.count, dtype=c.p.dtype, device=dev)) for i, c in enumerate(self.cons)]

    def root(self):
        return None if self.verdict else self._root

    def prune(self, dom):
        # no unstable neuron left: the relaxation is exact up to the optimiser; these stay undecided
        free = [((pl < 0) & (pu > 0)) & (s == 0) for pl, pu, s in zip(dom["pl"], dom["pu"], dom["split"])]
        if not free:  # a network without ReLUs: nothing to split
            return self.drop_stuck(dom, torch.zeros_like(dom["score"], dtype=torch.bool))
        return self.drop_stuck(dom, torch.stack([f.any(dim=1) for f in free]).any(dim=0))

    def _trial(self, dom, cands):
        """Look-ahead: bound both children of each candidate ``(n, k)`` with the parent's slopes and
        multipliers (no optimisation steps); ``(2, k, n)`` scores, active halves first."""
        ctx = self.ctx
        k = cands.shape[1]
        trial = relu_children(dom, cands.T.reshape(-1), self.sizes)
        t_res = ctx.bound(relu_state(trial, ctx.lo, ctx.hi, self.cons), "beta" if self.cons is None else "mn-crown",
                          0, False)
        return ctx.rows.score(torch.maximum(t_res.lb, trial["lb"]))[0].reshape(2, k, dom["score"].shape[0])

    def branch(self, dom):
        ctx, cfg = self.ctx, self.ctx.cfg
        t0 = time.monotonic()
        n = dom["score"].shape[0]
        dev = dom["score"].device
        gam = None
        if self.cons is not None:
            arn = torch.arange(n, device=dev)
            gam = [None if g is None else g[arn, dom["row"]] for g in dom["gamma"]]
        batch = ReluBatch(list(zip(dom["pl"], dom["pu"])), dom["coef"], dom["split"], self.biases, gam, self.cons,
                          lambda cands: self._trial(dom, cands), ctx.gen, cfg.bab.relu_lookahead, cfg.bab.fsb_topk)
        pos = self.chooser(batch).to(dev)
        free = torch.cat(batch.free(), dim=1)
        if pos.shape != (n,) or bool((pos < 0).any()) or bool((pos >= free.shape[1]).any()) or \
                not bool(free[torch.arange(n, device=dev), pos].all()):
            raise ValueError(f"ReLU heuristic {cfg.bab.relu_heuristic!r} chose a neuron that is stable, already "
                             "split or out of range")
        child = relu_children(dom, pos, self.sizes)
        ctx.stats["branches"] = ctx.stats.get("branches", 0) + n
        ctx.timed("time_branching", t0)
        if cfg.bab.retighten_depth > 0:
            t0 = time.monotonic()
            ctx.stats["retightened"] = ctx.stats.get("retightened", 0) + retighten(
                ctx.net, child, ctx.lo, ctx.hi, cfg.bab.retighten_depth)
            ctx.timed("time_retighten", t0)
        res = bound_open_rows(ctx.net, child, ctx.rows, ctx.lo, ctx.hi, cfg, ctx.stats, ctx.deadline, self.cons)
        if cfg.bab.relu_method == "lp":
            from bnb.engine.bound_options import bound_options
            from relaxations.lp.bab_hooks import lp_tighten
            t0 = time.monotonic()
            state = relu_state(child, ctx.lo, ctx.hi, self.cons)
            res.lb = torch.maximum(res.lb, lp_tighten(ctx.net, state, ctx.rows.C, res.lb, bound_options(cfg),
                                                      ctx.deadline, d=ctx.rows.d))
            ctx.timed("time_lp", t0)
        sc, rw, wr = ctx.rows.score(res.lb)
        return Children(sc, res.infeasible, {"child": child, "res": res, "row": rw, "worst": wr})

    def falsify(self, kids, open_):
        from bnb.engine.bab import _check_points, _pgd_in_domains
        ctx, d = self.ctx, kids.data
        k = int(open_.sum())
        dev = open_.device
        A_row = d["res"].A_input[open_][torch.arange(k, device=dev), d["row"][open_]]
        lo, hi = ctx.lo.expand(k, -1), ctx.hi.expand(k, -1)
        cand = box_min(A_row, lo, hi)[1]  # each bound's minimiser
        ce, _ = _check_points(ctx.net, ctx.rows, cand, ctx.validate, ctx.stats)
        if ce is not None:
            return ce
        ctx.it += 1
        if ctx.attack_now():
            order = torch.argsort(kids.score[open_])
            return _pgd_in_domains(ctx.net, ctx.rows, lo, hi, d["worst"][open_][order], cand[order], ctx.cfg, ctx.gen,
                                   ctx.validate, ctx.stats, ctx.deadline)
        return None

    def keep(self, kids, open_):
        child, res, rw = kids.data["child"], kids.data["res"], kids.data["row"][open_]
        arn = torch.arange(int(open_.sum()), device=open_.device)
        out = {"score": kids.score[open_], "depth": child["depth"][open_], "row": rw, "lb": res.lb[open_],
               "split": [s[open_] for s in child["split"]],
               "pl": [l[open_] for l, _ in res.pre_bounds], "pu": [u[open_] for _, u in res.pre_bounds],
               "coef": [c[open_][arn, rw] for c in res.relu_coeffs],
               "alpha": [a[open_] for a in res.alphas["final"]], "beta": [b[open_] for b in res.betas]}
        if self.cons is not None:
            out["gamma"] = [None if c is None else res.gammas[i][open_] for i, c in enumerate(self.cons)]
        return out
