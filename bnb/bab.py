"""The batched branch-and-bound engine.

One call of :func:`run_bab` decides one input box against a disjunction of output polytopes: the box is
safe iff for every domain of a partition, every polytope has a row ``C_i y - d_i`` whose lower bound is
positive. Each iteration pops a batch of open domains, branches every one of them (the heuristic chooses
what), bounds all children in one batched call, drops the verified ones, looks for counterexamples in
the rest (the minimiser of each child's linear bound, and periodic PGD inside the most promising
domains) and pushes them back.

Two kinds of branching: bisecting an input dimension (low input dimension, e.g. ACAS Xu), and fixing an
unstable ReLU active/inactive (bounded with beta-CROWN split constraints, warm-started from the parent).
"""
from __future__ import annotations

import time

import torch

from bnb.attack import pgd, stack_polytopes
from bnb.domains import DomainStore
from bnb.errors import ConfigError
from heuristics import InputBatch, ReluBatch, UnknownHeuristic, resolve, splittable
from relaxations.fp import down, finite_or_neg_inf, reach, threshold_up
from relaxations.ibp import ibp
from relaxations.methods import bound_rows, mn_options
from relaxations.polytope import box_min, group_index, mix_rows
from relaxations.state import BoundResult, DomainState
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
    b = cfg.bounds
    margin = cfg.bab.verify_margin
    C = rows.C if units is None else rows.C[units][:, None]
    settled = lambda lb, infeasible: rows.settled(lb, infeasible, margin, floor, units)  # noqa: E731
    r = bound_rows(net, state, C, method, intermediate=b.intermediate, lower_slope=b.lower_slope,
                   iters=iters, lr=b.alpha_lr, lr_beta=b.beta_lr, optimize_intermediate=optimize_intermediate,
                   settled=settled, should_stop=deadline.expired, rigorous=b.fp_sound, mn=mn_options(b))
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
        from bnb.lp_hooks import refine_root_bounds
        t0 = time.monotonic()
        pre = refine_root_bounds(net, lower, upper, r.pre_bounds, cfg, deadline)
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
    if mode == "input":
        return _input_bab(net, rows, r, gv, coef, lo, hi, cfg, deadline, validate, stats, log)
    if r.relu_coeffs is None:
        # IBP and the LP methods give no coefficients to branch on: start ReLU splitting from a CROWN bound
        c = _bound(net, root, rows, "crown", cfg, 0, False, stats, deadline)
        c.lb = torch.maximum(c.lb, r.lb)
        c.infeasible = c.infeasible | r.infeasible
        r = c
        score = rows.score(r.lb)[0]
        if bool(proven(score, margin, r.infeasible)[0]):
            return "unsat", None
    if cfg.bab.relu_method == "mn-crown" and r.constraints is None:
        # children with multi-neuron constraints although the root had none: compute them on the root's bounds
        from relaxations.methods import mn_constraints, mn_options
        t0 = time.monotonic()
        margin_rows = r.lb[0] - rows.d
        order = [int(j) for j in torch.argsort(margin_rows) if bool(margin_rows[j] <= 0)]
        r.constraints = mn_constraints(net, lo, hi, r.pre_bounds, rows.C[order], **mn_options(cfg.bounds, True))
        stats.add("time_constraints", time.monotonic() - t0)
        if all(c is None for c in r.constraints):
            r.constraints = None
    if r.constraints is not None and r.gammas is not None:
        from relaxations.multineuron import active_only
        r.constraints, r.gammas = active_only(r.constraints, r.gammas)
        if all(c is None for c in r.constraints):
            r.constraints = r.gammas = None
        else:
            stats["constraints"] = sum(c.count for c in r.constraints if c is not None)
    row = rows.score(r.lb)[1]
    return _relu_bab(net, rows, r, score, row, lo, hi, cfg, deadline, validate, stats, log)


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


