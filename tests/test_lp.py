"""LP relaxations: soundness of every bound, dual certificates, the ordering of the relaxations and the
THEORY.md examples (max(x1, x2), the universal-barrier valley)."""
import numpy as np
import pytest
import torch

from relaxations.ibp import ibp
from relaxations.lp.model import NetworkLP
from relaxations.lp.sound import certified_min
from relaxations.lp.triangle import lp_bounds, refined_pre_bounds
from relaxations.milp import milp_bounds
from relaxations.network import Network

pytestmark = pytest.mark.fast


def _linear(W, b):
    lin = torch.nn.Linear(len(W[0]), len(W))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W, dtype=torch.float32))
        lin.bias.copy_(torch.tensor(b, dtype=torch.float32))
    return lin


def max_net():
    """``max(x1, x2) = x2 + relu(x1 - x2)`` on [0, 1]^2 with a pass-through neuron ``relu(x2) = x2``."""
    seq = torch.nn.Sequential(_linear([[0, 1], [1, -1]], [0, 0]), torch.nn.ReLU(), _linear([[1, 1]], [0]))
    return Network.from_torch(seq, (2,))


def valley_net(T):
    """THEORY.md's universal-barrier network: z in [-1, 1] -> (relu(z + 1), relu(z)) -> the valley
    ``2T|y0 - 1| + 2T|y1 - 1/2|`` (>= T everywhere; P1 admits the phantom point (1, 1/2))."""
    seq = torch.nn.Sequential(
        _linear([[1], [1]], [1, 0]), torch.nn.ReLU(),
        _linear([[1, 0], [-1, 0], [0, 1], [0, -1]], [-1, 1, -0.5, 0.5]), torch.nn.ReLU(),
        _linear([[2 * T, 2 * T, 2 * T, 2 * T]], [0]))
    return Network.from_torch(seq, (1,))


def _samples(net, lo, hi, n=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, lo.size, generator=g, dtype=torch.float64) * torch.tensor(hi - lo) + torch.tensor(lo)
    corners = torch.tensor(np.array(np.meshgrid(*zip(lo, hi))).reshape(lo.size, -1).T) if lo.size <= 10 else x[:0]
    return net(torch.cat([x, corners])).numpy()


# ---------------------------------------------------------------------------------------- certificates
def test_certificate_exact_on_known_lp_and_sound_under_perturbation():
    # min x1 + x2  s.t.  -x1 - x2 <= -1,  x in [0, 2]^2: optimum exactly 1, dual lam = 1
    c, A, b = np.array([1.0, 1.0]), np.array([[-1.0, -1.0]]), np.array([-1.0])
    L, U = np.zeros(2), np.full(2, 2.0)
    exact = certified_min(c, 0.0, [(A, b, np.array([1.0]))], [], L, U)
    assert exact <= 1.0 and exact > 1.0 - 1e-12
    rng = np.random.default_rng(0)
    for lam in [rng.normal(1, 0.5, 50), -rng.random(10), 10 ** rng.uniform(-3, 3, 20), [np.nan, np.inf]]:
        for v in np.atleast_1d(lam):
            assert certified_min(c, 0.0, [(A, b, np.array([v]))], [], L, U) <= 1.0


def test_perturbed_duals_stay_below_lp_optimum():
    net = random_fc([3, 10, 10, 2], seed=1)
    lo, hi = -np.ones(3), np.ones(3)
    model = NetworkLP(net)
    model.set_box(lo, hi)
    c, c0 = model.output_objective(np.array([1.0, -1.0]))
    cert, status = model.minimize(c, c0)
    prob, _, handles, _ = model._problem(model.n_layers)
    opt = prob.value + c0
    assert status == "optimal" and abs(cert - opt) < 1e-7 and cert <= opt + 1e-9
    # and the LP itself is a relaxation: at most the exact minimum and the sampled one
    exact, _ = milp_bounds(net, lo, hi, C=np.array([[1.0, -1.0]]))
    ys = _samples(net, lo, hi, n=5000) @ np.array([1.0, -1.0])
    assert opt <= exact[0] + 1e-7 and exact[0] <= ys.min() + 1e-9
    ineqs, eqs = model._certificate_blocks(handles, True)
    L, U = model.L, model.U
    rng = np.random.default_rng(0)
    tightest = -np.inf
    for trial in range(30):
        scale = [1e-6, 1e-3, 0.1, 1.0][trial % 4]
        pert = lambda lam, scale=scale, trial=trial: None if lam is None else \
            lam * (1 + scale * rng.normal(size=lam.shape)) * np.where(rng.random(lam.shape) < 0.05 * (trial % 3), -1, 1)
        ci = [(A, bb, pert(lam)) for A, bb, lam in ineqs]
        ce = [(E, e, pert(mu)) for E, e, mu in eqs]
        val = certified_min(c, c0, ci, ce, L, U)
        assert val <= opt + 1e-9
        tightest = max(tightest, val)
    # scaled duals: lam * 3 is still dual feasible (sign) but not optimal -> sound, looser
    val = certified_min(c, c0, [(A, bb, None if lam is None else 3 * lam) for A, bb, lam in ineqs],
                        [(E, e, None if mu is None else 3 * mu) for E, e, mu in eqs], L, U)
    assert val <= opt + 1e-9 and val < opt - 1e-3
    assert tightest > opt - 1e-4  # tiny perturbations keep the bound close


