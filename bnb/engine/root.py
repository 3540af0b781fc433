"""One input box decided: :func:`run_bab` bounds the root domain, checks the bound's minimiser, drops the
polytopes refuted on the whole box, and hands the rest to the branch-and-bound loop (:mod:`bnb.engine.loop`)
with the branching strategy of the options.

The box is safe iff for every domain of a partition, every polytope has a row ``C_i y - d_i`` whose lower
bound is positive. What a domain is and how it is split is the strategy's (:mod:`bnb.engine.strategies`):
bisecting an input dimension (low input dimension, e.g. ACAS Xu), fixing an unstable ReLU active/inactive
(bounded with beta-CROWN split constraints, warm-started from the parent), or, on networks with other
activations, splitting a neuron's pre-activation interval at a point.
"""
from __future__ import annotations

import copy
import dataclasses
import time

import torch

from bnb.engine.context import SearchContext, Stats
from bnb.engine.loop import search, search_trees
from bnb.engine.options import EngineOptions
from bnb.engine.prooflog import certifiable
from bnb.engine.rows import Rows, output_reach, polytope_values
from bnb.engine.signs import refine_signs
from bnb.engine.strategies import strategy_class
from relaxations.polytope import box_min
from relaxations.state import BoundResult, DomainState
from relaxations.verdict import proven


def keep_polytopes(res: BoundResult, keep_rows: torch.Tensor) -> None:
    """Restrict, in place, every per-row field of the root's bound ``res`` to the rows ``keep_rows`` ``(M,)``."""
    res.lb = res.lb[:, keep_rows]
    if res.base_lb is not None:
        res.base_lb = res.base_lb[:, keep_rows]
    if res.A_input is not None:
        res.A_input, res.bias = res.A_input[:, keep_rows], res.bias[:, keep_rows]
    if res.relu_coeffs is not None:
        res.relu_coeffs = [c[:, keep_rows] for c in res.relu_coeffs]
    if res.alphas is not None:
        res.alphas = {"final": [a[:, keep_rows] for a in res.alphas["final"]]}
    if res.gammas is not None:
        res.gammas = [None if g is None else g[:, keep_rows] for g in res.gammas]
    for name in ("lb_alphas", "lb_betas"):
        if getattr(res, name) is not None:
            setattr(res, name, [a[:, keep_rows] for a in getattr(res, name)])


def record_root(proof, res: BoundResult, method: str, opts: EngineOptions, rows: Rows, values_weights) -> None:
    """The root of a proof: its claims, and the polytopes its bound refutes."""
    reason = certifiable(res, method, opts)
    if reason is not None:
        proof.unsupported(reason)
    node = torch.zeros(1, dtype=torch.long)
    proof.constraints(res.constraints)  # (before the claim's hints: a tightened bound's hint takes them with gamma)
    proof.root_claim(node, res)
    values, lam = values_weights
    proof.close(node, proven(values, opts.loop.verify_margin, res.infeasible), lam, rows, res.lb_alphas,
                res.lb_betas, res.lb_gammas)


