"""The batched branch-and-bound engine.

One call of :func:`run_bab` decides one input box against a disjunction of output polytopes: the box is
safe iff for every domain of a partition, every polytope has a row ``C_i y - d_i`` whose lower bound is
positive. :func:`run_bab` bounds the root; :func:`search` is the one loop: each iteration pops a batch of
open domains, branches every one of them (the heuristic chooses what), bounds all children in one batched
call, drops the verified ones, looks for counterexamples in the rest (the minimiser of each child's linear
bound, and periodic PGD inside the most promising domains) and pushes them back.

What a domain is and how it is split is a branching strategy (:mod:`bnb.engine.strategies`): bisecting an input
dimension (low input dimension, e.g. ACAS Xu), or fixing an unstable ReLU active/inactive (bounded with
beta-CROWN split constraints, warm-started from the parent).
"""
from __future__ import annotations

import time

import torch

from bnb.engine.attack import pgd, stack_polytopes
from bnb.engine.bound_options import bound_options
from bnb.engine.strategies import Search, strategy_class
from bnb.engine.store import DomainStore
from bnb.errors import ConfigError
from heuristics import UnknownHeuristic, resolve
from relaxations.fp import down, finite_or_neg_inf, reach, threshold_up
from relaxations.ibp import ibp
from relaxations.methods import bound_rows
from relaxations.polytope import box_min, group_index, mix_rows
from relaxations.state import DomainState
from relaxations.verdict import proven


class Rows:
    """All output polytopes of one box as one row matrix: ``C`` ``(M, n_out)``, ``d`` ``(M,)``, and the
    polytope (group) of each row. A domain is verified when every group has a row with ``lb > d``.

    ``d`` is the file's right-hand side rounded up in the working dtype, so that ``C y > d`` proves the
    file's ``C y > d``. Coefficients that the dtype cannot hold exactly (rare: VNN-LIB rows are mostly +-1)
    need ``y_reach()``, called only then, which returns ``(n_out,)``, a rigorous bound on ``|y|`` over the box:
    ``d`` is then raised by ``|C_file - C| . y_reach()`` (float64, rounded up)."""

    def __init__(self, polys, n_out, dtype, device, y_reach=None):
        rows, rhs, groups = [], [], []
        for g, p in enumerate(polys):
            for i in range(len(p.d)):
                rows.append(torch.as_tensor(p.C[i], dtype=torch.float64))
                rhs.append(float(p.d[i]))
                groups.append(g)
        C64 = torch.stack(rows)
        d64 = torch.tensor(rhs, dtype=torch.float64)
        self.C = C64.to(dtype=dtype, device=device)
        dC = (C64 - self.C.double().cpu()).abs()
        if bool((dC > 0).any()):
            if y_reach is None:
                raise ValueError("output coefficients not representable in the working dtype need y_reach")
            slack = dC @ y_reach().double().cpu().reshape(-1)
            d64 = d64 + slack * (1 + 1e-12)
        self.y_reach = y_reach
        self.d = threshold_up(d64, dtype, device)
        self.groups = torch.tensor(groups, device=device)
        self.polys = list(polys)
        self.K = len(polys)
        self.Cg, self.dg = stack_polytopes(self.polys, n_out, dtype, device)
        self.index, self.valid = group_index(self.groups, self.K)

    def mixed(self, res, lower, upper, iters):
        """Per polytope, the best bound mixing its rows (:mod:`relaxations.polytope`): values ``(N, K)``
        (> 0 refutes) and the input coefficients ``(N, K, n_in)`` of the polytope's best single row."""
        value, best_row = mix_rows(res.A_input, res.bias, self.d, lower, upper, self.index, self.valid, res.lb,
                                   iters)
        coef = torch.gather(res.A_input, 1, best_row[..., None].expand(-1, -1, res.A_input.shape[-1]))
        return value, coef

    def _group_max(self, vals):
        """``(N, K)``: per polytope, the largest of its rows' values ``vals`` ``(N, M)``."""
        out = torch.full((vals.shape[0], self.K), -float("inf"), dtype=vals.dtype, device=vals.device)
        return out.scatter_reduce(1, self.groups.expand_as(vals), vals, reduce="amax")

    def _refutation(self, lb, units=None):
        """``(N, M)``: each row's ``lb - d`` rounded down; NaN and infinities become ``-inf``. With ``units``
        ``(U,)``: ``lb`` is ``(U, 1)``, unit ``u`` a bound of row ``units[u]``."""
        d = self.d if units is None else self.d[units][:, None]
        return finite_or_neg_inf(down(lb - d))

    def group_values(self, lb):
        """``(N, K)``: per polytope, the best row ``max_i (lb_i - d_i)``; > 0 means refuted."""
        return self._group_max(self._refutation(lb))

    def settled(self, lb, infeasible, margin, floor=None, units=None):
        """``(N, M)``: rows whose polytope is refuted on their domain, by ``lb`` (or by ``floor``, a valid bound
        known before, e.g. the parent's) row by row, or because the domain is ``infeasible`` ``(N,)``: the
        optimiser of the bounds need not work on them any more. With ``units`` (see :meth:`_refutation`):
        ``(U, 1)``, each unit settled when its own row is refuted."""
        if floor is not None:
            lb = torch.maximum(lb, floor)
        if units is not None:
            return proven(self._refutation(lb, units), margin, infeasible)
        return proven(self.group_values(lb), margin, infeasible)[:, self.groups]

    def score(self, lb):
        """Domain score ``(N,)`` (min over polytopes of the best row) and the deciding row ``(N,)``."""
        vals = self._refutation(lb)
        score, worst = self._group_max(vals).min(dim=1)
        row = vals.masked_fill(self.groups[None] != worst[:, None], -float("inf")).argmax(dim=1)
        return score, row, worst

    def group_margins(self, y):
        """Violation margin ``(N, K)`` of outputs ``y`` ``(N, n_out)`` per polytope: ``<= 0`` iff inside it."""
        return self._group_max(y @ self.C.T - self.d)

    def margins(self, y):
        """Violation margin ``(N,)`` of outputs ``y`` ``(N, n_out)``: ``<= 0`` iff ``y`` is in some polytope."""
        return self.group_margins(y).min(dim=1).values

    def restrict(self, keep_groups: torch.Tensor) -> "Rows":
        """Only the polytopes in the boolean mask ``keep_groups`` ``(K,)``."""
        polys = [p for p, k in zip(self.polys, keep_groups.tolist()) if k]
        return Rows(polys, self.C.shape[1], self.C.dtype, self.C.device, self.y_reach)


