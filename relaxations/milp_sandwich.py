"""A MILP oracle for networks with smooth activations: piecewise-linear functions that sandwich each activation.

A MILP cannot encode ``sigmoid``, ``tanh`` or ``softplus``; it can encode, exactly, the set

    ``P(z) - e_lo(k) <= y <= P(z) + e_hi(k)``   for ``z`` in piece ``k``,

where ``P`` interpolates ``f`` at ``K + 1`` breakpoints ``l = p_0 < ... < p_K = u`` of the pre-activation bounds
and the offsets bound the interpolation error on each piece. That set contains the graph of ``f`` on ``[l, u]``,
so the minimum of ``C y`` over the relaxed network is *at most* the true minimum over the box (and the maximum
at least the true maximum): :func:`sandwich_solve` returns ``lb <= min`` and ``ub >= max``, plus the network's
own float64 values at the MILP's argmin / argmax (real points of the box: ``min <= attained_min``), so the true
minimum is bracketed by ``[lb, attained_min]``. The bracket shrinks like ``(width / K)**2`` (the interpolation
error of a smooth function) as long as the MILP's argmin stays near the true one.

Ingredients (what is rigorous, what is not):

- pre-activation bounds: :func:`relaxations.exact_interval.exact_pre_bounds`, exact rational interval arithmetic
  on the encoded float64 affine maps, each smooth activation's interval through the outward-rounded enclosures
  of :mod:`relaxations.transcendental`, LeakyReLU's through one outward float step. Rigorous, and independent of
  the product's IBP/CROWN (which the oracle is used to check); only the transcendental enclosures are shared,
  and those are tested against mpmath (``tests/test_sshaped.py``);
- offsets: on piece ``[p_k, p_{k+1}]`` the line ``P`` (through the float64 values of ``f`` at both ends) is
  checked with :func:`relaxations.transcendental.max_violation` on both sides: a rigorous bound of
  ``max (P - f)`` and ``max (f - P)`` on the piece (ends, the inflection point, and the tangent rule on the
  concave/convex part), never a bare libm value. Breakpoints are uniform, with ``0`` added for an S-shaped
  activation whose interval straddles it (each piece then convex or concave);
- LeakyReLU and ReLU are encoded exactly (:func:`relaxations.milp.leaky_constraints`, one binary per unstable
  neuron); pieces use the incremental ("delta") formulation: ``z = p_0 + sum_k h_k d_k``, ``1 >= d_0``,
  ``d_k >= b_k >= d_{k+1}`` with binaries ``b_k`` (``b_k = 1``: ``z`` is past piece ``k``), so piece ``k`` is
  active when ``b_{k-1} - b_k = 1`` and the offsets enter as ``sum_k e_k (b_{k-1} - b_k)``;
- the value is HiGHS's (``mip_rel_gap`` and ``mip_abs_gap`` ``1e-9``, primal and MIP feasibility tolerances
  ``1e-9`` (:data:`FEASIBILITY`: the defaults once gave a wrong optimum), via cvxpy as :mod:`relaxations.milp`);
  ``lb`` is lowered and ``ub`` raised by the gap tolerances, but the feasibility tolerances remain: valid up to
  the MIP solver's tolerance. An oracle for tests, NOT a proof; a
  solve that does not end ``optimal`` raises :class:`relaxations.milp.MILPNotOptimal`.

Two entry points: :func:`sandwich_solve` / :func:`sandwich_bounds` on a :class:`relaxations.network.Network`
(any activation: ReLU, LeakyReLU, sigmoid, tanh, softplus; masks of identity neurons honoured), and
:func:`sandwich_epigraph`, ``min_x max_i (C f(x) - d)_i`` on plain dense blocks and one activation (the fuzzing
harness's networks, ``benchmarks/fuzz.py``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
import torch

from relaxations import transcendental as tr
from relaxations.exact_interval import exact_pre_bounds
from relaxations.lp.encoding import AffineBlock, affine_blocks, flat_np
from relaxations.lp.quiet import silence_highs_banner
from relaxations.milp import MILPNotOptimal, leaky_constraints

KINDS = ("relu", "leaky_relu") + tr.KINDS
GAP = 1e-9  # HiGHS's mip_rel_gap and mip_abs_gap here; the reported bounds are moved outward by them
# HiGHS's default feasibility tolerances (1e-7 primal, 1e-6 MIP) once gave a wrong "optimal" 1.98255 for a
# softplus epigraph whose minimum is 1.83666 (fuzz seed 4700 draw 22: pre-activations up to 79, biases up to 32;
# right with these, and with presolve off)
FEASIBILITY = {"mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9}


@dataclass
class Act:
    """One activation layer: ``kind`` in :data:`KINDS`, ``alpha`` the LeakyReLU slope, ``mask`` a bool array over
    the layer's neurons (True: the activation acts; the identity elsewhere) or None for all."""
    kind: str
    alpha: float = 0.0
    mask: np.ndarray | None = None


