"""Multi-neuron constraints on sigmoid / tanh / softplus layers (issue 27 item 4b): the back-substitution's general
step takes ``gamma . (Pz y + Px z + Ph h + p)`` (``relaxations.crown.backward``), the hull cuts of
:mod:`relaxations.hull_cuts` are built from :mod:`relaxations.sshaped_hull`, and ``mn-crown`` runs on these networks.

Ground truth: sampled and PGD values of the network (every sound lower bound is below them), the exact minima of
the SSHAPED.md §1 table, and an exact (rational, with mpmath enclosures of the activation) evaluation of the
Lagrangian for the rounding bound.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from relaxations.crown import final_bounds, intermediate_bounds
from relaxations.hull_cuts import smooth_layers
from relaxations.ibp import ibp
from relaxations.layers import Linear, SmoothActivation
from relaxations.multineuron import LayerConstraints
from relaxations.network import Network
from relaxations.optimize import optimized
from relaxations.state import DomainState

from conftest import smooth_net

F32, F64 = torch.float32, torch.float64
DTYPES = pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])


def _truth(net, lo, hi, C, seed=0):
    """Per row of ``C`` the smallest value found by 20,000 samples and PGD from 16 starts (float64)."""
    net64 = net.to(dtype=F64)
    lo, hi, C = lo[0].double(), hi[0].double(), C.double()
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(20000, lo.numel(), generator=g, dtype=F64)
    with torch.no_grad():
        best = (net64(x) @ C.T).min(0).values
    for r in range(C.shape[0]):
        x = (lo + (hi - lo) * torch.rand(16, lo.numel(), generator=g, dtype=F64)).requires_grad_(True)
        for _ in range(60):
            (gr,) = torch.autograd.grad((net64(x) @ C[r]).sum(), x)
            with torch.no_grad():
                x -= 0.05 * (hi - lo) * gr.sign()
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        with torch.no_grad():
            best[r] = torch.minimum(best[r], (net64(x) @ C[r]).min())
    return best


def line_cuts(net, lo, hi, pre, dtype, shift=0.0):
    """Valid but simple cuts for the machinery (no hull): every smooth neuron's single-neuron lines on ``pre``
    (``Activation.relaxation``: valid on ``[l, u]``, so on the domain) written over ``h``, ``y_j <= s (w_j . h +
    b_j) + t`` and the lower one, their float64 rounding covered by a wide margin. ``shift > 0`` plants an
    invalid set: every upper cut's intercept lowered by it."""
    out = [None] * len(net.activation_indices())
    for k, d in smooth_layers(net, lo.double(), hi.double(), pre):
        rh = np.maximum(np.abs(d.L), np.abs(d.U))
        signs, betas, alphas = [], [], []
        for j in range(d.W.shape[0]):
            for s, t, sg in ((d.lines[2][j], d.lines[3][j], 1), (d.lines[0][j], d.lines[1][j], -1)):
                beta, alpha = s * d.W[j], s * d.b[j] + t
                slack = 1e-12 * (1 + abs(alpha) + np.abs(beta) @ rh)
                signs.append(sg * (j + 1))
                betas.append(beta)
                alphas.append(alpha + sg * slack - (shift if sg > 0 else 0.0))
        out[k] = d.constraints(signs, betas, alphas, dtype, lo.device)
    return out


def _setup(kind, dtype, seed=0):
    net = smooth_net(kind, [4, 10, 8, 3], seed)[1].to(dtype=dtype)
    lo, hi = -0.8 * torch.ones(1, 4, dtype=dtype), 0.6 * torch.ones(1, 4, dtype=dtype)
    C = torch.cat([torch.eye(3), -torch.eye(3)]).to(dtype)
    with torch.no_grad():
        tight = [(r.l, r.u) for r in intermediate_bounds(net, DomainState(lo, hi))]
    loose = [(l.reshape(1, -1), u.reshape(1, -1)) for l, u in ibp(net, lo, hi)[2]]
    return net, lo, hi, C, tight, loose


