"""The rounding bound of beta-CROWN (split multipliers) and mn-crown (hull and Anderson constraints with
multipliers gamma) against exact rational arithmetic, with unstable neurons left and split constraints on
several layers (docs/soundness.md, "The rules", 3).

The networks are built so that rounding matters: inputs far from the origin (centres ~1e2-1e3) and biases that
put most neurons' pre-activations within rounding of zero at the centre ``x0``, so on a point box the float32
intermediate bounds straddle zero (unstable neurons) and the whole gap between bound and truth is rounding.
Splits fix some of those neurons in the phase of their exact sign at ``x0`` (both phases, every ReLU layer), so
``x0`` lies in the split domain. The multipliers are the optimised ones (``bound_rows``) and large random ones
given directly to ``final_bounds`` (every ``alpha`` in [0, 1], ``beta >= 0``, ``gamma >= 0`` gives a valid
bound), which make the beta and gamma parts of the back-substitution dominate its rounding.

The ground truth is the network evaluated exactly (``fractions.Fraction``, the float weights taken as exact) at
points of the split domain: the centre, the box's vertices, random points and the minimiser of the returned
linear bound over the box, each kept only where it satisfies every split exactly. Two claims are checked there
in exact arithmetic, for the reported lower bound and for the returned linear bound ``A_input . x + bias`` (the
bias already lowered by the rounding bound): both are at most ``C f(x)``; and both are at most the exact
Lagrangian ``C f(x) + sum gamma . (Pz y + Px z + Ph h + p) - sum beta s z`` of the multipliers used. The second
holds for any multipliers and any constraint rows (the back-substitution is an identity up to its relaxation
steps and its rounding), and it is sharp: it no longer contains the slack of the constraints and splits.

A dropped rounding term only shows where nothing else of the bound covers it. The last test builds those
cases: every neuron stable (the bound equals the Lagrangian up to rounding) and one part of the multiplier terms
large and cancelling, so that its products round by ``~u * 1e6`` while the result is small. Each of gamma's
terms (``Pz``, ``Px``, ``p``, the Anderson ``Ph`` part) is then covered by its own error term only, and large
betas by the error term of the affine layer below the split. (The error terms ``crown.backward`` adds for beta at
the ReLU itself cover one subtraction per split neuron, whose slope is exactly 0 or 1; that rounding is at most
``u |A_z|`` per entry and the next affine layer's term covers it more than ten times over, so no test can see
those terms dropped from the value of a bound.)
"""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from relaxations.crown import final_bounds, intermediate_bounds
from relaxations.fp import reach
from relaxations.layers import Linear, ReLU
from relaxations.methods import bound_rows
from relaxations.multineuron import LayerConstraints
from relaxations.network import Network
from relaxations.options import BoundOptions, MultiNeuronOptions
from relaxations.state import DomainState

pytestmark = pytest.mark.fast

F32, F64 = torch.float32, torch.float64
DTYPES = pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])


# ------------------------------------------------------------------------------------------ exact ground truth
def _exact(net, x):
    """``net`` (Linear / ReLU) at ``x`` in exact arithmetic: ``(outputs, zs, ys, hs)``, per ReLU layer its
    pre-activations ``z``, outputs ``y`` and the input ``h`` of the affine layer before it (``x`` or the previous
    ReLU's output)."""
    v = [Fraction(float(t)) for t in x]
    zs, ys, hs, h = [], [], [], v
    for layer in net.layers:
        if isinstance(layer, Linear):
            W, b = layer.weight.double().tolist(), layer.bias.double().tolist()
            h, v = v, [sum((Fraction(w) * xi for w, xi in zip(row, v)), Fraction(bi)) for row, bi in zip(W, b)]
        else:
            zs.append(v)
            hs.append(h)
            v = [max(t, Fraction(0)) for t in v]
            ys.append(v)
    return v, zs, ys, hs


def _in_split_domain(zs, splits):
    """Does a point with exact pre-activations ``zs`` satisfy every split (``s z >= 0``) of domain 0?"""
    return all(s * z >= 0 for p, sp in zip(zs, splits) for z, s in zip(p, sp[0].tolist()) if s != 0)


def _fr(t):
    """A tensor's entries as nested lists of exact Fractions."""
    return [_fr(r) for r in t] if t.dim() > 1 else [Fraction(float(v)) for v in t.tolist()]