def network_activations(net) -> list[Act]:
    """The :class:`Act` of every activation layer of a :class:`relaxations.network.Network`, in order."""
    from relaxations.layers import LeakyReLU, ReLU, SmoothActivation
    out = []
    for i in net.activation_indices():
        layer = net.layers[i]
        if isinstance(layer, ReLU):
            out.append(Act("relu"))
        elif isinstance(layer, LeakyReLU):
            out.append(Act("leaky_relu", layer.alpha, layer.mask))
        elif isinstance(layer, SmoothActivation):
            out.append(Act(layer.kind, 0.0, layer.mask))
        else:
            raise ValueError(f"the sandwich MILP does not encode the activation {layer!r}")
    return out


def _on(act: Act, n: int) -> np.ndarray:
    return np.ones(n, bool) if act.mask is None else np.asarray(act.mask, bool).reshape(-1)


def act_interval(act: Act, l: np.ndarray, u: np.ndarray):
    """Rigorous float64 bounds ``(lo, hi)`` of the (monotone) activation's outputs over ``[l, u]``."""
    on = _on(act, l.size)
    if act.kind == "relu":
        lo, hi = np.maximum(l, 0.0), np.maximum(u, 0.0)
    elif act.kind == "leaky_relu":
        a = act.alpha
        lo = np.where(l >= 0, l, np.nextafter(a * l, -np.inf))
        hi = np.where(u >= 0, u, np.nextafter(a * u, np.inf))
    else:
        lo = tr.enclose(act.kind, torch.from_numpy(l))[0].numpy()
        hi = tr.enclose(act.kind, torch.from_numpy(u))[1].numpy()
    return np.where(on, lo, l), np.where(on, hi, u)


def pre_bounds_of(blocks, acts, lower, upper):
    """Rigorous pre-activation bounds ``[(l, u)]`` per activation layer (exact rationals, module docstring)."""
    fns = [None if a.kind == "relu" and a.mask is None else (lambda l, u, a=a: act_interval(a, l, u)) for a in acts]
    return exact_pre_bounds(blocks, flat_np(lower), flat_np(upper), fns)


def breakpoints(kind: str, l: float, u: float, pieces: int) -> np.ndarray:
    """``pieces + 1`` uniform breakpoints of ``[l, u]`` (``0`` added, replacing its nearest, for an S-shaped
    ``kind`` when ``l < 0 < u``), increasing, ends exact."""
    p = np.linspace(l, u, pieces + 1)
    p[0], p[-1] = l, u
    if kind in tr.S_SHAPED and l < 0 < u and pieces >= 2:
        j = int(np.clip(np.argmin(np.abs(p[1:-1])) + 1, 1, pieces - 1))
        p[j] = 0.0
    return np.unique(p)