@pytest.mark.parametrize("kind, dtype", [pytest.param("sigmoid", F32, marks=pytest.mark.fast),
                                         pytest.param("tanh", F64, marks=pytest.mark.fast),
                                         *[pytest.param(k, d, marks=pytest.mark.slow) for k, d in
                                           (("softplus", F32), ("sigmoid", F64), ("tanh", F32), ("softplus", F64))]])
def test_constraints_on_smooth_layers_are_sound_and_used(kind, dtype):
    """Bounds on IBP intermediate bounds, with the lines of CROWN's tighter bounds as constraints over ``h``: below
    every sampled / PGD value, some multiplier positive, and clearly above the same bound without them."""
    net, lo, hi, C, tight, loose = _setup(kind, dtype)
    truth = _truth(net, lo, hi, C)
    cons = line_cuts(net, lo, hi, tight, dtype)
    plain = optimized(net, DomainState(lo, hi, pre_bounds=loose), C, iters=30, optimize_intermediate=False)
    res = optimized(net, DomainState(lo, hi, pre_bounds=loose, constraints=cons), C, iters=30,
                    optimize_intermediate=False)
    assert bool((res.lb[0].double() <= truth).all()), (res.lb, truth)
    assert any(bool((g > 0).any()) for g in res.gammas if g is not None)
    assert float((res.lb - plain.lb).mean()) > 0.02, (res.lb, plain.lb)


@pytest.mark.fast
def test_a_planted_invalid_cut_is_seen_by_the_sampled_values():
    """The containment check has teeth: the same cuts with every upper intercept lowered by 0.3 (invalid) give a
    bound above a sampled value."""
    net, lo, hi, C, tight, loose = _setup("sigmoid", F64)
    truth = _truth(net, lo, hi, C)
    cons = line_cuts(net, lo, hi, tight, F64, shift=0.3)
    res = optimized(net, DomainState(lo, hi, pre_bounds=loose, constraints=cons), C, iters=30,
                    optimize_intermediate=False)
    assert bool((res.lb[0] > truth).any()), (res.lb, truth)


# ------------------------------------------------------------------------------------- rounding, exactly
def _exact_lagrangian(net, x, C, gammas, cons):
    """``C f(x) + sum_k gamma_k . (Pz y + Px z + Ph h + p)`` per row, in 60-digit arithmetic (the float weights and
    constraint rows taken as exact; the activation by mpmath: its error is ~1e-55, far below what is checked)."""
    import mpmath
    mpmath.mp.dps = 60
    f = {"sigmoid": lambda t: 1 / (1 + mpmath.exp(-t)), "tanh": mpmath.tanh,
         "softplus": lambda t: mpmath.log(1 + mpmath.exp(t))}
    v = [mpmath.mpf(float(t)) for t in x]
    zs, ys, hs = [], [], []
    for layer in net.layers:
        if isinstance(layer, Linear):
            W, b = layer.weight.double().tolist(), layer.bias.double().tolist()
            hs.append(v)
            v = [mpmath.fsum([mpmath.mpf(w) * t for w, t in zip(row, v)]) + mpmath.mpf(bi) for row, bi in zip(W, b)]
        else:
            zs.append(v)
            v = [f[layer.kind](t) for t in v]
            ys.append(v)
    out = []
    for i, row in enumerate(C.double().tolist()):
        total = mpmath.fsum([mpmath.mpf(c) * y for c, y in zip(row, v)])
        for k, cs in enumerate(cons):
            if cs is None:
                continue
            mats = [t.double().tolist() for t in (cs.Pz, cs.Px, cs.Ph)]
            for c, g in enumerate(gammas[k][0, i].double().tolist()):
                val = mpmath.fsum([mpmath.mpf(a) * t for a, t in zip(mats[0][c], ys[k])]
                                  + [mpmath.mpf(a) * t for a, t in zip(mats[1][c], zs[k])]
                                  + [mpmath.mpf(a) * t for a, t in zip(mats[2][c], hs[k])]) + mpmath.mpf(float(cs.p[c]))
                total += mpmath.mpf(g) * val
        out.append(total)
    return out