def _dot(a, v):
    return sum((p * w for p, w in zip(a, v)), Fraction(0))


def _sparse(t):
    """The rows of a matrix as lists of ``(column, Fraction)`` of their non-zero entries."""
    return [[(j, Fraction(v)) for j, v in enumerate(row) if v != 0] for row in t.double().tolist()]


def _sdot(row, v):
    return sum((c * v[j] for j, c in row), Fraction(0))


def _multiplier_terms(betas, splits, gammas, constraints):
    """The multipliers and constraint rows as Fractions, per ReLU layer ``(beta s (m, n) or None, gamma (m, c),
    Pz, Px, Ph or None, p)`` (None where the layer has no constraints with multipliers)."""
    out = []
    for k in range(len(splits if splits is not None else constraints if constraints is not None else [])):
        bs = None
        if betas is not None and splits is not None and betas[k] is not None:
            bs = _fr(betas[k][0].double() * splits[k][0].double())  # exact: s is +-1 or 0
        cons = None if constraints is None else constraints[k]
        if cons is None or gammas is None or gammas[k] is None:
            out.append((bs, None))
            continue
        out.append((bs, (_fr(gammas[k][0]), _sparse(cons.Pz), _sparse(cons.Px),
                         None if cons.Ph is None else _sparse(cons.Ph), _fr(cons.p))))
    return out


def _lagrangian(i, point, terms):
    """Row ``i``'s multiplier terms at an exact network point ``(zs, ys, hs)``: ``sum gamma . (Pz y + Px z + Ph h +
    p) - sum beta s z`` (``<= 0`` where the constraints hold and the splits are satisfied); ``terms`` from
    :func:`_multiplier_terms`."""
    zs, ys, hs = point
    total = Fraction(0)
    for k, (bs, gam) in enumerate(terms):
        if bs is not None:
            total -= _dot(bs[i], zs[k])
        if gam is None:
            continue
        G, Pz, Px, Ph, p = gam
        for c, g in enumerate(G[i]):
            if g:
                val = _sdot(Pz[c], ys[k]) + _sdot(Px[c], zs[k]) + p[c]
                total += g * (val if Ph is None else val + _sdot(Ph[c], hs[k]))
    return total


def _far_net(seed, sizes, dtype, centre=1e3, spread=0.0, all_far=False):
    """A Linear/ReLU chain and a point ``x0`` (``|x0| ~ centre``) at which two of every three neurons of each
    hidden layer have a pre-activation within rounding of zero (their bias is minus the float64 value of
    ``W h`` at ``x0``, rounded to ``dtype``; plus ``spread`` times a normal draw), the others ``~centre / 10``
    away from it (``all_far``: every neuron away from it, all stable on a point box)."""
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.randn(sizes[0], generator=g, dtype=F64) * centre).to(dtype)
    layers, h = [], x0.double()
    for i in range(len(sizes) - 1):
        W = torch.randn(sizes[i + 1], sizes[i], generator=g, dtype=F64).to(dtype)
        pre = W.double() @ h
        far = torch.randn(sizes[i + 1], generator=g, dtype=F64) * centre / 10
        near = torch.randn(sizes[i + 1], generator=g, dtype=F64) * spread
        b = torch.where((torch.arange(sizes[i + 1]) % 3 == 2) | all_far, far, near) - pre
        layers.append(Linear(W, b.to(dtype)))
        if i < len(sizes) - 2:
            layers.append(ReLU((sizes[i + 1],)))
            h = torch.relu(W.double() @ h + b.to(dtype).double())
    return Network(layers, (sizes[0],)), x0


def _splits_at(net, x0, every=3, offset=0):
    """Per ReLU layer ``(1, n_i)`` int8: neuron ``j`` with ``j % every == offset`` fixed in the phase of its exact
    sign at ``x0`` (a pre-activation that is exactly zero: active), the rest free."""
    _, zs, _, _ = _exact(net, x0.tolist())
    out = []
    for p in zs:
        s = [(1 if z >= 0 else -1) if j % every == offset else 0 for j, z in enumerate(p)]
        out.append(torch.tensor([s], dtype=torch.int8))
    return out


