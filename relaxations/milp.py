"""Exact MILP oracle: the min and max of ``C y`` over a box (with split phases), by a big-M encoding.

For tests and as ground truth only. Exactness limits (read before trusting a value):

- the big-M encoding is exact only if the intermediate bounds ``pre_bounds`` are valid (sound) bounds
  of the pre-activations over the domain. The default ones are exact rational interval bounds computed from
  the encoded affine maps alone and rounded outward (:mod:`relaxations.exact_interval`), not the product's
  IBP: the oracle must not share its bounds with the code it is used to check;
- the value is the MIP solver's floating-point optimum: HiGHS is run with ``mip_rel_gap`` and
  ``mip_abs_gap`` of ``1e-9`` and feasibility tolerances around ``1e-7``, so values are exact only up to
  such tolerances (a few ``1e-7`` relative on well-scaled networks). It is NOT a certified bound and
  must never be reported as a proof;
- a solve that does not finish ``optimal`` raises :class:`MILPNotOptimal` (``time_limit`` reached,
  numerical trouble); an empty domain (contradictory splits, infeasible MILP) gives ``lb = +inf``,
  ``ub = -inf`` and ``status == "infeasible"``.

The encoding of a ReLU ``y = relu(z)`` with ``l <= z <= u``: stable or split neurons exactly
(``y = 0, z <= 0`` or ``y = z, z >= 0``); unstable ones with a binary ``d``:
``y >= 0, y >= z, y <= z - l (1 - d), y <= u d`` (:func:`leaky_constraints` with slope 0; the LeakyReLU of the
piecewise-linear sandwich MILP, :mod:`relaxations.milp_sandwich`, is the same with its slope).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from relaxations.exact_interval import exact_pre_bounds
from relaxations.lp.encoding import affine_blocks, domain_bounds, flat_np
from relaxations.lp.quiet import silence_highs_banner


class MILPNotOptimal(RuntimeError):
    """A MILP solve ended without a proven optimum (time limit, numerical failure)."""


@dataclass
class MILPResult:
    """``lb``/``ub``: ``(m,)`` exact min/max of each row of ``C y``; ``argmin``/``argmax``: ``(m, n_in)``
    inputs attaining them (NaN rows when infeasible); ``status``: "optimal" or "infeasible"."""
    lb: np.ndarray
    ub: np.ndarray
    argmin: np.ndarray
    argmax: np.ndarray
    status: str
    solve_times: list = field(default_factory=list)


def leaky_constraints(z, y, idx, l, u, a: float) -> list:
    """The exact big-M encoding of ``y = max(z, a z)`` (``a`` in ``[0, 1]``; ReLU: ``a = 0``) on the neurons
    ``idx`` (all with ``l < 0 < u``), one binary ``d`` each (``d = 1``: ``z >= 0``): ``y >= z``, ``y >= a z``,
    ``y <= z - (1 - a) l (1 - d)``, ``y <= a z + (1 - a) u d``. cvxpy constraints."""
    d = cp.Variable(idx.size, boolean=True)
    zi, yi, li, ui = z[idx], y[idx], l[idx], u[idx]
    return [yi >= zi, yi >= a * zi,
            yi <= zi - cp.multiply((1 - a) * li, 1 - d),
            yi <= a * zi + cp.multiply((1 - a) * ui, d)]


def _build(net, dom, blocks):
    x = cp.Variable(net.in_size)
    cons = [x >= dom.x_lower, x <= dom.x_upper]
    prev = x
    n_bin = 0
    for i, blk in enumerate(blocks[:-1]):
        l, u = dom.pre[i]
        ph = dom.phases(i)
        n = l.size
        z = cp.Variable(n)
        y = cp.Variable(n)
        cons += [z == blk.W @ prev + blk.b, z >= l, z <= u]
        act, ina, uns = ph == 1, ph == -1, ph == 0
        if ina.any():
            idx = np.flatnonzero(ina)
            cons += [y[idx] == 0, z[idx] <= 0]
        if act.any():
            idx = np.flatnonzero(act)
            cons += [y[idx] == z[idx], z[idx] >= 0]
        if uns.any():
            idx = np.flatnonzero(uns)
            cons += leaky_constraints(z, y, idx, l, u, 0.0)
            n_bin += idx.size
        prev = y
    out = blocks[-1].W @ prev + blocks[-1].b
    return x, out, cons, n_bin


def milp_solve(net, lower, upper, C=None, pre_bounds=None, splits=None, solver="HIGHS",
               time_limit=None, solver_opts=None) -> MILPResult:
    """Exact min/max of every row of ``C @ net(x)`` for ``x`` in the box; see the module docstring.

    ``C``: ``(m, out_size)`` (identity when None); ``lower``/``upper``: ``(in_size,)``;
    ``pre_bounds``/``splits``: as in :func:`relaxations.lp.encoding.domain_bounds`, except that the default
    intermediate bounds are :func:`relaxations.exact_interval.exact_pre_bounds` (independent of IBP).
    """
    C = np.eye(net.out_size) if C is None else np.atleast_2d(np.asarray(C, dtype=np.float64))
    m = C.shape[0]
    blocks = affine_blocks(net)
    if pre_bounds is None:
        pre_bounds = exact_pre_bounds(blocks, flat_np(lower), flat_np(upper))
    dom = domain_bounds(net, lower, upper, pre_bounds, splits)
    nan = np.full((m, net.in_size), np.nan)
    if dom.empty:
        return MILPResult(np.full(m, np.inf), np.full(m, -np.inf), nan, nan.copy(), "infeasible")
    x, out, cons, n_bin = _build(net, dom, blocks)
    c = cp.Parameter(net.out_size)
    prob = cp.Problem(cp.Minimize(c @ out), cons)
    opts = dict(solver_opts or {})
    if solver.upper() == "HIGHS":
        # cvxpy's warm-started HiGHS re-solve after a parameter change can return the previous optimum
        # (cvxpy 1.9.3, highspy 1.16: max of x2 + relu(x1 - x2) on [0,1]^2 came back 0, not 1)
        opts.setdefault("warm_start", False)
        silence_highs_banner()
        opts.setdefault("mip_rel_gap", 1e-9)
        opts.setdefault("mip_abs_gap", 1e-9)
        if time_limit is not None:
            opts.setdefault("time_limit", float(time_limit))
    elif time_limit is not None:
        raise ValueError("time_limit is only wired for HiGHS; pass solver_opts for other solvers")
    lb, ub = np.empty(m), np.empty(m)
    amin, amax = nan.copy(), nan.copy()
    times = []
    for r in range(m):
        for sign, vals, args in ((1.0, lb, amin), (-1.0, ub, amax)):
            c.value = sign * C[r]
            prob.solve(solver=solver, **opts)
            times.append(prob.solver_stats.solve_time)
            if prob.status == cp.INFEASIBLE:
                return MILPResult(np.full(m, np.inf), np.full(m, -np.inf), nan, nan.copy(), "infeasible", times)
            if prob.status != cp.OPTIMAL:
                raise MILPNotOptimal(f"MILP row {r} ({'min' if sign > 0 else 'max'}) ended {prob.status!r}"
                                     f" ({n_bin} binaries)")
            vals[r] = sign * prob.value
            args[r] = x.value
    return MILPResult(lb, ub, amin, amax, "optimal", times)


def milp_bounds(net, lower, upper, C=None, pre_bounds=None, splits=None, solver="HIGHS",
                time_limit=None, solver_opts=None):
    """``(lb, ub)``, each ``(m,)``: exact min/max of each row of ``C y`` (see :func:`milp_solve`).

    Raises :class:`MILPNotOptimal` when a solve is not proven optimal; ``(+inf, -inf)`` for an empty
    domain.
    """
    res = milp_solve(net, lower, upper, C, pre_bounds, splits, solver, time_limit, solver_opts)
    return res.lb, res.ub