def relu_biases(net, L):
    """Per ReLU layer the bias ``(n_i,)`` of the affine layer that feeds it (None where there is none); what
    ``babsr-bias`` scores. Only for a plain sequence of layers; otherwise None."""
    layers = getattr(net, "layers", None)
    relus = net.relu_indices() if hasattr(net, "relu_indices") else []
    if layers is None or len(relus) != L:
        return None
    out = []
    with torch.no_grad():
        for idx in relus:
            prev = layers[idx - 1] if idx > 0 else None
            if prev is None or not prev.affine:
                out.append(None)
                continue
            zero = torch.zeros((1, *prev.in_shape), dtype=net.dtype, device=net.device)
            out.append(prev.forward(zero).reshape(-1))
    return out


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


def _input_bab(net, rows, r, gv, coef, lo, hi, cfg, deadline, validate, stats, log):
    chooser = heuristic("input", cfg.bab.input_heuristic)
    parts = max(2, cfg.bab.input_split_parts)
    store = DomainStore()
    if coef is None:
        coef = torch.zeros(1, rows.K, lo.shape[1], dtype=lo.dtype, device=lo.device)
    fields = {"lower": lo, "upper": hi, "score": gv.min(dim=1).values, "depth": torch.zeros(1, device=lo.device),
              "A": coef, "gv": gv}
    n_relu = len(r.pre_bounds)
    for i, (l, u) in enumerate(r.pre_bounds):
        fields[f"pl_{i}"], fields[f"pu_{i}"] = l, u
    store.push(fields)
    gen = torch.Generator().manual_seed(cfg.general.seed)
    method = cfg.bab.input_method
    iters = cfg.bab.input_alpha_iters
    t_last, it, stuck = time.monotonic(), 0, 0
    min_width = (hi - lo) * 1e-6  # below a millionth of the root box, bisecting is only rounding noise
    while len(store):
        deadline.check()
        stats["max_queue"] = max(stats.get("max_queue", 0), len(store))
        t0 = time.monotonic()
        by = _order(cfg, store, stats)
        dom = store.pop(cfg.bab.batch_size, by)
        ok = splittable(dom["lower"], dom["upper"], min_width)
        can = ok.any(dim=1)
        if not bool(can.all()):
            # boxes too small to bisect further: left undecided (the answer will be unknown, not unsat)
            stuck += int((~can).sum())
            stats["undecided_domains"] = stuck
            dom, ok = {key: v[can] for key, v in dom.items()}, ok[can]
            if not bool(can.any()):
                continue
        n = dom["lower"].shape[0]
        stats.add("branches", n)
        if method != "alpha" and 0 < cfg.bab.input_alpha_after <= stats.get("branches", 0):
            method = "alpha"  # CROWN has not finished after this much work: tighter, slower children
            log(f"children are bounded with alpha-CROWN from now on ({stats['branches']} branches)")
        trial = []

        def children(cands, dom=dom, method=method):
            """Bound the children of splitting every domain along each candidate ``(n, k)``: the
            look-ahead callback of the heuristics, and the bound of the chosen split."""
            k = cands.shape[1]
            c_lo, c_hi = split_boxes(dom["lower"], dom["upper"], cands.T.reshape(-1), parts)  # (parts k n)
            ref = None
            if "pl_0" in dom:  # the parent's intermediate bounds hold on every child box
                ref = [(dom[f"pl_{i}"].repeat(parts * k, 1), dom[f"pu_{i}"].repeat(parts * k, 1))
                       for i in range(n_relu)]
            res = _bound(net, DomainState(c_lo, c_hi, ref_bounds=ref), rows, method, cfg, iters,
                         cfg.bab.input_alpha_intermediate, stats, deadline)
            gv, coef = polytope_values(rows, res, c_lo, c_hi, cfg)
            if coef is None:
                coef = torch.zeros(gv.shape[0], rows.K, c_lo.shape[1], dtype=c_lo.dtype, device=c_lo.device)
            # the parent's bound holds on its children too (CROWN is not monotone under bisection)
            gv = torch.maximum(gv, dom["gv"].repeat(parts * k, 1))
            trial[:] = [(cands, c_lo, c_hi, res, gv, coef)]
            return gv.min(dim=1).values.reshape(parts, k, n)

        pre = [(dom[f"pl_{i}"], dom[f"pu_{i}"]) for i in range(n_relu)] if "pl_0" in dom else None
        worst = dom["gv"].argmin(dim=1)
        batch = InputBatch(dom["lower"], dom["upper"], ok, dom["A"], dom["gv"], rows.Cg[worst], pre, net,
                           children, gen, cfg.bab.input_lookahead, parts, cfg.bab.sb_margin)
        dims = chooser(batch).to(lo.device)
        if dims.shape != (n,):
            raise ValueError(f"input heuristic {cfg.bab.input_heuristic!r} returned shape {tuple(dims.shape)}")
        good = torch.gather(ok, 1, dims.clamp(0, ok.shape[1] - 1)[:, None])[:, 0] & (dims >= 0)
        dims = torch.where(good, dims, batch.width.masked_fill(~ok, -float("inf")).argmax(dim=1))
        found = None
        if trial:
            cands = trial[0][0]
            hit = cands == dims[:, None]
            if bool(hit.any(dim=1).all()):
                found = hit.int().argmax(dim=1)
        if found is None:  # the choice was not among the children bounded for look-ahead
            children(dims[:, None])
            found = torch.zeros(n, dtype=torch.long, device=lo.device)
        cands, c_lo, c_hi, res, gv, coef = trial[0]
        k = cands.shape[1]
        if k > 1:  # keep, per domain, the children of the chosen split
            ar = torch.arange(n, device=lo.device)
            keep = torch.cat([(j * k + found) * n + ar for j in range(parts)])
            c_lo, c_hi, gv, coef = c_lo[keep], c_hi[keep], gv[keep], coef[keep]
            res.pre_bounds = [(l[keep], u[keep]) for l, u in res.pre_bounds]
            res.infeasible = res.infeasible[keep]
        depth = (dom["depth"] + 1).repeat(parts)
        stats.add("time_branching", time.monotonic() - t0)
        sc, wr = gv.min(dim=1)
        open_ = ~proven(sc, cfg.bab.verify_margin, res.infeasible)
        if not bool(open_.any()):
            t_last = _progress(log, stats, store, t_last, deadline)
            continue
        c_lo, c_hi, sc, wr, depth = c_lo[open_], c_hi[open_], sc[open_], wr[open_], depth[open_]
        A = coef[open_]
        A_row = A[torch.arange(c_lo.shape[0], device=lo.device), wr]
        cand = box_min(A_row, c_lo, c_hi)[1]
        mid = (c_lo + c_hi) / 2
        ce, gm = _check_points(net, rows, torch.cat([cand, mid]), validate, stats)
        if ce is not None:
            return "sat", ce
        it += 1
        if cfg.bab.attack_every and it % cfg.bab.attack_every == 0:
            # PGD where a concrete point came closest to a violation, from that point, against that polytope
            nd = c_lo.shape[0]
            seen, target = torch.minimum(gm[:nd], gm[nd:]).min(dim=1)
            x0 = torch.where((gm[nd:].min(dim=1).values < gm[:nd].min(dim=1).values)[:, None], mid, cand)
            order = torch.argsort(seen)
            ce = _pgd_in_domains(net, rows, c_lo[order], c_hi[order], target[order], x0[order], cfg, gen,
                                 validate, stats, deadline)
            if ce is not None:
                return "sat", ce
        fields = {"lower": c_lo, "upper": c_hi, "score": sc, "depth": depth, "A": A, "gv": gv[open_]}
        for i, (l, u) in enumerate(res.pre_bounds):
            fields[f"pl_{i}"], fields[f"pu_{i}"] = l[open_], u[open_]
        store.push(fields)
        t_last = _progress(log, stats, store, t_last, deadline)
    _progress(log, stats, store, t_last, deadline, force=True)
    return ("unknown", None) if stuck else ("unsat", None)