def piece_offsets(kind: str, p: np.ndarray):
    """``(f(p), slopes, e_lo, e_hi)`` for breakpoints ``p`` ``(K + 1,)``: float64 values of ``f`` (not rigorous),
    the slope of each piece's interpolating line, and rigorous bounds ``e_lo >= max (P - f)``,
    ``e_hi >= max (f - P)`` on each piece (:func:`relaxations.transcendental.max_violation`, clamped at 0)."""
    pt = torch.from_numpy(p)
    fp = tr.value(kind, pt).numpy()
    h = np.diff(p)
    s = np.diff(fp) / h
    b = fp[:-1] - s * p[:-1]
    k, c = torch.from_numpy(s), torch.from_numpy(b)
    a, e = pt[:-1], pt[1:]
    e_lo = tr.max_violation(kind, k, c, a, e, "lower").clamp(min=0).numpy()
    e_hi = tr.max_violation(kind, k, c, a, e, "upper").clamp(min=0).numpy()
    if not (np.all(np.isfinite(e_lo)) and np.all(np.isfinite(e_hi))):
        raise ValueError(f"{kind}: no finite interpolation error bound on [{p[0]}, {p[-1]}]")
    return fp, s, e_lo, e_hi


def _smooth_constraints(z, y, idx, l, u, kind, pieces):
    """The sandwich of ``y = f(z)`` on the neurons ``idx`` (module docstring); ``(constraints, binaries)``."""
    cons, n_bin = [], 0
    lo_c = tr.enclose(kind, torch.from_numpy(l[idx]))[0].numpy()
    hi_c = tr.enclose(kind, torch.from_numpy(u[idx]))[1].numpy()
    cons += [y[idx] >= lo_c, y[idx] <= hi_c]  # monotone: f(l) <= f(z) <= f(u)
    for j in idx:
        if not u[j] - l[j] > 1e-9 * (1 + abs(l[j]) + abs(u[j])):
            continue  # a tiny interval: the constant bounds above
        p = breakpoints(kind, l[j], u[j], pieces)
        fp, s, e_lo, e_hi = piece_offsets(kind, p)
        K = p.size - 1
        h = np.diff(p)
        d = cp.Variable(K)
        cons += [d >= 0, d <= 1, z[j] == p[0] + h @ d]
        P = fp[0] + (s * h) @ d
        if K == 1:
            cons += [y[j] >= P - e_lo[0], y[j] <= P + e_hi[0]]
            continue
        bk = cp.Variable(K - 1, boolean=True)
        n_bin += K - 1
        cons += [d[1:] <= bk, bk <= d[:-1]]
        # piece indicators b_{k-1} - b_k (b_{-1} = 1, b_{K-1} = 0): sum_k e_k (b_{k-1} - b_k)
        # = e_0 + sum_{k < K-1} (e_{k+1} - e_k) b_k
        off_lo = e_lo[0] + np.diff(e_lo) @ bk
        off_hi = e_hi[0] + np.diff(e_hi) @ bk
        cons += [y[j] >= P - off_lo, y[j] <= P + off_hi]
    return cons, n_bin


def _encode(blocks, acts, pre, x_lower, x_upper, pieces):
    """``(x, out, constraints, binaries)``: the sandwich network over the box as cvxpy expressions."""
    x = cp.Variable(x_lower.size)
    cons = [x >= x_lower, x <= x_upper]
    prev, n_bin = x, 0
    for blk, act, (l, u) in zip(blocks[:-1], acts, pre):
        n = l.size
        z, y = cp.Variable(n), cp.Variable(n)
        cons += [z == blk.W @ prev + blk.b, z >= l, z <= u]
        on = _on(act, n)
        off = np.flatnonzero(~on)
        if off.size:
            cons.append(y[off] == z[off])
        if act.kind in ("relu", "leaky_relu"):
            a = act.alpha if act.kind == "leaky_relu" else 0.0
            pos, neg = on & (l >= 0), on & (u <= 0) & (l < 0)
            uns = on & (l < 0) & (u > 0)
            if pos.any():
                cons.append(y[np.flatnonzero(pos)] == z[np.flatnonzero(pos)])
            if neg.any():
                cons.append(y[np.flatnonzero(neg)] == a * z[np.flatnonzero(neg)])
            if uns.any():
                cons += leaky_constraints(z, y, np.flatnonzero(uns), l, u, a)
                n_bin += int(uns.sum())
        else:
            c, nb = _smooth_constraints(z, y, np.flatnonzero(on), l, u, act.kind, pieces)
            cons += c
            n_bin += nb
        prev = y
    out = blocks[-1].W @ prev + blocks[-1].b
    return x, out, cons, n_bin


