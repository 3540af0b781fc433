"""Sound LP bounds from an inexact solver's duals (weak duality, rounding-safe evaluation).

For the LP ``min c^T v + c0  s.t.  A_k v <= b_k (k-th block),  E_k v == e_k,  L <= v <= U`` (finite
``L``/``U``), *any* ``lam_k >= 0`` and any ``mu_k`` give, for every feasible ``v``,

    c^T v + c0 >= c0 - sum_k lam_k^T b_k - sum_k mu_k^T e_k + sum_j min(r_j L_j, r_j U_j),
    r = c + sum_k A_k^T lam_k + sum_k E_k^T mu_k,

because ``c^T v >= c^T v + lam^T (A v - b) + mu^T (E v - e)`` and the last expression is minimised
over the box coordinate-wise. The printed solver optimum is never used: only its duals, clipped to the
right sign. The sum is evaluated in float64 and then lowered by a rigorous bound on the accumulated
rounding error (standard ``gamma_n = n u / (1 - n u)`` bounds, with ``u`` taken as the machine epsilon,
twice the unit roundoff), and finally rounded outward with ``np.nextafter``. The certificate is sound
for the LP *as given by these float matrices* (read as exact reals); whether that LP is a relaxation of
the network is the caller's responsibility (e.g. rounding-safe chords in :mod:`relaxations.lp.model`).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

EPS = np.finfo(np.float64).eps


def _col_counts(A) -> np.ndarray:
    A = sp.csc_matrix(A)
    return np.diff(A.indptr)


def certified_min(c, c0, ineqs, eqs, L, U, fallback=-np.inf):
    """A sound lower bound (float) of ``min c^T v + c0`` over the LP of the module docstring.

    ``c``: ``(n,)``; ``ineqs``: list of ``(A (m_k, n) sparse/dense, b (m_k,), lam (m_k,) or None)``;
    ``eqs``: list of ``(E, e, mu or None)``; ``L``, ``U``: ``(n,)``. Negative ``lam`` entries are
    clipped to 0, non-finite multipliers are replaced by 0. Returns ``max(certificate, fallback)``;
    the all-zero multiplier (a pure box bound) is the certificate when the duals are unusable, so the
    result is finite whenever ``L``, ``U`` are.
    """
    c = np.asarray(c, dtype=np.float64)
    L, U = np.asarray(L, dtype=np.float64), np.asarray(U, dtype=np.float64)
    n = c.size
    r = c.copy()
    R = np.abs(c)
    cnt = np.ones(n)
    rhs, rhs_abs, n_rhs = 0.0, 0.0, 0
    for blocks, is_eq in ((ineqs, False), (eqs, True)):
        for A, b, lam in blocks:
            b = np.asarray(b, dtype=np.float64).reshape(-1)
            if lam is None:
                continue
            lam = np.asarray(lam, dtype=np.float64).reshape(-1)
            lam = np.where(np.isfinite(lam), lam, 0.0)
            if not is_eq:
                lam = np.maximum(lam, 0.0)
            if not np.any(lam):
                continue
            A = sp.csr_matrix(A)
            r += A.T @ lam
            R += abs(A).T @ np.abs(lam)
            cnt += _col_counts(A)
            prod = lam * b
            rhs += prod.sum()
            rhs_abs += np.abs(prod).sum()
            n_rhs += b.size
    # error of r: each r_j is a sum of cnt_j products -> |err_j| <= gamma_{cnt_j + 1} R_j
    err_r = (cnt + 2) * EPS * R * (1 + 4 * EPS)
    M = np.maximum(np.abs(L), np.abs(U))
    live = (r != 0) | (err_r != 0)
    if not np.all(np.isfinite(M[live])):
        return float(fallback)  # an unbounded variable carries weight: no box certificate possible
    t = np.minimum(r * L, r * U)
    t = np.where(live, t, 0.0)
    slack = err_r * np.where(live, M, 0.0)
    total = c0 - rhs + t.sum() - slack.sum()
    mag = abs(c0) + rhs_abs + np.abs(t).sum() + slack.sum()
    total -= (n + n_rhs + 4) * EPS * mag * (1 + 4 * EPS) + np.finfo(np.float64).tiny
    total = np.nextafter(total, -np.inf)
    if not np.isfinite(total):
        return float(fallback)
    return float(max(total, fallback))
