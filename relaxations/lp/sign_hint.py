"""Sign hints for near-stable neurons: does ``z_j`` of one ReLU layer keep one sign over the whole box?

A MILP of the network cut before that layer (big-M encoding on the given intermediate bounds, HiGHS) asks for a
point where ``s z_j < 0`` (``s = +1``: is the neuron ever inactive? ``s = -1``: ever active?), with the
objective cut off at 0 and the search stopped at the first such point. "Infeasible" suggests that ``s z_j >= 0``
on the whole box. **This is a hint, never a proof**: the answer rests on the solver's floating-point tolerances
and on the bounds it was given; whoever uses it must prove the sign with rigorous bounds first
(:func:`bnb.engine.signs.refine_signs` does, by branch and bound on the prefix network).

Variables: the input ``x``, then per ReLU layer ``k`` before the target its pre-activation ``z_k`` and output
``y_k`` (``n_k`` each), then one binary per unstable neuron. The encoding is that of :mod:`relaxations.milp`:
``y >= z``, ``y <= z - l (1 - d)``, ``y <= u d`` for an unstable neuron, ``y = z`` for an active one, ``y = 0``
for an inactive one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from relaxations.lp.encoding import affine_blocks, domain_bounds
from relaxations.lp.quiet import silence_highs_banner

HINT_ACTIVE, HINT_INACTIVE, HINT_BOTH, HINT_UNKNOWN = 1, -1, 0, None


@dataclass
class PrefixMILP:
    """The MILP of a prefix network (see the module docstring), ready to take one objective after another."""
    highs: object
    W: sp.csr_matrix   # (n_t, n_{t-1}): the last affine block, from the last ReLU output to the target layer
    b: np.ndarray      # (n_t,)
    y_cols: np.ndarray  # column indices of the last ReLU layer's output (the input x for the first layer)


def prefix_milp(prefix, lower, upper, pre_bounds) -> PrefixMILP:
    """The MILP of ``prefix`` (a network whose output is the target layer's pre-activation) over the box
    ``lower``/``upper`` (``(n_in,)`` or ``(1, n_in)``), with per earlier ReLU layer the bounds ``pre_bounds``
    (``(l, u)``, ``(1, n_k)``), used as the big-M constants."""
    import highspy
    silence_highs_banner()
    blocks = affine_blocks(prefix)
    dom = domain_bounds(prefix, lower, upper, pre_bounds)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    inf = highspy.kHighsInf
    cols_l, cols_u = [dom.x_lower], [dom.x_upper]
    n = dom.x_lower.size
    prev = np.arange(n)
    rows = []  # (coefficient dict as (cols, vals), lower, upper)
    binaries = []

    def row(cols, vals, lo, hi):
        rows.append((np.asarray(cols, dtype=np.int32), np.asarray(vals, dtype=np.float64), lo, hi))

    layer_cols = []
    for k, blk in enumerate(blocks[:-1]):
        l, u = dom.pre[k]
        m = l.size
        zc, yc = np.arange(n, n + m), np.arange(n + m, n + 2 * m)
        n += 2 * m
        ph = dom.phases(k)
        cols_l += [l, np.maximum(l, 0.0)]
        cols_u += [u, np.where(ph == -1, 0.0, np.maximum(u, 0.0))]
        W = blk.W.tocsr()
        for i in range(m):  # z_i - W_i y_prev = b_i
            s, e = W.indptr[i], W.indptr[i + 1]
            row(np.concatenate([[zc[i]], prev[W.indices[s:e]]]), np.concatenate([[1.0], -W.data[s:e]]),
                blk.b[i], blk.b[i])
        layer_cols.append((zc, yc, l, u, ph))
        prev = yc
    for zc, yc, l, u, ph in layer_cols:
        for i in np.flatnonzero(ph == 1):
            row([yc[i], zc[i]], [1.0, -1.0], 0.0, 0.0)
        for i in np.flatnonzero(ph == 0):
            d = n
            n += 1
            binaries.append(d)
            cols_l.append(np.zeros(1))
            cols_u.append(np.ones(1))
            row([yc[i], zc[i]], [1.0, -1.0], 0.0, inf)                        # y >= z
            row([yc[i], zc[i], d], [1.0, -1.0, -l[i]], -inf, -l[i])           # y <= z - l (1 - d)
            row([yc[i], d], [1.0, -u[i]], -inf, 0.0)                           # y <= u d
    lo, hi = np.concatenate(cols_l), np.concatenate(cols_u)
    h.addVars(n, lo, hi)
    if rows:
        starts = np.cumsum([0] + [len(r[0]) for r in rows[:-1]]).astype(np.int32)
        idx = np.concatenate([r[0] for r in rows]).astype(np.int32)
        val = np.concatenate([r[1] for r in rows])
        h.addRows(len(rows), np.array([r[2] for r in rows], dtype=np.float64),
                  np.array([r[3] for r in rows], dtype=np.float64), idx.size, starts, idx, val)
    if binaries:
        b = np.asarray(binaries, dtype=np.int32)
        h.changeColsIntegrality(b.size, b, np.array([highspy.HighsVarType.kInteger] * b.size))
    last = blocks[-1]
    return PrefixMILP(h, last.W.tocsr(), last.b, prev)


def sign_hint(milp: PrefixMILP, j: int, sign: int, time_limit: float = 2.0):
    """A hint whether ``sign * z_j >= 0`` on the whole box: :data:`HINT_ACTIVE` (``sign = 1``) or
    :data:`HINT_INACTIVE` (``sign = -1``) when the MILP finds no point with ``sign * z_j < 0``;
    :data:`HINT_BOTH` when it finds one; :data:`HINT_UNKNOWN` when it stops for another reason (time limit,
    numerical trouble). Returns ``(hint, seconds)``."""
    import highspy
    h = milp.highs
    t0 = time.perf_counter()
    ncol = h.getNumCol()
    cost = np.zeros(ncol)
    s, e = milp.W.indptr[j], milp.W.indptr[j + 1]
    cost[milp.y_cols[milp.W.indices[s:e]]] = sign * milp.W.data[s:e]
    h.changeColsCost(ncol, np.arange(ncol, dtype=np.int32), cost)
    h.changeObjectiveOffset(float(sign * milp.b[j]))  # the objective is sign * z_j itself
    h.setOptionValue("objective_bound", 0.0)        # only points with sign * z_j < 0 are of interest
    h.setOptionValue("mip_max_improving_sols", 1)   # the first such point answers the question
    h.setOptionValue("mip_rel_gap", 0.99)           # a positive dual bound answers it too
    h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
    h.clearSolver()
    h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    seconds = time.perf_counter() - t0
    if status == highspy.HighsModelStatus.kInfeasible or info.mip_dual_bound > 0:
        return (HINT_ACTIVE if sign > 0 else HINT_INACTIVE), seconds
    if info.primal_solution_status == 2 and info.objective_function_value < 0:
        return HINT_BOTH, seconds
    return HINT_UNKNOWN, seconds