def act_value(act: Act, z: np.ndarray) -> np.ndarray:
    """The activation layer in float64 at pre-activations ``z`` ``(..., n)`` (not rigorous: within ~1e-16
    relative; the identity off the mask)."""
    z = np.asarray(z, np.float64)
    if act.kind in ("relu", "leaky_relu"):
        fz = np.where(z >= 0, z, (act.alpha if act.kind == "leaky_relu" else 0.0) * z)
    else:
        fz = tr.value(act.kind, torch.from_numpy(z)).numpy()
    return np.where(_on(act, z.shape[-1]), fz, z)


def evaluate(blocks, acts, x: np.ndarray) -> np.ndarray:
    """The network in float64 at inputs ``x`` ``(N, n_in)`` -> ``(N, n_out)`` (not rigorous: within ~1e-15)."""
    h = np.atleast_2d(np.asarray(x, np.float64))
    for blk, act in zip(blocks[:-1], acts):
        h = act_value(act, np.asarray(blk.W @ h.T).T + blk.b)
    return np.asarray(blocks[-1].W @ h.T).T + blocks[-1].b


def _solve(prob, what, n_bin, time_limit, solver_opts):
    opts = {"warm_start": False, "mip_rel_gap": GAP, "mip_abs_gap": GAP, **FEASIBILITY, **(solver_opts or {})}
    if time_limit is not None:
        opts["time_limit"] = float(time_limit)
    silence_highs_banner()
    try:
        with warnings.catch_warnings():  # an inaccurate solution raises below; cvxpy's warning would only repeat it
            warnings.simplefilter("ignore", UserWarning)
            prob.solve(solver="HIGHS", **opts)
    except cp.error.SolverError as e:
        raise MILPNotOptimal(f"sandwich MILP {what}: HiGHS failed ({n_bin} binaries): {e}") from None
    if prob.status != cp.OPTIMAL:
        raise MILPNotOptimal(f"sandwich MILP {what} ended {prob.status!r} ({n_bin} binaries)")
    return float(prob.value)


def _outward(v: float, sign: float) -> float:
    """``v`` moved by the MIP gap tolerances (``sign`` -1: down, +1: up)."""
    return v + sign * (GAP + GAP * abs(v)) * 1.01


@dataclass
class SandwichResult:
    """``lb``/``ub`` ``(m,)``: lower bound of ``min C_r y`` and upper bound of ``max C_r y`` over the box (up to the
    MIP solver's tolerance); ``argmin``/``argmax`` ``(m, n_in)`` the MILP's optimal inputs; ``attained_min`` /
    ``attained_max`` ``(m,)``: ``C_r f`` there in float64 (real points: ``lb <= min <= attained_min``,
    ``attained_max <= max <= ub``); ``binaries``: per solve."""
    lb: np.ndarray
    ub: np.ndarray
    argmin: np.ndarray
    argmax: np.ndarray
    attained_min: np.ndarray
    attained_max: np.ndarray
    binaries: int = 0
    solve_times: list = field(default_factory=list)


def _as_blocks(blocks):
    return [b if isinstance(b, AffineBlock) else
            AffineBlock(sp.csr_matrix(np.atleast_2d(b[0])), np.asarray(b[1], float)) for b in blocks]


