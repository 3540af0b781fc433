"""``bounds.mn_tighten``: mn-crown's intermediate bounds tightened layer by layer with the earlier layers'
multi-neuron constraints. The tightened bounds contain sampled pre-activations, are never looser than alpha-CROWN's,
are tighter somewhere, and stay outside the exact per-neuron MILP bounds of each layer (a MILP on the network cut
before the layer); branch and bound with them gives the MILP's verdicts in proof-only mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bnb.io.spec import Polytope
from relaxations.methods import bound_rows, mn_constraints
from relaxations.milp import milp_bounds, milp_solve
from relaxations.network import Network
from relaxations.optimize import optimized
from relaxations.options import BoundOptions, MultiNeuronOptions
from relaxations.state import DomainState

from conftest import pre_activations, random_fc
from proof_only_runs import NOT_PROVEN, DomainBoundCheck, decide, exact_min, relu_bab_config, thresholds, witness_cloud

NETS = [([4, 16, 16, 16, 3], 0), ([4, 16, 16, 16, 3], 1), ([3, 12, 12, 2], 2)]


def _opts(cuts="hull", tighten=True):
    return BoundOptions(mn=MultiNeuronOptions(cuts=cuts, tighten=tighten))


def _tightened(widths, seed, dtype, cuts):
    """The network, its box, alpha-CROWN's root bounds and the bounds mn-crown's constraints were built on."""
    net = random_fc(widths, seed).to(dtype=dtype)
    lo, hi = -torch.ones(1, widths[0], dtype=dtype), torch.ones(1, widths[0], dtype=dtype)
    C = torch.eye(widths[-1], dtype=dtype)
    alpha = optimized(net, DomainState(lo, hi), C, iters=50)
    cons, pre, _ = mn_constraints(net, lo, hi, alpha.pre_bounds, C, _opts(cuts))
    return net, lo, hi, alpha.pre_bounds, pre, cons


def _unstable(pre):
    return [int(((l[0] < 0) & (u[0] > 0)).sum()) for l, u in pre]


@pytest.mark.parametrize("cuts", ["hull", "both"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("widths,seed", NETS[1:])
def test_tightened_bounds_contain_samples_and_are_never_looser(widths, seed, dtype, cuts):
    """At 20,000 random points of the box (pre-activations in float64 from the working-dtype weights) every
    tightened bound holds; no bound is looser than alpha-CROWN's; the working dtype is kept."""
    net, lo, hi, old, pre, _ = _tightened(widths, seed, dtype, cuts)
    g = torch.Generator().manual_seed(seed)
    x = (lo + (hi - lo) * torch.rand(20000, lo.shape[1], generator=g, dtype=dtype)).double()
    zs = pre_activations(net.to(dtype=torch.float64), x)
    for (l0, u0), (l, u), z in zip(old, pre, zs):
        assert l.dtype == u.dtype == dtype and l.shape == l0.shape
        assert bool((l >= l0).all()) and bool((u <= u0).all())
        assert bool((z >= l.double()).all()) and bool((z <= u.double()).all())


def test_tightening_tightens_and_leaves_the_first_layer():
    """Measured (float64): the widths summed over layers 2-3 go from 19.68/12.76 to 16.36/10.20 on NETS[0] (all
    16/16/16 neurons stay unstable), 17.40/10.14 to 15.61/8.47 on NETS[1] (unstable 16/14/13 to 16/13/12); the
    first layer's bounds are exact for the box's affine map and stay. The tightening is real, not a no-op."""
    for widths, seed in NETS[:2]:
        net, lo, hi, old, pre, _ = _tightened(widths, seed, torch.float64, "hull")
        assert torch.equal(pre[0][0], old[0][0]) and torch.equal(pre[0][1], old[0][1])
        assert all(a <= b for a, b in zip(_unstable(pre), _unstable(old)))
        for (l0, u0), (l, u) in zip(old[1:], pre[1:]):
            assert float((u - l).sum()) < 0.92 * float((u0 - l0).sum())
    assert sum(_unstable(pre)) < sum(_unstable(old))  # NETS[1]


