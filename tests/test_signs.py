"""Sign refinement of near-stable neurons (``bounds.sign_refine``, :mod:`bnb.engine.signs`): an exact MILP's hint,
proven by branch and bound on the network cut before the layer before any bound changes. The refined bounds
contain sampled pre-activations and agree with each fixed neuron's exact MILP range; a wrong hint never fixes a
neuron; a sign that sampled points contradict is never proven; verdicts with the option equal the MILP's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import bnb.engine.signs as signs
import relaxations.lp.sign_hint as hints
from bnb.config import Config
from bnb.engine.context import Stats
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.io.spec import Polytope
from bnb.timing import Deadline
from relaxations.lp.sign_hint import HINT_ACTIVE, HINT_BOTH, HINT_INACTIVE, prefix_milp, sign_hint
from relaxations.milp import milp_bounds
from relaxations.network import Network
from relaxations.optimize import optimized
from relaxations.state import DomainState

from conftest import pre_activations, random_fc
from proof_only_runs import (
    NOT_PROVEN,
    DomainBoundCheck,
    decide,
    exact_min,
    proof_only,
    relu_bab_config,
    thresholds,
    witness_cloud,
)

# measured: 7 of 9 near-stable neurons of layers 1-2 fixed ([4, 16, 16, 16, 3], seed 1), 6 of 6 on seed 0
NET = ([4, 16, 16, 16, 3], 1)


def _setup(widths, seed, layers=3):
    net = random_fc(widths, seed)
    lo, hi = -torch.ones(widths[0], dtype=net.dtype), torch.ones(widths[0], dtype=net.dtype)
    alpha = optimized(net, DomainState(lo[None], hi[None]), torch.eye(widths[-1], dtype=net.dtype), iters=20)
    cfg = Config()
    cfg.bounds.sign_refine, cfg.bounds.sign_layers = True, layers
    return net, lo, hi, alpha.pre_bounds, engine_options(cfg)


def _exact_range(net, lo, hi, i, big_m, neurons=None):
    """Exact min and max of the pre-activations ``neurons`` (default all) of ReLU layer ``i`` (MILP of the network
    cut before it), each ``(len(neurons),)``."""
    head = Network(net.layers[:net.relu_indices()[i]], net.in_shape)
    C = np.eye(head.out_size)[neurons if neurons is not None else slice(None)]
    return milp_bounds(head, lo.numpy(), hi.numpy(), C=C, pre_bounds=[(l.numpy(), u.numpy()) for l, u in big_m])


@pytest.mark.fast
def test_near_stable_orders_by_closeness_and_keeps_only_unstable():
    l = torch.tensor([-1.0, -0.1, 0.5, -3.0, -0.01, -2.0])
    u = torch.tensor([1.0, 3.0, 2.0, -1.0, 5.0, 0.1])
    assert signs.near_stable(l, u, 0.25, 10) == [4, 1, 5]  # ratios 0.002, 0.032, 0.048; 0 is 0.5, 2-3 stable
    assert signs.near_stable(l, u, 0.25, 2) == [4, 1]


@pytest.mark.slow  # ~15 s
def test_refined_bounds_fix_neurons_that_the_exact_milp_confirms():
    """Neurons are fixed (the test has teeth); every refined bound holds at 20,000 sampled points; each fixed
    neuron's exact MILP range lies on its side of 0; nothing else changes."""
    net, lo, hi, pre, opts = _setup(*NET, layers=2)
    stats = Stats()
    new, fixed = signs.refine_signs(run_bab, net, lo, hi, pre, opts, stats, Deadline(120))
    assert fixed >= 5 and stats["sign_fixed"] == fixed and stats["sign_hinted"] >= fixed
    g = torch.Generator().manual_seed(0)
    x = lo + (hi - lo) * torch.rand(20000, lo.numel(), generator=g, dtype=lo.dtype)
    for (l0, u0), (l, u), z in zip(pre, new, pre_activations(net, x)):
        assert bool((l >= l0).all()) and bool((u <= u0).all())
        assert bool((z >= l).all()) and bool((z <= u).all())
    seen = 0
    for i in range(1, len(pre)):
        changed_l = torch.nonzero(new[i][0][0] != pre[i][0][0]).flatten().tolist()
        changed_u = torch.nonzero(new[i][1][0] != pre[i][1][0]).flatten().tolist()
        if not changed_l and not changed_u:
            continue
        zmin, zmax = _exact_range(net, lo, hi, i, new[:i], changed_l + changed_u)
        for k, j in enumerate(changed_l):
            assert float(new[i][0][0, j]) == 0.0 and zmin[k] >= -1e-7, (i, j, zmin[k])
        for k, j in enumerate(changed_u, start=len(changed_l)):
            assert float(new[i][1][0, j]) == 0.0 and zmax[k] <= 1e-7, (i, j, zmax[k])
        seen += len(changed_l) + len(changed_u)
    assert seen == fixed


