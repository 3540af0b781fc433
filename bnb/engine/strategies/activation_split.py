"""Activation splitting: each open domain splits one neuron's pre-activation interval ``[l, u]`` at a point ``p``
(0 where the interval crosses it, else the midpoint: :func:`heuristics.activation_split.split_points`) into the
children ``z <= p`` and ``z >= p``, the heuristic (:mod:`heuristics.activation_split`) choosing the neuron. Any
activation (sigmoid, tanh, softplus, ReLU, LeakyReLU): what ``bab.branching: auto`` uses on networks with other
activations than ReLU and more than ``16`` inputs.

A domain (:class:`~bnb.engine.domains.ActivationDomains`) is the input box's points whose pre-activations lie in
its intermediate bounds. A child keeps its parent's bounds (they hold on the child, a subset) with the split
neuron's narrowed, so that neuron's relaxation is built on the narrower interval; its rows are bounded by CROWN or
alpha-CROWN through those fixed bounds (``bab.activation_method``; children at most
``bab.activation_retighten_depth`` deep first re-bound every later layer by CROWN, intersected with the inherited
bounds; with ``beta``, alpha-CROWN with multipliers of the interval constraints ``l <= z <= u`` of every neuron,
the split constraints among them: what lets the bound use the domain's region, not only the narrower lines). The
lines of the split neuron hold only on the child's side of ``p``, so the back-substitution bounds the
output on the child's region, and its minimum over the whole box is below the minimum over the region: sound.
The parent's bound holds on the child too and is kept where it is better.

After an ``mn-crown`` root (``bounds.method``), children bounded by ``alpha`` or ``beta`` inherit the root's
multi-neuron constraints (on smooth layers the hull cuts of :mod:`relaxations.hull_cuts`, valid on the root's
box and bounds, so on every child, a subset) with the root's multipliers as warm start, as ReLU children do; only
the constraints some root row leans on (a positive multiplier) are kept.

A domain is verified only through :func:`relaxations.verdict.proven`; a domain with no neuron left wider than
``bab.activation_min_width`` of its root interval is undecided (the answer is then unknown, never unsat).
"""
from __future__ import annotations

import time

import torch

from bnb.engine.context import SearchContext, heuristic
from bnb.engine.domains import ActivationDomains
from bnb.engine.strategies.base import Children, Strategy, with_coefficients
from bnb.engine.strategies.relu_split import ReluSplitting, retighten
from heuristics import ActivationBatch
from heuristics.activation_split import PIECEWISE, split_points
from relaxations.layers import LeakyReLU, ReLU, SmoothActivation
from relaxations.multineuron import active_only
from relaxations.state import BoundResult, DomainState

WARM_DTYPE = torch.float32  # the stored alpha warm starts (any value is sound: the lines are repaired)


def activation_kinds(net) -> list:
    """Per activation layer of ``net`` ``(kind, slope)`` (see :class:`heuristics.ActivationBatch`) and the mask
    ``(n_i,)`` bool of the neurons it acts on (None: all), as ``[(kind, slope, mask)]``; ``kind`` None for an
    activation that cannot be split."""
    out = []
    for i in net.activation_indices():
        layer = net.layers[i]
        mask = getattr(layer, "mask", None)
        mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool, device=net.device).reshape(-1)
        if isinstance(layer, SmoothActivation):
            out.append((layer.kind, 0.0, mask))
        elif isinstance(layer, LeakyReLU):
            out.append(("leaky", layer.alpha, mask))
        elif isinstance(layer, ReLU):
            out.append(("relu", 0.0, mask))
        else:
            out.append((None, 0.0, mask))
    return out