# ---------------------------------------------------------------------------------------- triangle LP
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triangle_sound_and_between_ibp_and_milp(seed):
    net = random_fc([3, 8, 8, 3], seed=seed)
    lo, hi = -np.ones(3), np.full(3, 0.5)
    C = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, 1.0]])
    ys = _samples(net, lo, hi) @ C.T
    mlb, mub = milp_bounds(net, lo, hi, C=C)
    ilb, iub, _ = ibp(net, torch.tensor(lo).reshape(1, -1), torch.tensor(hi).reshape(1, -1))
    ilb, iub = ilb.numpy()[0], iub.numpy()[0]
    iv_lb = np.minimum(C, 0) @ iub + np.maximum(C, 0) @ ilb
    lb, ub = lp_bounds(net, lo, hi, C=C)
    rlb, rub = lp_bounds(net, lo, hi, C=C, refine=True)
    assert np.all(lb <= mlb + 1e-9) and np.all(ub >= mub - 1e-9)
    assert np.all(lb <= ys.min(0)) and np.all(ub >= ys.max(0))
    assert np.all(rlb >= lb - 1e-9) and np.all(rub <= ub + 1e-9)
    assert np.all(rlb <= mlb + 1e-9) and np.all(rub >= mub - 1e-9)
    assert np.all(lb >= iv_lb - 1e-9)


def test_triangle_respects_splits_and_reuses_model():
    net = random_fc([2, 6, 6, 1], seed=4)
    lo, hi = -np.ones(2), np.ones(2)
    model = NetworkLP(net)
    _, _, pre = ibp(net, torch.tensor(lo).reshape(1, -1), torch.tensor(hi).reshape(1, -1))
    l0, u0 = pre[0][0].numpy()[0], pre[0][1].numpy()[0]
    j = int(np.flatnonzero((l0 < 0) & (u0 > 0))[0])
    for phase in (-1, 1):
        splits = [np.zeros(6, np.int8), np.zeros(6, np.int8)]
        splits[0][j] = phase
        mlb, mub = milp_bounds(net, lo, hi, splits=splits)
        lb, ub = lp_bounds(net, lo, hi, splits=splits, model=model)
        assert lb[0] <= mlb[0] + 1e-9 and ub[0] >= mub[0] - 1e-9
        assert lb[0] > -np.inf and ub[0] < np.inf
    lp_bounds(net, lo, hi, model=model)  # an unsplit domain through the same compiled problem
    assert len(model._problems) == 1  # one compiled problem served every domain


def test_refined_pre_bounds_format_and_tighter():
    net = random_fc([2, 8, 8, 8, 1], seed=6)
    lo, hi = -np.ones(2), np.ones(2)
    _, _, pre = ibp(net, torch.tensor(lo).reshape(1, -1), torch.tensor(hi).reshape(1, -1))
    ref = refined_pre_bounds(net, lo, hi)
    assert len(ref) == len(pre)
    xs = torch.rand(5000, 2, dtype=torch.float64) * 2 - 1
    acts, k = xs, 0
    for layer in net.layers:
        if not layer.affine:
            l, u = ref[k]
            assert l.shape == (1, 8) and np.all(acts.numpy() >= l - 1e-9) and np.all(acts.numpy() <= u + 1e-9)
            assert np.all(l >= pre[k][0].numpy() - 1e-12) and np.all(u <= pre[k][1].numpy() + 1e-12)
            k += 1
        acts = layer.forward(acts)
    assert np.any(ref[2][1] < pre[2][1].numpy() - 1e-6)


def test_max_net_triangle_is_loose():
    lb, ub = lp_bounds(max_net(), np.zeros(2), np.ones(2))
    assert ub[0] == pytest.approx(1.5, abs=1e-6) and ub[0] >= 1.5 - 1e-12
    assert lb[0] <= 0.0


# ---------------------------------------------------------------------------------------- multi-neuron
from relaxations.lp import lp_method_bounds  # noqa: E402
from relaxations.lp.kneuron import octahedral_directions, relu_hull_facets  # noqa: E402
from relaxations.lp.layer_hull import P1TooLarge  # noqa: E402

from conftest import random_fc  # noqa: E402