def _points(lo, hi, A_in, seed, n_random=4):
    """The centre, every vertex (up to 16), ``n_random`` random points of the box ``(1, n)`` and the minimiser
    of each row of ``A_in . x`` over it (``A_in`` ``(1, m, n)``), as float64 rows of values of the box's dtype."""
    lo64, hi64 = lo[0].double(), hi[0].double()
    n = lo64.shape[0]
    pts = [(lo64 + hi64) / 2]
    if bool((hi64 > lo64).any()):
        for k in range(min(2 ** n, 16)):
            bits = torch.tensor([(k >> i) & 1 for i in range(n)], dtype=torch.bool)
            pts.append(torch.where(bits, hi64, lo64))
        g = torch.Generator().manual_seed(seed)
        for _ in range(n_random):
            pts.append(lo64 + (hi64 - lo64) * torch.rand(n, generator=g, dtype=F64))
        for row in A_in[0].double():
            pts.append(torch.where(row > 0, lo64, hi64))
    pts = [p.to(lo.dtype).double() for p in pts]  # (rounding to the dtype keeps a point in the box)
    return [p for p in pts if bool(((p >= lo64) & (p <= hi64)).all())]


def _check(net, lo, hi, splits, C, lb, A_in, bias, seed, betas=None, gammas=None, constraints=None, valid=True):
    """At the points of the split domain (:func:`_points`), in exact arithmetic, per row ``i``:
    ``lb_i`` and ``A_in_i . x + bias_i`` are at most ``C_i f(x) + L_i(x)`` (``L``: the multiplier terms of
    :func:`_lagrangian`; the back-substitution is an identity up to its relaxation steps and its rounding, so
    this holds for any multipliers and any constraint rows) and, where the constraints are ``valid``, at most
    ``C_i f(x)``. Returns how many points were checked (at least the centre)."""
    Cq = _fr(C)
    terms = _multiplier_terms(betas, splits, gammas, constraints)
    checked = 0
    for x in _points(lo, hi, A_in, seed):
        out, zs, ys, hs = _exact(net, x.tolist())
        if splits is not None and not _in_split_domain(zs, splits):
            continue
        X = [Fraction(float(t)) for t in x.tolist()]
        for i, row in enumerate(Cq):
            truth = sum((c * y for c, y in zip(row, out)), Fraction(0))
            lag = truth + _lagrangian(i, (zs, ys, hs), terms)
            low = Fraction(float(lb[0, i]))
            lin = _dot(_fr(A_in[0, i]), X) + Fraction(float(bias[0, i]))
            assert low <= lag and lin <= lag, ("bound above the exact Lagrangian", i, x.tolist(), float(low - lag))
            if valid:
                assert low <= truth and lin <= truth, ("bound above the exact value", i, x.tolist())
        checked += 1
    assert checked >= 1
    return checked