def run_bab(net, lower, upper, polys, opts: EngineOptions, deadline, validate, stats: Stats, log=None,
            ref_bounds=None, proof=None):
    """Decide one box. Returns ``("unsat" | "sat" | "unknown", counterexample or None)``.

    ``lower``/``upper``: ``(n_in,)`` tensors on the network's device; ``polys``: the box's polytopes;
    ``validate(xs numpy (K, n_in))``: replays candidates on the ONNX model; ``ref_bounds``: per ReLU layer
    ``(l, u)`` ``(1, n_i)`` known to hold on the box (the root's intermediate bounds are intersected with them),
    or None; ``proof``: a :class:`~bnb.engine.prooflog.ProofLog` that records the proof as it is found, or None.
    Raises :class:`~bnb.timing.VerificationTimeout` at the deadline.
    """
    log = log or (lambda m: None)
    if proof is not None and proof.active:  # bounds a certificate can prove (alpha-CROWN's intermediate bounds
        # re-evaluated once with its last slopes; the slopes of each reported bound kept)
        opts = dataclasses.replace(opts, bounds=dataclasses.replace(opts.bounds, certify=True))
    margin = opts.loop.verify_margin
    if any(len(p.d) == 0 for p in polys):  # an unconstrained polytope: every input violates
        if opts.loop.proof_only:
            return "unknown", None
        ce = validate(((lower + upper) / 2)[None].double().cpu().numpy())
        return ("sat", ce) if ce is not None else ("unknown", None)
    rows = Rows(polys, net.out_size, net.dtype, net.device, lambda: output_reach(net, lower, upper))
    lo, hi = lower[None], upper[None]
    ctx = SearchContext(net, rows, opts, deadline, validate, stats, log, lo, hi,
                        torch.Generator().manual_seed(opts.seed), proof)
    if proof is not None and ref_bounds is not None:
        proof.unsupported("reference bounds given to the root")
    ro = opts.root
    # with sign refinement, mn-crown's costly constraints wait for the refined bounds: alpha first
    # (ReLU networks only: the refinement indexes the root's bounds by ReLU layer)
    first = "alpha" if ro.sign_refine and ro.method == "mn-crown" else ro.method
    r = ctx.bound(DomainState(lo, hi, ref_bounds=ref_bounds), first, ro.alpha_iters, True)
    if ro.sign_refine and net.relu_only and r.pre_bounds and \
            not bool(proven(rows.score(r.lb)[0], margin, r.infeasible)[0]):
        t0 = time.monotonic()
        pre, fixed = refine_signs(run_bab, net, lower, upper, r.pre_bounds, opts, stats, deadline, log)
        stats.timed("time_signs", t0)
        if proof is not None:
            proof.unsupported("sign refinement (bounds.sign_refine)")
        if fixed or first != ro.method:
            again = ctx.bound(DomainState(lo, hi, ref_bounds=pre), ro.method, ro.alpha_iters, True)
            again.lb = torch.maximum(again.lb, r.lb)  # both are valid bounds
            again.infeasible = again.infeasible | r.infeasible
            r = again
    for key, value in (r.stats or {}).items():  # e.g. mn-crown's unstable neurons per layer before/after tightening
        stats[key] = value
        log(f"root {key}: {value}")
    if ro.lp_refine and r.pre_bounds and float(rows.score(r.lb)[0][0]) <= margin:
        from relaxations.lp.bab_hooks import refine_root_bounds
        if proof is not None:
            proof.unsupported("LP refinement (bounds.lp_refine)")
        t0 = time.monotonic()
        pre = refine_root_bounds(net, lower, upper, r.pre_bounds, opts.bounds, deadline)
        stats.timed("time_lp_refine", t0)
        refined = ctx.bound(DomainState(lo, hi, pre_bounds=pre), "alpha", ro.alpha_iters, False)
        refined.lb = torch.maximum(refined.lb, r.lb)
        refined.infeasible = refined.infeasible | r.infeasible
        r = refined
    values, coef, lam = polytope_values(rows, r, lo, hi, opts.bounds.mix_iters, weights=True)
    if proof is not None:
        record_root(proof, r, ro.method, opts, rows, (values, lam))
    score, worst = values.min(dim=1)
    stats["root_score"] = float(score[0])
    log(f"root bound ({ro.method}): worst polytope margin {float(score[0]):.6g}")
    if bool(proven(score, margin, r.infeasible)[0]):
        return "unsat", None
    if coef is not None and not opts.loop.proof_only:
        ce, _ = ctx.check_points(box_min(coef[0, worst], lo, hi)[1])
        if ce is not None:
            return "sat", ce
    if not ro.enabled:
        return "unknown", None
    # polytopes refuted on the whole box need no further work
    refuted = proven(values, margin, r.infeasible)[0]
    if bool(refuted.any()):
        keep = ~refuted
        keep_polytopes(r, keep[rows.groups])
        values, coef = values[:, keep], (coef[:, keep] if coef is not None else None)
        ctx.rows = rows.restrict(keep)
        if proof is not None:
            proof.restrict(keep.tolist())
        log(f"{int(refuted.sum())} polytope(s) refuted at the root, {ctx.rows.K} left")
    mode = ro.branching
    if mode == "auto":
        # (other activations than ReLU: split a neuron's interval at a point instead of fixing a ReLU phase)
        mode = "input" if net.in_size <= 16 else "relu" if net.relu_only else "activation"
    if mode in ("relu", "partition"):
        net.require_relu(f"bab.branching={mode}")
    stats["branching"] = mode
    if proof is not None:
        proof.branching = mode
        if mode not in ("input", "relu"):
            proof.unsupported(f"{mode} branching")
    if ro.polytopes == "each" and ctx.rows.K > 1:
        return search_each(strategy_class(mode), ctx, r, values, coef, deadline, log)
    return search(strategy_class(mode)(ctx, r, values, coef), opts.loop, deadline, stats, log)