def _relu_children(dom, pos, sizes, L):
    """Both children of splitting, in each domain of ``dom`` (``n`` domains), the neuron at flat position
    ``pos`` ``(k n,)`` (over the concatenated ReLU layers of ``sizes`` neurons; ``dom`` is tiled ``k`` times): ``2 k n``
    domains, all active halves first, then all inactive halves."""
    n = dom["score"].shape[0]
    reps = pos.shape[0] // n
    dev = pos.device
    offsets = torch.tensor([0] + list(sizes), device=dev).cumsum(0)
    layer = torch.searchsorted(offsets, pos, right=True) - 1
    idx = pos - offsets[layer]
    m = pos.shape[0]
    ar = torch.arange(m, device=dev)
    child = {key: v.repeat(2 * reps, *([1] * (v.dim() - 1))) for key, v in dom.items()}
    for i in range(L):
        sel = layer == i
        if bool(sel.any()):
            rows_i, cols_i = ar[sel], idx[sel]
            child[f"split_{i}"][rows_i, cols_i] = 1          # first half: active
            child[f"split_{i}"][rows_i + m, cols_i] = -1     # second half: inactive
            child[f"pl_{i}"][rows_i, cols_i] = child[f"pl_{i}"][rows_i, cols_i].clamp(min=0)
            child[f"pu_{i}"][rows_i + m, cols_i] = child[f"pu_{i}"][rows_i + m, cols_i].clamp(max=0)
    child["depth"] = child["depth"] + 1
    return child