def _large(shape, seed, scale, dtype, unit=False):
    """Random non-negative multipliers ``scale * U(0, 1)`` (``unit``: slopes in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(*shape, generator=g, dtype=F64)
    return (t if unit else t * scale).to(dtype)


def _every(n, k, dtype):
    """``(n,)``: 1 at every ``k``-th index, 0 elsewhere."""
    return (torch.arange(n) % k == 0).to(dtype)


def _box(x0, width):
    """The box ``x0 +- width`` as ``(1, n)`` ends in the dtype of ``x0`` (rounded outward)."""
    lo64, hi64 = x0.double() - width, x0.double() + width
    lo, hi = lo64.to(x0.dtype), hi64.to(x0.dtype)
    lo = torch.where(lo.double() > lo64, torch.nextafter(lo, torch.full_like(lo, -float("inf"))), lo)
    hi = torch.where(hi.double() < hi64, torch.nextafter(hi, torch.full_like(hi, float("inf"))), hi)
    return lo[None], hi[None]


# ------------------------------------------------------------------------------------------------ beta-CROWN
BETA_SIZES = [4, 9, 9, 9, 3]  # three ReLU layers, each with split, unstable and far neurons


@DTYPES
@pytest.mark.parametrize("width", [0.0, 1e-6, 1e-2])
def test_beta_crown_rounding_in_exact_arithmetic(dtype, width):
    """beta-CROWN on split domains (both phases, on every ReLU layer, unstable neurons left): the optimised
    bound and the bound with large random betas and slopes are below the exact values."""
    unstable_left, phases = 0, [set() for _ in BETA_SIZES[1:-1]]
    for seed in range(2):
        net, x0 = _far_net(seed, BETA_SIZES, dtype)
        splits = _splits_at(net, x0)
        for ph, s in zip(phases, splits):
            ph.update(s[0].tolist())
        lo, hi = _box(x0, width)
        state = DomainState(lo, hi, splits)
        C = torch.eye(3, dtype=dtype)
        C = torch.cat([C, -C])
        m = C.shape[0]
        r = bound_rows(net, state, C, "beta", iters=5)
        assert any(bool((b > 0).any()) for b in r.betas)  # the optimised bound leans on its split multipliers
        _check(net, lo, hi, splits, C, r.lb, r.A_input, r.bias, seed)
        relax = intermediate_bounds(net, state)
        unstable_left += sum(int(rl.unstable.sum()) for rl in relax)
        for scale in (1.0, 1e3):
            betas = [_large((1, m, s.shape[1]), 10 * seed + k, scale, dtype) for k, s in enumerate(splits)]
            alphas = [_large((1, m, s.shape[1]), 20 * seed + k, 1, dtype, unit=True) for k, s in enumerate(splits)]
            lb, A_in, bias, _, infeasible = final_bounds(net, state, C, relax, alphas, betas)
            assert not bool(infeasible.any())  # x0 is in the domain: no split contradicts it
            _check(net, lo, hi, splits, C, lb, A_in, bias, seed, betas)
    assert unstable_left > 0  # the relaxation had unstable neurons to relax, not only split or stable ones
    assert all(ph == {-1, 0, 1} for ph in phases)  # both phases and free neurons on every ReLU layer


# -------------------------------------------------------------------------------------------------- mn-crown
MN_SIZES = [3, 8, 8, 2]


def _mn_root(seed, dtype, cuts, width):
    """A far network, its box and mn-crown's root bound with constraints from ``cuts`` (their rows and the
    root's pre-activation bounds are what a ReLU-split child inherits)."""
    net, x0 = _far_net(seed, MN_SIZES, dtype, centre=1e2, spread=width)
    lo, hi = _box(x0, width)
    C = torch.eye(2, dtype=dtype)
    C = torch.cat([C, -C])
    opts = BoundOptions(mn=MultiNeuronOptions(cuts=cuts, max_groups=8, rounds=2))
    root = bound_rows(net, DomainState(lo, hi), C, "mn-crown", opts, iters=5)
    assert root.constraints is not None and any(c is not None for c in root.constraints), "no constraints to test"
    return net, x0, lo, hi, C, opts, root


def _child_splits(root, net, x0):
    """Splits of a ReLU-split child containing ``x0``: every other neuron the root leaves unstable, in the
    phase of its exact sign at ``x0``."""
    _, pres, _, _ = _exact(net, x0.tolist())
    out = []
    for (l, u), p in zip(root.pre_bounds, pres):
        unstable = ((l[0] < 0) & (u[0] > 0)).tolist()
        idx = [j for j, un in enumerate(unstable) if un][::2]
        s = [0] * len(unstable)
        for j in idx:
            s[j] = 1 if p[j] >= 0 else -1
        out.append(torch.tensor([s], dtype=torch.int8))
    return out