def search_each(make, ctx: SearchContext, r: BoundResult, values, coef, deadline, log):
    """``bab.polytopes: each``: one branch-and-bound tree per open polytope of the box (``values`` ``(1, K)``),
    each bounding only its own rows and branching only for them, all searched together best first
    (:func:`~bnb.engine.loop.search_trees`); candidate points are checked against every polytope (a tree's
    ``every_rows``). ``make(ctx, root, values, coef)``: the strategy. Every tree starts
    from the root bound ``r`` restricted to its polytope (a copy: ``r`` is left as it is), in the same
    statistics; with a proof log, each tree under a root node of its own (:meth:`ProofLog.tree
    <bnb.engine.prooflog.ProofLog.tree>`), the worst root value first."""
    rows, trees = ctx.rows, []
    ids = None if ctx.proof is None else list(ctx.proof.poly_ids)  # the file's numbers of the polytopes left
    for n, k in enumerate(torch.argsort(values[0]).tolist()):
        if ctx.proof is not None:
            ctx.proof.tree(ids[k], n == 0, r)
        keep = torch.zeros(rows.K, dtype=torch.bool, device=values.device)
        keep[k] = True
        part = copy.copy(r)  # (keep_polytopes replaces the per-row fields; r's own stay)
        keep_polytopes(part, keep[rows.groups])
        sub = dataclasses.replace(ctx, rows=rows.restrict(keep), iteration=0, every_rows=rows)
        strategy = make(sub, part, values[:, keep], None if coef is None else coef[:, keep])
        trees.append(strategy if ctx.proof is None else ProofTree(strategy, ctx.proof))
    log(f"{rows.K} trees, one per polytope (root margins {', '.join(f'{float(v):.4g}' for v in values[0])})")
    return search_trees(trees, ctx.opts.loop, deadline, ctx.stats, log)


class ProofTree:
    """One tree of ``bab.polytopes: each`` under its own state of the shared proof log (its root node, its
    polytope's number in the file, its selection of the root's constraints), entered before each step of the
    strategy ``inner``: the trees are searched interleaved."""

    def __init__(self, inner, proof):
        self.inner, self.proof, self.state = inner, proof, proof.tree_state()

    @property
    def verdict(self):
        return self.inner.verdict

    @property
    def undecided(self):
        return self.inner.undecided

    def _enter(self):
        self.proof.enter(self.state)
        return self.inner

    def root(self):
        return self._enter().root()

    def prune(self, batch):
        return self._enter().prune(batch)

    def branch(self, batch):
        return self._enter().branch(batch)

    def falsify(self, children, open_mask):
        return self._enter().falsify(children, open_mask)