class Stats(dict):
    def add(self, key, value):
        self[key] = self.get(key, 0) + value


def _bound(net, state, rows, method, cfg, iters, optimize_intermediate, stats, deadline, floor=None, units=None):
    """Bounds of every row on every domain of ``state``; alpha/beta-CROWN stop optimising a domain once its
    polytopes are refuted (by its bound or by ``floor`` ``(N, M)``, bounds known to hold before).

    ``units``: ``(U,)`` row numbers: domain ``u`` of ``state`` bounds only row ``units[u]`` (``floor`` is then
    ``(U, 1)``) and is settled when that row is refuted."""
    t0 = time.monotonic()
    margin = cfg.bab.verify_margin
    C = rows.C if units is None else rows.C[units][:, None]
    settled = lambda lb, infeasible: rows.settled(lb, infeasible, margin, floor, units)  # noqa: E731
    r = bound_rows(net, state, C, method, bound_options(cfg), iters=iters, optimize_intermediate=optimize_intermediate,
                   settled=settled, should_stop=deadline.expired)
    stats.add("time_bounding", time.monotonic() - t0)
    if units is None:  # (with units, the caller counts its domains)
        stats.add("domains_bounded", state.size)
    return r


def _check_points(net, rows, xs, validate, stats):
    """Evaluate candidate points ``(N, n_in)``; replay the violating ones. Returns a counterexample or None,
    and the points' margins per polytope ``(N, K)``."""
    if xs.shape[0] == 0:
        return None, None
    t0 = time.monotonic()
    with torch.no_grad():
        gm = rows.group_margins(net(xs))
    m = gm.min(dim=1).values
    ce = None
    hits = torch.nonzero(m <= 0).flatten()
    if hits.numel():
        order = hits[torch.argsort(m[hits])][:32]
        ce = validate(xs[order].double().cpu().numpy())
    stats.add("time_attack", time.monotonic() - t0)
    return ce, gm