@DTYPES
@pytest.mark.parametrize("where", ["root", "child"])
@pytest.mark.parametrize("cuts", ["hull", "anderson"])
def test_mn_crown_rounding_in_exact_arithmetic(dtype, cuts, where):
    """mn-crown with hull constraints or Anderson cuts, at the root and on a ReLU-split child (splits on both
    layers, unstable neurons left): the optimised bound and the bound with large random gammas (and betas on
    the child) are below the exact values, and below the exact Lagrangian of their multipliers."""
    for width in (1e-6, 1e-2):
        seed = 0
        net, x0, lo, hi, C, opts, root = _mn_root(seed, dtype, cuts, width)
        cons = root.constraints
        m = C.shape[0]
        if where == "root":
            splits, r = None, root
        else:
            splits = _child_splits(root, net, x0)
            assert any(bool((s != 0).any()) for s in splits)
            r = bound_rows(net, DomainState(lo, hi, splits, root.pre_bounds, constraints=cons), C, "mn-crown", opts,
                           iters=5)
        assert any(g is not None and bool((g > 0).any()) for g in r.gammas)  # it leans on the constraints
        assert splits is None or any(bool((b > 0).any()) for b in r.betas)  # and on the splits
        _check(net, lo, hi, splits, C, r.lb, r.A_input, r.bias, seed)
        state = DomainState(lo, hi, splits, root.pre_bounds, constraints=cons)
        relax = intermediate_bounds(net, state)
        assert sum(int(rl.unstable.sum()) for rl in relax) > 0
        sizes = [rl.l.shape[1] for rl in relax]
        for scale in (1.0, 1e3):
            # every third constraint gets a multiplier (the others 0): a third of the exact arithmetic
            gammas = [None if c is None else _large((1, m, c.count), 30 + k, scale, dtype) * _every(c.count, 3, dtype)
                      for k, c in enumerate(cons)]
            betas = None if splits is None else [_large((1, m, n), 40 + k, scale, dtype) for k, n in enumerate(sizes)]
            alphas = [_large((1, m, n), 50 + k, 1, dtype, unit=True) for k, n in enumerate(sizes)]
            lb, A_in, bias, _, _ = final_bounds(net, state, C, relax, alphas, betas, gammas=gammas)
            _check(net, lo, hi, splits, C, lb, A_in, bias, seed, betas, gammas, cons)


# ---------------------------------------------------------------------- cancelling multiplier terms, one at a time
KINDS = ["Pz", "Px", "p", "Ph", "beta"]


def _cancelling_constraints(net, x0, relax, lo, hi, kind, m, seed, dtype, pairs=6, scale=1e6):
    """Constraint rows and multipliers whose ``kind`` part (``Pz``: on ``y``, ``Px``: on ``z``, ``p``: the
    constant, ``Ph``: on the layer's input ``h``) cancels: pairs of rows ``+k1`` and ``-k2`` in the same slot with
    multipliers ``g1 ~ scale`` and ``g2 = fl(g1 k1 / k2)``, so that each product rounds by ``~u scale`` while
    their sum is small. Nothing else of the bound is large, so only the rounding bound of that part covers it.
    The rows are not valid constraints (half of them are violated): only the exact Lagrangian is compared."""
    g = torch.Generator().manual_seed(seed)
    _, zs, ys, hs = _exact(net, x0.tolist())
    cons, gammas = [], []
    for k in range(len(relax)):
        n, n_h = len(zs[k]), len(hs[k])
        Pz, Px, Ph = (torch.zeros(2 * pairs, w, dtype=F64) for w in (n, n, n_h))
        p = torch.zeros(2 * pairs, dtype=F64)
        active = [j for j in range(n) if ys[k][j] > 0] or list(range(n))
        target = {"Pz": (Pz, active), "Px": (Px, list(range(n))), "Ph": (Ph, [j for j in range(n_h) if hs[k][j]]),
                  "p": (p, [0])}[kind]
        ks = 1 + torch.rand(2, pairs, generator=g, dtype=F64)
        for q in range(pairs):
            slot = target[1][q % len(target[1])]
            for row, sign in ((2 * q, 1.0), (2 * q + 1, -1.0)):
                coeff = sign * ks[(row % 2), q]
                if kind == "p":
                    target[0][row] = coeff
                else:
                    target[0][row, slot] = coeff
        g1 = (scale * (1 + torch.rand(1, m, pairs, generator=g, dtype=F64))).to(dtype)
        g2 = (g1.double() * ks[0] / ks[1]).to(dtype)
        G = torch.stack([g1, g2], dim=-1).reshape(1, m, 2 * pairs)
        rh = reach(lo, hi)[0] if k == 0 else relax[k - 1].out_reach()[0]
        cons.append(LayerConstraints(Pz.to(dtype), Px.to(dtype), p.to(dtype), Ph.to(dtype), rh))
        gammas.append(G)
    return cons, gammas