def split_children(batch: ActivationDomains, pos: torch.Tensor, point: torch.Tensor, sizes) -> ActivationDomains:
    """Both children of splitting, in each of the ``n`` domains of ``batch``, the neuron at flat position ``pos``
    ``(n,)`` (over the concatenated activation layers of ``sizes`` neurons) at ``point`` ``(n,)``: ``2 n`` domains,
    first the halves ``z <= point`` (upper bound lowered to it), then the halves ``z >= point``."""
    n = len(batch)
    child = batch.tile(2)
    child.pre_lower = [t.clone() for t in child.pre_lower]
    child.pre_upper = [t.clone() for t in child.pre_upper]
    offsets = torch.tensor([0] + list(sizes), device=pos.device).cumsum(0)
    layer = torch.searchsorted(offsets, pos, right=True) - 1
    idx = pos - offsets[layer]
    ar = torch.arange(n, device=pos.device)
    for i in range(len(sizes)):
        sel = layer == i
        if not bool(sel.any()):
            continue
        d, j, p = ar[sel], idx[sel], point[sel].to(child.pre_upper[i].dtype)
        child.pre_upper[i][d, j] = torch.minimum(child.pre_upper[i][d, j], p)
        child.pre_lower[i][d + n, j] = torch.maximum(child.pre_lower[i][d + n, j], p)
    child.depth = child.depth + 1
    return child


