"""ReLU splitting: each open domain fixes one unstable neuron active / inactive (the heuristic of
:mod:`heuristics.relu_split` choosing it); the children are bounded with beta-CROWN (split multipliers),
warm-started from the parent's slopes and multipliers, only on the rows whose polytope the parent left open;
with ``bab.relu_method: lp`` tightened by the triangle LP, with ``mn-crown`` under the root's multi-neuron
constraints.

A domain is a :class:`~bnb.engine.domains.ReluDomains`: its split phases, intermediate bounds, the bound of
every row, and what warm-starts its children (slopes, split multipliers, multi-neuron constraint multipliers).
"""
from __future__ import annotations

import time

import torch

from bnb.engine.clauses import ClauseStore, learn
from bnb.engine.context import SearchContext, heuristic
from bnb.engine.domains import ReluDomains
from bnb.engine.prooflog import KIND_RELU
from bnb.engine.strategies.base import Children, Strategy, with_coefficients
from heuristics import ReluBatch
from relaxations.crown import intermediate_bounds
from relaxations.methods import mn_constraints
from relaxations.multineuron import active_only, implied_by_box
from relaxations.polytope import box_min
from relaxations.state import BoundResult, DomainState
from relaxations.verdict import proven


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


LINK_ENTRIES = 4_000_000  # the largest dense link relu_links stores (16 MB in float32)


def relu_links(net, sizes, max_entries: int = LINK_ENTRIES):
    """Per ReLU layer ``i`` the dense matrix ``(n_i, n_{i-1})`` of the affine layers between ReLU layer ``i-1``'s
    outputs and layer ``i``'s pre-activations (the linear part ``W``, no bias), what ``deepsplit`` propagates its
    indirect effects through; None for layer 0, for a link with more than ``max_entries`` entries and where the
    layers between are not all affine (e.g. a graph stage that cannot say); None for a network without layers."""
    layers = getattr(net, "layers", None)
    relus = net.relu_indices() if hasattr(net, "relu_indices") else []
    if layers is None or len(relus) != len(sizes):
        return None
    out = [None]
    with torch.no_grad():
        for i in range(1, len(relus)):
            n_prev, n = sizes[i - 1], sizes[i]
            between = layers[relus[i - 1] + 1:relus[i]]
            m = None
            if n_prev * n <= max_entries and all(layer.affine for layer in between):
                try:  # a heuristic's input: where a layer cannot say, the link is left out
                    x = torch.eye(n_prev, dtype=net.dtype, device=net.device)
                    x = x.reshape(n_prev, *layers[relus[i - 1]].out_shape)
                    for layer in between:
                        x = layer.linear(x)
                    m = x.reshape(n_prev, -1).T.contiguous()
                except Exception:
                    m = None
                if m is not None and m.shape != (n, n_prev):
                    m = None
            out.append(m)
    return out


def relu_children(batch: ReluDomains, pos: torch.Tensor, sizes) -> ReluDomains:
    """Both children of splitting, in each domain of ``batch`` (``n`` domains), the neuron at flat position
    ``pos`` ``(k n,)`` (over the concatenated ReLU layers of ``sizes`` neurons; the batch is tiled ``k``
    times): ``2 k n`` domains, all active halves first, then all inactive halves."""
    n = len(batch)
    reps = pos.shape[0] // n
    m = pos.shape[0]
    ar = torch.arange(m, device=pos.device)
    child = batch.tile(2 * reps)
    phase = torch.cat([torch.ones(m, dtype=torch.int8, device=pos.device),   # first half: active
                       -torch.ones(m, dtype=torch.int8, device=pos.device)])  # second half: inactive
    child.fix(torch.cat([ar, ar + m]), torch.cat([pos, pos]), phase, sizes)
    child.depth = child.depth + 1
    return child


