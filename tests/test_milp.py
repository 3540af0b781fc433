"""The exact MILP oracle against independent ground truth (sampling and activation-region enumeration), and its
big-M bounds (exact rational interval arithmetic, independent of the product's IBP) against sampled
pre-activations and a plain ``Fraction`` recomputation."""
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

import relaxations.ibp
import relaxations.lp.encoding
from relaxations.exact_interval import exact_pre_bounds
from relaxations.lp.encoding import affine_blocks
from relaxations.milp import MILPNotOptimal, milp_bounds, milp_solve

from conftest import pre_activations, random_conv, random_fc

pytestmark = pytest.mark.fast


def _region_extremes(net, lo, hi, c, fixed=None):
    """Exact min/max of ``c . net(x)`` by an LP on every activation region (2-layer-deep nets)."""
    Ws = [l.weight.numpy() for l in net.layers if hasattr(l, "weight")]
    bs = [l.bias.numpy() for l in net.layers if hasattr(l, "weight")]
    sizes = [W.shape[0] for W in Ws[:-1]]
    best_min, best_max = np.inf, -np.inf
    for pattern in itertools.product([0, 1], repeat=sum(sizes)):
        pattern = np.array(pattern)
        if fixed is not None and any(pattern[k] != v for k, v in fixed.items()):
            continue
        # affine map of the region: z_i = A x + a, with sign constraints
        A, a = np.eye(len(lo)), np.zeros(len(lo))
        rows, rhs, off = [], [], 0
        for W, b, n in zip(Ws[:-1], bs[:-1], sizes):
            zA, za = W @ A, W @ a + b
            p = pattern[off:off + n]
            s = np.where(p == 1, -1.0, 1.0)  # active: -z <= 0, inactive: z <= 0
            rows.append(s[:, None] * zA)
            rhs.append(-s * za)
            A, a = zA * p[:, None], za * p
            off += n
        oA, oa = Ws[-1] @ A, Ws[-1] @ a + bs[-1]
        obj = c @ oA
        for sgn in (1, -1):
            res = linprog(sgn * obj, A_ub=np.vstack(rows), b_ub=np.concatenate(rhs),
                          bounds=list(zip(lo, hi)), method="highs")
            if res.status == 0:
                val = sgn * res.fun + c @ oa
                best_min, best_max = (min(best_min, val), best_max) if sgn == 1 else (best_min, max(best_max, val))
    return best_min, best_max


def test_milp_matches_dense_sampling_1d():
    net = random_fc([1, 10, 10, 1], seed=3)
    lo, hi = np.array([-2.0]), np.array([1.5])
    res = milp_solve(net, lo, hi)
    assert res.status == "optimal"
    xs = torch.linspace(-2.0, 1.5, 400001, dtype=torch.float64).reshape(-1, 1)
    ys = net(xs)[:, 0].numpy()
    # the oracle is attained (its argmin/argmax evaluate to it) and nothing sampled beats it
    f = lambda x: net(torch.as_tensor(x).reshape(1, -1))[0, 0].item()
    assert f(res.argmin[0]) == pytest.approx(res.lb[0], abs=1e-6)
    assert f(res.argmax[0]) == pytest.approx(res.ub[0], abs=1e-6)
    assert res.lb[0] <= ys.min() + 1e-7 and res.ub[0] >= ys.max() - 1e-7
    assert ys.min() - res.lb[0] < 1e-4 and res.ub[0] - ys.max() < 1e-4


def test_milp_matches_region_enumeration_2d():
    net = random_fc([2, 4, 4, 2], seed=5)
    lo, hi = np.array([-1.0, -0.5]), np.array([1.0, 2.0])
    C = np.array([[1.0, -1.0], [0.5, 2.0]])
    lb, ub = milp_bounds(net, lo, hi, C=C)
    for r in range(2):
        emin, emax = _region_extremes(net, lo, hi, C[r])
        assert lb[r] == pytest.approx(emin, abs=1e-6)
        assert ub[r] == pytest.approx(emax, abs=1e-6)


def test_milp_respects_splits():
    net = random_fc([2, 4, 4, 1], seed=7)
    lo, hi = -np.ones(2), np.ones(2)
    free_lb, free_ub = milp_bounds(net, lo, hi)
    for neuron, phase in [(1, -1), (2, 1)]:
        splits = [np.zeros(4, np.int8), np.zeros(4, np.int8)]
        splits[0][neuron] = phase
        lb, ub = milp_bounds(net, lo, hi, splits=splits)
        emin, emax = _region_extremes(net, lo, hi, np.ones(1), fixed={neuron: int(phase == 1)})
        assert lb[0] == pytest.approx(emin, abs=1e-6) and ub[0] == pytest.approx(emax, abs=1e-6)
        assert lb[0] >= free_lb[0] - 1e-9 and ub[0] <= free_ub[0] + 1e-9
    # at least one of the two splits must actually change the range on this network
    s = [np.zeros(4, np.int8), np.zeros(4, np.int8)]
    s[0][1] = -1
    s2 = [np.zeros(4, np.int8), np.zeros(4, np.int8)]
    s2[0][1] = 1
    a, b = milp_bounds(net, lo, hi, splits=s), milp_bounds(net, lo, hi, splits=s2)
    assert min(a[0][0], b[0][0]) == pytest.approx(free_lb[0], abs=1e-6)
    assert max(a[1][0], b[1][0]) == pytest.approx(free_ub[0], abs=1e-6)