class ActivationSplitting(Strategy):
    """Split one neuron's interval at a point in every domain, the heuristic choosing (see the module docstring)."""

    falsify = ReluSplitting.falsify  # candidates and PGD on the whole box: the same as ReLU splitting's

    def __init__(self, ctx: SearchContext, root: BoundResult, refutation: torch.Tensor, coef):
        super().__init__(ctx.stats)
        self.ctx = ctx
        self.opts = opts = ctx.opts.activation
        self.chooser = heuristic("activation", opts.activation_heuristic)
        self.method = opts.activation_method
        rows, lower = ctx.rows, ctx.lower
        r, verified = with_coefficients(ctx, root, root.pre_bounds or None)
        if verified:
            self.verdict = "unsat"
            return
        kinds = activation_kinds(ctx.net)
        self.kinds = [(k, s) for k, s, _ in kinds]
        self.masks = [m for _, _, m in kinds]
        self.sizes = [l.shape[1] for l, _ in r.pre_bounds]
        # below this share of the root interval, splitting a neuron again is rounding noise
        self.min_width = [(u - l) * opts.activation_min_width for l, u in r.pre_bounds]
        score, row, _ = rows.score(r.lb)
        one = torch.arange(1, device=lower.device)
        # alpha children are warm-started from their parent's parameters when the root has some to start from
        self.warm = self.method in ("alpha", "beta") and r.alphas is not None
        alphas = [a.to(WARM_DTYPE) for a in r.alphas["final"]] if self.warm else None
        betas = None
        if self.method == "beta":  # the interval constraints' multipliers start at 0
            M = r.lb.shape[1]
            betas = [torch.zeros(1, M, 2, l.shape[1], dtype=WARM_DTYPE, device=l.device) for l, _ in r.pre_bounds]
        # the root's multi-neuron constraints (mn-crown), those it leans on, for children that take multipliers
        self.cons, gammas = None, None
        if r.constraints is not None and r.gammas is not None and self.method in ("alpha", "beta"):
            cons, gam = active_only(r.constraints, r.gammas)
            if any(c is not None for c in cons):
                self.cons = cons
                gammas = [None if g is None else g.to(WARM_DTYPE) for g in gam]
                ctx.stats["constraints"] = sum(c.count for c in cons if c is not None)
        self._root = ActivationDomains(score=score, depth=torch.zeros(1, device=lower.device), row=row, lb=r.lb,
                                       pre_lower=[l for l, _ in r.pre_bounds], pre_upper=[u for _, u in r.pre_bounds],
                                       coeffs=[c[one, row] for c in r.relu_coeffs], alphas=alphas,
                                       betas=betas, gammas=gammas)

    def root(self) -> ActivationDomains | None:
        return None if self.verdict else self._root

    def splittable(self, batch: ActivationDomains):
        """Per activation layer ``(ok, points)``, each ``(N, n_i)``: the neurons that may be split (a known
        activation, on its mask, wider than the minimum width, the split point strictly inside; a piecewise
        linear one only where it crosses 0) and their split points."""
        oks, points = [], []
        for (l, u), (kind, _), mask, w in zip(batch.pre_bounds, self.kinds, self.masks, self.min_width):
            if kind is None:
                oks.append(torch.zeros_like(l, dtype=torch.bool))
                points.append(l)
                continue
            p = split_points(kind, l, u)
            ok = (l < p) & (p < u) & (u - l > w)
            if kind in PIECEWISE:
                ok = ok & (l < 0) & (u > 0)
            if mask is not None:
                ok = ok & mask[None]
            oks.append(ok)
            points.append(p)
        return oks, points

    def prune(self, batch: ActivationDomains) -> ActivationDomains | None:
        # no neuron left to split: these stay undecided (the answer will be unknown, not unsat)
        oks, _ = self.splittable(batch)
        if not oks:  # no activation at all
            return self.drop_stuck(batch, torch.zeros_like(batch.score, dtype=torch.bool))
        return self.drop_stuck(batch, torch.stack([ok.any(dim=1) for ok in oks]).any(dim=0))

    def branch(self, batch: ActivationDomains) -> Children:
        ctx, opts = self.ctx, self.opts
        t0 = time.monotonic()
        n = len(batch)
        dev = batch.score.device
        oks, points = self.splittable(batch)
        pos = self.chooser(ActivationBatch(batch.pre_bounds, batch.coeffs, oks, points, self.kinds, ctx.gen)).to(dev)
        ok, point = torch.cat(oks, dim=1), torch.cat(points, dim=1)
        ar = torch.arange(n, device=dev)
        if pos.shape != (n,) or bool((pos < 0).any()) or bool((pos >= ok.shape[1]).any()) or \
                not bool(ok[ar, pos].all()):
            raise ValueError(f"activation heuristic {opts.activation_heuristic!r} chose a neuron that cannot be split "
                             "or out of range")
        children = split_children(batch, pos, point[ar, pos], self.sizes)
        ctx.stats.add("branches", n)
        ctx.stats.timed("time_branching", t0)
        if opts.activation_retighten_depth > 0:
            t0 = time.monotonic()
            b = ctx.opts.bounds
            ctx.stats.add("retightened", retighten(ctx.net, children, ctx.lower, ctx.upper,
                                                   opts.activation_retighten_depth, b.lower_slope, b.rigorous))
            ctx.stats.timed("time_retighten", t0)
        m = len(children)
        warm = None
        if self.warm:
            warm = {"final": [a.to(ctx.lower.dtype) for a in children.alphas]}
        betas = None if children.betas is None else [b.to(ctx.lower.dtype) for b in children.betas]
        gammas = None if children.gammas is None else \
            [None if g is None else g.to(ctx.lower.dtype) for g in children.gammas]
        state = DomainState(ctx.lower.expand(m, -1), ctx.upper.expand(m, -1),
                            pre_bounds=[(l.clone(), u.clone()) for l, u in children.pre_bounds], alphas=warm,
                            betas=betas, constraints=self.cons, gammas=gammas)
        res = ctx.bound(state, self.method, opts.activation_alpha_iters, False, floor=children.lb)
        lb = torch.maximum(res.lb, children.lb)  # the parent's bound holds on its children
        score, row, worst = ctx.rows.score(lb)
        arm = torch.arange(m, device=dev)
        alphas = None
        if self.warm:
            alphas = [a.to(WARM_DTYPE) for a in res.alphas["final"]]
        if children.betas is not None:
            got = res.betas if res.betas is not None else children.betas
            betas = [b.to(WARM_DTYPE) for b in got]
        if children.gammas is not None:
            got = res.gammas if res.gammas is not None else children.gammas
            gammas = [None if g is None else g.to(WARM_DTYPE) for g in got]
        bounded = ActivationDomains(score=score, depth=children.depth, row=row, lb=lb, pre_lower=children.pre_lower,
                                    pre_upper=children.pre_upper, coeffs=[c[arm, row] for c in res.relu_coeffs],
                                    alphas=alphas, betas=betas, gammas=gammas)
        return Children(bounded, res.infeasible, worst, res.A_input[arm, row])