def _cancelling(kind, zs, hs, rhs, m, g, dtype, pairs=6, scale=1e6):
    """Constraint rows and multipliers whose ``kind`` part (``Pz``, ``Px``, ``p`` or ``Ph``) cancels, per layer:
    pairs of rows ``+k1`` and ``-k2`` in one slot with multipliers ``g1 ~ scale`` and ``g2 = fl(g1 k1 / k2)``, so
    that each product rounds by ``~u scale`` while their sum is small (tests/test_rounding_exact.py's
    construction). Not valid constraints: only the exact Lagrangian is compared."""
    cons, gammas = [], []
    for k in range(len(zs)):
        n, n_h = zs[k].shape[1], hs[k].shape[1]
        Pz, Px, Ph = (torch.zeros(2 * pairs, w, dtype=F64) for w in (n, n, n_h))
        p = torch.zeros(2 * pairs, dtype=F64)
        target = {"Pz": Pz, "Px": Px, "Ph": Ph, "p": p}[kind]
        width = {"Pz": n, "Px": n, "Ph": n_h, "p": 1}[kind]
        ks = 1 + torch.rand(2, pairs, generator=g, dtype=F64)
        for q in range(pairs):
            for row, sign in ((2 * q, 1.0), (2 * q + 1, -1.0)):
                coeff = sign * ks[row % 2, q]
                if kind == "p":
                    target[row] = coeff
                else:
                    target[row, q % width] = coeff
        g1 = (scale * (1 + torch.rand(1, m, pairs, generator=g, dtype=F64))).to(dtype)
        g2 = (g1.double() * ks[0] / ks[1]).to(dtype)
        cons.append(LayerConstraints(Pz.to(dtype), Px.to(dtype), p.to(dtype), Ph.to(dtype), rhs[k].to(dtype)))
        gammas.append(torch.stack([g1, g2], dim=-1).reshape(1, m, 2 * pairs))
    return cons, gammas


@pytest.mark.parametrize("part", ["Pz", "Px", "p", "Ph"])
@pytest.mark.parametrize("kind", [pytest.param("sigmoid", marks=pytest.mark.fast),
                                  pytest.param("tanh", marks=pytest.mark.slow)])
@DTYPES
def test_cancelling_constraint_terms_are_covered_by_the_rounding_bound(part, kind, dtype):
    """A point box (every neuron's relaxation is its constant enclosure: the bound equals the exact Lagrangian up
    to rounding and the enclosures' width) and constraints whose ``part`` terms are large and cancel
    (:func:`_cancelling`). The rigorous bound (and its linear function at the point) stays below the exact
    Lagrangian; the plain float bound (``rigorous=False``) lies above it on some rows, so the check sees the
    rounding that this part's error term must cover (and nothing else of the bound covers)."""
    import mpmath
    above = 0
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        sizes = [4, 8, 8, 3]
        layers = []
        for i in range(3):
            layers.append(Linear(torch.randn(sizes[i + 1], sizes[i], generator=g, dtype=F64).to(dtype),
                                 torch.randn(sizes[i + 1], generator=g, dtype=F64).to(dtype)))
            if i < 2:
                layers.append(SmoothActivation((sizes[i + 1],), kind))
        net = Network(layers, (4,))
        x0 = torch.randn(1, 4, generator=g, dtype=F64).to(dtype)
        C = torch.cat([torch.eye(3), -torch.eye(3)]).to(dtype)
        relax = intermediate_bounds(net, DomainState(x0, x0))
        with torch.no_grad():
            hs, zs, v = [], [], x0.double()
            for layer in net.to(dtype=F64).layers:
                if isinstance(layer, Linear):
                    hs.append(v)
                else:
                    zs.append(v)
                v = layer.forward(v)
        rhs = [x0[0].abs()] + [r.out_reach()[0] for r in relax[:-1]]
        cons, gammas = _cancelling(part, zs, hs[:2], rhs, C.shape[0], g, dtype)
        st = DomainState(x0, x0, constraints=cons)
        lb, A_in, bias, _, _ = final_bounds(net, st, C, relax, gammas=gammas)
        plain = final_bounds(net, st, C, relax, rigorous=False, gammas=gammas)[0]
        lag = _exact_lagrangian(net, x0[0].tolist(), C, gammas, cons)
        X = [mpmath.mpf(float(t)) for t in x0[0].tolist()]
        for i in range(C.shape[0]):
            lin = mpmath.fsum([mpmath.mpf(float(a)) * t for a, t in zip(A_in[0, i].tolist(), X)]) \
                + mpmath.mpf(float(bias[0, i]))
            assert mpmath.mpf(float(lb[0, i])) <= lag[i] and lin <= lag[i], (seed, i, float(lb[0, i]), lag[i])
            above += mpmath.mpf(float(plain[0, i])) > lag[i]
    assert above > 0


