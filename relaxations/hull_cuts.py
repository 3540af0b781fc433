"""Multi-input hull cuts of sigmoid / tanh / softplus layers as multi-neuron constraints (issue 27 item 4b).

For a neuron ``y_j = f(z_j)``, ``z_j = w_j . h + b_j`` of a smooth activation layer (``h``: the flattened input of
the one dense or convolutional layer before it, the previous activation's output or the network's input), the
tight hull of ``{(h, f(w_j . h + b_j)) : h in [L, U]}`` over the box of ``h`` is what one neuron's single-input
lines cannot reach: at a vertex of the box it equals ``f`` (SSHAPED.md §1). :mod:`relaxations.sshaped_hull`
separates it: ``upper_cut`` / ``lower_cut`` give ``y_j <= alpha + beta . h`` / ``y_j >= alpha + beta . h`` at a
point ``h^``, valid in real arithmetic for the returned float64 numbers. Each cut becomes one row of
:class:`relaxations.multineuron.LayerConstraints` (``Pz y + Ph h + p <= 0``: upper ``Pz = e_j, Ph = -beta,
p = -alpha``, lower the negation), converted to the working dtype with its right-hand side raised by the
conversion's effect (:func:`relaxations.multineuron.working_constraints`), and taken in the back-substitution
with multipliers ``gamma >= 0`` (:func:`relaxations.crown.backward`).

Where to separate: per open output row (worst first) and neuron, the side the row's bound uses (its coefficient
on ``y_j``: negative needs an upper bound, positive a lower one), at the vertex of the ``h`` box that the row's
coefficient on ``h`` selects when it is minimised (its lower end where the coefficient is positive, its upper end
where negative, the middle where zero). At a vertex the hull equals ``f``, so the cut's gain over the
single-neuron bound there (the default lines of ``Activation.relaxation`` and the constant bounds) is that bound's
gap to ``f``, known before the cut is computed: candidates go in the order of ``|coefficient| x`` that gap
(:func:`candidates`), and a computed cut is kept only if it still cuts the single-neuron bound at its point by
more than :data:`MIN_GAIN` (relative); at most ``max_cuts`` per layer, within ``time_budget`` seconds in all.
On eran_mnist_sigmoid this order keeps nearly every cut computed; ordering by ``|coefficient| x`` the width of
``z_j``'s interval instead kept one in three and closed less (docs/performance.md).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from relaxations.fp import reach
from relaxations.layers import Conv2d, Linear, Reshape, SmoothActivation
from relaxations.multineuron import LayerConstraints, working_constraints

MIN_GAIN = 1e-4  # a cut is kept when it is below the single-neuron bound at its point by this (times 1 + |value|)
TRIES = 4        # cuts computed per layer at most, in units of max_cuts (saturated layers keep few of them)


def affine_before(net, idx: int):
    """``(W (n, n_h), b (n,))`` float64 numpy of the affine map from ``h`` (the output of the activation before
    ``net.layers[idx]``, or the network's input) to its input, when that map is one dense or convolutional layer
    (reshapes aside, which keep the flat order): its values exactly. None otherwise (a graph stage, two affine
    layers whose product would round)."""
    start = max([i for i in net.activation_indices() if i < idx], default=-1) + 1
    main = [layer for layer in net.layers[start:idx] if not isinstance(layer, Reshape)]
    if len(main) != 1 or not isinstance(main[0], (Linear, Conv2d)):
        return None
    W, b = main[0].dense()
    return W.detach().cpu().double().numpy(), b.detach().cpu().double().reshape(-1).numpy()


class LayerData:
    """What the cuts of activation layer ``k`` (``net.layers[idx]``) are built from, float64 numpy: the affine map
    ``W`` ``(n, n_h)``, ``b`` ``(n,)``; the box ``L``/``U`` ``(n_h,)`` of ``h`` (the input box, or the previous
    activation's interval image of its bounds, ``Activation.interval``: rounded outward); the bounds ``l``/``u``
    ``(n,)`` of ``z``; the default single-neuron lines ``lines`` (lower slope, lower intercept, upper slope, upper
    intercept) and the enclosures ``f_lo``/``f_hi`` of ``f(l)``/``f(u)``; ``ry``: a bound on ``|y|`` and ``|z|``."""

    def __init__(self, net, k, idx, W, b, lower, upper, pre_bounds):
        layer = net.layers[idx]
        self.layer, self.W, self.b = layer, W, b
        if k == 0:
            self.L, self.U = (t[0].detach().cpu().double().numpy() for t in (lower, upper))
        else:
            prev = net.layers[net.activation_indices()[k - 1]]
            lp, up = (t.detach().cpu().double().reshape(1, *prev.in_shape) for t in pre_bounds[k - 1])
            self.L, self.U = (t.reshape(-1).numpy() for t in prev.interval(lp, up))
        l64, u64 = (t.detach().cpu().double() for t in pre_bounds[k])
        self.l, self.u = l64[0].numpy(), u64[0].numpy()
        rel = layer.relaxation(l64, u64)
        self.lines = [t[0].double().numpy() for t in (rel.low_slope, rel.low_int, rel.up_slope, rel.up_int)]
        ends = layer.interval(l64.reshape(1, *layer.in_shape), u64.reshape(1, *layer.in_shape))
        self.f_lo, self.f_hi = (t.reshape(-1).double().numpy() for t in ends)
        self.ry = np.maximum(np.maximum(np.abs(self.l), np.abs(self.u)), np.maximum(np.abs(self.f_lo),
                                                                                     np.abs(self.f_hi)))

    def single_bound(self, z, up, j=slice(None)):
        """The single-neuron bound of ``y_j`` at ``z_j`` (neurons ``j``, broadcast over leading axes): its upper line
        capped by ``f(u)`` where ``up``, else its lower line floored by ``f(l)``."""
        hi = np.minimum(self.lines[2][j] * z + self.lines[3][j], self.f_hi[j])
        lo = np.maximum(self.lines[0][j] * z + self.lines[1][j], self.f_lo[j])
        return np.where(up, hi, lo)

    def constraints(self, signs, betas, alphas, dt, dev) -> LayerConstraints:
        """Cuts ``sign_c y_{j_c} <= sign_c (alpha_c + beta_c . h)`` (``signs``: ``(c,)`` of ``+-(j + 1)``: upper /
        lower cut of neuron ``j``; float64, valid in real arithmetic) as working-dtype constraints."""
        c, n = len(signs), self.W.shape[0]
        Pz = np.zeros((c, n))
        for i, sj in enumerate(signs):
            Pz[i, abs(sj) - 1] = np.sign(sj)
        sg = np.sign(np.asarray(signs, dtype=np.float64))
        Ph = -sg[:, None] * np.asarray(betas)
        rhs = sg * np.asarray(alphas, dtype=np.float64)
        Pz64 = torch.as_tensor(Pz)
        work, _ = working_constraints(Pz64, torch.zeros_like(Pz64), torch.as_tensor(Ph), torch.as_tensor(rhs),
                                      torch.as_tensor(self.ry), reach(torch.as_tensor(self.L), torch.as_tensor(self.U)),
                                      dt, dev)
        return work


def smooth_layers(net, lower, upper, pre_bounds):
    """``(k, LayerData)`` for every smooth activation layer ``k`` after exactly one dense / convolutional layer."""
    out = []
    for k, idx in enumerate(net.activation_indices()):
        aff = affine_before(net, idx) if isinstance(net.layers[idx], SmoothActivation) else None
        if aff is not None:
            out.append((k, LayerData(net, k, idx, *aff, lower, upper, pre_bounds)))
    return out


def candidates(d: LayerData, cy, ch):
    """Where to separate on layer ``d``, best first: ``[(row, neuron j, upper side, point h^)]`` for the rows'
    coefficients ``cy`` ``(m, n)`` on ``y`` and ``ch`` ``(m, n_h)`` on ``h``. The side is the one a row's bound
    uses (negative coefficient: ``y_j``'s upper bound), the point the vertex of the ``h`` box that minimises the
    row's ``ch . h`` (the middle where a coefficient is 0). At a vertex the hull equals ``f``, so the cut's gain
    over the single-neuron bound (the line, or the constant bound ``f(u)`` / ``f(l)``) is that bound's gap to
    ``f(w_j . h^ + b_j)``, known before the cut is computed; the order is ``|coefficient| x`` that gap, only
    positive ones, each (neuron, side, sign pattern of ``ch``) once."""
    from relaxations.transcendental import value
    points = np.where(ch > 0, d.L, np.where(ch < 0, d.U, (d.L + d.U) / 2))         # (m, n_h)
    z = points @ d.W.T + d.b                                                        # (m, n)
    fz = value(d.layer.kind, torch.as_tensor(z)).numpy()
    up = cy < 0
    single = d.single_bound(z, up)
    gap = np.where(up, single - fz, fz - single)
    on = np.isfinite(d.l) & np.isfinite(d.u) & (d.u > d.l) & (True if d.layer.mask is None else d.layer.mask)
    score = np.where(on[None] & np.isfinite(gap) & (gap > 0), np.abs(cy) * gap, 0.0)
    order = np.argsort(-score, axis=None, kind="stable")
    order = order[score.reshape(-1)[order] > 0]
    out, seen = [], set()
    patterns = [np.sign(ch[r]).tobytes() for r in range(ch.shape[0])]
    for flat in order:
        r, j = divmod(int(flat), cy.shape[1])
        key = (j, bool(up[r, j]), patterns[r])
        if key not in seen:
            seen.add(key)
            out.append((r, j, bool(up[r, j]), points[r]))
    return out


def smooth_hull_constraints(net, lower, upper, pre_bounds, coeffs, h_coeff, max_cuts=64, time_budget=10.0):
    """Hull cuts of every smooth activation layer as constraints (a list over the activation layers, None where a
    layer gets none: ReLU and LeakyReLU layers, a layer after anything but one dense or convolutional layer),
    valid on the box ``lower``/``upper`` ``(1, n_in)`` with rigorous pre-activation bounds ``pre_bounds`` (per
    activation layer ``(l, u)`` ``(1, n_i)``).

    ``coeffs``: per activation layer the open rows' coefficients ``(m, n_i)`` on its output, worst row first;
    ``h_coeff``: their coefficients ``(m, n_in)`` on the network's input (what a first-layer cut's point reads).
    Per layer at most ``max_cuts`` cuts, at the first :func:`candidates` (``TRIES * max_cuts`` of them at most),
    each kept only if it is below the single-neuron bound at its point by more than :data:`MIN_GAIN` (relative:
    the repaired cut can lose what the vertex gap promised); ``time_budget`` seconds in all,
    shared equally by the layers not yet done. Returns ``(constraints, stats)``: ``stats`` a dict of the cuts
    tried and kept per layer and the seconds taken."""
    from relaxations.sshaped_hull import lower_cut, upper_cut
    t0 = time.monotonic()
    dt, dev = lower.dtype, lower.device
    out = [None] * len(net.activation_indices())
    stats = {"cuts_tried": [0] * len(out), "cuts_kept": [0] * len(out)}
    layers = smooth_layers(net, lower, upper, pre_bounds)
    for done, (k, d) in enumerate(layers):
        t_layer = time.monotonic()
        budget = (time_budget - (t_layer - t0)) / (len(layers) - done)
        cy = coeffs[k].detach().cpu().double().numpy()
        ch = (h_coeff if k == 0 else coeffs[k - 1]).detach().cpu().double().numpy()
        signs, betas, alphas = [], [], []
        for _, j, up_side, point in candidates(d, cy, ch):
            if len(signs) >= max_cuts or stats["cuts_tried"][k] >= TRIES * max_cuts or \
                    time.monotonic() - t_layer > budget:
                break
            stats["cuts_tried"][k] += 1
            beta, alpha = (upper_cut if up_side else lower_cut)(d.layer.kind, d.W[j], float(d.b[j]), d.L, d.U, point)
            beta, alpha = np.asarray(beta, dtype=np.float64), float(alpha)
            if not (np.isfinite(alpha) and bool(np.all(np.isfinite(beta)))):
                continue
            z, value = float(d.W[j] @ point + d.b[j]), float(alpha + beta @ point)
            single = float(d.single_bound(z, up_side, j))
            gain = single - value if up_side else value - single
            if gain > MIN_GAIN * (1 + abs(value)):
                signs.append(j + 1 if up_side else -(j + 1))
                betas.append(beta)
                alphas.append(alpha)
        stats["cuts_kept"][k] = len(signs)
        if signs:
            out[k] = d.constraints(signs, betas, alphas, dt, dev)
    stats["seconds"] = time.monotonic() - t0
    return out, stats