def _pgd_in_domains(net, rows, lower, upper, worst, x0, cfg, gen, validate, stats, deadline):
    t0 = time.monotonic()
    k = min(cfg.bab.attack_domains, lower.shape[0])
    C, d = rows.Cg[worst[:k]], rows.dg[worst[:k]]
    x, m = pgd(net, lower[:k], upper[:k], C, d, cfg.bab.attack_steps, 0.05, gen, deadline, x0[:k])
    stats.add("time_attack", time.monotonic() - t0)
    hits = torch.nonzero(m <= 0).flatten()
    if hits.numel():
        return validate(x[hits[:32]].double().cpu().numpy())
    return None


def run_bab(net, lower, upper, polys, cfg, deadline, validate, stats: Stats, log=None):
    """Decide one box. Returns ``("unsat" | "sat" | "unknown", counterexample or None)``.

    ``lower``/``upper``: ``(n_in,)`` tensors on the network's device; ``polys``: the box's polytopes;
    ``validate(xs numpy (K, n_in))``: replays candidates on the ONNX model.
    Raises :class:`~bnb.timing.VerificationTimeout` at the deadline.
    """
    log = log or (lambda m: None)
    dtype, device = net.dtype, net.device
    margin = cfg.bab.verify_margin
    if any(len(p.d) == 0 for p in polys):  # an unconstrained polytope: every input violates
        ce = validate(((lower + upper) / 2)[None].double().cpu().numpy())
        return ("sat", ce) if ce is not None else ("unknown", None)
    rows = Rows(polys, net.out_size, dtype, device, lambda: output_reach(net, lower, upper))
    lo, hi = lower[None], upper[None]
    root = DomainState(lo, hi)
    method = cfg.bounds.method
    r = _bound(net, root, rows, method, cfg, cfg.bounds.alpha_iters, True, stats, deadline)
    if cfg.bounds.lp_refine and r.pre_bounds and float(rows.score(r.lb)[0][0]) <= margin:
        from relaxations.lp.bab_hooks import refine_root_bounds
        t0 = time.monotonic()
        pre = refine_root_bounds(net, lower, upper, r.pre_bounds, bound_options(cfg), deadline)
        stats.add("time_lp_refine", time.monotonic() - t0)
        refined = _bound(net, DomainState(lo, hi, pre_bounds=pre), rows, "alpha", cfg, cfg.bounds.alpha_iters,
                         False, stats, deadline)
        refined.lb = torch.maximum(refined.lb, r.lb)
        refined.infeasible = refined.infeasible | r.infeasible
        r = refined
    gv, coef = polytope_values(rows, r, lo, hi, cfg)
    score, worst = gv.min(dim=1)
    stats["root_score"] = float(score[0])
    log(f"root bound ({method}): worst polytope margin {float(score[0]):.6g}")
    if bool(proven(score, margin, r.infeasible)[0]):
        return "unsat", None
    if coef is not None:
        ce, _ = _check_points(net, rows, box_min(coef[0, worst], lo, hi)[1], validate, stats)
        if ce is not None:
            return "sat", ce
    if not cfg.bab.enabled:
        return "unknown", None
    # polytopes refuted on the whole box need no further work
    refuted = proven(gv, margin, r.infeasible)[0]
    if bool(refuted.any()):
        keep = ~refuted
        r.lb = r.lb[:, keep[rows.groups]]
        gv, coef = gv[:, keep], (coef[:, keep] if coef is not None else None)
        if r.A_input is not None:
            r.A_input, r.bias = r.A_input[:, keep[rows.groups]], r.bias[:, keep[rows.groups]]
        if r.relu_coeffs is not None:
            r.relu_coeffs = [c[:, keep[rows.groups]] for c in r.relu_coeffs]
        if r.alphas is not None:
            r.alphas = {"final": [a[:, keep[rows.groups]] for a in r.alphas["final"]]}
        if r.gammas is not None:
            r.gammas = [None if g is None else g[:, keep[rows.groups]] for g in r.gammas]
        rows = rows.restrict(keep)
        score, worst = gv.min(dim=1)
        log(f"{int(refuted.sum())} polytope(s) refuted at the root, {rows.K} left")
    mode = cfg.bab.branching
    if mode == "auto":
        mode = "input" if net.in_size <= 16 else "relu"
    stats["branching"] = mode
    ctx = Search(net, rows, cfg, deadline, validate, stats, log, lo, hi, torch.Generator().manual_seed(cfg.general.seed))
    return search(strategy_class(mode)(ctx, r, gv, coef), ctx)