# ------------------------------------------------------------------------------------- the hull cuts, mn-crown
def _mn(net, st, C, iters=30, cuts=64):
    from relaxations.methods import bound_rows
    from relaxations.options import BoundOptions, MultiNeuronOptions
    return bound_rows(net, st, C, "mn-crown", BoundOptions(mn=MultiNeuronOptions(hull_cuts=cuts)), iters=iters)


@pytest.mark.parametrize("kind, dtype", [pytest.param("sigmoid", F32, marks=pytest.mark.fast),
                                         *[pytest.param(k, d, marks=pytest.mark.slow) for k, d in
                                           (("tanh", F64), ("softplus", F32), ("sigmoid", F64), ("tanh", F32),
                                            ("softplus", F64))]])
def test_hull_cuts_hold_on_samples_and_mn_crown_contains_them(kind, dtype):
    """Every hull cut mn-crown builds holds at 20,000 sampled points of the box (the constraint's value, evaluated
    in float64 at the network's own values, at most 1e-9), and mn-crown's bound is below every sampled / PGD
    value and not below alpha-CROWN's."""
    from relaxations.methods import bound_rows
    for seed in range(1 if dtype == F32 else 2):
        net, lo, hi, C, _, _ = _setup(kind, dtype, seed)
        truth = _truth(net, lo, hi, C, seed)
        st = DomainState(lo, hi)
        res = _mn(net, st, C, iters=15)
        alpha = bound_rows(net, st, C, "alpha", iters=15)
        assert bool((res.lb[0].double() <= truth).all()), (res.lb, truth)
        assert bool((res.lb >= alpha.lb).all())
        assert res.constraints is not None and any(c is not None for c in res.constraints)
        x = lo.double() + (hi - lo).double() * torch.rand(20000, 4, generator=torch.Generator().manual_seed(seed),
                                                          dtype=F64)
        hin, z, k = x, None, 0  # the input of the affine layer before the activation, its output, the layer
        with torch.no_grad():
            for layer in net.to(dtype=F64).layers:
                if layer.affine:
                    z = layer.forward(hin if z is None else z)
                    continue
                y = layer.forward(z)
                c = res.constraints[k]
                if c is not None:
                    val = y @ c.Pz.double().T + z @ c.Px.double().T + hin @ c.Ph.double().T + c.p.double()
                    assert float(val.max()) <= 1e-9, (k, float(val.max()))
                hin, z, k = y, None, k + 1


@pytest.mark.parametrize("row", [pytest.param(0, marks=pytest.mark.fast), pytest.param(1, marks=pytest.mark.slow),
                                 pytest.param(2, marks=pytest.mark.slow)])