def retighten(net, children, lower, upper, max_depth: int, lower_slope="adaptive", rigorous=True) -> int:
    """Re-bound, in place, the intermediate bounds of the ``children`` (:class:`ReluDomains`, or any batch with
    ``depth`` and ``pre_lower``/``pre_upper``) at most ``max_depth`` deep: CROWN with their split phases (ReLU
    splits) or their own narrowed bounds as references (activation splits): a split tightens every layer after it.
    The result is intersected with the inherited bounds, which hold on a child too; where the intersection would be
    empty (bounds crossing, possibly by rounding) a neuron keeps its inherited bounds: an empty domain is left for
    the bound's rigorous infeasibility test. Returns how many children were re-bounded."""
    sel = torch.nonzero(children.depth <= max_depth).flatten()
    k = sel.numel()
    if k == 0:
        return 0
    ref = [(l[sel], u[sel]) for l, u in children.pre_bounds]
    splits = getattr(children, "splits", None)
    state = DomainState(lower.expand(k, -1), upper.expand(k, -1), None if splits is None else [s[sel] for s in splits],
                        None, ref_bounds=ref)
    with torch.no_grad():
        relax = intermediate_bounds(net, state, lower_slope, rigorous=rigorous)
    for i, (r, (l0, u0)) in enumerate(zip(relax, ref)):
        new_l, new_u = torch.maximum(r.l, l0), torch.minimum(r.u, u0)
        bad = ~(new_l <= new_u)  # crossing or NaN: keep what was inherited
        children.pre_lower[i][sel] = torch.where(bad, l0, new_l)
        children.pre_upper[i][sel] = torch.where(bad, u0, new_u)
    return k


def unit_gammas(children: ReluDomains, cons, child_idx, row_idx):
    """Per ReLU layer the constraint multipliers of the (child, row) units ``child_idx``/``row_idx`` ``(U,)``,
    ``(U, 1, c_i)`` (None where a layer has no constraints)."""
    return [None if c is None else g[child_idx, row_idx][:, None] for c, g in zip(cons, children.gammas)]


def live_constraints(children: ReluDomains, cons, child_idx, lower, upper):
    """The constraints the children ``child_idx`` ``(U,)`` still need: per ReLU layer the constraints of ``cons``
    not implied by the box of every one of them (:func:`relaxations.multineuron.implied_by_box`: once a split
    made a group's neurons linear, its hull constraint may say nothing the box does not), as
    ``(constraints, keep)``: the restricted :class:`LayerConstraints` (None where none is left) and the kept
    indices ``(c'_i,)`` (None where the layer has none). Leaving constraints out never invalidates a bound; it
    saves two products per constraint, layer and optimisation step."""
    out, keep = [], []
    for i, c in enumerate(cons):
        if c is None:
            out.append(None)
            keep.append(None)
            continue
        l, u = children.pre_lower[i][child_idx], children.pre_upper[i][child_idx]
        hl = hu = None
        if c.Ph is not None:
            if i == 0:
                hl, hu = lower.reshape(1, -1).expand(l.shape[0], -1), upper.reshape(1, -1).expand(l.shape[0], -1)
            else:
                hl = children.pre_lower[i - 1][child_idx].clamp(min=0)
                hu = children.pre_upper[i - 1][child_idx].clamp(min=0)
            if hl.shape[1] != c.Ph.shape[1]:  # not the layer before (a graph): the constraints' own |h| bound
                hl = hu = None
        k = torch.nonzero(~implied_by_box(c, l, u, hl, hu).all(dim=0)).flatten()
        out.append(c.rows(k) if k.numel() else None)
        keep.append(k if k.numel() else None)
    return out, keep


