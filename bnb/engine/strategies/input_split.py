"""Input splitting: the open boxes are split along one input dimension each (into ``bab.input_split_parts``
equal parts), the heuristic (:mod:`heuristics.input_split`) choosing the dimension, and all children are
bounded with CROWN in one call (alpha-CROWN once a run is long, ``bab.input_alpha_after``).

A domain is an :class:`~bnb.engine.domains.InputDomains`: its box, per open polytope the refutation value and
the input coefficients of its bound, and per ReLU layer the intermediate bounds (they hold on every child box:
the children start from them).
"""
from __future__ import annotations

import time

import torch

from bnb.engine.context import SearchContext, heuristic
from bnb.engine.domains import InputDomains
from bnb.engine.prooflog import KIND_INPUT, certifiable
from bnb.engine.rows import polytope_values
from bnb.engine.strategies.base import Children, Strategy
from heuristics import InputBatch, splittable
from relaxations.polytope import box_min
from relaxations.state import BoundResult, DomainState
from relaxations.verdict import proven


def split_boxes(lower, upper, dims, parts=2):
    """Children of splitting each domain along ``dims`` into ``parts`` equal parts: ``lower``/``upper``
    ``(n, n_in)`` are tiled to match ``dims`` ``(k n,)``; returns ``(parts k n, n_in)`` boxes, all first
    parts, then all second parts, ... Neighbouring parts share their cut exactly (the cuts are clamped to
    be non-decreasing), so the children cover the parent whatever the rounding."""
    reps = dims.shape[0] // lower.shape[0]
    lo, hi = lower.repeat(reps, 1), upper.repeat(reps, 1)
    ar = torch.arange(lo.shape[0], device=lo.device)
    a, b = lo[ar, dims], hi[ar, dims]
    if parts == 2:
        cuts = [a, (a + b) / 2, b]
    else:
        cuts = [a]
        for j in range(1, parts):
            cuts.append(torch.minimum(torch.maximum(a + (b - a) * (j / parts), cuts[-1]), b))
        cuts.append(b)
    los, his = [], []
    for j in range(parts):
        c_lo, c_hi = lo.clone(), hi.clone()
        c_lo[ar, dims], c_hi[ar, dims] = cuts[j], cuts[j + 1]
        los.append(c_lo)
        his.append(c_hi)
    return torch.cat(los), torch.cat(his)