def sandwich_solve(net, lower, upper, C=None, pieces: int = 8, time_limit=None, solver_opts=None,
                   blocks=None, acts=None) -> SandwichResult:
    """Bounds of every row of ``C @ net(x)`` over the box ``[lower, upper]`` (module docstring).

    ``net``: a :class:`relaxations.network.Network` (or None with ``blocks`` — ``AffineBlock`` or ``(W, b)`` — and
    ``acts``, a list of :class:`Act`); ``C``: ``(m, out_size)`` (identity when None); ``pieces``: ``K`` per smooth
    neuron (``0`` replaces its nearest breakpoint on an S-shaped interval around it).
    """
    if blocks is None:
        blocks, acts = affine_blocks(net, any_activation=True), network_activations(net)
    blocks = _as_blocks(blocks)
    xl, xu = flat_np(lower), flat_np(upper)
    n_out = blocks[-1].W.shape[0]
    C = np.eye(n_out) if C is None else np.atleast_2d(np.asarray(C, dtype=np.float64))
    pre = pre_bounds_of(blocks, acts, xl, xu)
    x, out, cons, n_bin = _encode(blocks, acts, pre, xl, xu, pieces)
    c = cp.Parameter(n_out)
    prob = cp.Problem(cp.Minimize(c @ out), cons)
    m = C.shape[0]
    lb, ub = np.empty(m), np.empty(m)
    amin, amax = np.empty((m, xl.size)), np.empty((m, xl.size))
    times = []
    for r in range(m):
        for sign, vals, args in ((1.0, lb, amin), (-1.0, ub, amax)):
            c.value = sign * C[r]
            v = _solve(prob, f"row {r} ({'min' if sign > 0 else 'max'})", n_bin, time_limit, solver_opts)
            times.append(prob.solver_stats.solve_time)
            vals[r] = sign * _outward(v, -1.0)
            args[r] = np.clip(x.value, xl, xu)
    at_min = np.einsum("ij,ij->i", evaluate(blocks, acts, amin), C)
    at_max = np.einsum("ij,ij->i", evaluate(blocks, acts, amax), C)
    return SandwichResult(lb, ub, amin, amax, at_min, at_max, n_bin, times)


def sandwich_bounds(net, lower, upper, C=None, pieces: int = 8, **kw):
    """``(lb, ub)``, each ``(m,)``: a lower bound of ``min C y`` and an upper bound of ``max C y`` over the box,
    valid up to the MIP solver's tolerance (:func:`sandwich_solve`; an oracle for tests, not a proof)."""
    r = sandwich_solve(net, lower, upper, C, pieces, **kw)
    return r.lb, r.ub


def sandwich_epigraph(blocks, act: Act, lower, upper, C, d, pieces: int = 8, time_limit=None, max_binaries=None):
    """``(lower bound, argmin)`` of ``min_x max_i (C f(x) - d)_i`` over the box, for dense ``blocks`` ``[(W, b)]``
    with the activation ``act`` after every block but the last (the fuzzing harness's networks). ``max_binaries``:
    raise :class:`relaxations.milp.MILPNotOptimal` without solving when the encoding needs more binaries."""
    blocks = _as_blocks(blocks)
    xl, xu = flat_np(lower), flat_np(upper)
    acts = [act] * (len(blocks) - 1)
    pre = pre_bounds_of(blocks, acts, xl, xu)
    x, out, cons, n_bin = _encode(blocks, acts, pre, xl, xu, pieces)
    if max_binaries is not None and n_bin > max_binaries:
        raise MILPNotOptimal(f"sandwich MILP: {n_bin} binaries, more than {max_binaries}")
    t = cp.Variable()
    C = np.atleast_2d(np.asarray(C, float))
    prob = cp.Problem(cp.Minimize(t), cons + [t >= C @ out - np.asarray(d, float)])
    v = _solve(prob, "epigraph", n_bin, time_limit, None)
    return _outward(v, -1.0), np.clip(x.value, xl, xu)
