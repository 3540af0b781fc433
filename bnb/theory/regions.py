"""Activation regions of a ReLU network over a box, with exact LPs in the input space.

A *piece* fixes the phase of some neurons (``splits``: per ReLU layer an int8 array, +1 active, -1
inactive, 0 free) such that every layer before its *current* layer is fully determined (each neuron split
or stable on the piece). On such a piece the pre-activations of the current layer are affine in ``x``,
so the piece is the convex polytope ``{x in box : sign constraints}`` and the range of a neuron over it is
one LP. :func:`classify` finds the current layer and its unstable neurons; neurons an LP shows stable
(up to ``tol``) are only *classified*, never added to ``splits``: a piece is always the set its split
constraints define, so the children of every split cover their parent exactly and every bound computed
on them holds for the whole domain. The LPs here choose what to split and when a layer is complete;
they are not certificates (the bounds of :mod:`bnb.theory.partition` are).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linprog


def _affine_upto(blocks, phases, i):
    """``(A, c)`` with ``z_i = A x + c`` when the phases of layers ``< i`` are ``phases[:i]`` (+-1)."""
    A, c = blocks[0]
    A, c = A.copy(), c.copy()
    for k in range(i):
        d = (phases[k] == 1).astype(float)
        W, b = blocks[k + 1]
        A, c = W @ (d[:, None] * A), W @ (d * c) + b
    return A, c


class Regions:
    """The region machinery for one network (``blocks``, :mod:`bnb.theory.networks`) over one box."""

    def __init__(self, blocks, lower, upper, tol=1e-9):
        self.blocks = blocks
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.sizes = [W.shape[0] for W, _ in blocks[:-1]]
        self.tol = tol
        self.lp_calls = 0

    def _constraints(self, phases, splits, upto):
        """``A_ub x <= b_ub`` of the split neurons of layers ``<= upto`` (earlier layers fully phased)."""
        rows, rhs = [], []
        for k in range(min(upto + 1, len(self.sizes))):
            idx = np.flatnonzero(splits[k] != 0)
            if idx.size == 0:
                continue
            A, c = _affine_upto(self.blocks, phases, k)
            s = -splits[k][idx].astype(float)  # +1: -(A x + c) <= 0 ; -1: A x + c <= 0
            rows.append(s[:, None] * A[idx])
            rhs.append(-s * c[idx])
        n = self.lower.size
        return (np.vstack(rows) if rows else np.zeros((0, n)), np.concatenate(rhs) if rhs else np.zeros(0))

    def _range(self, a, c0, A_ub, b_ub):
        """``(min, max)`` of ``a x + c0`` over the piece (None when the LP is infeasible)."""
        bounds = list(zip(self.lower, self.upper))
        out = []
        for sign in (1.0, -1.0):
            self.lp_calls += 1
            r = linprog(sign * a, A_ub=A_ub if len(b_ub) else None, b_ub=b_ub if len(b_ub) else None,
                        bounds=bounds, method="highs")
            if r.status != 0:
                return None
            out.append(sign * r.fun + c0)
        return out[0], out[1]

    def classify(self, splits):
        """``(layer, phases, unstable)`` of a piece: its current layer (None when every neuron is split or
        stable), the phases (``splits`` plus the LP-stable neurons) and ``[(j, lo, hi)]`` of the unstable
        neurons of that layer; ``None`` when the piece is empty."""
        phases = [s.copy() for s in splits]
        for i in range(len(self.sizes)):
            A_ub, b_ub = self._constraints(phases, splits, i)
            A, c = _affine_upto(self.blocks, phases, i)
            unstable = []
            for j in np.flatnonzero(splits[i] == 0):
                r = self._range(A[j], c[j], A_ub, b_ub)
                if r is None:
                    return None
                lo, hi = r
                if hi <= self.tol * (1 + abs(c[j]) + np.abs(A[j]).sum()):
                    phases[i][j] = -1
                elif lo >= -self.tol * (1 + abs(c[j]) + np.abs(A[j]).sum()):
                    phases[i][j] = 1
                else:
                    unstable.append((int(j), lo, hi))
            if unstable:
                return i, phases, unstable
        return None, phases, []

    def leaves(self, limit=100_000):
        """Every activation region of the box as ``(splits, phases)`` (at most ``limit``)."""
        count = 0
        stack = [[np.zeros(n, dtype=np.int8) for n in self.sizes]]
        while stack and count < limit:
            splits = stack.pop()
            res = self.classify(splits)
            if res is None:
                continue
            i, phases, unstable = res
            if i is None:
                count += 1
                yield splits, phases
                continue
            j = unstable[0][0]
            for s in (-1, 1):
                child = [a.copy() for a in splits]
                child[i][j] = s
                stack.append(child)

    def patterns(self, limit=100_000) -> int:
        """The number of activation regions (full-dimensional pieces with every neuron phased) of the box;
        stops counting at ``limit``."""
        return sum(1 for _ in self.leaves(limit))

    def output_affine(self, phases):
        """``(A, c)``: the network is ``A x + c`` on the region of ``phases`` (every neuron phased)."""
        L = len(self.sizes)
        if L == 0:
            return self.blocks[0]
        A, c = _affine_upto(self.blocks, phases, L - 1)
        d = (phases[L - 1] == 1).astype(float)
        W, b = self.blocks[L]
        return W @ (d[:, None] * A), W @ (d * c) + b

    def extent(self, splits, phases, a):
        """``(min, max)`` of ``a . x`` over the region (``a``: ``(n_in,)``)."""
        A_ub, b_ub = self._constraints(phases, splits, len(self.sizes) - 1)
        return self._range(np.asarray(a, float), 0.0, A_ub, b_ub)