def bound_open_rows(ctx: SearchContext, children: ReluDomains, cons=None) -> BoundResult:
    """beta-CROWN bounds of ``N`` children, only of the rows whose polytope the parent's bound ``children.lb``
    ``(N, M)`` left open. With the intermediate bounds fixed, each row is a problem of its own (its own slopes
    and multipliers), so every open (child, row) pair is one unit of the batch and rows already refuted cost
    nothing. Returns a BoundResult over all ``N x M`` rows: ``lb`` is the better of the parent's and the new
    bound (a few warm-started steps can end below the parent's, which holds on its children too);
    ``A_input``/``relu_coeffs`` are zero and alphas/betas/gammas the parent's on rows not bounded;
    ``infeasible`` ``(N,)``. ``cons``: the root's multi-neuron constraints (``mn-crown``), or None."""
    rows, lower, upper, stats = ctx.rows, ctx.lower, ctx.upper, ctx.stats
    N, M = children.lb.shape
    L = len(children.splits)
    child_idx, row_idx = torch.nonzero(~rows.settled(children.lb, None, ctx.opts.loop.verify_margin), as_tuple=True)
    U = child_idx.numel()
    if U == 0:  # (a parent pushed although refuted: its children are too)
        child_idx = row_idx = torch.zeros(1, dtype=torch.long, device=lower.device)
        U = 1
    floor = children.lb[child_idx, row_idx][:, None]
    live, keep, gam = None, None, None
    if cons is not None:
        live, keep = live_constraints(children, cons, child_idx, lower, upper)
        gam = [None if k is None else g[..., k] for g, k in zip(unit_gammas(children, cons, child_idx, row_idx), keep)]
        total = sum(c.count for c in cons if c is not None)
        stats.add("constraints_dropped", total - sum(c.count for c in live if c is not None))
        stats.add("constraints_offered", total)
        if all(c is None for c in live):
            live = gam = None
    state = DomainState(lower.expand(U, -1), upper.expand(U, -1), [s[child_idx] for s in children.splits],
                        [(l[child_idx], u[child_idx]) for l, u in children.pre_bounds],
                        {"final": [a[child_idx, row_idx][:, None] for a in children.alphas]},
                        [b[child_idx, row_idx][:, None] for b in children.betas],
                        constraints=live, gammas=gam)
    method = "beta" if live is None else "mn-crown"
    r = ctx.bound(state, method, ctx.opts.relu.beta_iters, False, floor, row_idx)
    stats.add("domains_bounded", N)
    stats.add("rows_bounded", U)
    lb = children.lb.clone()
    lb[child_idx, row_idx] = torch.maximum(r.lb[:, 0], floor[:, 0])
    infeasible = torch.zeros(N, dtype=torch.int32, device=lb.device).index_add_(0, child_idx, r.infeasible.int()) > 0
    A = torch.zeros(N, M, r.A_input.shape[-1], dtype=lb.dtype, device=lb.device)
    A[child_idx, row_idx] = r.A_input[:, 0]
    coeffs, alphas, betas, pre = [], [], [], []
    proof = ctx.proof is not None and r.lb_alphas is not None
    lb_alphas, lb_betas = [], ([] if proof and r.lb_betas is not None else None)
    for i in range(L):
        c = torch.zeros_like(children.alphas[i])
        c[child_idx, row_idx] = r.relu_coeffs[i][:, 0]
        coeffs.append(c)
        a = children.alphas[i].clone()
        a[child_idx, row_idx] = r.alphas["final"][i][:, 0]
        alphas.append(a)
        b = children.betas[i].clone()
        if r.betas is not None:
            b[child_idx, row_idx] = r.betas[i][:, 0]
        betas.append(b)
        if proof:  # (rows not bounded here are not used by the proof log: settled before)
            a = torch.zeros_like(children.alphas[i])
            a[child_idx, row_idx] = r.lb_alphas[i][:, 0]
            lb_alphas.append(a)
            if lb_betas is not None:
                b = torch.zeros_like(children.betas[i])
                b[child_idx, row_idx] = r.lb_betas[i][:, 0]
                lb_betas.append(b)
        l, u = children.pre_lower[i].clone(), children.pre_upper[i].clone()
        l[child_idx], u[child_idx] = r.pre_bounds[i]  # the same on every unit of a child: its split phases applied
        pre.append((l, u))
    gammas = lb_gammas = None
    if cons is not None:
        gammas, lb_gammas = [None] * L, ([None] * L if proof else None)
        for i in range(L):
            if cons[i] is not None:
                gammas[i] = children.gammas[i].clone()
                for out, src in ((gammas, r.gammas), (lb_gammas, r.lb_gammas)):
                    if out is None:
                        continue
                    if out is lb_gammas:  # (rows not bounded here are not used by the proof log)
                        out[i] = torch.zeros_like(gammas[i])
                    got = torch.zeros(U, cons[i].count, dtype=gammas[i].dtype, device=gammas[i].device)
                    if live is not None and live[i] is not None and src is not None and src[i] is not None:
                        got[:, keep[i]] = src[i][:, 0]
                    out[i][child_idx, row_idx] = got  # zero on the constraints left out: implied by the box from here
    return BoundResult(lb, None, pre, A, None, coeffs, {"final": alphas}, betas, infeasible, gammas,
                       lb_alphas=lb_alphas if proof else None, lb_betas=lb_betas, lb_gammas=lb_gammas)