def test_a_wrong_hint_never_fixes_a_neuron(monkeypatch):
    """The hint is only a hint: with a solver that always answers the opposite of the truth (and "stable" for a
    neuron that takes both signs), the proofs fail and no bound changes."""
    real = hints.sign_hint

    def liar(milp, j, sign, time_limit=2.0):
        hint, seconds = real(milp, j, sign, time_limit)
        return {HINT_ACTIVE: HINT_INACTIVE, HINT_INACTIVE: HINT_ACTIVE}.get(hint, HINT_ACTIVE), seconds

    monkeypatch.setattr(hints, "sign_hint", liar)
    monkeypatch.setattr(signs, "SAMPLES", 1)  # let candidates through to the lying hint
    monkeypatch.setattr(signs, "PROOF_SECONDS", 0.5)
    net, lo, hi, pre, opts = _setup(*NET)
    opts = type(opts)(**{**vars(opts), "root": type(opts.root)(**{**vars(opts.root), "sign_time": 30.0})})
    stats = Stats()
    new, fixed = signs.refine_signs(run_bab, net, lo, hi, pre, opts, stats, Deadline(120))
    assert stats["sign_hinted"] >= 5 and fixed == 0 and new is pre


@pytest.mark.slow  # ~10 s
def test_a_sign_that_samples_contradict_is_never_proven():
    """``prove_sign`` on neurons that sampled points show on both sides of 0, for both signs: never True."""
    net, lo, hi, pre, opts = _setup(*NET)
    g = torch.Generator().manual_seed(1)
    x = lo + (hi - lo) * torch.rand(4000, lo.numel(), generator=g, dtype=lo.dtype)
    zs = pre_activations(net, x)
    tried = 0
    for i in (1, 2):
        both = torch.nonzero((zs[i] > 0).any(dim=0) & (zs[i] < 0).any(dim=0)).flatten()
        near = torch.argsort(torch.minimum(-pre[i][0][0], pre[i][1][0])[both])  # the nearest to stable first
        head = Network(net.layers[:net.relu_indices()[i]], net.in_shape)
        for j in both[near[:2]].tolist():
            for s in (1, -1):
                assert not signs.prove_sign(run_bab, head, lo, hi, j, s, opts, pre[:i], 2.0), (i, j, s)
                tried += 1
    assert tried == 8


def test_sign_hints_agree_with_the_exact_range():
    """A hint "active" / "inactive" matches the exact MILP range of the neuron (within the MILP's tolerance), and
    "both" only where the range crosses 0."""
    net, lo, hi, pre, _ = _setup(*NET)
    head = Network(net.layers[:net.relu_indices()[1]], net.in_shape)
    zmin, zmax = _exact_range(net, lo, hi, 1, pre[:1])
    milp = prefix_milp(head, lo, hi, pre[:1])
    kinds = set()
    for j in torch.nonzero((pre[1][0][0] < 0) & (pre[1][1][0] > 0)).flatten().tolist():
        for s in (1, -1):
            hint, _ = sign_hint(milp, j, s, 5.0)
            kinds.add(hint)
            if hint == HINT_ACTIVE:
                assert zmin[j] >= -1e-6
            elif hint == HINT_INACTIVE:
                assert zmax[j] <= 1e-6
            elif hint == HINT_BOTH:
                assert (zmin[j] < 1e-6 if s > 0 else zmax[j] > -1e-6)
    assert HINT_BOTH in kinds and (HINT_ACTIVE in kinds or HINT_INACTIVE in kinds)


@pytest.mark.slow  # 14 s; the default suite keeps the sign proofs' own MILP and sampling checks
def test_relu_bab_with_refined_signs_matches_milp(monkeypatch):
    """Proof-only verdicts with ``bounds.sign_refine`` against the exact MILP minimum: unsat just below it, never
    unsat just above its witness; every bound of the run (the refined root and its children, and the sign
    proofs' own runs on prefix networks are not checked here) against 2,000 sampled points."""
    widths, seed = NET
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    check = DomainBoundCheck(monkeypatch, net, witness_cloud(o, lo, hi))
    for t, seconds in thresholds(o, 3):
        cfg = relu_bab_config(bounds__sign_refine=True, bounds__sign_layers=2, bounds__sign_time=4.0)
        status = decide(net, lo, hi, [Polytope(np.array([[1.0, 0.0, 0.0]]), np.array([t]))], cfg, seconds)
        assert status == "unsat" if t < o.opt else status in NOT_PROVEN, (t, o, status)
    assert check.checked > 1000


def test_sign_refinement_leaves_other_activations_alone():
    """On a network with a sigmoid layer before its ReLUs the root's bounds are indexed by activation layer, not by
    ReLU layer: the refinement is skipped (no neuron fixed, no error) on a property the root does not prove."""
    from bnb.timing import VerificationTimeout

    from proof_only_runs import no_replay
    net = Network.from_torch(torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 8),
                                                 torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                                                 torch.nn.Linear(8, 1)).double(), (3,))
    lo, hi = -np.ones(3), np.ones(3)
    x = torch.as_tensor(lo + (hi - lo) * np.random.default_rng(0).random((4000, 3)))
    t = float(net(x).min()) + 0.1  # violated: the root cannot prove it
    cfg = Config()
    cfg.general.dtype = "float64"
    cfg.bounds.sign_refine = True
    stats = Stats()
    try:
        status, _ = run_bab(net, torch.as_tensor(lo), torch.as_tensor(hi), [Polytope(np.array([[1.0]]), np.array([t]))],
                            engine_options(proof_only(cfg)), Deadline(2), no_replay, stats)
    except VerificationTimeout:
        status = "timeout"
    assert status in NOT_PROVEN and "root_score" in stats and "sign_candidates" not in stats