def _relu_state(child, lo, hi, L, cons=None):
    N = child["score"].shape[0]
    return DomainState(lo.expand(N, -1), hi.expand(N, -1), [child[f"split_{i}"] for i in range(L)],
                       [(child[f"pl_{i}"], child[f"pu_{i}"]) for i in range(L)],
                       {"final": [child[f"alpha_{i}"] for i in range(L)]}, [child[f"beta_{i}"] for i in range(L)],
                       constraints=cons, gammas=_gammas(child, L, cons))


def _gammas(child, L, cons, ci=None, ri=None):
    """Per ReLU layer the children's constraint multipliers (None where a layer has no constraints); with
    ``ci``/``ri`` ``(U,)``, those of the (child, row) units, ``(U, 1, c_i)``."""
    if cons is None:
        return None
    pick = (lambda t: t) if ci is None else (lambda t: t[ci, ri][:, None])  # noqa: E731
    return [None if cons[i] is None else pick(child[f"gamma_{i}"]) for i in range(L)]


def _bound_open_rows(net, child, rows, lo, hi, L, cfg, stats, deadline, cons=None):
    """beta-CROWN bounds of ``N`` children (fields as in :func:`_relu_children`), only of the rows whose polytope
    the parent's bound ``child["lb"]`` ``(N, M)`` left open. With the intermediate bounds fixed, each row is a
    problem of its own (its own slopes and multipliers), so every open (child, row) pair is one unit of the
    batch and rows already refuted cost nothing. Returns a BoundResult over all ``N x M`` rows: ``lb`` is the
    better of the parent's and the new bound (a few warm-started steps can end below the parent's, which holds
    on its children too); ``A_input``/``relu_coeffs`` are zero and alphas/betas/gammas the parent's on rows not
    bounded; ``infeasible`` ``(N,)``. ``cons``: the root's multi-neuron constraints (``mn-crown``), or None."""
    N, M = child["lb"].shape
    ci, ri = torch.nonzero(~rows.settled(child["lb"], None, cfg.bab.verify_margin), as_tuple=True)
    U = ci.numel()
    if U == 0:  # (a parent pushed although refuted: its children are too)
        ci, ri = torch.zeros(1, dtype=torch.long, device=lo.device), torch.zeros(1, dtype=torch.long, device=lo.device)
        U = 1
    floor = child["lb"][ci, ri][:, None]
    state = DomainState(lo.expand(U, -1), hi.expand(U, -1), [child[f"split_{i}"][ci] for i in range(L)],
                        [(child[f"pl_{i}"][ci], child[f"pu_{i}"][ci]) for i in range(L)],
                        {"final": [child[f"alpha_{i}"][ci, ri][:, None] for i in range(L)]},
                        [child[f"beta_{i}"][ci, ri][:, None] for i in range(L)],
                        constraints=cons, gammas=_gammas(child, L, cons, ci, ri))
    method = "beta" if cons is None else "mn-crown"
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
        c = torch.zeros_like(child[f"alpha_{i}"])
        c[ci, ri] = r.relu_coeffs[i][:, 0]
        coeffs.append(c)
        a = child[f"alpha_{i}"].clone()
        a[ci, ri] = r.alphas["final"][i][:, 0]
        alphas.append(a)
        b = child[f"beta_{i}"].clone()
        if r.betas is not None:
            b[ci, ri] = r.betas[i][:, 0]
        betas.append(b)
        pl, pu = child[f"pl_{i}"].clone(), child[f"pu_{i}"].clone()
        pl[ci], pu[ci] = r.pre_bounds[i]  # the same on every unit of a child: its split phases applied
        pre.append((pl, pu))
    gammas = None
    if cons is not None:
        gammas = [None] * L
        for i in range(L):
            if cons[i] is not None:
                gammas[i] = child[f"gamma_{i}"].clone()
                if r.gammas is not None and r.gammas[i] is not None:
                    gammas[i][ci, ri] = r.gammas[i][:, 0]
    return BoundResult(lb, None, pre, A, None, coeffs, {"final": alphas}, betas, infeasible, gammas)