@pytest.mark.parametrize("widths,seed", [([4, 8, 8, 8, 2], 5), NETS[2]])
def test_tightened_bounds_are_outside_the_exact_neuron_bounds(widths, seed):
    """Each layer's tightened bounds against the exact MILP minimum and maximum of each of its neurons (the
    network cut before the layer): ``l <= min z_j`` and ``u >= max z_j`` up to the MILP's tolerance. The MILP's
    big-M bounds: its own exact interval bounds on the small network, alpha-CROWN's (untightened) on the
    three-layer one (valid bounds leave the MILP exact, and keep it to seconds)."""
    net, lo, hi, old, pre, _ = _tightened(widths, seed, torch.float64, "hull")
    for i, idx in enumerate(net.relu_indices()):
        if i == 0:
            continue
        head = Network(net.layers[:idx], net.in_shape)
        big_m = None if len(widths) < 5 else [(l.numpy(), u.numpy()) for l, u in old[:i]]
        zmin, zmax = milp_bounds(head, lo[0].numpy(), hi[0].numpy(), pre_bounds=big_m)
        l, u = pre[i][0][0].numpy(), pre[i][1][0].numpy()
        assert np.all(l <= zmin + 1e-7), (i, l - zmin)
        assert np.all(u >= zmax - 1e-7), (i, zmax - u)
        assert np.any(l > old[i][0][0].numpy()) or np.any(u < old[i][1][0].numpy())  # something was tightened



@pytest.mark.parametrize("widths,seed", [([4, 8, 8, 8, 2], 5), ([4, 8, 8, 2], 4)])
def test_tightened_bounds_hold_at_each_neurons_extreme_points(widths, seed):
    """Real points, not a solver's values: for each neuron of each layer after the first, the MILP's minimiser and
    maximiser of that neuron (the network cut before the layer) are inputs of the box; the neuron's pre-activation
    there, evaluated in float64, must lie inside its tightened bounds. Near-tight bounds meet these points, so an
    overstated re-bound shows here as well as against the MILP's optimum."""
    net, lo, hi, old, pre, _ = _tightened(widths, seed, torch.float64, "hull")
    closest = np.inf
    for i, idx in enumerate(net.relu_indices()):
        if i == 0:
            continue
        head = Network(net.layers[:idx], net.in_shape)
        res = milp_solve(head, lo[0].numpy(), hi[0].numpy())
        l, u = pre[i][0][0].numpy(), pre[i][1][0].numpy()
        for xs in (res.argmin, res.argmax):
            x = np.clip(xs, lo[0].numpy(), hi[0].numpy())  # inside the box exactly
            z = head(torch.tensor(x, dtype=torch.float64)).numpy()  # row j: every neuron at neuron j's extreme point
            zj = np.diag(z)
            assert np.all(l <= zj + 1e-12) and np.all(zj <= u + 1e-12), (i, l - zj, zj - u)
            closest = min(closest, float(np.min(np.concatenate([zj - l, u - zj]))))
    assert closest < 1e-2  # some bound is nearly tight, so the check has teeth (measured 1.5e-14 and 1.3e-3)


def test_mn_crown_reports_unstable_counts_and_is_not_worse():
    """The root result carries the unstable counts per layer before and after, and its bound is at least the
    untightened mn-crown's minus a slack for the optimiser."""
    widths, seed = NETS[2]
    net = random_fc(widths, seed)
    lo, hi = -torch.ones(1, widths[0], dtype=torch.float64), torch.ones(1, widths[0], dtype=torch.float64)
    C = torch.eye(widths[-1], dtype=torch.float64)
    off = bound_rows(net, DomainState(lo, hi), C, "mn-crown", _opts(tighten=False), iters=50)
    on = bound_rows(net, DomainState(lo, hi), C, "mn-crown", _opts(), iters=50)
    exact, _ = milp_bounds(net, lo[0].numpy(), hi[0].numpy())
    assert np.all(on.lb[0].numpy() <= exact + 1e-9)
    assert off.stats is None
    before = [int(v) for v in on.stats["mn_unstable_before"].split("/")]
    after = [int(v) for v in on.stats["mn_unstable_after"].split("/")]
    assert after == _unstable(on.pre_bounds) and sum(after) < sum(before)
    # tighter intermediate bounds pick other groups and move the optimiser: measured -0.0091/-0.1609 without,
    # -0.0025/-0.1620 with; not a guarantee of a better final bound
    assert float((on.lb - off.lb).min()) > -0.01 and float((on.lb - off.lb).sum()) > 0


@pytest.mark.parametrize("widths,seed", [([3, 10, 10, 1], 1), ([4, 8, 8, 8, 1], 3)])
def test_relu_bab_with_tightened_bounds_matches_milp(widths, seed, monkeypatch):
    """Proof-only verdicts with ``bounds.mn_tighten`` against the exact MILP minimum (as in
    tests/test_multineuron.py): unsat just below it, never unsat just above its witness; every bound of the
    run (the tightened root bounds and the children that inherit them) checked against 2,000 sampled points."""
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    check = DomainBoundCheck(monkeypatch, net, witness_cloud(o, lo, hi))
    for t, seconds in thresholds(o, 0.3):
        cfg = relu_bab_config(bounds__method="mn-crown", bounds__mn_tighten=True, bounds__alpha_iters=20)
        status = decide(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([t]))], cfg, seconds)
        assert status == "unsat" if t < o.opt else status in NOT_PROVEN, (t, o, status)
    assert check.checked > 1000
