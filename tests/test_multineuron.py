"""Multi-neuron constraints in the batched back-substitution (mn-crown): the constraints hold on sampled points,
the bound is sound against the exact MILP, never worse than alpha-CROWN, and approaches the LP with the same
constraints; branch and bound with them gives the MILP's verdicts."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from bnb.config import Config
from bnb.engine.context import Stats
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.io.spec import Polytope
from bnb.timing import Deadline, VerificationTimeout
from relaxations.methods import bound_rows, mn_constraints
from relaxations.milp import milp_bounds
from relaxations.multineuron import group_hull_constraints
from relaxations.optimize import optimized
from relaxations.options import BoundOptions, MultiNeuronOptions
from relaxations.state import DomainState

from conftest import random_fc
from proof_only_runs import (
    NOT_PROVEN,
    REL,
    DomainBoundCheck,
    decide,
    exact_min,
    margins,
    no_replay,
    proof_only,
    witness_cloud,
)

D = torch.float64
NETS = [([4, 16, 16, 16, 3], 0), ([4, 16, 16, 16, 3], 1), ([3, 12, 12, 2], 2)]


def _root(widths, seed, dtype=D):
    net = random_fc(widths, seed).to(dtype=dtype)
    n_in = widths[0]
    lo, hi = -torch.ones(1, n_in, dtype=dtype), torch.ones(1, n_in, dtype=dtype)
    C = torch.eye(widths[-1], dtype=dtype)
    alpha = optimized(net, DomainState(lo, hi), C, iters=100)
    return net, lo, hi, C, alpha


def _constraints(source, net, lo, hi, C, alpha):
    if source == "hull":
        return group_hull_constraints(net, lo, hi, alpha.pre_bounds, k=2)[0]
    return mn_constraints(net, lo, hi, alpha.pre_bounds, C, BoundOptions(mn=MultiNeuronOptions(cuts="anderson")))[0]


@pytest.mark.parametrize("source", ["hull", "anderson"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("widths,seed", NETS)
def test_constraints_hold_on_sampled_points(widths, seed, dtype, source):
    """Every constraint ``Pz y + Px z + Ph h + p <= 0`` (``h``: the input of the layer's affine part) holds in
    float64 at 20,000 random points of the box, for the working-dtype coefficients."""
    net, lo, hi, C, alpha = _root(widths, seed, dtype)
    cons = _constraints(source, net, lo, hi, C, alpha)
    assert any(c is not None for c in cons)
    g = torch.Generator().manual_seed(seed)
    x = (lo + (hi - lo) * torch.rand(20000, lo.shape[1], generator=g, dtype=dtype)).double()
    net64 = net.to(dtype=torch.float64)
    h, j, h_in = x, 0, x
    for layer in net64.layers:
        if not layer.affine:
            c = cons[j]
            if c is not None:
                z, y = h.reshape(len(h), -1), torch.relu(h).reshape(len(h), -1)
                viol = y @ c.Pz.double().T + z @ c.Px.double().T + c.p.double()
                if c.Ph is not None:
                    hf = h_in.reshape(len(h), -1)
                    assert bool((hf.abs() <= c.rh.double()).all())
                    viol = viol + hf @ c.Ph.double().T
                else:
                    assert source == "hull"
                assert float(viol.max()) <= 1e-12, (j, float(viol.max()))
            j += 1
            h_in = torch.relu(h)
        h = layer.forward(h)


# the 4-16-16-16-3 nets' cases take 30-45 s each: the slow tier (NETS[2] checks hull and Anderson cuts in "both")
@pytest.mark.parametrize("widths,seed,cuts", [pytest.param(*NETS[0], "hull", marks=pytest.mark.slow),
                                              pytest.param(*NETS[1], "hull", marks=pytest.mark.slow),
                                              (*NETS[2], "hull")]
                         + [pytest.param(*NETS[0], "anderson", marks=pytest.mark.slow), (*NETS[2], "both")])
def test_mn_crown_is_sound_and_not_worse_than_alpha(widths, seed, cuts):
    net, lo, hi, C, alpha = _root(widths, seed)
    mn = bound_rows(net, DomainState(lo, hi), C, "mn-crown", BoundOptions(mn=MultiNeuronOptions(cuts=cuts)),
                    iters=100)
    exact, _ = milp_bounds(net, lo[0].numpy(), hi[0].numpy())
    assert np.all(mn.lb[0].numpy() <= exact + 1e-9)
    assert torch.all(mn.lb >= alpha.lb - 1e-12)
    if seed == 0:  # a regression check on precision (measured on row 0: alpha -0.371, hull -0.307,
        # anderson -0.337, both -0.293)
        assert float(mn.lb[0, 0]) > float(alpha.lb[0, 0]) + 0.03


def _lp_with(net, lo, hi, pre, cons, C):
    """The triangle LP plus exactly these constraints (certified bounds)."""
    from relaxations.lp.triangle import fresh_domain
    model, _ = fresh_domain(net, lo[0].numpy(), hi[0].numpy(), [(l.numpy(), u.numpy()) for l, u in pre], None,
                            False, "HIGHS")
    for i, c in enumerate(cons):
        if c is None:
            continue
        rows = sp.lil_matrix((c.count, model.n_total))
        rows[:, model.z_off[i]:model.z_off[i] + c.Px.shape[1]] = c.Px.numpy()
        rows[:, model.y_off[i]:model.y_off[i] + c.Pz.shape[1]] = c.Pz.numpy()
        if c.Ph is not None:
            rows[:, model.post_slice(i - 1)] = c.Ph.numpy()
        model.add_cuts(i, rows.tocsr(), -c.p.numpy())
    return model.output_bounds(C.numpy())[0]


@pytest.mark.parametrize("widths,seed,source", [(*NETS[0], "hull"), (*NETS[1], "hull"), (*NETS[0], "anderson")])
def test_mn_crown_approaches_the_lp_with_the_same_constraints(widths, seed, source):
    """With fixed intermediate bounds and the same constraints, the optimised multipliers reach the LP optimum
    (the bound is that LP's Lagrangian dual) up to 20% (group hulls) or 30% (Anderson cuts: measured 14-25%
    on these networks in 400 steps) of the gap alpha-CROWN leaves to it, and never pass it."""
    net, lo, hi, C, alpha = _root(widths, seed)
    cons = _constraints(source, net, lo, hi, C, alpha)
    st = DomainState(lo, hi, pre_bounds=alpha.pre_bounds, alphas={"final": alpha.alphas["final"]}, constraints=cons)
    mn = optimized(net, st, C, BoundOptions(alpha_lr=0.05, gamma_lr=0.05), iters=400).lb[0].numpy()
    lp = _lp_with(net, lo, hi, alpha.pre_bounds, cons, C)
    a = alpha.lb[0].numpy()
    assert np.all(mn <= lp + 1e-7)
    tol = 0.2 if source == "hull" else 0.3
    assert np.all(lp - mn <= tol * (lp - a) + 1e-6), (mn, lp, a)


def _validator(net, t):
    """Replays candidates on ``net`` for the property ``y_0 > t``: a counterexample where ``y_0 <= t``."""
    def validate(xs):
        from bnb.results import Counterexample
        y = net(torch.tensor(xs, dtype=D)).numpy()
        i = int(np.argmin(y[:, 0]))
        return Counterexample(xs[i], y[i], 0, 0, float(y[i, 0] - t)) if y[i, 0] <= t else None
    return validate


def _cfg(**bab):
    cfg = Config()
    cfg.general.dtype = "float64"
    cfg.bounds.method = "mn-crown"
    cfg.bounds.alpha_iters = 20
    cfg.bab.branching = "relu"
    cfg.bab.batch_size = 64
    for k, v in bab.items():
        setattr(cfg.bab, k, v)
    return cfg


VIOLATED_S = 0.3  # deadline of a proof-only run on a violated property


@pytest.mark.parametrize("heuristic,where", [("babsr", "root"), ("acs", "root"), ("babsr", "children"),
                                             ("acs", "root-both"), ("babsr-gamma", "root")])
@pytest.mark.parametrize("widths,seed", [([3, 10, 10, 1], 1), ([4, 8, 8, 8, 1], 3)])
def test_relu_bab_with_constraints_matches_milp(widths, seed, heuristic, where, monkeypatch):
    """mn-crown at the root (children keep its constraints), or alpha at the root and the constraints computed
    for the children only (``bab.relu_method: mn-crown``), in proof-only mode against the exact MILP minimum
    ``opt`` and its witness value ``w`` (tests/proof_only_runs.py): unsat at ``opt - max(2e-3 |opt|, 2e-3)``
    (ReLU splitting: a fully split domain's bound is optimised, not exact, so closer thresholds may end
    unknown), never unsat at ``w + max(1e-3 |opt|, 1e-3)`` or ``w + 1e-6``. Every bound computed on the way is
    checked against 2,000 sampled points (half near the minimiser), whatever the verdict."""
    net = random_fc(widths, seed)
    n_in = widths[0]
    lo, hi = -np.ones(n_in), np.ones(n_in)
    o = exact_min(net, lo, hi)
    check = DomainBoundCheck(monkeypatch, net, witness_cloud(o, lo, hi))
    rel, tiny = margins(o.opt)
    for t, seconds in ((o.opt - margins(o.opt, 2 * REL)[0], 60), (o.witness + rel, VIOLATED_S),
                       (o.witness + tiny, VIOLATED_S)):
        poly = Polytope(np.array([[1.0]]), np.array([t]))  # violated where y <= t
        cfg = _cfg(relu_heuristic=heuristic)
        if where == "children":
            cfg.bounds.method, cfg.bab.relu_method = "alpha", "mn-crown"
        if where == "root-both":  # group hulls and Anderson cuts
            cfg.bounds.mn_cuts = "both"
        status = decide(net, lo, hi, [poly], proof_only(cfg), seconds)
        assert status == "unsat" if t < o.opt else status in NOT_PROVEN, (t, o, status)
    assert check.checked > 1000  # the bounds of many (domain, point) pairs were compared


def test_active_only_keeps_the_constraints_with_a_positive_multiplier():
    from relaxations.multineuron import LayerConstraints, active_only
    c = LayerConstraints(torch.eye(4, dtype=D), -torch.eye(4, dtype=D), torch.zeros(4, dtype=D))
    g = torch.zeros(1, 3, 4, dtype=D)
    g[0, 1, 2], g[0, 2, 0] = 0.5, 0.1  # constraints 0 and 2 are used by some row
    cons, gams = active_only([c, None, c], [g, None, torch.zeros_like(g)])
    assert cons[1] is None and gams[1] is None and cons[2] is None and gams[2] is None
    assert cons[0].count == 2 and torch.equal(cons[0].Pz, torch.eye(4, dtype=D)[[0, 2]])
    assert torch.equal(gams[0], g[..., [0, 2]])


@pytest.mark.parametrize("seed", range(4))
def test_box_max_is_the_largest_value_over_the_split_box(seed):
    """box_max against enumeration: over a box the maximum of a linear function sits at a vertex, with
    ``y = z`` on active neurons, ``y = 0`` on inactive ones and ``y`` in ``{0, u}`` (its own box) on free ones."""
    import itertools

    from relaxations.multineuron import LayerConstraints, box_max, implied_by_box
    g = torch.Generator().manual_seed(seed)
    n, nh, c, N = 3, 2, 5, 6
    cons = LayerConstraints(torch.randn(c, n, generator=g, dtype=D), torch.randn(c, n, generator=g, dtype=D),
                            torch.randn(c, generator=g, dtype=D), torch.randn(c, nh, generator=g, dtype=D),
                            torch.ones(nh, dtype=D))
    mid, rad = torch.randn(N, n, generator=g, dtype=D), torch.rand(N, n, generator=g, dtype=D)
    l, u = mid - rad, mid + rad
    l[0, 0], u[0, 0], l[1, 1], u[1, 1] = 0.0, 1.0, -1.0, 0.0  # split boundaries: active l = 0, inactive u = 0
    hl = torch.rand(N, nh, generator=g, dtype=D) - 1
    hu = hl + torch.rand(N, nh, generator=g, dtype=D)
    got = box_max(cons, l, u, hl, hu)
    for k in range(N):
        best = torch.full((c,), -float("inf"), dtype=D)
        zs = [(l[k, j].item(), u[k, j].item()) for j in range(n)]
        ys = [None if l[k, j] >= 0 else ((0.0,) if u[k, j] <= 0 else (0.0, u[k, j].item())) for j in range(n)]
        for zv in itertools.product(*zs):
            for yv in itertools.product(*[(zv[j],) if ys[j] is None else ys[j] for j in range(n)]):
                for hv in itertools.product(*[(hl[k, j].item(), hu[k, j].item()) for j in range(nh)]):
                    val = cons.Pz @ torch.tensor(yv, dtype=D) + cons.Px @ torch.tensor(zv, dtype=D) + \
                        cons.Ph @ torch.tensor(hv, dtype=D) + cons.p
                    best = torch.maximum(best, val)
        assert torch.allclose(got[k], best, atol=1e-12), (k, got[k], best)
    assert torch.equal(implied_by_box(cons, l, u, hl, hu), got <= 0)
    # without h's bounds, |h| <= rh: never below the value with them
    assert bool((box_max(cons, l, u) >= got - 1e-12).all())


def test_children_leave_out_the_constraints_their_box_implies():
    """A group's constraint stops being carried once the children's boxes imply it; the dropped multipliers
    are zero and the carried ones keep their place."""
    from bnb.engine.strategies.relu_split import live_constraints
    from relaxations.multineuron import LayerConstraints
    # y0 + y1 <= 3 over z in [-1, 2]^2: cuts the box (y0 = y1 = 2) until one neuron is split inactive
    cons = LayerConstraints(torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=D), torch.zeros(2, 2, dtype=D),
                            torch.tensor([-3.0, -1.0], dtype=D))
    pl, pu = torch.full((2, 2), -1.0, dtype=D), torch.full((2, 2), 2.0, dtype=D)
    child = SimpleNamespace(pre_lower=[pl.clone()], pre_upper=[pu.clone()])
    live, keep = live_constraints(child, [cons], torch.tensor([0, 1]), None, None)
    assert keep[0].tolist() == [0, 1]
    child.pre_upper[0][:, 1] = 0.0   # both children: neuron 1 inactive, y0 + 0 <= 3 holds on the box
    live, keep = live_constraints(child, [cons], torch.tensor([0, 1]), None, None)
    assert keep[0].tolist() == [1] and torch.equal(live[0].Pz, cons.Pz[[1]])
    child.pre_upper[0][0, 0] = 1.0   # child 0 also implies y0 <= 1; child 1 does not: still carried
    live, keep = live_constraints(child, [cons], torch.tensor([0, 1]), None, None)
    assert keep[0].tolist() == [1]
    child.pre_upper[0][1, 0] = 0.5
    live, keep = live_constraints(child, [cons], torch.tensor([0, 1]), None, None)
    assert live[0] is None and keep[0] is None


@pytest.mark.slow  # ~15 s
def test_bab_leaving_out_implied_constraints_keeps_the_milp_verdict(monkeypatch, widths=(4, 16, 16, 16, 1), seed=1):
    """Branch and bound deep enough that some children's boxes imply constraints (which they then leave out),
    in proof-only mode: proven ``max(2e-3 |opt|, 2e-3)`` below the exact minimum, and never proven
    ``max(1e-3 |opt|, 1e-3)`` or ``1e-6`` above the witness value (tests/proof_only_runs.py); every bound on the
    way checked against sampled points."""
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    check = DomainBoundCheck(monkeypatch, net, witness_cloud(o, lo, hi))
    rel, tiny = margins(o.opt)
    for t, seconds in ((o.opt - margins(o.opt, 2 * REL)[0], 60), (o.witness + rel, VIOLATED_S),
                       (o.witness + tiny, VIOLATED_S)):
        stats = Stats()
        cfg = proof_only(_cfg(relu_heuristic="babsr", batch_size=8))
        try:
            status, _ = run_bab(net, torch.tensor(lo), torch.tensor(hi), [Polytope(np.array([[1.0]]), np.array([t]))],
                                engine_options(cfg), Deadline(seconds), no_replay, stats)
        except VerificationTimeout:
            status = "timeout"
        if t < o.opt:
            assert status == "unsat", (t, o, status)
            assert stats["constraints_dropped"] > 0 and stats["branches"] > 10  # the path under test ran
        else:
            assert status in NOT_PROVEN, (t, o, status)
    assert check.checked > 1000


def test_branching_coefficients_are_taken_before_the_constraint_terms():
    """The coefficient the branching heuristics score (``coeffs`` of the back-substitution) is the one before the
    layer's constraint terms: with one hidden layer it is ``C W2`` with or without constraints, while the bound
    itself moves with them; ``babsr-gamma``'s view adds ``gamma Pz`` back (heuristics.relu_split.bound_coeffs)."""
    from heuristics.base import ReluBatch
    from heuristics.relu_split import bound_coeffs
    from relaxations.crown import final_bounds, intermediate_bounds
    from relaxations.multineuron import LayerConstraints
    net = random_fc([3, 6, 2], 4)
    lo, hi = -torch.ones(1, 3, dtype=D), torch.ones(1, 3, dtype=D)
    relax = intermediate_bounds(net, DomainState(lo, hi), rigorous=False)
    g = torch.Generator().manual_seed(0)
    cons = LayerConstraints(torch.rand(2, 6, generator=g, dtype=D), -torch.rand(2, 6, generator=g, dtype=D),
                            -torch.ones(2, dtype=D))
    C = torch.tensor([[1.0, -1.0]], dtype=D)
    gam = torch.tensor([[[0.7, 0.3]]], dtype=D)
    lb0, _, _, c0, _ = final_bounds(net, DomainState(lo, hi), C, relax, collect=True, rigorous=False)
    lb1, _, _, c1, _ = final_bounds(net, DomainState(lo, hi, constraints=[cons]), C, relax, collect=True,
                                    rigorous=False, gammas=[gam])
    w2 = C @ net.layers[-1].weight                                   # (1, 6): the output row through W2
    assert not torch.allclose(lb0, lb1)                              # the constraints entered the bound
    assert torch.allclose(c0[0][0], w2) and torch.allclose(c1[0][0], w2)
    l, u = relax[0].l, relax[0].u
    batch = ReluBatch([(l, u)], [c1[0][:, 0]], [torch.zeros(1, 6, dtype=torch.int8)], gammas=[gam[:, 0]],
                      constraints=[cons])
    assert torch.allclose(bound_coeffs(batch)[0], w2 + gam[0] @ cons.Pz)
