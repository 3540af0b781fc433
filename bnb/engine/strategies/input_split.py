"""Input splitting: the open boxes are split along one input dimension each (into ``bab.input_split_parts``
equal parts), the heuristic (:mod:`heuristics.input_split`) choosing the dimension, and all children are
bounded with CROWN in one call (alpha-CROWN once a run is long, ``bab.input_alpha_after``).

A domain carries its box (``lower``/``upper``), ``score``, ``depth``, per open polytope the refutation
value ``gv`` ``(K,)`` and the input coefficients ``A`` ``(K, n_in)`` of its bound, and per ReLU layer the
intermediate bounds ``pl``/``pu`` (they hold on every child box: the children start from them).
"""
from __future__ import annotations

import time

import torch

from bnb.engine.strategies import Children, Strategy
from heuristics import InputBatch, splittable
from relaxations.polytope import box_min
from relaxations.state import DomainState


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
    def __init__(self, ctx, r, gv, coef):
        from bnb.engine.bab import heuristic
        super().__init__(ctx)
        cfg = ctx.cfg
        self.chooser = heuristic("input", cfg.bab.input_heuristic)
        self.parts = max(2, cfg.bab.input_split_parts)
        self.method = cfg.bab.input_method
        self.min_width = (ctx.hi - ctx.lo) * 1e-6  # below a millionth of the root box, bisecting is rounding noise
        if coef is None:
            coef = torch.zeros(1, ctx.rows.K, ctx.lo.shape[1], dtype=ctx.lo.dtype, device=ctx.lo.device)
        self._root = {"lower": ctx.lo, "upper": ctx.hi, "score": gv.min(dim=1).values,
                      "depth": torch.zeros(1, device=ctx.lo.device), "A": coef, "gv": gv,
                      "pl": [l for l, _ in r.pre_bounds], "pu": [u for _, u in r.pre_bounds]}

    def root(self):
        return self._root

    def prune(self, dom):
        # boxes too small to split further are left undecided (the answer will be unknown, not unsat)
        ok = splittable(dom["lower"], dom["upper"], self.min_width)
        dom = self.drop_stuck(dom, ok.any(dim=1))
        if dom is not None:
            dom["ok"] = ok[ok.any(dim=1)]
        return dom

    def _children(self, dom, cands, method, trial):
        """Bound the children of splitting every domain along each candidate ``(n, k)``: the look-ahead
        callback of the heuristics, and the bound of the chosen split; the last call is kept in ``trial``."""
        ctx, parts = self.ctx, self.parts
        n, k = cands.shape
        c_lo, c_hi = split_boxes(dom["lower"], dom["upper"], cands.T.reshape(-1), parts)  # (parts k n)
        ref = None
        if dom.get("pl"):  # the parent's intermediate bounds hold on every child box
            ref = [(pl.repeat(parts * k, 1), pu.repeat(parts * k, 1)) for pl, pu in zip(dom["pl"], dom["pu"])]
        res = ctx.bound(DomainState(c_lo, c_hi, ref_bounds=ref), method, ctx.cfg.bab.input_alpha_iters,
                        ctx.cfg.bab.input_alpha_intermediate)
        from bnb.engine.bab import polytope_values
        gv, coef = polytope_values(ctx.rows, res, c_lo, c_hi, ctx.cfg)
        if coef is None:
            coef = torch.zeros(gv.shape[0], ctx.rows.K, c_lo.shape[1], dtype=c_lo.dtype, device=c_lo.device)
        # the parent's bound holds on its children too (CROWN is not monotone under bisection)
        gv = torch.maximum(gv, dom["gv"].repeat(parts * k, 1))
        trial[:] = [(cands, c_lo, c_hi, res, gv, coef)]
        return gv.min(dim=1).values.reshape(parts, k, n)

    def branch(self, dom):
        ctx, cfg, parts = self.ctx, self.ctx.cfg, self.parts
        t0 = time.monotonic()
        n = dom["lower"].shape[0]
        ctx.stats["branches"] = ctx.stats.get("branches", 0) + n
        if self.method != "alpha" and 0 < cfg.bab.input_alpha_after <= ctx.stats["branches"]:
            self.method = "alpha"  # CROWN has not finished after this much work: tighter, slower children
            ctx.log(f"children are bounded with alpha-CROWN from now on ({ctx.stats['branches']} branches)")
        trial = []
        ok = dom["ok"]
        pre = list(zip(dom.get("pl", []), dom.get("pu", []))) or None
        batch = InputBatch(dom["lower"], dom["upper"], ok, dom["A"], dom["gv"], ctx.rows.Cg[dom["gv"].argmin(dim=1)],
                           pre, ctx.net, lambda cands: self._children(dom, cands, self.method, trial), ctx.gen,
                           cfg.bab.input_lookahead, parts, cfg.bab.sb_margin)
        dims = self.chooser(batch).to(ok.device)
        if dims.shape != (n,):
            raise ValueError(f"input heuristic {cfg.bab.input_heuristic!r} returned shape {tuple(dims.shape)}")
        good = torch.gather(ok, 1, dims.clamp(0, ok.shape[1] - 1)[:, None])[:, 0] & (dims >= 0)
        dims = torch.where(good, dims, batch.width.masked_fill(~ok, -float("inf")).argmax(dim=1))
        found = None
        if trial:  # the heuristic looked ahead: reuse the children of its choice
            hit = trial[0][0] == dims[:, None]
            if bool(hit.any(dim=1).all()):
                found = hit.int().argmax(dim=1)
        if found is None:
            self._children(dom, dims[:, None], self.method, trial)
            found = torch.zeros(n, dtype=torch.long, device=ok.device)
        cands, c_lo, c_hi, res, gv, coef = trial[0]
        k = cands.shape[1]
        pre = res.pre_bounds
        if k > 1:  # keep, per domain, the children of the chosen split
            ar = torch.arange(n, device=ok.device)
            keep = torch.cat([(j * k + found) * n + ar for j in range(parts)])
            c_lo, c_hi, gv, coef = c_lo[keep], c_hi[keep], gv[keep], coef[keep]
            pre = [(l[keep], u[keep]) for l, u in pre]
            res.infeasible = res.infeasible[keep]
        ctx.timed("time_branching", t0)
        sc, wr = gv.min(dim=1)
        return Children(sc, res.infeasible, {"lower": c_lo, "upper": c_hi, "gv": gv, "A": coef, "worst": wr,
                                             "pre": pre, "depth": (dom["depth"] + 1).repeat(parts)})

    def falsify(self, kids, open_):
        from bnb.engine.bab import _check_points, _pgd_in_domains
        ctx, d = self.ctx, kids.data
        c_lo, c_hi = d["lower"][open_], d["upper"][open_]
        A = d["A"][open_]
        A_row = A[torch.arange(c_lo.shape[0], device=c_lo.device), d["worst"][open_]]
        cand = box_min(A_row, c_lo, c_hi)[1]
        mid = (c_lo + c_hi) / 2
        ce, gm = _check_points(ctx.net, ctx.rows, torch.cat([cand, mid]), ctx.validate, ctx.stats)
        if ce is not None:
            return ce
        ctx.it += 1
        if ctx.attack_now():
            # PGD where a concrete point came closest to a violation, from that point, against that polytope
            nd = c_lo.shape[0]
            seen, target = torch.minimum(gm[:nd], gm[nd:]).min(dim=1)
            x0 = torch.where((gm[nd:].min(dim=1).values < gm[:nd].min(dim=1).values)[:, None], mid, cand)
            order = torch.argsort(seen)
            return _pgd_in_domains(ctx.net, ctx.rows, c_lo[order], c_hi[order], target[order], x0[order], ctx.cfg,
                                   ctx.gen, ctx.validate, ctx.stats, ctx.deadline)
        return None

    def keep(self, kids, open_):
        d = kids.data
        return {"lower": d["lower"][open_], "upper": d["upper"][open_], "score": kids.score[open_],
                "depth": d["depth"][open_], "A": d["A"][open_], "gv": d["gv"][open_],
                "pl": [l[open_] for l, _ in d["pre"]], "pu": [u[open_] for _, u in d["pre"]]}
