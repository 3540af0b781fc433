"""The layer-wise multi-neuron relaxation P1 (THEORY.md), exactly, by a disjunctive extended formulation.

For ReLU layer ``i`` let ``Q_i`` be the P1 relaxation of everything before it (input box, the affine
equalities and the formulations of layers ``< i``, in the variables ``u`` = input, ``z_k``, ``y_k``
(``k < i``) and their extended variables) and ``S_i = {z_i = W_i y_{i-1} + b_i : u in Q_i} ∩ [l_i, u_i]``
(the box of the given intermediate bounds; it does not cut ``S_i`` when those bounds are valid for the
relaxation, e.g. IBP bounds). P1 constrains ``(z_i, y_i)`` to ``H_i = conv{(z, relu(z)) : z in S_i}``.
Balas' formulation of ``H_i``: one copy ``(u^p, lam_p)`` of all variables of ``Q_i`` per sign pattern
``p`` of the layer's unstable neurons, with the homogenised constraints of ``Q_i`` (``A u^p <= lam_p b``,
``E u^p = lam_p e``, ``lam_p L <= u^p <= lam_p U``), ``z^p = W_i u^p_{y_{i-1}} + lam_p b_i`` with the
signs of ``p`` and ``lam_p l <= z^p <= lam_p u``, ``y^p = D_p z^p`` (stable neurons by their phase), and
``z_i = sum_p z^p``, ``y_i = sum_p y^p``, ``sum_p lam_p = 1``, ``lam >= 0``. The copies are *not* tied to
the actual earlier variables, only through ``z_i``: the result is exactly P1, not the tighter joint hull.

The size is ``2^(unstable neurons)`` copies of a formulation that itself grows with every layer:
:func:`p1_model` refuses layers with more than ``max_unstable`` unstable neurons and models with more
than ``max_vars`` variables (:class:`P1TooLarge`).
"""
from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

from relaxations.lp.model import NetworkLP
from relaxations.lp.triangle import output_rows


class P1TooLarge(ValueError):
    """The exact layer-wise hull would be too large (exponential in the unstable neurons per layer)."""


