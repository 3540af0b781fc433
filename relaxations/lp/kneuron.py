"""PRIMA-style k-neuron relaxation: exact hulls of groups of k ReLUs over an octahedral input polytope,
added as facets to the triangle LP.

For a group ``g`` of ``k`` neurons of ReLU layer ``i`` (2 <= k <= 4; stable neurons allowed):

1. bound ``d . z_g`` for every octahedral direction ``d`` in ``{-1, 0, 1}^k \\ {0}`` (``3^k - 1``
   directions) by certified LPs over the relaxation of the layers before ``i`` (``octahedron="lp"``,
   cuts of earlier layers included) or from the intermediate box only (``"box"``); the two are
   intersected, so ``P = {z : d . z <= beta_d}`` is inside the box;
2. enumerate the vertices of ``P`` cut by the coordinate hyperplanes: every point where ``k``
   linearly independent hyperplanes among ``d . z = beta_d``, ``d . z = -beta_{-d}``, ``z_j = 0`` meet
   and that lies in ``P`` (a small feasibility tolerance only *adds* points, which is safe). On each
   orthant ``relu`` is linear, so ``conv{(z, relu z) : z in P}`` is the hull of these lifted points;
3. take the facets of that hull (``scipy.spatial.ConvexHull`` on the affine hull of the points, plus
   its equations) and *recompute* every right-hand side as the maximum over the lifted points plus a
   margin covering the rounding of the vertex solves (integer matrices, so errors are ``~1e-15``
   relative); a facet therefore never cuts a point of the graph over ``P``.

The facets are added as cuts of layer ``i``; the final output bound is dual-certified.
"""
from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from scipy.spatial import ConvexHull, QhullError

from relaxations.lp.model import NetworkLP
from relaxations.lp.triangle import fresh_domain, output_rows


def octahedral_directions(k: int) -> np.ndarray:
    """``(3^k - 1, k)`` float array of every nonzero ``{-1, 0, 1}`` vector."""
    D = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=k)))
    return D[np.any(D != 0, axis=1)]


def _polytope_points(D, beta, tol=1e-9):
    """Candidate vertices (``(N, k)``) of ``{d . z <= beta}`` intersected with each orthant."""
    k = D.shape[1]
    key = {tuple(d): j for j, d in enumerate(D)}
    planes, rhs_opts = [], []
    for j, d in enumerate(D):
        nz = np.flatnonzero(d)
        if d[nz[0]] < 0:
            continue  # one representative per +-d pair
        opts = [beta[j], -beta[key[tuple(-d)]]]
        if nz.size == 1:
            opts.append(0.0)  # the coordinate hyperplane z_j = 0 (orthant boundary)
        planes.append(d)
        rhs_opts.append(np.array(opts))
    planes = np.array(planes)
    pts = []
    scale = 1.0 + np.abs(beta).max()
    for combo in itertools.combinations(range(len(planes)), k):
        M = planes[list(combo)]
        if abs(np.linalg.det(M)) < 0.5:  # integer matrix: singular iff det == 0
            continue
        R = np.array(list(itertools.product(*[rhs_opts[c] for c in combo])))  # (r, k)
        Z = np.linalg.solve(M, R.T).T
        ok = np.all(Z @ D.T <= beta + tol * scale, axis=1)
        if ok.any():
            pts.append(Z[ok])
    if not pts:
        return np.zeros((0, k))
    P = np.vstack(pts)
    return np.unique(np.round(P, 12), axis=0)


def relu_hull_facets(D, beta, margin_rel=1e-10):
    """Facets ``A [z; y] <= b`` of ``conv{(z, relu z) : D z <= beta}``; ``A``: ``(F, 2k)``, ``b``: ``(F,)``.

    Returns ``None`` when the polytope is empty.
    """
    Z = _polytope_points(D, beta)
    if Z.shape[0] == 0:
        return None
    P = np.hstack([Z, np.maximum(Z, 0.0)])
    mean = P.mean(axis=0)
    Pc = P - mean
    if Pc.shape[0] > 1:
        _, s, Vt = np.linalg.svd(Pc, full_matrices=True)
        rank = int(np.sum(s > 1e-10 * max(s[0], 1e-300))) if s.size else 0
    else:
        Vt, rank = np.eye(P.shape[1]), 0
    B, N = Vt[:rank].T, Vt[rank:].T
    normals = [N.T, -N.T] if N.shape[1] else []
    if rank == 1:
        normals += [B.T, -B.T]
    elif rank >= 2:
        T = Pc @ B
        try:
            hull = ConvexHull(T)
        except QhullError:
            hull = ConvexHull(T, qhull_options="QJ")
        normals.append(hull.equations[:, :-1] @ B.T)
    A = np.vstack(normals)
    A = A / np.abs(A).max(axis=1, keepdims=True)
    A = np.unique(np.round(A, 8), axis=0)  # rounding normals is safe: offsets are recomputed below
    vals = P @ A.T
    b = vals.max(axis=0) + margin_rel * (1 + np.abs(P).max()) * np.abs(A).sum(axis=1)
    return A, b


