"""Multi-neuron constraints for the batched back-substitution (MN-BaB style): k-neuron group hulls.

For ReLU layer ``i`` with pre-activation ``z`` and output ``y = relu(z)`` (``n`` neurons), a constraint set is
``Pz y + Px z + p <= 0`` with ``Pz``, ``Px`` ``(c, n)`` and ``p`` ``(c,)``, valid for every point of the box
it was computed on (so on every subdomain of it, splits included). Back-substitution takes it with a multiplier
``gamma >= 0`` per (domain, row, constraint) (:func:`relaxations.crown.backward`): for any such gamma,

    A . y  >=  A . y + gamma . (Pz y + Px z + p)  =  (A + gamma Pz) . y + (gamma Px) . z + gamma . p,

and the single-neuron relaxation then bounds ``(A + gamma Pz) . y`` as usual. Every ``gamma >= 0`` gives a valid
bound; projected gradient ascent over gamma (with the slopes and split multipliers) tightens it.

Where the constraints come from (:func:`group_hull_constraints`): groups of ``k`` (2-3) unstable neurons of a
layer; for each group, rigorous upper bounds ``beta_d`` of ``d . z_g`` for the ``3^k - 1`` octahedral directions
``d`` (alpha-CROWN with its rounding bound, in float64, intersected with the box of the layer's bounds); then the facets of ``conv{(z_g, relu z_g) : D z_g <= beta}``
(:func:`relaxations.lp.kneuron.relu_hull_facets`, whose right-hand sides are recomputed over the hull's lifted
vertices with a margin). Facets over a single neuron are dropped (the triangle relaxation has them). The
working-dtype coefficients differ from the float64 facet by rounding, so each right-hand side is raised by that
change's largest effect over the layer's box (``u |a| max(|l|, |u|)``), rounded up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from relaxations.fp import reach, to_dtype_up


@dataclass
class LayerConstraints:
    """``Pz y + Px z + p <= 0`` for one ReLU layer: ``Pz``, ``Px`` ``(c, n)``, ``p`` ``(c,)``, valid in real
    arithmetic for the working-dtype values of all three."""

    Pz: torch.Tensor
    Px: torch.Tensor
    p: torch.Tensor

    @property
    def count(self) -> int:
        return self.p.shape[0]

    def to(self, device=None, dtype=None) -> "LayerConstraints":
        return LayerConstraints(self.Pz.to(device=device, dtype=dtype), self.Px.to(device=device, dtype=dtype),
                                self.p.to(device=device, dtype=dtype))


def _octahedral_bounds(net64, idx, l64, u64, pre64, cons64, lower64, upper64, groups, D, iters):
    """``(G, |D|)`` rigorous upper bounds of ``d . z_g`` for every group and direction: alpha-CROWN (float64,
    ``iters`` steps, the earlier layers' bounds fixed, their constraints ``cons64`` taken with multipliers) on
    the network cut before layer ``idx``, intersected with the box of the layer's bounds."""
    from relaxations.network import Network
    from relaxations.optimize import optimized
    from relaxations.state import DomainState
    n = l64.shape[1]
    G, R = len(groups), D.shape[0]
    rows = torch.zeros(G * R, n, dtype=torch.float64)
    for g, grp in enumerate(groups):
        rows[g * R:(g + 1) * R, torch.as_tensor(grp)] = torch.as_tensor(-D)
    head = Network(net64.layers[:idx], net64.in_shape)
    res = optimized(head, DomainState(lower64, upper64, pre_bounds=pre64 or None, constraints=cons64 or None), rows,
                    iters=iters)
    beta = -res.lb[0].reshape(G, R).numpy()  # d . z <= -min(-d . z)
    box = np.empty((G, R))
    for g, grp in enumerate(groups):
        lg, ug = l64[0, grp].numpy(), u64[0, grp].numpy()
        terms = np.maximum(D * lg, D * ug)
        box[g] = np.nextafter(terms.sum(axis=1) + 4 * np.finfo(np.float64).eps * np.abs(terms).sum(axis=1), np.inf)
    beta = np.minimum(beta, box)
    return np.where(np.isfinite(beta), beta, box)


def group_hull_constraints(net, lower, upper, pre_bounds, k=2, max_groups=64, time_budget=10.0, iters=20):
    """Constraints of every ReLU layer (a list, None where a layer has fewer than 2 unstable neurons) valid
    on the box ``lower``/``upper`` ``(1, n_in)`` with rigorous pre-activation bounds ``pre_bounds`` (per layer
    ``(l, u)`` ``(1, n_i)``), in the network's dtype. ``max_groups`` groups per layer (the widest unstable
    neurons first, consecutive groups sharing one neuron); ``time_budget``: seconds, after which the remaining
    layers get none; ``iters``: alpha-CROWN steps of the octahedral bounds. Returns ``(constraints, seconds)``."""
    from relaxations.lp.kneuron import make_groups, octahedral_directions, relu_hull_facets
    t0 = time.monotonic()
    dt, dev = lower.dtype, lower.device
    net64 = net.to(device="cpu", dtype=torch.float64)
    lo64, hi64 = lower.detach().double().cpu(), upper.detach().double().cpu()
    pre64 = [(l.detach().double().cpu(), u.detach().double().cpu()) for l, u in pre_bounds]
    relus = net.relu_indices()
    out, cons64 = [], []  # (working dtype, float64 for the next layers' octahedra)
    for i, (idx, (l, u)) in enumerate(zip(relus, pre64)):
        if time.monotonic() - t0 > time_budget:
            out.append(None)
            cons64.append(None)
            continue
        width = (u - l)[0]
        unstable = torch.nonzero((l[0] < 0) & (u[0] > 0)).flatten()
        cand = unstable[torch.argsort(width[unstable], descending=True)].tolist()
        groups = [g for g in make_groups(cand, k, overlap=1, max_groups=max_groups) if len(g) >= 2]
        if not groups:
            out.append(None)
            cons64.append(None)
            continue
        n = l.shape[1]
        rows_z, rows_y, rhs = [], [], []
        by_size = {}
        for grp in groups:
            by_size.setdefault(len(grp), []).append(grp)
        for size, grps in by_size.items():
            D = octahedral_directions(size)
            betas = _octahedral_bounds(net64, idx, l, u, pre64[:i], cons64[:i], lo64, hi64, grps, D, iters)
            for grp, beta in zip(grps, betas):
                res = relu_hull_facets(D, beta)
                if res is None:
                    continue
                A, b = res
                multi = (np.abs(A[:, :size]) + np.abs(A[:, size:]) > 0).sum(axis=1) >= 2
                for a, bb in zip(A[multi], b[multi]):
                    z = np.zeros(n)
                    y = np.zeros(n)
                    z[grp], y[grp] = a[:size], a[size:]
                    rows_z.append(z)
                    rows_y.append(y)
                    rhs.append(bb)
        if not rhs:
            out.append(None)
            cons64.append(None)
            continue
        Px64, Pz64, b64 = (torch.as_tensor(np.array(v)) for v in (rows_z, rows_y, rhs))
        Px, Pz = Px64.to(dt), Pz64.to(dt)
        # the working-dtype coefficients move each facet by at most |a' - a| . max(|l|, |u|) on the box
        r = reach(l, u)[0]
        shift = ((Px.double() - Px64).abs() + (Pz.double() - Pz64).abs()) @ r
        slack = 4 * np.finfo(np.float64).eps * ((Px64.abs() + Pz64.abs()) @ r + b64.abs())
        b_work = torch.as_tensor(np.nextafter((b64 + shift + slack).numpy(), np.inf))
        p = -to_dtype_up(b_work, dt, dev)
        out.append(LayerConstraints(Pz.to(dev), Px.to(dev), p))
        cons64.append(LayerConstraints(Pz64, Px64, -torch.as_tensor(np.nextafter(b64.numpy(), np.inf))))
    return out, time.monotonic() - t0


def active_only(constraints, gammas, tol=0.0):
    """The constraints whose multiplier is above ``tol`` for some domain and row, with their multipliers:
    ``(constraints, gammas)`` per layer (None where a layer keeps none). Children of a split need only these:
    a constraint the optimised parent bound does not lean on rarely matters below it, and every one costs two
    products per layer and step."""
    out_c, out_g = [], []
    for c, g in zip(constraints, gammas if gammas is not None else [None] * len(constraints)):
        if c is None or g is None:
            out_c.append(None)
            out_g.append(None)
            continue
        keep = (g > tol).flatten(0, -2).any(dim=0)
        if not bool(keep.any()):
            out_c.append(None)
            out_g.append(None)
            continue
        out_c.append(LayerConstraints(c.Pz[keep], c.Px[keep], c.p[keep]))
        out_g.append(g[..., keep])
    return out_c, out_g
