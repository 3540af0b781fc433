"""Branch and bound: complete verdicts equal to the exact MILP's, with both kinds of branching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bnb.config import Config
from bnb.engine.context import Stats
from bnb.engine.domains import InputDomains, PieceDomains, ReluDomains
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.engine.store import DomainStore
from bnb.io.spec import Polytope
from bnb.results import Counterexample
from bnb.timing import Deadline
from relaxations.milp import milp_bounds

from conftest import pre_activations, random_fc
from proof_only_runs import NOT_PROVEN, REL, DomainBoundCheck, decide, exact_min, margins, proof_only, witness_cloud

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)

D = torch.float64




def _validate(net, poly):
    """Stand-in for the ONNX replay: accept a point only if the float64 network really violates."""
    def check(xs):
        y = net(torch.tensor(xs, dtype=D)).numpy()
        m = poly.margin(y)
        i = int(np.argmin(m))
        return Counterexample(xs[i], y[i], 0, 0, float(m[i])) if m[i] <= 0 else None
    return check


def _cfg(branching, **bab):
    cfg = Config()
    cfg.general.dtype = "float64"
    cfg.bab.branching = branching
    cfg.bab.batch_size = 64
    cfg.bounds.alpha_iters = 10
    for k, v in bab.items():
        setattr(cfg.bab, k, v)
    return cfg


CASES = [([2, 8, 8, 1], 0), ([3, 10, 10, 1], 1), ([2, 12, 1], 2), ([4, 8, 8, 8, 1], 3)]


# the ACAS Xu set-up: look-ahead between two rules, children switched to alpha-CROWN after the first branch
ACAS_LIKE = dict(input_heuristic="mixed", input_lookahead=2, input_alpha_after=1, input_alpha_iters=5)


def _make(branching):
    return {"input-acas": lambda: _cfg("input", **ACAS_LIKE),
            "relu-lookahead": lambda: _cfg("relu", relu_lookahead=3),
            "relu-retighten": lambda: _cfg("relu", retighten_depth=4),
            "relu-deepsplit": lambda: _cfg("relu", relu_heuristic="deepsplit"),
            "relu-each": lambda: _cfg("relu", polytopes="each"),
            "input-each": lambda: _cfg("input", polytopes="each"),
            }.get(branching, lambda: _cfg(branching))()


def _below(t):
    return [Polytope(np.array([[1.0]]), np.array([t]))]  # violated where y <= t


VIOLATED_S = 0.3  # deadline of a proof-only run on a violated property (input splitting never ends on one)


@pytest.mark.parametrize("branching", ["input", "relu", "input-acas", "relu-lookahead", "relu-retighten",
                                       "relu-deepsplit"])
@pytest.mark.parametrize("widths,seed", CASES)
def test_verdict_equals_milp(widths, seed, branching, monkeypatch):
    """Property "output >= t", against the exact MILP minimum ``opt`` and its witness value ``w``
    (tests/proof_only_runs.py). In proof-only mode: never unsat at ``w + max(1e-3 |opt|, 1e-3)`` nor at
    ``w + 1e-6`` (violated: unknown or timeout only), and unsat at ``opt - max(1e-3 |opt|, 1e-3)`` under input
    splitting (also at ``opt - 1e-6`` with the plain heuristic: boxes shrink until CROWN is exact up to
    rounding), at ``opt - max(2e-3 |opt|, 2e-3)`` under ReLU splitting (a fully split domain is bounded by
    beta-CROWN's few iterations, not exactly: at 1e-3, [4, 8, 8, 8, 1] with look-ahead ends unknown). With
    falsification on (the attack before bounding off): sat 0.02 above, the point re-evaluated in the box. Every
    bound computed on the way is checked against 2,000 sampled points (half near the minimiser)."""
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    check = DomainBoundCheck(monkeypatch, net, witness_cloud(o, lo, hi))
    rel, tiny = margins(o.opt)
    holding = [margins(o.opt, 2 * REL)[0]] if branching.startswith("relu") else [rel]
    holding += [tiny] if branching == "input" else []
    for m in holding:
        assert decide(net, lo, hi, _below(o.opt - m), proof_only(_make(branching)), 60) == "unsat", (m, o)
    for m in (rel, tiny):
        status = decide(net, lo, hi, _below(o.witness + m), proof_only(_make(branching)), VIOLATED_S)
        assert status in NOT_PROVEN, (m, o, status)
    t = o.witness + 0.02
    cfg = _make(branching)
    cfg.attack.enabled = False
    status, ce = run_bab(net, torch.tensor(lo), torch.tensor(hi), _below(t), engine_options(cfg), Deadline(60),
                         _validate(net, _below(t)[0]), Stats())
    assert status == "sat", (widths, seed, branching, t, o)
    y = net(torch.tensor(ce.x, dtype=D)[None])[0].numpy()  # the point itself, re-evaluated, lies in the box
    assert np.all(ce.x >= lo) and np.all(ce.x <= hi) and y[0] <= t
    assert check.checked > 1000  # the bounds of many (domain, point) pairs were compared


@pytest.mark.parametrize("branching", ["input", "relu", "input-each", "relu-each"])
def test_disjunction_of_polytopes(branching):
    """Two outputs, two polytopes: unsat needs both refuted (proof-only, each threshold ``max(1e-3 |opt|, 1e-3)``
    beyond its exact optimum); a third polytope reachable by the same margin: never unsat in proof-only mode,
    and sat with falsification on."""
    net = random_fc([2, 10, 10, 2], 7)
    lo, hi = -np.ones(2), np.ones(2)
    o0, o1 = exact_min(net, lo, hi, [1.0, 0.0]), exact_min(net, lo, hi, [0.0, -1.0])  # min y0, -max y1
    m0, m1 = margins(o0.opt)[0], margins(o1.opt)[0]
    safe = [Polytope(np.array([[1.0, 0.0]]), np.array([o0.opt - m0])),
            Polytope(np.array([[0.0, -1.0]]), np.array([o1.opt - m1]))]
    assert decide(net, lo, hi, safe, proof_only(_make(branching)), 60) == "unsat"
    r2 = exact_min(net, lo, hi, [0.0, 1.0])
    unsafe = safe + [Polytope(np.array([[0.0, 1.0]]), np.array([r2.witness + margins(r2.opt)[0]]))]
    assert decide(net, lo, hi, unsafe, proof_only(_make(branching)), VIOLATED_S) in NOT_PROVEN
    t = r2.witness + 0.05
    unsafe[2] = Polytope(np.array([[0.0, 1.0]]), np.array([t]))
    status, ce = run_bab(net, torch.tensor(lo), torch.tensor(hi), unsafe, engine_options(_make(branching)),
                         Deadline(60), _validate(net, unsafe[2]), Stats())
    assert status == "sat"
    y = net(torch.tensor(ce.x, dtype=D)[None])[0].numpy()
    assert np.all(ce.x >= lo) and np.all(ce.x <= hi) and y[1] <= t


def _versus_first(net, lo, hi, rel):
    """Polytopes "y_j >= y_0 + d_j" (violated where ``y_0 - y_j <= d_j``), j = 1 .. n_out - 1, each with ``d_j``
    the exact minimum of ``y_0 - y_j`` less ``max(rel |opt|, rel)`` (unreachable), as a robustness property's
    "another class wins"; with the exact optima."""
    polys, optima = [], []
    for j in range(1, net.out_size):
        c = np.zeros(net.out_size)
        c[0], c[j] = 1.0, -1.0
        o = exact_min(net, lo, hi, c)
        polys.append(Polytope(c[None], np.array([o.opt - margins(o.opt, rel)[0]])))
        optima.append((c, o))
    return polys, optima


@pytest.mark.parametrize("seed", [0, 7])
def test_each_polytope_has_its_own_tree(seed, monkeypatch):
    """``bab.polytopes: each`` on a three-polytope property 2e-3 beyond the exact optima: proof-only unsat, with
    one tree per polytope the root leaves open (the log) and every bound of the run checked against sampled
    points; one polytope moved to just reachable: never unsat; moved 0.05 inside: sat, the point replayed; with a
    proof log, the same trees, each under a root node of its own. 40 beta steps per child: with 10,
    seeds 3 and 8 end unknown in both modes (fully split domains left unverified)."""
    from bnb.engine.prooflog import ProofLog
    net = random_fc([3, 12, 12, 4], seed)
    lo, hi = -np.ones(3), np.ones(3)
    polys, optima = _versus_first(net, lo, hi, 2 * REL)
    check = DomainBoundCheck(monkeypatch, net, np.concatenate([witness_cloud(o, lo, hi) for _, o in optima]))
    lines = []
    t = lambda a: torch.as_tensor(a, dtype=D)  # noqa: E731
    each = lambda: _cfg("relu", polytopes="each", beta_iters=40)  # noqa: E731
    status, _ = run_bab(net, t(lo), t(hi), polys, engine_options(proof_only(each())), Deadline(60), None, Stats(),
                        lines.append)
    assert status == "unsat" and check.checked > 1000
    left = [int(m.split()[-2]) for m in lines if "refuted at the root" in m]
    trees = left[0] if left else len(polys)  # one per polytope the root leaves open
    said = [int(m.split()[0]) for m in lines if "trees, one per polytope" in m]
    assert said == ([trees] if trees > 1 else []), lines
    # just reachable: the witness of the last polytope's optimum, plus a margin
    c, o = optima[-1]
    reach = polys[:-1] + [Polytope(c[None], np.array([o.witness + margins(o.opt)[0]]))]
    assert decide(net, lo, hi, reach, proof_only(each()), VIOLATED_S) in NOT_PROVEN
    reach[-1] = Polytope(c[None], np.array([o.witness + 0.05]))
    cfg = each()
    cfg.attack.enabled = False
    status, ce = run_bab(net, t(lo), t(hi), reach, engine_options(cfg), Deadline(60), _validate(net, reach[-1]),
                         Stats())
    assert status == "sat"
    assert np.all(ce.x >= lo) and np.all(ce.x <= hi) and c @ net(t(ce.x)[None])[0].numpy() <= o.witness + 0.05
    proof = ProofLog([12, 12], t(lo), t(hi), polys, "relu")
    status, _ = run_bab(net, t(lo), t(hi), polys, engine_options(proof_only(each())), Deadline(60), None, Stats(),
                        proof=proof)
    assert status == "unsat" and len(proof.roots) == trees and proof.active


def test_deepsplit_gets_the_networks_links(monkeypatch):
    """With ``relu_heuristic: deepsplit`` the engine hands the heuristic the dense weights between ReLU layers
    (without them the rule falls back to babsr), and the search proves a property 1e-2 below the exact minimum."""
    from heuristics import register, registry, resolve
    net = random_fc([3, 10, 10, 10, 1], 4)
    builtin, seen = resolve("relu", "deepsplit"), []

    def spy(batch):
        seen.append(batch.links)
        return builtin(batch)
    monkeypatch.setattr(registry, "_REGISTERED", {"input": {}, "relu": {}})
    register("relu", "deepsplit")(spy)
    lo, hi = -np.ones(3), np.ones(3)
    o = exact_min(net, lo, hi)
    status = decide(net, lo, hi, _below(o.opt - 1e-2), proof_only(_cfg("relu", relu_heuristic="deepsplit")), 60)
    assert status == "unsat" and seen, (status, len(seen))
    links = seen[0]
    weights = [layer.weight for layer in net.layers if hasattr(layer, "weight")]
    assert links[0] is None and len(links) == 3 and len(weights) == 4
    for link, w in zip(links[1:], weights[1:3]):
        assert torch.equal(link, w)


def test_statistics_are_reported():
    net = random_fc([3, 10, 10, 1], 1)
    lo, hi = -np.ones(3), np.ones(3)
    exact, _ = milp_bounds(net, lo, hi)
    stats = Stats()
    poly = Polytope(np.array([[1.0]]), np.array([exact[0] - 0.01]))
    status, _ = run_bab(net, torch.tensor(lo), torch.tensor(hi), [poly], engine_options(_cfg("relu")), Deadline(60),
                        lambda xs: None, stats)
    assert status == "unsat"
    assert stats["branches"] > 0 and stats["domains_bounded"] > stats["branches"]
    assert stats["max_queue"] >= 1 and stats["time_bounding"] > 0


def test_timeout_raises():
    from bnb.timing import VerificationTimeout
    net = random_fc([4, 16, 16, 16, 1], 5)
    lo, hi = -np.ones(4), np.ones(4)
    poly = Polytope(np.array([[1.0]]), np.array([-1e-9]))  # needs a long search
    with pytest.raises(VerificationTimeout):
        run_bab(net, torch.tensor(lo), torch.tensor(hi), [poly], engine_options(_cfg("input", batch_size=2)),
                Deadline(0.5), lambda xs: None, Stats())


def test_domain_store_pop_order():
    store = DomainStore()
    store.push(PieceDomains(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([0.0, 5.0, 1.0]), torch.tensor([30, 10, 20])))
    store.push(PieceDomains(torch.tensor([0.5]), torch.tensor([2.0]), torch.tensor([5])))
    best = store.pop(2, "score")
    assert isinstance(best, PieceDomains) and sorted(best.piece.tolist()) == [5, 10]
    deep = store.pop(1, "depth")
    assert deep.piece.tolist() == [20]
    assert len(store) == 1 and store.pop(5).piece.tolist() == [30]
    with pytest.raises(TypeError):
        store.push(ReluDomains(*([torch.zeros(1)] * 4), *([[]] * 6)))


def test_input_bab_answers_unknown_when_boxes_reach_resolution():
    """y = x on [0, 1] against "y <= 0": violated at x = 0 alone. With a validator that accepts nothing (no
    counterexample can be replayed) the leftmost box is never proven, bisection stops at its floor, and the
    answer is unknown: never a loop until the timeout and never unsat. Against "y <= -1e-13" the property
    holds and the rigorous bound proves it."""
    from relaxations.network import Network
    lin = torch.nn.Linear(1, 1).double()
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.zero_()
    net = Network.from_torch(torch.nn.Sequential(lin), (1,))
    cfg = _cfg("input")
    cfg.attack.enabled = False
    stats = Stats()
    lo, hi = torch.tensor([0.0], dtype=D), torch.tensor([1.0], dtype=D)
    status, _ = run_bab(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([0.0]))], engine_options(cfg), Deadline(60),
                        lambda xs: None, stats)
    assert status == "unknown" and stats["undecided_domains"] >= 1
    assert run_bab(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([-1e-13]))], engine_options(cfg), Deadline(60),
                   lambda xs: None, Stats())[0] == "unsat"


def test_children_bound_only_their_open_rows():
    """Children of a ReLU split bound only the rows whose polytope the parent left open, each (child, row) as
    its own unit: the open rows get the bounds that bounding every row of the children gives, the refuted
    ones keep the parent's bound, and no row is bounded twice."""
    from bnb.engine.context import SearchContext
    from bnb.engine.rows import Rows
    from bnb.engine.strategies.relu_split import bound_open_rows, relu_children
    from relaxations.methods import bound_rows
    from relaxations.state import DomainState

    net = random_fc([3, 10, 10, 3], 4)
    lo, hi = -torch.ones(1, 3, dtype=D), torch.ones(1, 3, dtype=D)
    exact_lo, _ = milp_bounds(net, -np.ones(3), np.ones(3))
    # row 0 refuted far below its minimum; rows 1 and 2 open, just below theirs
    polys = [Polytope(np.eye(3)[j:j + 1], np.array([exact_lo[j] - (5.0 if j == 0 else 0.01)])) for j in range(3)]
    cfg = _cfg("relu")
    rows = Rows(polys, 3, D, lo.device)
    r = bound_rows(net, DomainState(lo, hi), rows.C, "crown")
    assert bool(rows.settled(r.lb, None, 0.0)[0, 0]) and not bool(rows.settled(r.lb, None, 0.0)[0, 1:].any())
    L = len(r.pre_bounds)
    dom = ReluDomains(score=torch.zeros(1, dtype=D), depth=torch.zeros(1), row=torch.zeros(1, dtype=torch.long),
                      lb=r.lb, splits=[torch.zeros_like(l, dtype=torch.int8) for l, _ in r.pre_bounds],
                      pre_lower=[l for l, _ in r.pre_bounds], pre_upper=[u for _, u in r.pre_bounds],
                      coeffs=[c[:, 0] for c in r.relu_coeffs],
                      alphas=[c.new_full((1, 3, l.shape[1]), 0.5) for c, (l, _) in zip(r.relu_coeffs, r.pre_bounds)],
                      betas=[torch.zeros(1, 3, l.shape[1], dtype=D) for l, _ in r.pre_bounds])
    assert len(dom.splits) == L
    l0, u0 = r.pre_bounds[0]
    pos = torch.nonzero((l0[0] < 0) & (u0[0] > 0)).flatten()[:1]
    child = relu_children(dom, pos, [l.shape[1] for l, _ in r.pre_bounds])
    stats = Stats()
    ctx = SearchContext(net, rows, engine_options(cfg), Deadline(60), lambda xs: None, stats, lambda m: None, lo, hi)
    units = bound_open_rows(ctx, child)
    ctx.stats = Stats()
    full = ctx.bound(child.state(lo, hi), "beta", cfg.bab.beta_iters, False, child.lb)
    assert stats["rows_bounded"] == 4 and stats["domains_bounded"] == 2
    assert torch.equal(units.lb[:, 0], child.lb[:, 0])
    assert torch.allclose(units.lb[:, 1:], torch.maximum(full.lb, child.lb)[:, 1:], rtol=0, atol=1e-9)
    assert torch.equal(units.infeasible, full.infeasible)


def test_ibp_root_proven_by_the_crown_start_of_relu_splitting():
    """With IBP at the root, ReLU splitting starts from a CROWN bound; when that bound already refutes every
    polytope the box is decided there (it used to be pushed as an open domain whose children had no open row
    left, an internal error)."""
    from relaxations.crown import crown
    from relaxations.ibp import ibp
    from relaxations.state import DomainState
    net = random_fc([3, 10, 10, 2], 5)
    lo, hi = -torch.ones(3, dtype=D), torch.ones(3, dtype=D)
    c = crown(net, DomainState(lo[None], hi[None]), torch.eye(2, dtype=D)).lb[0]
    i = ibp(net, lo[None], hi[None])[0][0]
    polys = [Polytope(np.eye(2)[j:j + 1], np.array([float(c[j]) - 1e-3])) for j in range(2)]
    assert float(i[0]) < float(c[0]) - 1e-3 or float(i[1]) < float(c[1]) - 1e-3  # IBP alone does not prove it
    cfg = _cfg("relu")
    cfg.bounds.method = "ibp"
    stats = Stats()
    status, _ = run_bab(net, lo, hi, polys, engine_options(cfg), Deadline(60), lambda xs: None, stats)
    assert status == "unsat" and stats.get("branches", 0) == 0


def test_domain_store_keeps_per_layer_lists():
    """Fields that are lists (one tensor per ReLU layer, None where a layer has none) come back as pushed."""
    store = DomainStore()
    z = torch.zeros(3, 1)
    store.push(InputDomains(score=torch.tensor([3.0, 1.0, 2.0]), depth=torch.zeros(3), lower=z, upper=z + 1,
                            refutation=z, coef=torch.zeros(3, 1, 1),
                            pre_lower=[torch.arange(6.0).reshape(3, 2), torch.arange(3.0)[:, None]],
                            pre_upper=[None, torch.ones(3, 4)], node=torch.arange(3)))
    dom = store.pop(2)
    assert dom.score.tolist() == [1.0, 2.0] and dom.pre_lower[0].tolist() == [[2.0, 3.0], [4.0, 5.0]]
    assert dom.pre_lower[1].tolist() == [[1.0], [2.0]] and dom.pre_upper[0] is None and dom.pre_upper[1].shape == (2, 4)
    assert len(store) == 1 and store.pop(5).pre_lower[0].tolist() == [[0.0, 1.0]]


def test_retighten_children_bounds_hold_and_tighten():
    """Children that re-bound their intermediate bounds with their split phases (bab.retighten_depth): every
    sampled point of a child's domain (the box, the split phases) lies within them, and fixing a first-layer
    neuron tightens some later neuron's bounds."""
    from bnb.engine.strategies.relu_split import relu_children, retighten
    from relaxations.crown import intermediate_bounds
    from relaxations.state import DomainState
    net = random_fc([3, 12, 12, 12, 1], 5)
    lo, hi = -torch.ones(1, 3, dtype=D), torch.ones(1, 3, dtype=D)
    relax = intermediate_bounds(net, DomainState(lo, hi))
    pl, pu = [r.l for r in relax], [r.u for r in relax]
    unstable = torch.nonzero((pl[0][0] < 0) & (pu[0][0] > 0)).flatten()
    assert unstable.numel() >= 2
    k = unstable.numel()
    none = [torch.zeros(k, 1)] * len(pl)
    dom = ReluDomains(score=torch.zeros(k), depth=torch.zeros(k), row=torch.zeros(k), lb=torch.zeros(k, 1),
                      splits=[torch.zeros(k, p.shape[1], dtype=torch.int8) for p in pl],
                      pre_lower=[p.expand(k, -1).clone() for p in pl], pre_upper=[p.expand(k, -1).clone() for p in pu],
                      coeffs=none, alphas=none, betas=none)
    child = relu_children(dom, unstable, [p.shape[1] for p in pl])  # every unstable first-layer neuron, both ways
    before = [(l.clone(), u.clone()) for l, u in zip(child.pre_lower, child.pre_upper)]
    assert retighten(net, child, lo, hi, 1) == 2 * k
    x = lo + (hi - lo) * torch.rand(200000, 3, dtype=D, generator=torch.Generator().manual_seed(0))
    z = pre_activations(net, x)
    for c in range(2 * k):
        inside = torch.ones(x.shape[0], dtype=torch.bool)
        for zi, s in zip(z, child.splits):
            inside &= ((s[c] > 0) & (zi < 0) | (s[c] < 0) & (zi > 0)).sum(dim=1) == 0
        assert int(inside.sum()) > 100
        for zi, l, u in zip(z, child.pre_lower, child.pre_upper):
            assert bool((zi[inside] >= l[c]).all()) and bool((zi[inside] <= u[c]).all())
    for (l0, u0), l, u in zip(before, child.pre_lower, child.pre_upper):
        assert bool((l >= l0).all()) and bool((u <= u0).all())
    gain = sum(float(((u0 - l0) - (u - l)).sum()) for (l0, u0), l, u in zip(before[1:], child.pre_lower[1:],
                                                                            child.pre_upper[1:]))
    assert gain > 1e-3