def heuristic(kind, name):
    """The branching heuristic ``name`` of strategy ``kind`` (:mod:`heuristics.registry`); a bad name is bad input."""
    try:
        return resolve(kind, name)
    except UnknownHeuristic as e:
        raise ConfigError(str(e), f"bab.{kind}_heuristic") from None


def check_heuristics(cfg):
    """Resolve the configured heuristics (loading plug-ins) before any work: a bad name is bad input."""
    heuristic("input", cfg.bab.input_heuristic)
    heuristic("relu", cfg.bab.relu_heuristic)


def output_reach(net, lower, upper):
    """``(n_out,)``: a rigorous bound on ``|y|`` over the box (IBP)."""
    lb, ub, _ = ibp(net, lower[None], upper[None])
    return reach(lb, ub)[0]


def polytope_values(rows, res, lower, upper, cfg):
    """Per domain and polytope, the refutation value ``(N, K)`` (> 0: refuted) and the input coefficients
    ``(N, K, n_in)`` of the bound behind it (None without linear bounds, e.g. IBP or the LP methods)."""
    if res.A_input is None or res.bias is None:
        return rows.group_values(res.lb), None
    return rows.mixed(res, lower, upper, cfg.bounds.mix_iters)


def _progress(log, stats, store, t_last, deadline, force=False):
    now = time.monotonic()
    if force or now - t_last >= 5.0:
        msg = f"{deadline.elapsed():7.1f}s  branches {stats.get('branches', 0):>9}  open {len(store):>8}  " \
              f"worst margin {store.min_score():.4g}"
        if len(store):
            depth = store.buf["depth"][:store.n]
            msg += f"  depth {int(depth.min())}-{int(depth.max())}"
        log(msg)
        return now
    return t_last


def _order(cfg, store, stats):
    if cfg.bab.order == "depth" or len(store) > cfg.bab.max_domains:
        return "depth"
    if torch.cuda.is_available() and store.n and store.buf["score"].is_cuda:
        free, total = torch.cuda.mem_get_info()
        if free < 0.1 * total:
            return "depth"
    return "score"


def search(strategy, ctx) -> tuple[str, object]:
    """The one branch-and-bound loop over the open domains of ``strategy`` (:mod:`bnb.engine.strategies`): pop a
    batch (best bound first), prune what cannot be split, branch and bound, drop the verified children,
    falsify the open ones, push them. Returns ``("unsat" | "sat" | "unknown", counterexample or None)``."""
    if strategy.verdict is not None:
        return strategy.verdict, None
    cfg, stats = ctx.cfg, ctx.stats
    store = DomainStore()
    store.push(strategy.root())
    t_last = time.monotonic()
    while len(store):
        ctx.deadline.check()
        stats["max_queue"] = max(stats.get("max_queue", 0), len(store))
        dom = strategy.prune(store.pop(cfg.bab.batch_size, _order(cfg, store, stats)))
        if dom is None:
            continue
        kids = strategy.branch(dom)
        open_ = ~proven(kids.score, cfg.bab.verify_margin, kids.infeasible)
        if bool(open_.any()):
            ce = strategy.falsify(kids, open_)
            if ce is not None:
                return "sat", ce
            store.push(strategy.keep(kids, open_))
        t_last = _progress(ctx.log, stats, store, t_last, ctx.deadline)
    _progress(ctx.log, stats, store, t_last, ctx.deadline, force=True)
    return ("unknown", None) if strategy.undecided else ("unsat", None)
