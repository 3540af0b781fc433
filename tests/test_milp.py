"""The exact MILP oracle against independent ground truth (sampling and activation-region enumeration)."""
import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from relaxations.milp import MILPNotOptimal, milp_bounds, milp_solve

from conftest import random_fc

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
