"""LP bounds of chains of affine layers and smooth activations (sigmoid, tanh, softplus): the methods ``hull1d``
and ``hull`` (issue 27 item 4a; the construction of :mod:`relaxations.sshaped_hull`).

Variables (one flat vector): the input ``x``, per activation layer ``i`` its pre-activation ``z_i`` and output
``y_i``, and the network output ``o``. Constraints, all float matrices read as exact reals:

- ``z_i = W_i y_{i-1} + b_i`` and ``o = W y_last + b`` (equalities; ``y_{-1} = x``; the blocks of
  :func:`relaxations.lp.encoding.affine_blocks`);
- the box: the input box, ``z_i`` in its rigorous intermediate bounds ``[l_i, u_i]`` (CROWN's), ``y_i`` in
  ``[f(l_i), f(u_i)]`` (enclosures rounded outward), ``o`` in a box implied by ``y``'s (rounded generously);
- cutting planes, each valid in real arithmetic for its floats:
  ``hull1d``: per neuron the lines of the one-dimensional hull of ``f`` on ``[l, u]``
  (:func:`relaxations.sshaped_hull.hull1d_lines`, repaired by ``transcendental.repair``), seeded at ``l``, the
  midpoint and ``u``, then separated at the LP optimum's ``z`` wherever ``y`` lies outside the hull;
  ``hull``: the same, plus the multi-input cuts ``y_ij <= alpha + beta.y_{i-1}`` (and ``>=``) of
  :func:`relaxations.sshaped_hull.upper_cut` / ``lower_cut`` over the box of ``y_{i-1}`` (the input box for the
  first layer), separated at the optimum's ``y_{i-1}`` (checked exactly by ``cut_violation``).

Separation rounds run until no cut is violated by more than ``tol (1 + |y|)`` or ``max_rounds``; cuts are valid
for every objective, so they accumulate over the rows bounded. The bound reported is always
:func:`relaxations.lp.sound.certified_min` of the last LP with HiGHS's duals (scipy's ``linprog``), never the
printed optimum.
"""
from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog

from relaxations import sshaped_hull as hull
from relaxations import transcendental as tr
from relaxations.lp.encoding import affine_blocks, layer_offsets
from relaxations.lp.sound import certified_min
from relaxations.names import SMOOTH_LP_METHODS
from relaxations.network import UnsupportedNetwork


def smooth_kinds(net, method: str) -> list[str]:
    """The activation kind of each activation layer of ``net``; raises :class:`UnsupportedNetwork` (one line
    naming ``method``) unless ``net`` is a chain of affine layers and unmasked sigmoid/tanh/softplus layers."""
    from relaxations.layers.sshaped import SmoothActivation
    kinds = []
    for i in net.activation_indices():
        layer = net.layers[i]
        if not isinstance(layer, SmoothActivation) or layer.mask is not None:
            raise UnsupportedNetwork(f"bounding method {method!r} supports chains of affine layers and sigmoid, "
                                     f"tanh or softplus layers only (this network has {layer!r})")
        kinds.append(layer.kind)
    if not kinds:
        raise UnsupportedNetwork(f"bounding method {method!r} bounds networks with sigmoid, tanh or softplus "
                                 "layers (this one has none: use lp)")
    return kinds