def _relu_bab(net, rows, r, score, row, lo, hi, cfg, deadline, validate, stats, log):
    chooser = heuristic("relu", cfg.bab.relu_heuristic)
    L = len(r.pre_bounds)
    dev = lo.device
    sizes = [l.shape[1] for l, _ in r.pre_bounds]
    biases = relu_biases(net, L)
    fields = {"score": score, "depth": torch.zeros(1, device=dev), "row": row, "lb": r.lb}
    for i, (l, u) in enumerate(r.pre_bounds):
        fields[f"split_{i}"] = torch.zeros_like(l, dtype=torch.int8)
        fields[f"pl_{i}"], fields[f"pu_{i}"] = l, u
        fields[f"coef_{i}"] = r.relu_coeffs[i][torch.arange(1, device=dev), row]
        fields[f"alpha_{i}"] = r.alphas["final"][i] if r.alphas is not None else \
            torch.zeros(1, rows.C.shape[0], l.shape[1], dtype=l.dtype, device=dev)
        fields[f"beta_{i}"] = torch.zeros(1, rows.C.shape[0], l.shape[1], dtype=l.dtype, device=dev)
    cons = r.constraints
    for i, c in enumerate(cons or []):
        if c is not None:
            g = r.gammas[i] if r.gammas is not None else None
            fields[f"gamma_{i}"] = g if g is not None else torch.zeros(1, rows.C.shape[0], c.count, dtype=c.p.dtype,
                                                                        device=dev)
    store = DomainStore()
    store.push(fields)
    gen = torch.Generator().manual_seed(cfg.general.seed)
    t_last, it, stuck = time.monotonic(), 0, 0
    while len(store):
        deadline.check()
        stats["max_queue"] = max(stats.get("max_queue", 0), len(store))
        t0 = time.monotonic()
        dom = store.pop(cfg.bab.batch_size, _order(cfg, store, stats))
        n = dom["score"].shape[0]
        pre = [(dom[f"pl_{i}"], dom[f"pu_{i}"]) for i in range(L)]
        splits = [dom[f"split_{i}"] for i in range(L)]
        gam = None
        if cons is not None:
            arn = torch.arange(n, device=dev)
            gam = [None if c is None else dom[f"gamma_{i}"][arn, dom["row"]] for i, c in enumerate(cons)]
        free = [((l < 0) & (u > 0)) & (sp == 0) for (l, u), sp in zip(pre, splits)]
        can = torch.stack([f.any(dim=1) for f in free]).any(dim=0)
        if not bool(can.all()):
            # no unstable neuron left: the relaxation is exact up to the optimiser; these stay undecided
            stuck += int((~can).sum())
            stats["undecided_domains"] = stuck
            dom = {k: v[can] for k, v in dom.items()}
            n = int(can.sum())
            if n == 0:
                continue
            pre = [(dom[f"pl_{i}"], dom[f"pu_{i}"]) for i in range(L)]
            splits = [dom[f"split_{i}"] for i in range(L)]
            if gam is not None:
                gam = [None if g is None else g[can] for g in gam]

        def trial_scores(cands, dom=dom):
            """Look-ahead: bound both children of each candidate ``(n, k)`` with the parent's slopes and
            multipliers (no optimisation steps); ``(2, k, n)`` scores, active halves first."""
            k = cands.shape[1]
            trial = _relu_children(dom, cands.T.reshape(-1), sizes, L)
            t_res = _bound(net, _relu_state(trial, lo, hi, L, cons), rows, "beta" if cons is None else "mn-crown",
                           cfg, 0, False, stats, deadline)
            return rows.score(torch.maximum(t_res.lb, trial["lb"]))[0].reshape(2, k, dom["score"].shape[0])

        batch = ReluBatch(pre, [dom[f"coef_{i}"] for i in range(L)], splits, biases, gam, cons, trial_scores, gen,
                          cfg.bab.relu_lookahead, cfg.bab.fsb_topk)
        pos = chooser(batch).to(dev)
        flat_free = torch.cat(batch.free(), dim=1)
        if pos.shape != (n,) or bool((pos < 0).any()) or bool((pos >= flat_free.shape[1]).any()) or \
                not bool(flat_free[torch.arange(n, device=dev), pos].all()):
            raise ValueError(f"ReLU heuristic {cfg.bab.relu_heuristic!r} chose a neuron that is stable, already "
                             "split or out of range")
        child = _relu_children(dom, pos, sizes, L)
        stats.add("branches", n)
        stats.add("time_branching", time.monotonic() - t0)
        res = _bound_open_rows(net, child, rows, lo, hi, L, cfg, stats, deadline, cons)
        if cfg.bab.relu_method == "lp":
            from bnb.lp_hooks import lp_tighten
            t0 = time.monotonic()
            state = _relu_state(child, lo, hi, L, cons)
            res.lb = torch.maximum(res.lb, lp_tighten(net, state, rows.C, res.lb, cfg, deadline, d=rows.d))
            stats.add("time_lp", time.monotonic() - t0)
        sc, rw, wr = rows.score(res.lb)
        open_ = ~proven(sc, cfg.bab.verify_margin, res.infeasible)
        if bool(open_.any()):
            k = int(open_.sum())
            A_row = res.A_input[open_][torch.arange(k, device=dev), rw[open_]]
            cand = box_min(A_row, lo.expand(k, -1), hi.expand(k, -1))[1]  # each bound's minimiser
            ce, _ = _check_points(net, rows, cand, validate, stats)
            if ce is not None:
                return "sat", ce
            it += 1
            if cfg.bab.attack_every and it % cfg.bab.attack_every == 0:
                order = torch.argsort(sc[open_])
                ce = _pgd_in_domains(net, rows, lo.expand(k, -1), hi.expand(k, -1), wr[open_][order],
                                     cand[order], cfg, gen, validate, stats, deadline)
                if ce is not None:
                    return "sat", ce
            keep = {"score": sc[open_], "depth": child["depth"][open_], "row": rw[open_], "lb": res.lb[open_]}
            arn = torch.arange(int(open_.sum()), device=dev)
            for i in range(L):
                keep[f"split_{i}"] = child[f"split_{i}"][open_]
                keep[f"pl_{i}"], keep[f"pu_{i}"] = (t[open_] for t in res.pre_bounds[i])
                keep[f"coef_{i}"] = res.relu_coeffs[i][open_][arn, rw[open_]]
                keep[f"alpha_{i}"] = res.alphas["final"][i][open_]
                keep[f"beta_{i}"] = res.betas[i][open_]
                if cons is not None and cons[i] is not None:
                    keep[f"gamma_{i}"] = res.gammas[i][open_]
            store.push(keep)
        t_last = _progress(log, stats, store, t_last, deadline)
    _progress(log, stats, store, t_last, deadline, force=True)
    return ("unknown", None) if stuck else ("unsat", None)