def _paired_splits(net, x0, dtype, pairs=3):
    """``net`` with the first ``2 pairs`` neurons of its second ReLU layer made pairs ``(j, j + 1)`` of identical
    rows whose biases are the two floats around minus the exact pre-activation at ``x0``, so ``z_j >= 0 >=
    z_{j+1}`` there, each within an ulp of zero; and splits fixing every pair in those phases (active,
    inactive), nothing else split. With equal betas on a pair, the coefficients ``beta s`` it passes to the
    layer below cancel, while each of their products with the weights rounds by ``~u beta``."""
    k = [i for i, layer in enumerate(net.layers) if not layer.affine][1] - 1  # the affine layer before ReLU 2
    _, _, _, hs = _exact(net, x0.tolist())
    W, b = net.layers[k].weight.clone(), net.layers[k].bias.clone()
    for q in range(pairs):
        j = 2 * q
        W[j + 1] = W[j]
        t = -sum((Fraction(float(w)) * h for w, h in zip(W[j].tolist(), hs[1])), Fraction(0))
        near = torch.tensor(float(t), dtype=F64).to(dtype)
        up = near if Fraction(float(near)) >= t else torch.nextafter(near, torch.tensor(float("inf"), dtype=dtype))
        b[j], b[j + 1] = up, torch.nextafter(up, torch.tensor(-float("inf"), dtype=dtype))
        if Fraction(float(b[j + 1])) > t:  # (never: ``up`` is the smallest float >= t)
            b[j + 1] = torch.nextafter(b[j + 1], torch.tensor(-float("inf"), dtype=dtype))
    layers = list(net.layers)
    layers[k] = Linear(W, b)
    net = Network(layers, net.in_shape)
    _, zs, _, _ = _exact(net, x0.tolist())
    splits = [torch.zeros(1, len(z), dtype=torch.int8) for z in zs]
    for q in range(pairs):
        assert zs[1][2 * q] >= 0 >= zs[1][2 * q + 1]
        splits[1][0, 2 * q], splits[1][0, 2 * q + 1] = 1, -1
    return net, splits


@DTYPES
@pytest.mark.parametrize("kind", KINDS)
def test_cancelling_multiplier_terms_are_covered_by_the_rounding_bound(kind, dtype):
    """Point boxes far from the origin, every neuron stable (so the bound equals the exact Lagrangian up to
    rounding), and one part of the multiplier terms large and cancelling: gamma's products with ``Pz``, ``Px``,
    ``p`` or ``Ph`` (the Anderson part), or large equal betas on pairs of identical neurons split in opposite
    phases (:func:`_paired_splits`: the products ``beta s W`` cancel in the layer below). The rigorous bound stays below
    the exact Lagrangian at the point; the plain float bound (``rigorous=False``) lies above it on some rows,
    so the check sees exactly the rounding that this part's error term must cover."""
    above = 0
    for seed in range(3):
        net, x0 = _far_net(seed, [4, 8, 8, 3], dtype, all_far=True)
        lo, hi = _box(x0, 0.0)
        C = torch.eye(3, dtype=dtype)
        C = torch.cat([C, -C])
        m = C.shape[0]
        splits = None
        if kind == "beta":
            net, splits = _paired_splits(net, x0, dtype)
        relax = intermediate_bounds(net, DomainState(lo, hi, splits))
        assert not any(bool(rl.unstable.any()) for rl in relax)  # tight: the gap is the rounding alone
        if kind == "beta":
            cons = gammas = None
            betas = [_large((1, m, rl.l.shape[1]), seed + k, 1e6, dtype) for k, rl in enumerate(relax)]
            betas[1][..., 1::2] = betas[1][..., 0::2]  # equal on each pair (and on the unsplit rest: unused)
        else:
            cons, gammas = _cancelling_constraints(net, x0, relax, lo, hi, kind, m, seed, dtype)
            betas = None
        state = DomainState(lo, hi, splits, constraints=cons)
        lb, A_in, bias, _, _ = final_bounds(net, state, C, relax, None, betas, gammas=gammas)
        _check(net, lo, hi, splits, C, lb, A_in, bias, seed, betas, gammas, cons, valid=kind == "beta")
        plain = final_bounds(net, state, C, relax, None, betas, rigorous=False, gammas=gammas)[0]
        out, zs, ys, hs = _exact(net, x0.tolist())
        for i in range(m):
            truth = sum((Fraction(float(c)) * y for c, y in zip(C[i].tolist(), out)), Fraction(0))
            lag = _lagrangian(i, (zs, ys, hs), _multiplier_terms(betas, splits, gammas, cons))
            above += Fraction(float(plain[0, i])) > truth + lag
    assert above > 0