class ReluSplitting(Strategy):
    """Fix one unstable ReLU neuron active / inactive in every domain, the heuristic choosing."""

    def __init__(self, ctx: SearchContext, root: BoundResult, refutation: torch.Tensor, coef):
        super().__init__(ctx.stats)
        self.ctx = ctx
        self.opts = opts = ctx.opts.relu
        net, rows, lower, upper = ctx.net, ctx.rows, ctx.lower, ctx.upper
        self.chooser = heuristic("relu", opts.relu_heuristic)
        r, verified = with_coefficients(ctx, root)
        if verified:
            self.verdict = "unsat"
            return
        if opts.relu_method == "mn-crown" and r.constraints is None:
            # children with multi-neuron constraints although the root had none: compute them on the root's bounds
            t0 = time.monotonic()
            margin_rows = r.lb[0] - rows.d
            order = [int(j) for j in torch.argsort(margin_rows) if bool(margin_rows[j] <= 0)]
            # (with bounds.mn_tighten the children also inherit the intermediate bounds they were built on)
            r.constraints, r.pre_bounds, _ = mn_constraints(net, lower, upper, r.pre_bounds, rows.C[order],
                                                            ctx.opts.bounds)
            if ctx.proof is not None:
                ctx.proof.unsupported("multi-neuron constraints computed for the children only")
            ctx.stats.timed("time_constraints", t0)
            if all(c is None for c in r.constraints):
                r.constraints = None
        if r.constraints is not None and opts.mn_children_gain > 0 and r.base_lb is not None:
            before, after = float(rows.score(r.base_lb)[0][0]), float(rows.score(r.lb)[0][0])
            closed = (after - before) / -before if before < 0 else 1.0
            keep = closed >= opts.mn_children_gain
            ctx.stats["mn_children"] = f"{'kept' if keep else 'dropped'} (closed {closed:.0%} of the root margin)"
            if not keep:  # the constraints do not pay for their cost per child: plain beta-CROWN children
                r.constraints = r.gammas = None
        if r.constraints is not None and r.gammas is not None:
            r.constraints, r.gammas, kept = active_only(r.constraints, r.gammas, index=True)
            if ctx.proof is not None:
                ctx.proof.select_constraints(kept)
            if all(c is None for c in r.constraints):
                r.constraints = r.gammas = None
            else:
                ctx.stats["constraints"] = sum(c.count for c in r.constraints if c is not None)
        self.cons = r.constraints
        self.sizes = [l.shape[1] for l, _ in r.pre_bounds]
        self.biases = relu_biases(net, [(l.shape[1], None) for l, _ in r.pre_bounds])
        # dense links between ReLU layers: only for the heuristics that read them (deepsplit, plug-ins)
        self.links = relu_links(net, self.sizes) if opts.relu_heuristic == "deepsplit" or \
            ":" in opts.relu_heuristic else None
        # bab.clauses: nogoods learned from verified children (bnb/engine/clauses.py), re-verified on the root's
        # intermediate bounds (valid on the whole box)
        self.clauses = ClauseStore(self.sizes, opts.clause_cap, lower.device) if opts.clauses else None
        self.root_pre = [(l, u) for l, u in r.pre_bounds]
        self.started, self.clause_time0 = time.monotonic(), ctx.stats.get("time_clauses", 0.0)
        score, row, _ = rows.score(r.lb)
        dev, M = lower.device, rows.C.shape[0]
        one = torch.arange(1, device=dev)
        zeros = lambda l: torch.zeros(1, M, l.shape[1], dtype=l.dtype, device=dev)  # noqa: E731
        gammas = None
        if self.cons is not None:
            gammas = [None if c is None else (
                r.gammas[i] if r.gammas is not None and r.gammas[i] is not None else
                torch.zeros(1, M, c.count, dtype=c.p.dtype, device=dev)) for i, c in enumerate(self.cons)]
        self._root = ReluDomains(
            score=score, depth=torch.zeros(1, device=dev), row=row, lb=r.lb,
            splits=[torch.zeros_like(l, dtype=torch.int8) for l, _ in r.pre_bounds],
            pre_lower=[l for l, _ in r.pre_bounds], pre_upper=[u for _, u in r.pre_bounds],
            coeffs=[c[one, row] for c in r.relu_coeffs],
            alphas=r.alphas["final"] if r.alphas is not None else [zeros(l) for l, _ in r.pre_bounds],
            betas=[zeros(l) for l, _ in r.pre_bounds], gammas=gammas,
            node=None if ctx.proof is None else torch.full((1,), ctx.proof.tree_root, dtype=torch.long, device=dev))
        if ctx.proof is not None:
            for unsupported, reason in ((opts.clauses, "clauses (bab.clauses)"),
                                        (opts.retighten_depth > 0, "re-tightened children (bab.retighten_depth)"),
                                        (opts.relu_method not in ("beta", "mn-crown"),
                                         f"children bounded by {opts.relu_method}"),
                                        (r is not root, "a CROWN bound recomputed for branching")):
                if unsupported:
                    ctx.proof.unsupported(reason)

    def root(self) -> ReluDomains | None:
        return None if self.verdict else self._root

    def prune(self, batch: ReluDomains) -> ReluDomains | None:
        if self.clauses is not None and len(self.clauses):
            # inside a kept clause's region: verified (not undecided); unit clauses fix a neuron
            t0 = time.monotonic()
            pruned, fixed = self.clauses.apply(batch)
            self.stats.add("domains_pruned_by_clause", int(pruned.sum()))
            self.stats.add("unit_propagations", fixed)
            self.stats.timed("time_clauses", t0)
            if bool(pruned.all()):
                return None
            if bool(pruned.any()):
                batch = batch.select(~pruned)
        # no unstable neuron left: the relaxation is exact up to the optimiser; these stay undecided
        free = [((l < 0) & (u > 0)) & (s == 0) for l, u, s in zip(batch.pre_lower, batch.pre_upper, batch.splits)]
        if not free:  # a network without ReLUs: nothing to split
            return self.drop_stuck(batch, torch.zeros_like(batch.score, dtype=torch.bool))
        return self.drop_stuck(batch, torch.stack([f.any(dim=1) for f in free]).any(dim=0))

    def clause_budget_left(self) -> bool:
        """Whether the clauses' time on this box is within ``bab.clause_share`` of the search's so far."""
        spent = self.stats.get("time_clauses", 0.0) - self.clause_time0
        return spent <= self.opts.clause_share * (time.monotonic() - self.started)

    def bound_method(self) -> str:
        return "beta" if self.cons is None else "mn-crown"

    def _trial(self, batch: ReluDomains, cands):
        """Look-ahead: bound both children of each candidate ``(n, k)`` with the parent's slopes and
        multipliers (no optimisation steps); ``(2, k, n)`` scores, active halves first."""
        ctx = self.ctx
        k = cands.shape[1]
        trial = relu_children(batch, cands.T.reshape(-1), self.sizes)
        res = ctx.bound(trial.state(ctx.lower, ctx.upper, self.cons), self.bound_method(), 0, False)
        return ctx.rows.score(torch.maximum(res.lb, trial.lb))[0].reshape(2, k, len(batch))

    def branch(self, batch: ReluDomains) -> Children:
        ctx, opts = self.ctx, self.opts
        t0 = time.monotonic()
        n = len(batch)
        dev = batch.score.device
        gam = None
        if self.cons is not None:
            arn = torch.arange(n, device=dev)
            gam = [None if g is None else g[arn, batch.row] for g in batch.gammas]
        heuristic_batch = ReluBatch(batch.pre_bounds, batch.coeffs, batch.splits, self.biases, gam, self.cons,
                                    lambda cands: self._trial(batch, cands), ctx.gen, opts.relu_lookahead,
                                    opts.fsb_topk, links=self.links,
                                    indirect_weight=opts.deepsplit_weight)
        pos = self.chooser(heuristic_batch).to(dev)
        free = torch.cat(heuristic_batch.free(), dim=1)
        if pos.shape != (n,) or bool((pos < 0).any()) or bool((pos >= free.shape[1]).any()) or \
                not bool(free[torch.arange(n, device=dev), pos].all()):
            raise ValueError(f"ReLU heuristic {opts.relu_heuristic!r} chose a neuron that is stable, already "
                             "split or out of range")
        children = relu_children(batch, pos, self.sizes)
        ctx.stats.add("branches", n)
        ctx.stats.timed("time_branching", t0)
        if opts.retighten_depth > 0:
            t0 = time.monotonic()
            ctx.stats.add("retightened", retighten(ctx.net, children, ctx.lower, ctx.upper, opts.retighten_depth))
            ctx.stats.timed("time_retighten", t0)
        res = bound_open_rows(ctx, children, self.cons)
        if opts.relu_method == "lp":
            from relaxations.lp.bab_hooks import lp_tighten
            t0 = time.monotonic()
            state = children.state(ctx.lower, ctx.upper, self.cons)
            res.lb = torch.maximum(res.lb, lp_tighten(ctx.net, state, ctx.rows.C, res.lb, ctx.opts.bounds,
                                                      ctx.deadline, d=ctx.rows.d))
            ctx.stats.timed("time_lp", t0)
        score, row, worst = ctx.rows.score(res.lb)
        m = len(children)
        arm = torch.arange(m, device=dev)
        node = None if ctx.proof is None else self._record(batch, pos, children, res)
        bounded = ReluDomains(score=score, depth=children.depth, row=row, lb=res.lb, splits=children.splits,
                              pre_lower=[l for l, _ in res.pre_bounds], pre_upper=[u for _, u in res.pre_bounds],
                              coeffs=[c[arm, row] for c in res.relu_coeffs], alphas=res.alphas["final"],
                              betas=res.betas, gammas=res.gammas, node=node)
        if self.clauses is not None and self.clause_budget_left():
            verified = proven(score, ctx.opts.loop.verify_margin, res.infeasible)
            learn(ctx, self.clauses, bounded, res.relu_coeffs, verified, self.root_pre, self.cons, self.bound_method(),
                  opts.clause_iters, opts.clause_reverify)
        return Children(bounded, res.infeasible, worst, res.A_input[arm, row])

    def _record(self, batch: ReluDomains, pos, children: ReluDomains, res: BoundResult):
        """Log the two children of every domain of ``batch`` (active halves first) in the proof: the split neuron
        ``pos`` ``(n,)``, and the polytopes their own bound refutes that the parent's did not, each by its best row
        (one-hot weights) with that row's slopes and split multipliers. Their claims are the root's, clamped by
        the splits (the checker derives them). Returns the children's node ids ``(2 n,)``."""
        ctx, proof = self.ctx, self.ctx.proof
        if res.lb_alphas is None:
            proof.unsupported("ReLU-split children without recorded slopes")
        n = len(batch)
        phase = torch.cat([torch.ones(n, dtype=torch.int8), -torch.ones(n, dtype=torch.int8)])
        node = proof.children(batch.node.repeat(2), KIND_RELU, pos.repeat(2), phase=phase)
        rows, margin = ctx.rows, ctx.opts.loop.verify_margin
        ref = rows.refutation(res.lb)                                          # (2n, M)
        closed = proven(rows.group_max(ref), margin) & ~proven(rows.group_values(children.lb), margin)
        # per polytope, one-hot weights on its best row (padded rows of rows.index masked off)
        vals = ref[:, rows.index].masked_fill(~rows.valid, -float("inf"))      # (2n, K, R)
        lam = torch.nn.functional.one_hot(vals.argmax(dim=-1), rows.index.shape[1]).to(res.lb.dtype)
        proof.close(node, closed, lam, rows, res.lb_alphas, res.lb_betas, res.lb_gammas)
        return node

    def falsify(self, children: Children, open_mask: torch.Tensor):
        ctx = self.ctx
        k = int(open_mask.sum())
        lower, upper = ctx.lower.expand(k, -1), ctx.upper.expand(k, -1)
        cand = box_min(children.coef[open_mask], lower, upper)[1]  # each bound's minimiser
        ce, _ = ctx.check_points(cand)
        if ce is not None:
            return ce
        if ctx.attack_now():
            order = torch.argsort(children.score[open_mask])
            return ctx.attack_domains(lower, upper, children.polytope[open_mask][order], cand[order])
        return None