class SmoothLP:
    """The LP of one domain (see the module docstring). ``pre``: ``[(l_i, u_i)]`` flat float64 rigorous bounds
    of each activation layer's input; ``method``: ``hull1d`` or ``hull``."""

    def __init__(self, net, method, x_lo, x_hi, pre, tol=1e-6, max_rounds=30):
        if method not in SMOOTH_LP_METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {SMOOTH_LP_METHODS}")
        self.kinds = smooth_kinds(net, method)
        self.method, self.tol, self.max_rounds = method, tol, max_rounds
        self.blocks = affine_blocks(net, any_activation=True)
        x_lo, x_hi = np.asarray(x_lo, float).reshape(-1), np.asarray(x_hi, float).reshape(-1)
        self.pre = [(np.asarray(l, float).reshape(-1), np.asarray(u, float).reshape(-1)) for l, u in pre]
        self.sizes = [l.size for l, _ in self.pre]
        self.n_in, self.n_out = x_lo.size, self.blocks[-1].W.shape[0]
        self.z_off, self.y_off, self.o_off = layer_offsets(self.n_in, self.sizes)
        self.n = self.o_off + self.n_out
        L, U = np.empty(self.n), np.empty(self.n)
        L[:self.n_in], U[:self.n_in] = x_lo, x_hi
        self.ybox = [(x_lo, x_hi)]
        for i, (kind, (l, u)) in enumerate(zip(self.kinds, self.pre)):
            L[self.zs(i)], U[self.zs(i)] = l, u
            ylo = tr.enclose(kind, torch.as_tensor(l))[0].numpy()
            yhi = tr.enclose(kind, torch.as_tensor(u))[1].numpy()
            L[self.ys(i)], U[self.ys(i)] = ylo, yhi
            self.ybox.append((ylo, yhi))
        # o = W y + b: |o| <= |W| max|y| + |b|, taken with a wide margin (a box the network implies)
        blk = self.blocks[-1]
        ylo, yhi = self.ybox[-1]
        reach = abs(blk.W) @ np.maximum(np.abs(ylo), np.abs(yhi)) + np.abs(blk.b)
        reach = reach * (1 + 1e-6) + 1.0
        L[self.o_off:], U[self.o_off:] = -reach, reach
        self.L, self.U = L, U
        self.empty = bool(np.any(L > U)) or not bool(np.all(np.isfinite(L)) and np.all(np.isfinite(U)))
        # equalities: z_i - W_i y_{i-1} = b_i, o - W y_last = b
        rows, rhs = [], []
        for i, blk in enumerate(self.blocks):
            prev = slice(0, self.n_in) if i == 0 else self.ys(i - 1)
            cur = self.zs(i) if i < len(self.sizes) else slice(self.o_off, self.n)
            m = blk.W.shape[0]
            E = sp.lil_matrix((m, self.n))
            E[:, prev] = -blk.W
            E[:, cur] = sp.identity(m)
            rows.append(E.tocsr())
            rhs.append(blk.b)
        self.E, self.e = sp.vstack(rows).tocsr(), np.concatenate(rhs)
        self.A_rows, self.b_rows = [], []
        self.n_cuts = {"hull1d": 0, "hull": 0}
        self.rounds, self.solve_time, self.sep_time = [], 0.0, 0.0
        if not self.empty:
            for i, (l, u) in enumerate(self.pre):
                for z in (l, (l + u) / 2, u):
                    for side in ("upper", "lower"):
                        k, b = hull.hull1d_lines(self.kinds[i], l, u, z, side)
                        self._add_1d(i, np.ones(l.size, dtype=bool), k, b, side)

    # ------------------------------------------------------------------ layout
    def zs(self, i):
        return slice(self.z_off[i], self.z_off[i] + self.sizes[i])

    def ys(self, i):
        return slice(self.y_off[i], self.y_off[i] + self.sizes[i])

    # ------------------------------------------------------------------ cuts
    def _add_rows(self, A, b, what):
        keep = np.isfinite(b)
        if keep.any():
            self.A_rows.append(sp.csr_matrix(A)[np.flatnonzero(keep)])
            self.b_rows.append(b[keep])
            self.n_cuts[what] += int(keep.sum())

    def _add_1d(self, i, sel, k, b, side):
        """The neurons ``sel`` of layer ``i``'s one-dimensional hull lines ``y <= k z + b`` ("upper") / ``>=``
        (``k``, ``b``: every neuron's, from :func:`relaxations.sshaped_hull.hull1d_lines`)."""
        idx = np.flatnonzero(sel)
        if not idx.size:
            return
        k, b = k[idx], b[idx]
        m = idx.size
        s = 1.0 if side == "upper" else -1.0  # upper: y - k z <= b; lower: k z - y <= -b
        A = sp.csr_matrix((np.concatenate([s * np.ones(m), -s * k]),
                           (np.concatenate([np.arange(m)] * 2),
                            np.concatenate([self.y_off[i] + idx, self.z_off[i] + idx]))), shape=(m, self.n))
        self._add_rows(A, s * b, "hull1d")

    def _separate(self, v):
        """Add every cut that the point ``v`` violates by more than the tolerance; returns how many."""
        before = sum(self.n_cuts.values())
        for i, kind in enumerate(self.kinds):
            z, y = v[self.zs(i)], v[self.ys(i)]
            tol = self.tol * (1 + np.abs(y))
            l, u = self.pre[i]
            for side, s in (("upper", 1.0), ("lower", -1.0)):
                k, b = hull.hull1d_lines(kind, l, u, z, side)
                self._add_1d(i, s * (y - (k * z + b)) > tol, k, b, side)
            if self.method != "hull":
                continue
            fz = tr.value(kind, torch.as_tensor(z)).numpy()
            W = self.blocks[i].W
            bb = self.blocks[i].b
            prev = v[:self.n_in] if i == 0 else v[self.ys(i - 1)]
            lo, hi = self.ybox[i]
            prev_off = 0 if i == 0 else self.y_off[i - 1]
            for s, cut in ((1.0, hull.upper_cut), (-1.0, hull.lower_cut)):
                for j in np.flatnonzero(s * (y - fz) > tol):  # only a point off the graph can be cut
                    w = W.getrow(j).toarray().ravel()
                    beta, alpha = cut(kind, w, float(bb[j]), lo, hi, prev)
                    if not np.isfinite(alpha) or s * (y[j] - alpha - beta @ prev) <= tol[j]:
                        continue
                    nz = np.flatnonzero(beta)
                    A = sp.csr_matrix((np.concatenate([[s], -s * beta[nz]]),
                                       (np.zeros(nz.size + 1, dtype=int),
                                        np.concatenate([[self.y_off[i] + j], prev_off + nz]))), shape=(1, self.n))
                    self._add_rows(A, np.array([s * alpha]), "hull")
        return sum(self.n_cuts.values()) - before

    # ------------------------------------------------------------------ solving
    def _solve(self, c):
        A = sp.vstack(self.A_rows).tocsr() if self.A_rows else sp.csr_matrix((0, self.n))
        b = np.concatenate(self.b_rows) if self.b_rows else np.zeros(0)
        t0 = time.perf_counter()
        r = linprog(c, A_ub=A, b_ub=b, A_eq=self.E, b_eq=self.e, bounds=np.stack([self.L, self.U], axis=1),
                    method="highs")
        self.solve_time += time.perf_counter() - t0
        return r, A, b

    def minimize(self, c):
        """A certified lower bound of ``min c.v`` (``c``: ``(n,)``) after separating cuts at the optima;
        ``+inf`` for an empty domain."""
        if self.empty:
            return np.inf
        rounds = 0
        while True:
            r, A, b = self._solve(c)
            if r.status != 0 or rounds >= self.max_rounds:
                break
            t0 = time.perf_counter()
            added = self._separate(np.asarray(r.x, dtype=np.float64))
            self.sep_time += time.perf_counter() - t0
            rounds += 1
            if not added:
                break
        self.rounds.append(rounds)
        ok = r.status == 0
        lam = -np.asarray(r.ineqlin.marginals) if ok and b.size else None
        mu = -np.asarray(r.eqlin.marginals) if ok else None
        return certified_min(c, 0.0, [(A, b, lam)] if b.size else [], [(self.E, self.e, mu)], self.L, self.U)


def smooth_lp_bounds(net, method, x_lo, x_hi, pre, C, want_upper=True, **options):
    """``(lb, ub)`` ``(m,)`` float64 certified bounds of ``C o`` over one box (``ub`` None unless
    ``want_upper``); ``pre``: rigorous bounds of every activation layer's input; ``options``: ``tol``,
    ``max_rounds`` of :class:`SmoothLP`."""
    lp = SmoothLP(net, method, x_lo, x_hi, pre, **options)
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    lb, ub = np.empty(C.shape[0]), np.empty(C.shape[0])
    for k, row in enumerate(C):
        c = np.zeros(lp.n)
        c[lp.o_off:] = row
        lb[k] = lp.minimize(c)
        ub[k] = -lp.minimize(-c) if want_upper else np.nan
    return lb, (ub if want_upper else None)