def test_milp_empty_domain():
    net = random_fc([2, 3, 1], seed=1)
    lo, hi = -np.ones(2), np.ones(2)
    # force neuron 0 active while bounding its pre-activation below 0: no point exists
    pre = [(torch.full((1, 3), -1.0, dtype=torch.float64), torch.full((1, 3), -0.5, dtype=torch.float64))]
    res = milp_solve(net, lo, hi, pre_bounds=pre, splits=[np.array([1, 0, 0], np.int8)])
    assert res.status == "infeasible" and res.lb[0] == np.inf and res.ub[0] == -np.inf


def test_milp_not_optimal_raises():
    net = random_fc([20, 60, 60, 60, 1], seed=0)
    lo, hi = -np.ones(20), np.ones(20)
    with pytest.raises(MILPNotOptimal):
        milp_bounds(net, lo, hi, time_limit=1e-3)


# ------------------------------------------------------------------ the big-M bounds (relaxations.exact_interval)
@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_big_m_contains_sampled_pre_activations_and_is_attained(kind):
    net = random_fc([4, 12, 12, 12, 2], seed=2) if kind == "mlp" else random_conv(3, 5, 2, 4, 2)
    gen = np.random.default_rng(0)
    lo = gen.uniform(-1.0, 0.0, net.in_size)
    hi = lo + gen.uniform(0.0, 1.5, net.in_size)
    pre = exact_pre_bounds(affine_blocks(net), lo, hi)
    assert len(pre) == len(net.relu_indices())
    xs = torch.as_tensor(lo + (hi - lo) * gen.uniform(size=(4000, net.in_size)))
    # vertices of the box too: the first layer's interval bounds are attained at vertices
    vert = np.where(gen.uniform(size=(4000, net.in_size)) < 0.5, lo, hi)
    xs = torch.cat([xs, torch.as_tensor(vert)])
    unstable = 0
    for (l, u), z in zip(pre, pre_activations(net, xs)):
        z = z.numpy()
        # a vertex attains a first-layer bound exactly; the float64 forward pass may round past it by an ulp
        assert (z >= l - 1e-12).all() and (z <= u + 1e-12).all()
        unstable += int(((l < 0) & (u > 0)).sum())
    assert unstable > 5  # the big-M matter: many neurons are unstable over this box
    # first layer: the exact interval of an affine map over a box, attained at one vertex per bound
    W, b = affine_blocks(net)[0].W.toarray(), affine_blocks(net)[0].b
    x_min = np.where(W > 0, lo, hi)  # (n, n_in): the minimising vertex of each row
    z_min = np.einsum("ij,ij->i", W, x_min) + b
    assert np.allclose(pre[0][0], z_min, rtol=0, atol=1e-12) and (pre[0][0] <= z_min + 1e-12).all()


def _exact_intervals(net, lo, hi):
    """Per ReLU layer the exact interval bounds as ``Fraction``s, from the layers' weights (a plain MLP)."""
    L = [Fraction(float(v)) for v in lo]
    U = [Fraction(float(v)) for v in hi]
    out = []
    for layer in net.layers:
        if layer.affine:
            W = layer.weight.numpy()
            b = layer.bias.numpy()
            L, U = ([Fraction(float(b[i])) + sum(Fraction(float(w)) * (L[j] if w > 0 else U[j])
                                                for j, w in enumerate(W[i])) for i in range(W.shape[0])],
                    [Fraction(float(b[i])) + sum(Fraction(float(w)) * (U[j] if w > 0 else L[j])
                                                for j, w in enumerate(W[i])) for i in range(W.shape[0])])
        else:
            out.append((L, U))
            L, U = [max(v, Fraction(0)) for v in L], [max(v, Fraction(0)) for v in U]
    return out


def test_big_m_is_the_exact_rational_interval_rounded_outward():
    """Not merely sound: each bound is the float64 nearest the exact rational value on the outer side."""
    net = random_fc([3, 5, 4, 1], seed=11)
    lo, hi = np.array([-0.3, -1.0, 0.1]), np.array([0.7, 0.25, 0.9])
    pre = exact_pre_bounds(affine_blocks(net), lo, hi)
    exact = _exact_intervals(net, lo, hi)
    assert len(pre) == len(exact) == 2
    rounded = 0
    for (l, u), (el, eu) in zip(pre, exact):
        for f, e in zip(l, el):
            assert Fraction(f) <= e < Fraction(np.nextafter(f, np.inf))
            rounded += Fraction(f) != e
        for f, e in zip(u, eu):
            assert Fraction(np.nextafter(f, -np.inf)) < e <= Fraction(f)
            rounded += Fraction(f) != e
    assert rounded > 0  # the exact values are not all floats: the outward rounding was exercised


def test_oracle_takes_no_bound_from_ibp(monkeypatch):
    """The oracle checks the bounding code, so it must not use it: with IBP broken it still answers exactly."""
    def broken(*a, **k):
        raise AssertionError("the MILP oracle called the product's IBP")
    monkeypatch.setattr(relaxations.ibp, "ibp", broken)
    monkeypatch.setattr(relaxations.lp.encoding, "ibp", broken)
    net = random_fc([2, 3, 3, 2], seed=5)
    lo, hi = np.array([-1.0, -0.5]), np.array([1.0, 2.0])
    lb, ub = milp_bounds(net, lo, hi, C=np.array([[1.0, -1.0]]))
    emin, emax = _region_extremes(net, lo, hi, np.array([1.0, -1.0]))
    assert lb[0] == pytest.approx(emin, abs=1e-6) and ub[0] == pytest.approx(emax, abs=1e-6)
