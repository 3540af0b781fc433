"""Single-neuron multi-input hull (Anderson et al. 2020) as cutting planes on the triangle LP.

For ``y = relu(w . x + b)`` with ``x`` in the box ``[L, U]`` (the box of the previous layer's output,
or the input box), let ``Lb_k, Ub_k`` be the corner coordinates minimising / maximising ``w_k x_k``
and ``r_k = (x_k - Lb_k) / (Ub_k - Lb_k)``. The upper envelope of the hull is the Lovász extension of
the (supermodular) vertex values: for a sort order ``pi`` of ``r`` (descending) and the chain of
vertices ``v_0 = Lb``, ``v_k = v_{k-1}`` with coordinate ``pi(k)`` moved to ``Ub``, the inequality

    y <= relu(f(v_0)) + sum_k (relu(f(v_k)) - relu(f(v_{k-1}))) r_{pi(k)}

is valid on the whole box (a supporting hyperplane of the concave envelope) and is the most violated
one at the point whose ``r`` gives that order: separation is one sort, ``O(n log n)``. These are the
facets ``y <= sum_{i in I} w_i (x_i - Lb_i) + l(I) / (Ub_h - Lb_h) (x_h - Lb_h)`` of the paper. Cuts
are added while violated at the LP optimum (per objective), up to ``max_rounds`` rounds; the final
bound is dual-certified. Cut intercepts get an outward rounding margin so that the float inequality is
valid for the exact ReLU.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from relaxations.lp.model import NetworkLP
from relaxations.lp.sound import EPS
from relaxations.lp.triangle import fresh_domain, output_rows


def separate_neuron(w, b, Lx, Ux, x_star, y_star, tol=1e-7):
    """The most violated Anderson cut at ``(x_star, y_star)`` or None.

    ``w``, ``Lx``, ``Ux``, ``x_star``: ``(n,)``. Returns ``(a, c0)`` for the cut ``y <= a . x + c0``.
    """
    lo_c = np.where(w >= 0, Lx, Ux)   # Lb: minimises w_k x_k
    hi_c = np.where(w >= 0, Ux, Lx)   # Ub
    width = hi_c - lo_c
    live = (w != 0) & (Ux > Lx)
    f0 = float(w @ lo_c + b)
    idx = np.flatnonzero(live)
    r = np.clip((x_star[idx] - lo_c[idx]) / width[idx], 0.0, 1.0)
    order = idx[np.argsort(-r, kind="stable")]
    incr = w[order] * width[order]      # >= 0
    f = f0 + np.concatenate([[0.0], np.cumsum(incr)])
    g = np.maximum(f, 0.0)
    delta = np.diff(g)
    a = np.zeros_like(w)
    a[order] = delta / width[order]
    c0 = g[0] - a[order] @ lo_c[order]
    # outward rounding: the chain, the divisions and the intercept carry relative errors ~ n eps
    n = len(order) + 2
    c0 += 4 * n * EPS * (abs(g[0]) + np.abs(g).sum() + np.abs(a * np.maximum(np.abs(Lx), np.abs(Ux))).sum()
                         + abs(f0) + np.abs(incr).sum()) + np.finfo(np.float64).tiny
    if y_star > a @ x_star + c0 + tol:
        return a, c0
    return None


def separate(model: NetworkLP, point, tol=1e-7):
    """Cuts for every unstable neuron violated at ``point`` (``[v; w]``); returns the number added."""
    dom = model.dom
    added = 0
    for i in range(model.n_layers):
        prev = model.post_slice(i - 1)
        Lx, Ux = model.L[prev], model.U[prev]
        xs = point[prev]
        ys = point[model.post_slice(i)]
        W, bvec = model.blocks[i].W, model.blocks[i].b
        rows, rhs = [], []
        for j in np.flatnonzero(dom.phases(i) == 0):
            cut = separate_neuron(W.getrow(j).toarray().ravel(), bvec[j], Lx, Ux, xs, ys[j], tol)
            if cut is None:
                continue
            a, c0 = cut
            row = np.zeros(model.n_total)
            row[prev] = -a
            row[model.y_off[i] + j] = 1.0
            rows.append(row)
            rhs.append(c0)
        if rows:
            model.add_cuts(i, sp.csr_matrix(np.array(rows)), np.array(rhs))
            added += len(rows)
    return added


def anderson_bounds(net, lower, upper, C=None, pre_bounds=None, splits=None, solver="HIGHS",
                    max_rounds=20, tol=1e-7, refine=False, model=None):
    """Certified ``(lb, ub)`` (``(m,)`` each) of ``C @ net(x)`` by the triangle LP plus Anderson cuts.

    Arguments as :func:`relaxations.lp.triangle.lp_bounds`; ``max_rounds`` caps the separation rounds
    per objective (the bound is sound at any round, just less tight).
    """
    C = output_rows(net, C)
    model, dom = fresh_domain(net, lower, upper, pre_bounds, splits, refine, solver, model)
    m = C.shape[0]
    if dom.empty:
        return np.full(m, np.inf), np.full(m, -np.inf)
    lb, ub = np.empty(m), np.empty(m)
    for r in range(m):
        c, c0 = model.output_objective(C[r])
        for sign, out in ((1.0, lb), (-1.0, ub)):
            cc = np.zeros(model.n_total)
            cc[:c.size] = c
            for _ in range(max_rounds):
                val, status = model.minimize(sign * cc, sign * c0)
                if status != "optimal" or separate(model, model.primal(), tol) == 0:
                    break
            else:
                val, _ = model.minimize(sign * cc, sign * c0)
            out[r] = sign * val
    return lb, ub