def make_groups(candidates, k, overlap=1, max_groups=None):
    """Sliding windows of ``k`` neurons over ``candidates`` with ``overlap`` shared neurons between
    consecutive windows (stride ``k - overlap``); a single group when fewer than ``k`` candidates."""
    candidates = list(candidates)
    if len(candidates) < 2:
        return []
    if len(candidates) <= k:
        return [candidates]
    stride = max(1, k - overlap)
    groups = [candidates[s:s + k] for s in range(0, len(candidates) - k + 1, stride)]
    if (len(candidates) - k) % stride:
        groups.append(candidates[-k:])
    return groups[:max_groups] if max_groups is not None else groups


def group_octahedron(model: NetworkLP, i, group, D, octahedron="lp"):
    """``beta``: ``(len(D),)`` certified upper bounds of ``d . z_group`` for every row ``d`` of ``D``."""
    l, u = model.dom.pre[i]
    lg, ug = l[group], u[group]
    box = np.maximum(D * lg, D * ug).sum(axis=1)
    if octahedron == "box":
        return box
    if octahedron != "lp":
        raise ValueError(f"octahedron must be 'lp' or 'box', got {octahedron!r}")
    beta = box.copy()
    for r, d in enumerate(D):
        row = np.zeros(model.sizes[i])
        row[group] = d
        c, c0 = model.pre_objective(i, row)
        val, _ = model.minimize(-c, -c0, depth=i, fallback=-box[r])
        beta[r] = min(box[r], -val)
    return beta


def add_kneuron_cuts(model: NetworkLP, i, k=3, overlap=1, neurons="unstable", max_groups=None,
                     octahedron="lp"):
    """Add the group hull facets of ReLU layer ``i``; returns the number of cuts added."""
    ph = model.dom.phases(i)
    cand = np.flatnonzero(ph == 0) if neurons == "unstable" else np.arange(model.sizes[i])
    added = 0
    for group in make_groups(cand, k, overlap, max_groups):
        group = np.array(group)
        D = octahedral_directions(len(group))
        beta = group_octahedron(model, i, group, D, octahedron)
        res = relu_hull_facets(D, beta)
        if res is None:
            continue
        A, b = res
        kk = len(group)
        rows = sp.lil_matrix((A.shape[0], model.n_total))
        rows[:, model.z_off[i] + group] = A[:, :kk]
        rows[:, model.y_off[i] + group] = A[:, kk:]
        model.add_cuts(i, rows.tocsr(), b)
        added += A.shape[0]
    return added


def kneuron_bounds(net, lower, upper, C=None, pre_bounds=None, splits=None, k=3, overlap=1,
                   neurons="unstable", max_groups=None, octahedron="lp", refine=False, solver="HIGHS",
                   model=None):
    """Certified ``(lb, ub)`` (``(m,)`` each) of ``C @ net(x)`` by the triangle LP plus k-neuron hulls.

    ``k``: group size (2..4; 4 is slow: ~10^5 vertex solves per group); ``overlap``: neurons shared
    by consecutive groups; ``neurons``: "unstable" or "all" (group candidates, stable ones included
    with "all"); ``max_groups``: per layer cap; ``octahedron``: "lp" (certified LPs, ``3^k - 1`` per
    group) or "box". Other arguments as :func:`relaxations.lp.triangle.lp_bounds`.
    """
    if not 1 <= k <= 4:
        raise ValueError("k must be in 1..4")
    C = output_rows(net, C)
    model, dom = fresh_domain(net, lower, upper, pre_bounds, splits, refine, solver, model)
    if dom.empty:
        return np.full(C.shape[0], np.inf), np.full(C.shape[0], -np.inf)
    for i in range(model.n_layers):
        add_kneuron_cuts(model, i, k, overlap, neurons, max_groups, octahedron)
    return model.output_bounds(C)