def test_mn_crown_reaches_the_hull_lp_of_the_sshaped_table(row):
    """SSHAPED.md §1's table: with the hull cuts, mn-crown's bound passes the one-dimensional hull (alpha-CROWN's
    limit) and reaches the hull LP column within 2e-3, never above the exact minimum."""
    from relaxations.methods import bound_rows
    table = [("sigmoid", [[3.06, -3.83], [0.63, -0.85], [-0.68, -0.32]], [-1.01, -0.12, -0.43], [3.32, 0.23, -0.35],
              -0.1338, -0.1290, -0.1290),
             ("tanh", [[0.29, 1.67], [-0.31, -1.39], [0.88, 0.87]], [-0.11, -0.39, 0.11], [-2.49, 0.69, 0.49],
              -2.8045, -2.7011, -2.6978),
             ("tanh", [[-2.46, 0.09], [-1.45, 1.14], [-3.05, -1.37]], [0.35, 0.58, -1.08], [-0.50, 0.33, -0.61],
              -1.1325, -0.9978, -0.9769)]
    kind, W, b, w2, hull1, hull, exact = table[row]
    net = Network([Linear(torch.tensor(W, dtype=F64), torch.tensor(b, dtype=F64)), SmoothActivation((3,), kind),
                   Linear(torch.tensor([w2], dtype=F64), torch.zeros(1, dtype=F64))], (2,))
    st = DomainState(-torch.ones(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64))
    C = torch.eye(1, dtype=F64)
    iters = 40 if row == 0 else 100  # (the tanh rows' multipliers converge more slowly)
    alpha = float(bound_rows(net, st, C, "alpha", iters=iters).lb)
    mn = float(_mn(net, st, C, iters=iters).lb)
    assert alpha <= hull1 + 1e-4 and mn > hull1 + 3e-3 and abs(mn - hull) <= 2e-3 and mn <= exact + 1e-9, \
        (alpha, mn, hull, exact)


# ------------------------------------------------------------------------------------- verdicts, proof-only
@pytest.mark.slow
@pytest.mark.parametrize("kind, width", [("sigmoid", 0.8), ("tanh", 0.15)])
def test_proof_only_verdicts_with_mn_crown_and_activation_splitting(kind, width):
    """mn-crown at the root of activation splitting (20 inputs, float64, proof-only), the children inheriting the
    hull cuts: ``y <= t`` reachable with ``t`` above the best sampled / PGD value (violated: a point attains it) is
    never unsat; with ``t`` below it by 0.05 it is proven (on the tanh net only after branching, with the
    constraints in the children: alpha's root margin there is -0.05, mn-crown's -0.012, measured)."""
    from bnb.config import Config
    from bnb.engine.context import Stats
    from bnb.io.spec import Polytope

    from proof_only_runs import decide, proof_only
    net = smooth_net(kind, [20, 12, 10, 1], 3)[1].to(dtype=F64)
    lo, hi = -width * torch.ones(1, 20, dtype=F64), width * torch.ones(1, 20, dtype=F64)
    ymin = float(_truth(net, lo, hi, torch.eye(1, dtype=F64))[0])
    cfg = proof_only(Config())
    cfg.general.dtype = "float64"
    cfg.bounds.method, cfg.bounds.alpha_iters = "mn-crown", 20
    cfg.bab.branching, cfg.bab.batch_size = "activation", 16
    for t, want, seconds in ((ymin + 1e-3, ("unknown", "timeout"), 2.0), (ymin + 1e-6, ("unknown", "timeout"), 2.0),
                             (ymin - 0.05, ("unsat",), 30.0)):
        stats = Stats()
        got = decide(net, lo[0], hi[0], [Polytope(np.array([[1.0]]), np.array([t]))], cfg, seconds, stats)
        assert got in want, (t, ymin, got)
    if kind == "tanh":
        assert stats.get("branches", 0) > 0 and stats.get("constraints", 0) > 0, dict(stats)