class InputSplitting(Strategy):
    """Bisect (or split into ``input_split_parts``) one input dimension of every box, the heuristic choosing."""

    def __init__(self, ctx: SearchContext, root: BoundResult, refutation: torch.Tensor, coef: torch.Tensor | None):
        super().__init__(ctx.stats)
        self.ctx = ctx
        self.opts = opts = ctx.opts.input
        self.chooser = heuristic("input", opts.input_heuristic)
        self.parts = max(2, opts.input_split_parts)
        self.method = opts.input_method
        # below a millionth of the root box, bisecting is rounding noise
        self.min_width = (ctx.upper - ctx.lower) * 1e-6
        if coef is None:
            coef = torch.zeros(1, ctx.rows.K, ctx.lower.shape[1], dtype=ctx.lower.dtype, device=ctx.lower.device)
        self._root = InputDomains(score=refutation.min(dim=1).values, depth=torch.zeros(1, device=ctx.lower.device),
                                  lower=ctx.lower, upper=ctx.upper, refutation=refutation, coef=coef,
                                  pre_lower=[l for l, _ in root.pre_bounds], pre_upper=[u for _, u in root.pre_bounds],
                                  node=torch.full((1,), ctx.proof.tree_root if ctx.proof is not None else -1,
                                                  device=ctx.lower.device))

    def root(self) -> InputDomains:
        return self._root

    def prune(self, batch: InputDomains) -> InputDomains | None:
        # boxes too small to split further are left undecided (the answer will be unknown, not unsat)
        return self.drop_stuck(batch, splittable(batch.lower, batch.upper, self.min_width).any(dim=1))

    def _children(self, batch: InputDomains, cands, method, trial):
        """Bound the children of splitting every domain along each candidate ``(n, k)``: the look-ahead
        callback of the heuristics, and the bound of the chosen split; the last call is kept in ``trial``."""
        ctx, parts = self.ctx, self.parts
        n, k = cands.shape
        c_lo, c_hi = split_boxes(batch.lower, batch.upper, cands.T.reshape(-1), parts)  # (parts k n)
        ref = None
        if batch.pre_lower:  # the parent's intermediate bounds hold on every child box
            ref = [(l.repeat(parts * k, 1), u.repeat(parts * k, 1)) for l, u in batch.pre_bounds]
        res = ctx.bound(DomainState(c_lo, c_hi, ref_bounds=ref), method, self.opts.input_alpha_iters,
                        self.opts.input_alpha_intermediate)
        own, coef, lam = polytope_values(ctx.rows, res, c_lo, c_hi, ctx.opts.bounds.mix_iters, weights=True)
        if coef is None:
            coef = torch.zeros(own.shape[0], ctx.rows.K, c_lo.shape[1], dtype=c_lo.dtype, device=c_lo.device)
        # the parent's bound holds on its children too (CROWN is not monotone under bisection)
        refutation = torch.maximum(own, batch.refutation.repeat(parts * k, 1))
        trial[:] = [(cands, c_lo, c_hi, res, refutation, coef, own, lam)]
        return refutation.min(dim=1).values.reshape(parts, k, n)

    def branch(self, batch: InputDomains) -> Children:
        ctx, opts, parts = self.ctx, self.opts, self.parts
        t0 = time.monotonic()
        n = len(batch)
        ctx.stats.add("branches", n)
        if self.method != "alpha" and 0 < opts.input_alpha_after <= ctx.stats["branches"]:
            self.method = "alpha"  # CROWN has not finished after this much work: tighter, slower children
            ctx.log(f"children are bounded with alpha-CROWN from now on ({ctx.stats['branches']} branches)")
        trial = []
        ok = splittable(batch.lower, batch.upper, self.min_width)
        heuristic_batch = InputBatch(batch.lower, batch.upper, ok, batch.coef, batch.refutation,
                                     ctx.rows.Cg[batch.refutation.argmin(dim=1)], batch.pre_bounds, ctx.net,
                                     lambda cands: self._children(batch, cands, self.method, trial), ctx.gen,
                                     opts.input_lookahead, parts, opts.sb_margin)
        dims = self.chooser(heuristic_batch).to(ok.device)
        if dims.shape != (n,):
            raise ValueError(f"input heuristic {opts.input_heuristic!r} returned shape {tuple(dims.shape)}")
        good = torch.gather(ok, 1, dims.clamp(0, ok.shape[1] - 1)[:, None])[:, 0] & (dims >= 0)
        dims = torch.where(good, dims, heuristic_batch.width.masked_fill(~ok, -float("inf")).argmax(dim=1))
        found = None
        if trial:  # the heuristic looked ahead: reuse the children of its choice
            hit = trial[0][0] == dims[:, None]
            if bool(hit.any(dim=1).all()):
                found = hit.int().argmax(dim=1)
        if found is None:
            self._children(batch, dims[:, None], self.method, trial)
            found = torch.zeros(n, dtype=torch.long, device=ok.device)
        cands, c_lo, c_hi, res, refutation, coef, own, lam = trial[0]
        k = cands.shape[1]
        pre = res.pre_bounds
        infeasible = res.infeasible
        keep = None
        if k > 1:  # keep, per domain, the children of the chosen split
            ar = torch.arange(n, device=ok.device)
            keep = torch.cat([(j * k + found) * n + ar for j in range(parts)])
            c_lo, c_hi, refutation, coef = c_lo[keep], c_hi[keep], refutation[keep], coef[keep]
            pre = [(l[keep], u[keep]) for l, u in pre]
            infeasible = infeasible[keep]
        ctx.stats.timed("time_branching", t0)
        node = batch.node.repeat(parts)
        if ctx.proof is not None:
            node = self._record(batch, dims, c_lo, c_hi, pre, res, own, lam, keep)
        score, worst = refutation.min(dim=1)
        children = InputDomains(score=score, depth=(batch.depth + 1).repeat(parts), lower=c_lo, upper=c_hi,
                                refutation=refutation, coef=coef, pre_lower=[l for l, _ in pre],
                                pre_upper=[u for _, u in pre], node=node)
        return Children(children, infeasible, worst, coef[torch.arange(coef.shape[0], device=coef.device), worst])

    def _record(self, batch, dims, c_lo, c_hi, pre, res, own, lam, keep):
        """Log the kept children (``parts n``, all first parts first) in the proof: their cuts, their claims
        ``pre``, and the polytopes their own bound ``own`` refutes that their parent had not. Returns their node
        ids ``(parts n,)``."""
        ctx, proof = self.ctx, self.ctx.proof
        reason = certifiable(res, self.method, ctx.opts)
        if reason is not None:
            proof.unsupported(reason)
        parts = self.parts
        d = dims.repeat(parts)
        ar = torch.arange(d.shape[0], device=d.device)
        node = proof.children(batch.node.repeat(parts), KIND_INPUT, d, c_lo[ar, d], c_hi[ar, d])
        proof.claim(node, pre)
        pick = (lambda t: t) if keep is None else (lambda t: t[keep])
        margin = ctx.opts.loop.verify_margin
        parent_closed = proven(batch.refutation, margin).repeat(parts, 1)
        closed = proven(pick(own), margin) & ~parent_closed
        alphas = None if res.lb_alphas is None else [pick(a) for a in res.lb_alphas]
        proof.close(node, closed, pick(lam) if lam is not None else None, ctx.rows, alphas, None)
        return node

    def falsify(self, children: Children, open_mask: torch.Tensor):
        ctx = self.ctx
        c_lo, c_hi = children.batch.lower[open_mask], children.batch.upper[open_mask]
        cand = box_min(children.coef[open_mask], c_lo, c_hi)[1]
        mid = (c_lo + c_hi) / 2
        ce, seen_margins = ctx.check_points(torch.cat([cand, mid]))
        if ce is not None:
            return ce
        if ctx.attack_now():
            # PGD where a concrete point came closest to a violation, from that point, against that polytope
            nd = c_lo.shape[0]
            at_cand, at_mid = seen_margins[:nd], seen_margins[nd:]
            seen, target = torch.minimum(at_cand, at_mid).min(dim=1)
            start = torch.where((at_mid.min(dim=1).values < at_cand.min(dim=1).values)[:, None], mid, cand)
            order = torch.argsort(seen)
            return ctx.attack_domains(c_lo[order], c_hi[order], target[order], start[order])
        return None