def _add_layer_hull(model: NetworkLP, i: int, max_unstable: int, max_vars: int):
    dom = model.dom
    ph = dom.phases(i)
    uns = np.flatnonzero(ph == 0)
    if uns.size > max_unstable:
        raise P1TooLarge(f"ReLU layer {i} has {uns.size} unstable neurons (> max_unstable={max_unstable})")
    n_i = model.sizes[i]
    l, u = dom.pre[i]
    # support of Q_i: main variables up to y_{i-1}, and every extended variable so far
    main_end = model.n_in if i == 0 else model.post_slice(i - 1).stop
    nt0 = model.n_total
    support = np.concatenate([np.arange(main_end), np.arange(model.n, nt0)])
    Ns = support.size
    n_pat = 2 ** uns.size
    if nt0 + n_pat * (Ns + 1) > max_vars:
        raise P1TooLarge(f"P1 at layer {i} needs {nt0 + n_pat * (Ns + 1)} variables (> max_vars={max_vars})")
    # rows of Q_i (over the support columns)
    L = np.concatenate([model.L, model.w_lower])[support]
    U = np.concatenate([model.U, model.w_upper])[support]
    ineq_rows, ineq_b, eq_rows, eq_b = [], [], [], []
    for k in range(i):
        E, e = model.eq_mats[k]
        E = sp.hstack([E, sp.csr_matrix((E.shape[0], nt0 - E.shape[1]))]).tocsr()
        eq_rows.append(E[:, support])
        eq_b.append(e)
    for layer, A, b, is_eq in model.cuts:
        if layer < i:
            (eq_rows if is_eq else ineq_rows).append(A[:, support])
            (eq_b if is_eq else ineq_b).append(b)
    Aq = sp.vstack(ineq_rows).tocsr() if ineq_rows else sp.csr_matrix((0, Ns))
    bq = np.concatenate(ineq_b) if ineq_b else np.zeros(0)
    Eq = sp.vstack(eq_rows).tocsr() if eq_rows else sp.csr_matrix((0, Ns))
    eq = np.concatenate(eq_b) if eq_b else np.zeros(0)
    # z_i as a function of the support: z = Wz u + b_i
    prev = model.post_slice(i - 1)
    pos = np.full(nt0, -1)
    pos[support] = np.arange(Ns)
    W = model.blocks[i].W
    Wz = sp.hstack([sp.csr_matrix((n_i, prev.start)), W, sp.csr_matrix((n_i, Ns - prev.stop))]).tocsr()
    bi = model.blocks[i].b
    # extended variables: per pattern [u^p (Ns), lam_p]
    lo_w = np.tile(np.concatenate([np.minimum(L, 0), [0.0]]), n_pat)
    hi_w = np.tile(np.concatenate([np.maximum(U, 0), [1.0]]), n_pat)
    off = model.add_variables(lo_w, hi_w)
    nt = model.n_total
    I_s = sp.identity(Ns, format="csr")
    ineq_blocks, ineq_rhs, eq_blocks, eq_rhs = [], [], [], []
    link_z = sp.lil_matrix((n_i, nt))
    link_y = sp.lil_matrix((n_i, nt))
    link_lam = sp.lil_matrix((1, nt))

    def place(block, col):
        """``block`` (rows, Ns + 1) over [u^p, lam_p] placed at column ``col`` of the full vector."""
        rows = block.shape[0]
        return sp.hstack([sp.csr_matrix((rows, col)), block, sp.csr_matrix((rows, nt - col - block.shape[1]))]).tocsr()

    for p_idx, bits in enumerate(itertools.product((0, 1), repeat=uns.size)):
        col = off + p_idx * (Ns + 1)
        act = (ph == 1).astype(float)
        act[uns] = np.array(bits, dtype=float)
        blocks_ub = [sp.hstack([Aq, sp.csr_matrix(-bq.reshape(-1, 1))]),
                     sp.hstack([-I_s, sp.csr_matrix(L.reshape(-1, 1))]),          # lam L - u <= 0
                     sp.hstack([I_s, sp.csr_matrix(-U.reshape(-1, 1))]),          # u - lam U <= 0
                     sp.hstack([-Wz, sp.csr_matrix((l - bi).reshape(-1, 1))]),     # lam l - z <= 0
                     sp.hstack([Wz, sp.csr_matrix((bi - u).reshape(-1, 1))])]      # z - lam u <= 0
        sgn = np.where(act[uns] == 1, -1.0, 1.0)                                  # active: -z <= 0
        Zs = Wz[uns]
        blocks_ub.append(sp.hstack([sp.diags(sgn) @ Zs, sp.csr_matrix((sgn * bi[uns]).reshape(-1, 1))]))
        ineq_blocks.append(place(sp.vstack(blocks_ub).tocsr(), col))
        ineq_rhs.append(np.zeros(sum(b.shape[0] for b in blocks_ub)))
        if Eq.shape[0]:
            eq_blocks.append(place(sp.hstack([Eq, sp.csr_matrix(-eq.reshape(-1, 1))]).tocsr(), col))
            eq_rhs.append(np.zeros(Eq.shape[0]))
        zp = sp.hstack([Wz, sp.csr_matrix(bi.reshape(-1, 1))]).tocsr()           # z^p over [u^p, lam]
        link_z[:, col:col + Ns + 1] = zp
        link_y[:, col:col + Ns + 1] = sp.diags(act) @ zp
        link_lam[0, col + Ns] = 1.0
    # linking with the main variables: z_i - sum z^p = 0, y_i - sum y^p = 0, sum lam = 1
    Z = sp.lil_matrix((n_i, nt))
    Z[:, model.pre_slice(i)] = sp.identity(n_i)
    Y = sp.lil_matrix((n_i, nt))
    Y[:, model.post_slice(i)] = sp.identity(n_i)
    eq_blocks += [(Z.tocsr() - link_z.tocsr()), (Y.tocsr() - link_y.tocsr()), link_lam.tocsr()]
    eq_rhs += [np.zeros(n_i), np.zeros(n_i), np.ones(1)]
    model.add_cuts(i, sp.vstack(ineq_blocks).tocsr(), np.concatenate(ineq_rhs))
    model.add_cuts(i, sp.vstack(eq_blocks).tocsr(), np.concatenate(eq_rhs), equality=True)


def p1_model(net, lower, upper, pre_bounds=None, splits=None, solver="HIGHS", max_unstable=8,
             max_vars=200_000, model=None) -> NetworkLP:
    """A :class:`NetworkLP` holding the P1 relaxation of one domain (see the module docstring)."""
    model = NetworkLP(net, solver) if model is None else model
    model.reset_cuts()
    dom = model.set_box(lower, upper, pre_bounds, splits)
    if not dom.empty:
        for i in range(model.n_layers):
            _add_layer_hull(model, i, max_unstable, max_vars)
    return model


def p1_bounds(net, lower, upper, C=None, pre_bounds=None, splits=None, solver="HIGHS", max_unstable=8,
              max_vars=200_000, model=None):
    """Certified ``(lb, ub)`` (``(m,)`` each) of ``C @ net(x)`` over the P1 relaxation.

    Raises :class:`P1TooLarge` above ``max_unstable`` unstable neurons in a layer or ``max_vars``
    variables. Arguments otherwise as :func:`relaxations.lp.triangle.lp_bounds`.
    """
    C = output_rows(net, C)
    model = p1_model(net, lower, upper, pre_bounds, splits, solver, max_unstable, max_vars, model)
    if model.dom.empty:
        return np.full(C.shape[0], np.inf), np.full(C.shape[0], -np.inf)
    return model.output_bounds(C)
