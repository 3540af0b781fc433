"""``bab.clauses``: clauses learned from verified ReLU-split children (bnb/engine/clauses.py). Every kept clause's
region is checked against sampled points and the exact MILP; a clause whose re-verification fails never enters
the store; proof-only verdicts with clauses equal the exact MILP's; unit propagation and subsumption on
hand-built batches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import bnb.engine.clauses as clauses_mod
from bnb.config import Config
from bnb.engine.clauses import ClauseStore, admit, flat
from bnb.engine.context import SearchContext, Stats
from bnb.engine.domains import ReluDomains
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.engine.rows import Rows
from bnb.engine.strategies.relu_split import ReluSplitting
from bnb.io.spec import Polytope
from bnb.timing import Deadline, VerificationTimeout
from relaxations.milp import milp_solve
from relaxations.state import DomainState

from conftest import pre_activations, random_fc
from proof_only_runs import (
    NOT_PROVEN,
    TIGHT,
    DomainBoundCheck,
    exact_min,
    margins,
    no_replay,
    proof_only,
    witness_cloud,
)

pytestmark = pytest.mark.fast

# small networks whose holding thresholds beta-CROWN proves within seconds (measured: 8-10 branches), and whose
# violated ones branch long enough to learn, prune and propagate (the 4-layer one: 11 pruned, 108 fixed in 11 s)
NETS = [([3, 10, 10, 1], 1), ([4, 8, 8, 8, 1], 3), ([4, 10, 10, 10, 1], 2)]


def _cfg(clauses=True):
    cfg = proof_only(Config())
    cfg.general.dtype = "float64"
    cfg.bab.branching, cfg.bab.batch_size = "relu", 8
    cfg.bab.clauses, cfg.bab.clause_share = clauses, 1.0  # learn at every iteration: the feature under test
    return cfg


def _run(net, lo, hi, t, cfg, seconds):
    """``(status, stats)`` of branch and bound on "``y_0 <= t`` is reachable" in proof-only mode."""
    stats = Stats()
    tt = lambda a: torch.as_tensor(a, dtype=net.dtype)  # noqa: E731
    try:
        status, _ = run_bab(net, tt(lo), tt(hi), [Polytope(np.array([[1.0]]), np.array([t]))], engine_options(cfg),
                            Deadline(seconds), no_replay, stats)
    except VerificationTimeout:
        status = "timeout"
    return status, stats


class Recorder:
    """Installed in place of ``ClauseStore.add``: remembers every clause offered to a store (all re-verified)."""

    def __init__(self, monkeypatch):
        self.real, self.clauses = ClauseStore.add, []
        monkeypatch.setattr(ClauseStore, "add", self)

    def __get__(self, store, owner):
        return lambda new: self(store, new)

    def __call__(self, store, new):
        self.clauses.extend(new.clone())
        return self.real(store, new)


def _layer_splits(clause, sizes):
    out, at = [], 0
    for n in sizes:
        out.append(clause[at:at + n].numpy().astype(np.int8))
        at += n
    return out


def _in_region(zs, clause):
    """``(S,)`` bool: the points whose pre-activations ``zs`` (per layer ``(S, n_i)``) satisfy every literal."""
    z = torch.cat(zs, dim=1)
    s = clause.to(z.dtype)
    return ((s[None] * z >= 0) | (s[None] == 0)).all(dim=1)


@pytest.mark.parametrize("widths,seed,violated", [([4, 12, 12, 1], 5, False), (*NETS[1], True)])
def test_every_kept_clause_region_is_safe(widths, seed, violated, monkeypatch):
    """Every clause that entered a store during a run (just below the exact minimum, or on the violated threshold
    the witness + 1e-6, where the search learns near the optimum) against ground truth: the exact MILP's minimum of
    ``y_0`` over the clause's region (split at its literals) is above ``t``, or the region is empty; where it is
    not, the MILP's minimiser is a real point of the region (float64 forward pass: its phases satisfy the clause)
    with ``y_0 > t``; and 20,001 sampled points (uniform, and near the network's minimiser) whose real phases
    satisfy a clause all have ``y_0 > t``. Measured (a 4 s run of the first case): 19 clauses kept, 11 of the
    first 20 regions non-empty; the violated run's regions are all empty (phase combinations no input reaches),
    which the MILP confirms."""
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    t = o.witness + 1e-6 if violated else o.opt - margins(o.opt)[0]
    rec = Recorder(monkeypatch)
    status, stats = _run(net, lo, hi, t, _cfg(), 2)
    assert status in NOT_PROVEN if violated else status != "sat"
    assert stats.get("clauses_kept", 0) > 0 and len(rec.clauses) > 0
    x = torch.as_tensor(witness_cloud(o, lo, hi, n=20000), dtype=torch.float64)
    with torch.no_grad():
        y, zs = net(x)[:, 0], pre_activations(net, x)
    sizes = [z.shape[1] for z in zs]
    for c in rec.clauses:
        assert bool((y[_in_region(zs, c)] > t).all()), "a sampled counterexample inside a kept clause's region"
    nonempty = 0
    for c in rec.clauses[:20]:
        r = milp_solve(net, lo, hi, C=np.array([[1.0]]), splits=_layer_splits(c, sizes), solver_opts=TIGHT)
        assert r.lb[0] > t - 1e-7, (r.lb[0], t)
        if np.isfinite(r.lb[0]):
            nonempty += 1
            p = torch.as_tensor(np.clip(r.argmin[0], lo, hi))[None]
            with torch.no_grad():
                zp = pre_activations(net, p)
                assert float(net(p)[0, 0]) > t
            z = torch.cat(zp, dim=1)[0]
            assert bool(((c.double() * z >= -1e-6) | (c == 0)).all())  # the MILP's point is in the region
    assert nonempty > 0 or violated


def test_failed_reverification_keeps_nothing(monkeypatch):
    """Whole run: with the re-verification's verdict forced to "not proven", candidates are offered and every one
    is rejected; no clause is kept, nothing is pruned, and the holding threshold is still proven (without
    clauses)."""
    widths, seed = NETS[2]
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    monkeypatch.setattr(clauses_mod, "proven", lambda values, *a, **k: torch.zeros_like(values, dtype=torch.bool))
    rec = Recorder(monkeypatch)
    status, stats = _run(net, lo, hi, o.witness + 1e-6, _cfg(), 3)
    assert status in NOT_PROVEN
    assert stats["clauses_learned"] > 0 and stats["clauses_rejected"] == stats["clauses_learned"]
    assert stats.get("clauses", 0) == 0 and stats.get("domains_pruned_by_clause", 0) == 0
    assert rec.clauses == []


def _context(net, lo, hi, t):
    """A search context and ReLU-splitting strategy (clauses on) for "``y_0 <= t`` is reachable" on the box."""
    cfg = _cfg()
    lo_t, hi_t = torch.as_tensor(lo)[None], torch.as_tensor(hi)[None]
    rows = Rows([Polytope(np.array([[1.0]]), np.array([t]))], net.out_size, net.dtype, net.device)
    ctx = SearchContext(net, rows, engine_options(cfg), Deadline(30), no_replay, Stats(), lambda m: None, lo_t, hi_t,
                        torch.Generator().manual_seed(0))
    root = ctx.bound(DomainState(lo_t, hi_t), "alpha", 20, True)
    return ctx, ReluSplitting(ctx, root, None, None)


def test_a_clause_around_a_counterexample_is_rejected():
    """``admit`` on hand-made candidates: the literals of the MILP minimiser's own phases on the unstable neurons
    (so its region holds a point with ``y_0 <= t``) must be rejected and stay out of the store; a candidate on the
    phases of a holding threshold's whole tree is not needed for this. The store only changes through a proof."""
    widths, seed = NETS[1]
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    ctx, strat = _context(net, lo, hi, o.witness + margins(o.opt)[0])
    root = strat.root()
    z = torch.cat(pre_activations(net, torch.as_tensor(o.x)[None]), dim=1)[0]
    l, u = flat(root.pre_lower)[0], flat(root.pre_upper)[0]
    unstable = torch.nonzero((l < 0) & (u > 0)).flatten()
    sign = torch.where(z >= 0, 1, -1).to(torch.int8)
    cands = []
    for k in (2, 4, unstable.numel()):
        c = torch.zeros(l.numel(), dtype=torch.int8)
        c[unstable[:k]] = sign[unstable[:k]]
        cands.append(c)
    cands = torch.stack(cands)
    ok = admit(ctx, strat.clauses, cands, root.tile(cands.shape[0]), strat.root_pre, None, "beta", 20)
    assert not bool(ok.any())
    assert len(strat.clauses) == 0 and ctx.stats["clauses_rejected"] == cands.shape[0]


@pytest.mark.parametrize("widths,seed", NETS)
def test_proof_only_verdicts_with_clauses_match_milp(widths, seed, monkeypatch):
    """Proof-only verdicts with ``bab.clauses`` against the exact MILP minimum: unsat just below it, never unsat
    just above its witness (relative and absolute margins); every bound of the run (children and the
    re-verifications) checked against sampled points. On the deepest network the violated runs prune domains
    or propagate units (the feature is exercised, not just switched on)."""
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    check = DomainBoundCheck(monkeypatch, net, witness_cloud(o, lo, hi, n=1000))
    rel, tiny = margins(o.opt)
    used = Stats()
    deep = widths == NETS[2][0]  # long enough there to prune and propagate; the others only need the verdicts
    for t, seconds in ((o.opt - rel, 20), (o.witness + rel, 1 + deep), (o.witness + tiny, 1 + 3 * deep)):
        status, stats = _run(net, lo, hi, t, _cfg(), seconds)
        assert status == "unsat" if t < o.opt else status in NOT_PROVEN, (t, o, status)
        for key in ("domains_pruned_by_clause", "unit_propagations", "clauses_kept"):
            used.add(key, stats.get(key, 0))
    assert check.checked > 100
    if deep:
        # (measured on the busy two-core machine: 0-11 domains pruned and 2-108 neurons fixed, by the load)
        assert used["clauses_kept"] > 0 and used["domains_pruned_by_clause"] + used["unit_propagations"] > 0, \
            dict(used)


def _inside(batch, zs):
    """``(N, S)`` bool: sampled points (pre-activations ``zs``, per layer ``(S, n_i)``) in each domain's splits."""
    ok = torch.ones(len(batch), zs[0].shape[0], dtype=torch.bool)
    for s, z in zip(batch.splits, zs):
        s = s[:, None]
        ok &= (((s != 1) | (z[None] >= 0)) & ((s != -1) | (z[None] <= 0))).all(dim=2)
    return ok


def test_propagation_and_pruning_lose_no_point_outside_the_clauses(monkeypatch):
    """Every call of ``ClauseStore.apply`` in a run (the violated threshold of the 4-layer network, where units
    propagate) against 4,001 sampled points: a point that was in a domain before and is in no kept clause's region
    is still in that domain after (unit propagation kept the half outside the clause), and no pruned domain holds
    a point outside every region."""
    widths, seed = NETS[2]
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    x = torch.as_tensor(witness_cloud(o, lo, hi, n=4000), dtype=torch.float64)
    with torch.no_grad():
        zs = pre_activations(net, x)
    real, seen = ClauseStore.apply, {"points": 0, "fixed": 0}

    def checked_apply(store, batch):
        before = _inside(batch, zs)
        covered = torch.zeros(x.shape[0], dtype=torch.bool)
        for c in store.signs:
            covered |= _in_region(zs, c)
        pruned, fixed = real(store, batch)
        after = _inside(batch, zs)
        lost = before & ~after & ~covered[None]
        assert not bool(lost.any()), "unit propagation dropped a point outside every clause region"
        assert not bool((before[pruned] & ~covered[None]).any()), "a pruned domain held a point outside the clauses"
        seen["points"] += int((before & ~covered[None]).sum())
        seen["fixed"] += fixed
        return pruned, fixed

    monkeypatch.setattr(ClauseStore, "apply", checked_apply)
    status, stats = _run(net, lo, hi, o.witness + 1e-6, _cfg(), 8)
    assert status in NOT_PROVEN
    assert seen["fixed"] > 0 and seen["points"] > 0, (seen, dict(stats))


def _domains(splits, lower, upper):
    """A ReluDomains batch from per-layer lists (``N`` domains); one output row; bounds only where read."""
    N = len(splits[0])
    t = lambda a, dt=torch.float64: torch.as_tensor(a, dtype=dt)  # noqa: E731
    zero = [torch.zeros(N, 1, len(s[0]), dtype=torch.float64) for s in splits]  # (per layer (N, M, n_i))
    return ReluDomains(score=torch.zeros(N), depth=torch.zeros(N), row=torch.zeros(N, dtype=torch.long),
                       lb=torch.zeros(N, 1), splits=[t(s, torch.int8) for s in splits],
                       pre_lower=[t(a) for a in lower], pre_upper=[t(a) for a in upper],
                       coeffs=[torch.zeros(N, len(s[0])) for s in splits], alphas=zero, betas=list(zero))


def test_unit_propagation_and_pruning_on_a_hand_built_batch():
    """Clauses {x0 active, x3 inactive} and {x0 inactive, x1 active} over layers of 3 and 2 neurons (flat 0-4):

    - d0: x0 split active, x3 free unstable -> x3 fixed active, its lower bound clamped to 0;
    - d1: x0 split active, x3 stable inactive by its bounds (u <= 0) -> inside the clause: pruned;
    - d2: x3 split inactive, x0 and x1 free -> x0 fixed inactive (upper bound 0), which makes the second clause
      unit -> x1 fixed inactive too (two rounds);
    - d3: x0 split inactive -> the first clause is dead; the second has x1 open and x0 holding -> x1 fixed inactive;
    - d4: x0, x1 and x3 all free: no clause has one open literal left, nothing happens;
    - d5: x0 stable active (l >= 0) and x3 split inactive -> pruned although x0 was never split."""
    splits = [[[1, 0, 0], [1, 0, 0], [0, 0, 0], [-1, 0, 0], [0, 0, 0], [0, 0, 0]],
              [[0, 0], [0, 0], [-1, 0], [0, 0], [0, 0], [-1, 0]]]
    lower = [[[0, -1, -1], [0, -1, -1], [-1, -1, -1], [-1, -1, -1], [-1, -1, -1], [0.5, -1, -1]],
             [[-1, -1], [-1, -1], [-1, -1], [-1, -1], [-1, -1], [-1, -1]]]
    upper = [[[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1]],
             [[1, 1], [-0.5, 1], [0, 1], [1, 1], [1, 1], [0, 1]]]
    batch = _domains(splits, lower, upper)
    store = ClauseStore([3, 2], 10, "cpu")
    assert store.add(torch.tensor([[1, 0, 0, -1, 0], [-1, 1, 0, 0, 0]], dtype=torch.int8)) == 2
    pruned, fixed = store.apply(batch)
    assert pruned.tolist() == [False, True, False, False, False, True]
    assert fixed == 4
    s = flat(batch.splits)
    assert s[0].tolist() == [1, 0, 0, 1, 0] and float(batch.pre_lower[1][0, 0]) == 0.0
    assert s[2].tolist() == [-1, -1, 0, -1, 0] and float(batch.pre_upper[0][2, 0]) == 0.0
    assert float(batch.pre_upper[0][2, 1]) == 0.0
    assert s[3].tolist() == [-1, -1, 0, 0, 0]
    assert s[4].tolist() == [0, 0, 0, 0, 0]
    # the pruned domains are not split further by propagation
    assert s[1].tolist() == [1, 0, 0, 0, 0]


def test_subsumption_keeps_the_strongest_clauses():
    """A clause whose literals include another's is dropped (whichever came first); equal ones merge; opposite
    phases are different literals; the cap keeps the shortest."""
    store = ClauseStore([4], 2, "cpu")
    c = lambda *v: torch.tensor([v], dtype=torch.int8)  # noqa: E731
    assert store.add(c(1, -1, 0, 0)) == 1
    assert store.add(c(1, -1, 1, 0)) == 0            # implied by the first
    assert store.add(c(1, 0, 0, 0)) == 1             # implies the first, which goes
    assert store.signs.tolist() == [[1, 0, 0, 0]]
    assert store.add(torch.cat([c(-1, 0, 1, 0), c(-1, 0, 1, 0)])) == 1
    assert len(store) == 2
    assert store.add(c(0, 0, 0, 1)) == 1 and len(store) == 2  # the cap: the two shortest stay
    assert sorted(store.signs.tolist()) == [[0, 0, 0, 1], [1, 0, 0, 0]]
    assert store.known(c(1, 1, 1, 1)).tolist() == [True] and store.known(c(-1, 1, 1, 0)).tolist() == [False]
