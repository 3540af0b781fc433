"""Activation splitting (``bab.branching: activation``, issue 27 item 5) on small sigmoid / tanh networks, against
ground truth that does not come from the bounds: sampled points and PGD.

- every child's row bounds and intermediate bounds hold at the sampled points of the child's *region* (the box
  cut by the split constraints, tracked by the test itself: the test chooses the neuron, computes the split point
  from the parent's bounds by the rule of the issue, and knows which child is which side);
- proof-only verdicts: a threshold above a sampled value is never ``unsat``; a threshold between the root bound and
  the sampled minimum is ``unsat`` with branching and ``unknown`` with the root bound alone;
- a domain whose neurons all reached the minimum width is undecided: ``unknown``, never ``unsat``;
- ``bab.branching: auto`` takes activation splitting on a non-ReLU network with more than 16 inputs, and ReLU
  splitting still on a ReLU network.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bnb.config import Config
from bnb.engine.context import SearchContext, Stats
from bnb.engine.options import engine_options
from bnb.engine.rows import Rows, polytope_values
from bnb.engine.strategies.activation_split import ActivationSplitting
from bnb.io.spec import Polytope
from bnb.timing import Deadline
from heuristics import resolve
from heuristics.activation_split import gap, split_points
from relaxations.network import Network
from relaxations.state import DomainState

from conftest import pre_activations
from proof_only_runs import NOT_PROVEN, decide, proof_only

F64 = torch.float64


def _net(kind, widths, seed, scale=2.0):
    torch.manual_seed(seed)
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}[kind]
    mods = []
    for a, b in zip(widths[:-1], widths[1:]):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.mul_(scale)
        mods += [lin, act()]
    return Network.from_torch(torch.nn.Sequential(*mods[:-1]), (widths[0],))


def _cfg(**bab):
    cfg = proof_only(Config())
    cfg.general.dtype = "float64"
    cfg.bounds.method = "crown"
    cfg.bab.branching, cfg.bab.batch_size = "activation", 64
    for k, v in bab.items():
        setattr(cfg.bab, k, v)
    return cfg


def _sampled_min(net, lo, hi, n=40000, seed=0, steps=60):
    """The smallest first output found: ``n`` uniform points, then PGD from the 16 best."""
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, lo.numel(), generator=g, dtype=F64)
    with torch.no_grad():
        y = net(x)[:, 0]
    x = x[torch.argsort(y)[:16]].clone().requires_grad_(True)
    for _ in range(steps):
        (gr,) = torch.autograd.grad(net(x)[:, 0].sum(), x)
        with torch.no_grad():
            x -= 0.02 * (hi - lo) * gr.sign()
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    with torch.no_grad():
        return min(float(y.min()), float(net(x)[:, 0].min()))


# ------------------------------------------------------------------------------ heuristics' pieces
@pytest.mark.fast
def test_split_points_and_gaps():
    l = torch.tensor([[-2.0, 0.5, -3.0, -1e-3]], dtype=F64)
    u = torch.tensor([[1.0, 2.5, -1.0, 4.0]], dtype=F64)
    assert split_points("sigmoid", l, u).tolist() == [[0.0, 1.5, -2.0, 0.0]]  # 0 where crossing, else midpoint
    for kind in ("sigmoid", "tanh", "softplus"):
        p = split_points(kind, l, u)
        g, g1, g2 = gap(kind, l, u), gap(kind, l, p), gap(kind, p, u)
        assert bool((g >= 0).all()) and bool((g1 <= g + 1e-12).all()) and bool((g2 <= g + 1e-12).all()), kind
    # a wider saturated interval is tighter than a narrower central one for sigmoid
    assert float(gap("sigmoid", torch.tensor(6.0), torch.tensor(12.0))) < \
        float(gap("sigmoid", torch.tensor(-1.0), torch.tensor(1.0)))


# ------------------------------------------------------------------------------ children against their regions
def _strategy(net, lo, hi, polys, cfg):
    opts = engine_options(cfg)
    lo, hi = lo[None], hi[None]
    rows = Rows(polys, net.out_size, net.dtype, net.device)
    ctx = SearchContext(net, rows, opts, Deadline(60), None, Stats(), lambda m: None, lo, hi,
                        torch.Generator().manual_seed(0))
    r = ctx.bound(DomainState(lo, hi), opts.root.method, opts.root.alpha_iters, True)
    values, coef = polytope_values(rows, r, lo, hi, opts.bounds.mix_iters)
    return ActivationSplitting(ctx, r, values, coef)


@pytest.mark.fast
@pytest.mark.parametrize("kind,method,retighten", [("sigmoid", "crown", 0), ("tanh", "alpha", 0),
                                                   ("sigmoid", "alpha", 3), ("tanh", "crown", 2),
                                                   ("sigmoid", "beta", 0), ("tanh", "beta", 0), ("tanh", "beta", 2)])
def test_children_bounds_hold_on_their_regions(kind, method, retighten):
    """Five rounds of splitting random neurons: every child's row bounds are at most the rows' values, and its
    intermediate bounds contain the pre-activations, at every sampled point of its region (the box cut by the
    split constraints of its path, which the test tracks itself)."""
    net = _net(kind, [3, 8, 8, 2], 1)
    lo, hi = -torch.ones(3, dtype=F64), torch.ones(3, dtype=F64)
    x = lo + (hi - lo) * torch.rand(20000, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    with torch.no_grad():
        y, z = net(x), pre_activations(net, x)
    # thresholds far above every value: no row is ever refuted, so alpha / beta optimise every child fully
    polys = [Polytope(np.array([[1.0, 0.0]]), np.array([100.0])), Polytope(np.array([[1.0, -1.0]]), np.array([100.0]))]
    C = torch.tensor([[1.0, 0.0], [1.0, -1.0]], dtype=F64)
    strat = _strategy(net, lo, hi, polys, _cfg(activation_method=method, activation_retighten_depth=retighten,
                                               activation_alpha_iters=20))
    g = torch.Generator().manual_seed(3)
    chosen = {}

    def chooser(b):  # a random splittable neuron; the test computes its split point from the parent's bounds
        ok = torch.cat(b.ok, dim=1)
        pick = torch.multinomial(ok.double() + 1e-30, 1, generator=g)[:, 0]
        l, u = torch.cat([p[0] for p in b.pre_bounds], 1), torch.cat([p[1] for p in b.pre_bounds], 1)
        ar = torch.arange(b.n)
        ll, uu = l[ar, pick], u[ar, pick]
        chosen["pos"], chosen["p"] = pick, torch.where((ll < 0) & (uu > 0), torch.zeros_like(ll), ll + (uu - ll) / 2)
        return pick

    strat.chooser = chooser
    zs = torch.cat(z, dim=1)                                 # (S, n) every neuron's pre-activation at each point
    batch, inside = strat.root(), torch.ones(1, x.shape[0], dtype=torch.bool)
    checked = 0
    for _ in range(5):
        kids = strat.branch(batch)
        pos, p = chosen["pos"], chosen["p"]
        side = zs[:, pos].T                                  # (n, S)
        inside = torch.cat([inside & (side <= p[:, None]), inside & (side >= p[:, None])])  # "<=" halves first
        cb = kids.batch
        vals = y @ C.T                                       # (S, m)
        bad = (cb.lb[:, :, None] > vals.T[None] + 1e-9) & inside[:, None, :]
        assert not bool(bad.any()), "a child's row bound above a sampled value of its region"
        lows, ups = torch.cat(cb.pre_lower, 1), torch.cat(cb.pre_upper, 1)
        miss = ((zs[None] < lows[:, None] - 1e-9) | (zs[None] > ups[:, None] + 1e-9)).any(dim=2) & inside
        assert not bool(miss.any()), "a child's intermediate bounds miss a pre-activation of its region"
        checked += int(inside.sum())
        keep = torch.randperm(len(cb), generator=g)[:16]
        batch, inside = cb.select(keep), inside[keep]
        ok = torch.stack([o.any(dim=1) for o in strat.splittable(batch)[0]]).any(dim=0)
        batch, inside = batch.select(ok), inside[ok]
    assert checked > 20000  # the regions held points: the checks compared something


# ------------------------------------------------------------------------------ verdicts (proof-only)
CASES = [("sigmoid", 0), ("tanh", 1), ("sigmoid", 4)]


@pytest.mark.parametrize("kind,seed", CASES)
def test_verdicts_against_the_sampled_minimum(kind, seed):
    """``y_0 <= t`` reachable, ``gap-gain`` and ``beta`` children: halfway between the root bound and the sampled
    minimum (holding) ``unsat`` with activation splitting and ``unknown`` with the root bound alone; above a sampled
    value (violated) never ``unsat``."""
    net = _net(kind, [2, 6, 6, 1], seed, scale=3.0)
    lo, hi = -torch.ones(2, dtype=F64), torch.ones(2, dtype=F64)
    ymin = _sampled_min(net, lo, hi)
    root = float(_strategy(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([ymin]))], _cfg()).root().lb[0, 0])
    assert root < ymin - 1e-3, "the root bound alone is already tight: no test of branching"
    hold = [Polytope(np.array([[1.0]]), np.array([(root + ymin) / 2]))]
    cfg = _cfg(activation_heuristic="gap-gain", activation_method="beta")
    assert decide(net, lo, hi, hold, _cfg(enabled=False), 10) == "unknown"  # the root bound alone does not prove it
    assert decide(net, lo, hi, hold, cfg, 30) == "unsat", (kind, seed, root, ymin)
    for t in (ymin + 1e-3, ymin + 1e-6):                                  # violated: never unsat
        assert decide(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([t]))], cfg, 3) in NOT_PROVEN


# each case runs to its 3 s limit: two in the default tier (one per activation), the other six in the slow one
VIOLATED = [(k, s, *c) for k, s in CASES[:2]
            for c in [("interval", "beta", 0), ("gap", "beta", 3), ("gap-gain", "crown", 2), ("gap", "alpha", 0)]]


FAST_VIOLATED = [("sigmoid", 0, "interval", "beta", 0), ("tanh", 1, "gap", "beta", 3)]


@pytest.mark.parametrize("kind,seed,heuristic,method,retighten",
                         [v if v in FAST_VIOLATED else pytest.param(*v, marks=pytest.mark.slow) for v in VIOLATED])
def test_violated_is_never_unsat(kind, seed, heuristic, method, retighten):
    """Every heuristic and bounding of children: a threshold above a sampled value is never ``unsat``."""
    net = _net(kind, [2, 6, 6, 1], seed, scale=3.0)
    lo, hi = -torch.ones(2, dtype=F64), torch.ones(2, dtype=F64)
    ymin = _sampled_min(net, lo, hi)
    cfg = _cfg(activation_heuristic=heuristic, activation_method=method, activation_retighten_depth=retighten)
    for t in (ymin + 1e-3, ymin + 1e-6):
        stats = Stats()
        assert decide(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([t]))], cfg, 2, stats) in NOT_PROVEN
        assert stats.get("branches", 0) > 0


@pytest.mark.fast
def test_stuck_domains_are_unknown_never_unsat():
    """With a minimum width of 0.9 of the root interval every neuron can be split about once: the search runs out
    of splits on a violated property and must answer ``unknown`` (domains undecided), never ``unsat``."""
    net = _net("sigmoid", [2, 4, 1], 0, scale=3.0)
    lo, hi = -torch.ones(2, dtype=F64), torch.ones(2, dtype=F64)
    ymin = _sampled_min(net, lo, hi)
    stats = Stats()
    cfg = _cfg(activation_min_width=0.9)
    assert decide(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([ymin + 1e-3]))], cfg, 30, stats) == "unknown"
    assert stats["undecided_domains"] > 0 and stats["branches"] > 0


# ------------------------------------------------------------------------------ routing
@pytest.mark.fast
@pytest.mark.parametrize("kind,want", [("sigmoid", "activation"), ("relu", "relu")])
def test_auto_branching_routes_by_activation(kind, want):
    torch.manual_seed(0)
    act = torch.nn.ReLU if kind == "relu" else torch.nn.Sigmoid
    net = Network.from_torch(torch.nn.Sequential(torch.nn.Linear(17, 8), act(), torch.nn.Linear(8, 1)), (17,))
    lo, hi = -torch.ones(17, dtype=F64), torch.ones(17, dtype=F64)
    ymin = _sampled_min(net, lo, hi, n=2000, steps=10)
    cfg = _cfg(branching="auto")
    stats = Stats()
    decide(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([ymin - 1.0]))], cfg, 5, stats)
    assert stats.get("branching", "root only") in (want, "root only")
    cfg.bounds.method = "ibp"  # a loose root: branching must start
    stats = Stats()
    decide(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([ymin - 1e-2]))], cfg, 2, stats)
    assert stats["branching"] == want


@pytest.mark.fast
def test_heuristics_choose_only_splittable_neurons():
    from heuristics import ActivationBatch
    g = torch.Generator().manual_seed(0)
    l = -torch.rand(4, 5, generator=g, dtype=F64) * 3
    u = torch.rand(4, 5, generator=g, dtype=F64) * 3
    ok = torch.rand(4, 5, generator=g) > 0.5
    ok[:, 2] = True
    lam = torch.randn(4, 5, generator=g, dtype=F64)
    b = ActivationBatch([(l, u)], [lam], [ok], [split_points("tanh", l, u)], [("tanh", 0.0)], g)
    for name in ("interval", "gap", "gap-gain"):
        pos = resolve("activation", name)(b)
        assert bool(ok[torch.arange(4), pos].all()), name


@pytest.mark.fast
def test_study_names_activation_heuristics():
    from bnb.runs.study import parse_heuristics
    assert [k for _, k, _ in parse_heuristics("gap-gain,interval,activation=gap")] == ["activation"] * 3
    assert [k for _, k, _ in parse_heuristics("width,babsr,smart")] == ["relu", "relu", "input"]  # as before


@pytest.mark.fast
def test_preset_of_a_large_non_relu_network_is_activation_splitting():
    from bnb.pipeline.presets import apply
    net = _net("sigmoid", [17, 4, 2], 0)
    cfg, name, changed = apply(Config(), net)
    assert name == "activation" and cfg.bab.branching == "activation" and cfg.bab.activation_retighten_depth == 4
    assert apply(Config(), _net("sigmoid", [3, 4, 2], 0))[1] == "input"