def test_max_net_multi_neuron_methods_are_exact():
    net, lo, hi = max_net(), np.zeros(2), np.ones(2)
    for method, opts in [("p1", {}), ("anderson", {}), ("mn", dict(k=2, neurons="all")), ("milp", {})]:
        lb, ub = lp_method_bounds(method, net, lo, hi, **opts)
        assert ub[0] == pytest.approx(1.0, abs=1e-6), method
        assert ub[0] >= 1.0 - 1e-12 and lb[0] <= 1e-12, method
    # groups of unstable neurons only: sound, and at most the triangle's 1.5 (the pass-through neuron with
    # l = 0 counts as unstable once IBP widens l by its rounding bound, and then the group is exact)
    lb, ub = lp_method_bounds("mn", net, lo, hi, k=2, neurons="unstable")
    assert 1.0 - 1e-12 <= ub[0] <= 1.5 + 1e-6


def test_valley_p1_off_by_T():
    T = 1.0
    net, lo, hi = valley_net(T), -np.ones(1), np.ones(1)
    xs = torch.linspace(-1, 1, 20001, dtype=torch.float64).reshape(-1, 1)
    assert net(xs).min().item() >= T - 1e-9
    mlb, _ = milp_bounds(net, lo, hi)
    assert mlb[0] == pytest.approx(T, abs=1e-5)
    plb, _ = lp_method_bounds("p1", net, lo, hi)
    assert abs(plb[0]) < 1e-6  # the phantom point (1, 1/2): off by T
    # a single split at the kink z = 0 makes P1 exact (THEORY.md, completeness by partitioning)
    for phase in (-1, 1):
        splits = [np.array([0, phase], np.int8), np.zeros(4, np.int8)]
        slb, _ = lp_method_bounds("p1", net, lo, hi, splits=splits)
        assert slb[0] == pytest.approx(T, abs=1e-6) and slb[0] <= T + 1e-9


def test_p1_refuses_large_layers():
    with pytest.raises(P1TooLarge):
        lp_method_bounds("p1", random_fc([3, 20, 1], seed=0), -np.ones(3), np.ones(3), max_unstable=4)


def test_relu_hull_facets_contain_graph_and_are_tight():
    rng = np.random.default_rng(1)
    D = octahedral_directions(3)
    W = rng.normal(size=(3, 3))
    beta = np.abs(D @ W).sum(axis=1)  # exact support function of {W x : x in [-1, 1]^3}
    A, b = relu_hull_facets(D, beta)
    z = rng.uniform(-1, 1, size=(20000, 3)) @ W.T
    pts = np.hstack([z, np.maximum(z, 0)])
    assert np.all(pts @ A.T <= b + 1e-12)
    # tight: every facet is (nearly) touched by the graph over the polytope's vertices
    corners = np.array(np.meshgrid(*[[-1, 1]] * 3)).reshape(3, -1).T @ W.T
    assert np.all(b - (np.hstack([corners, np.maximum(corners, 0)]) @ A.T).max(axis=0) >= -1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ordering_triangle_kneuron_p1_exact(seed):
    net = random_fc([2, 5, 5, 2], seed=seed)
    lo, hi = -np.ones(2), np.ones(2)
    ys = _samples(net, lo, hi)
    res = {m: lp_method_bounds(m, net, lo, hi, **o) for m, o in
           [("lp", {}), ("mn", dict(k=3)), ("p1", {}), ("anderson", {}), ("milp", {})]}
    tol = 1e-7
    for a, b in [("lp", "mn"), ("mn", "p1"), ("p1", "milp"), ("lp", "anderson"), ("anderson", "milp")]:
        assert np.all(res[a][0] <= res[b][0] + tol), (a, b, res[a][0], res[b][0])
        assert np.all(res[a][1] >= res[b][1] - tol), (a, b)
    for m in ("lp", "mn", "p1", "anderson"):
        assert np.all(res[m][0] <= ys.min(0)) and np.all(res[m][1] >= ys.max(0))
    # the multi-neuron relaxations do strictly improve on the triangle somewhere
    gain = (res["mn"][0] - res["lp"][0]).sum() + (res["lp"][1] - res["mn"][1]).sum()
    assert gain > 1e-4


@pytest.mark.slow  # 7-17 s a case
@pytest.mark.parametrize("seed", [10, 12])
def test_kneuron_never_looser_than_triangle_deeper(seed):
    net = random_fc([3, 8, 8, 8, 2], seed=seed)
    lo, hi = -np.ones(3), np.ones(3)
    C = np.array([[1.0, -1.0]])
    tl, tu = lp_method_bounds("lp", net, lo, hi, C=C)
    kl, ku = lp_method_bounds("mn", net, lo, hi, C=C, k=3, overlap=1)
    ml, mu = milp_bounds(net, lo, hi, C=C)
    assert kl[0] >= tl[0] - 1e-9 and ku[0] <= tu[0] + 1e-9
    assert kl[0] <= ml[0] + 1e-9 and ku[0] >= mu[0] - 1e-9
