"""Splits cover what they split, checked on sampled points: the children of a ReLU split (``relu_children``) and of
an input split (``split_boxes``) together contain every point of their parent, and a split phase restricts only
its own neuron (``ReluRelaxation``), calling a domain empty only beyond the rounding margin; and whole proof-only
searches with either branching never refute a threshold just above the exact (MILP) minimum."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bnb.config import Config
from bnb.engine.domains import ReluDomains
from bnb.engine.strategies.input_split import split_boxes
from bnb.engine.strategies.relu_split import relu_children
from bnb.io.spec import Polytope
from relaxations.fp import unit_roundoff
from relaxations.ibp import ibp
from relaxations.layers.relu import ReluRelaxation
from relaxations.milp import milp_bounds

from conftest import pre_activations, random_fc
from proof_only_runs import decide, proof_only

pytestmark = pytest.mark.fast

D = torch.float64


def _consistent(z, splits, lo, hi):
    """``(S, N)``: whether sampled pre-activations ``z`` (per layer ``(S, n_i)``) lie in each domain (per layer
    ``splits``/``lo``/``hi`` ``(N, n_i)``): the phases of its splits and inside its intermediate bounds."""
    ok = None
    for zi, s, l, u in zip(z, splits, lo, hi):
        zi = zi[:, None, :]
        good = ((s[None] <= 0) | (zi >= 0)) & ((s[None] >= 0) | (zi <= 0)) & (zi >= l[None]) & (zi <= u[None])
        good = good.all(dim=-1)
        ok = good if ok is None else ok & good
    return ok


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relu_children_cover_their_parents(seed):
    """Parents with random earlier splits (taken from sampled points, so that points lie in them), each split on
    two free neurons (the batch tiled twice): every sampled point of a parent lies in one of its two children of
    each split, and each child differs from its parent in exactly the one split phase."""
    g = torch.Generator().manual_seed(seed)
    net = random_fc([3, 6, 5, 1], seed)
    x = torch.rand(4000, 3, generator=g, dtype=D) * 2 - 1
    z = pre_activations(net, x)
    sizes = [zi.shape[1] for zi in z]
    _, _, pre = ibp(net, -torch.ones(1, 3, dtype=D), torch.ones(1, 3, dtype=D))
    n = 5
    anchors = torch.randint(0, x.shape[0], (n,), generator=g)
    splits, lo, hi = [], [], []
    for zi, (l, u) in zip(z, pre):
        phase = torch.where(zi[anchors] >= 0, 1, -1).to(torch.int8)
        keep = torch.rand(phase.shape, generator=g) < 0.3
        splits.append(torch.where(keep, phase, torch.zeros_like(phase)))
        lo.append(l.reshape(1, -1).expand(n, -1).clone())
        hi.append(u.reshape(1, -1).expand(n, -1).clone())
    free = torch.cat([s == 0 for s in splits], dim=1)  # (n, total neurons)
    pos = []
    for _ in range(2):
        for d in range(n):
            cand = torch.nonzero(free[d]).flatten()
            pos.append(int(cand[torch.randint(0, cand.numel(), (1,), generator=g)]))
    pos = torch.tensor(pos).reshape(2, n).flatten()  # (k n,): all domains' first choice, then their second
    zeros = torch.zeros(n, dtype=D)
    batch = ReluDomains(score=zeros, depth=torch.zeros(n, dtype=torch.long), row=torch.zeros(n, dtype=torch.long),
                        lb=zeros[:, None], splits=splits, pre_lower=lo, pre_upper=hi,
                        coeffs=[torch.zeros(n, s, dtype=D) for s in sizes], alphas=[None] * len(sizes),
                        betas=[None] * len(sizes))
    kids = relu_children(batch, pos, sizes)
    m = pos.shape[0]
    assert len(kids) == 2 * m
    parent_in = _consistent(z, splits, lo, hi)                               # (S, n)
    child_in = _consistent(z, kids.splits, kids.pre_lower, kids.pre_upper)  # (S, 2 m)
    assert bool(parent_in.any(dim=0).all()), "every parent holds some sampled point"
    for j in range(m):
        d = j % n
        covered = child_in[:, j] | child_in[:, j + m]
        assert bool((covered | ~parent_in[:, d]).all()), f"points of parent {d} in neither child of split {j}"
        for c in (j, j + m):
            changed = sum(int((cs[c] != ps[d]).sum()) for cs, ps in zip(kids.splits, splits))
            assert changed == 1, f"child {c} of parent {d} differs from it in {changed} split phases"


@pytest.mark.parametrize("dtype", [torch.float32, D], ids=["float32", "float64"])
def test_split_phases_restrict_only_their_neurons(dtype):
    """``ReluRelaxation`` with a few neurons split: for sampled pre-activations ``z`` inside the bounds and of the
    split phases, ``z`` stays inside the relaxation's bounds and ``a z <= relu(z) <= s z + t``; unsplit neurons
    keep their bounds as given (unstable ones stay unstable) and the domain is not empty."""
    g = torch.Generator().manual_seed(4)
    N, n = 6, 9
    l = -torch.rand(N, n, generator=g, dtype=D) * 2
    u = torch.rand(N, n, generator=g, dtype=D) * 2
    l[:, 0], u[:, 0] = 0.5, 1.5      # stable active, unsplit
    l[:, 1], u[:, 1] = -1.5, -0.5    # stable inactive, unsplit
    split = torch.zeros(N, n, dtype=torch.int8)
    split[:, 2], split[:, 3] = 1, -1
    l, u = l.to(dtype), u.to(dtype)
    r = ReluRelaxation(l, u, split, "adaptive")
    assert not bool(r.infeasible.any())
    free = split == 0
    assert bool((r.l[free] == l[free]).all()) and bool((r.u[free] == u[free]).all())
    assert bool(r.unstable[:, 4:].all()) and not bool(r.unstable[:, :4].any())
    t = torch.rand(500, N, n, generator=g, dtype=D)
    zs = l.double() + t * (u.double() - l.double())
    zs = torch.where(split == 1, zs.clamp(min=0), torch.where(split == -1, zs.clamp(max=0), zs))
    assert bool((zs >= r.l.double()).all()) and bool((zs <= r.u.double()).all())
    a, s, ti = r.low_slope.double(), r.up_slope.double(), r.up_int.double()
    y = zs.clamp(min=0)
    assert bool((a * zs <= y + 1e-12).all()) and bool((y <= s * zs + ti + 1e-12).all())


@pytest.mark.parametrize("dtype", [torch.float32, D], ids=["float32", "float64"])
def test_a_split_domain_is_empty_only_beyond_the_rounding_margin(dtype):
    """A fixed-active neuron whose upper bound is a little above zero (the domain holds the points with
    ``0 <= z <= u``), exactly zero, or below zero by less than rounding, is no proof of emptiness, nor is the
    mirror case of a fixed-inactive one; bounds contradicting the phase by far are."""
    tiny_pos = [1e-9, 0.0, 1e-30, -2 * unit_roundoff(dtype)]  # the last: below zero by two roundings
    far = 0.5
    l = torch.tensor([[-1.0]] * 4 + [[-1.0]] + [[-v] for v in tiny_pos] + [[far]], dtype=dtype)
    u = torch.tensor([[v] for v in tiny_pos] + [[-far]] + [[1.0]] * 4 + [[1.0]], dtype=dtype)
    split = torch.tensor([[1]] * 5 + [[-1]] * 5, dtype=torch.int8)
    r = ReluRelaxation(l, u, split, "adaptive")
    assert r.infeasible.tolist() == [False] * 4 + [True] + [False] * 4 + [True]
    # without splits nothing is ever empty, whatever the bounds
    assert not bool(ReluRelaxation(l, u, None, "adaptive").infeasible.any())


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_input_split_children_cover_the_parent_box(parts):
    """``split_boxes``: along the chosen dimension the children's intervals chain from the parent's lower end to
    its upper end with shared cuts, every other dimension is the parent's, and sampled points of each parent
    (its corners among them) lie in one of its children."""
    g = torch.Generator().manual_seed(parts)
    n, n_in = 7, 4
    lo = torch.randn(n, n_in, generator=g, dtype=D)
    hi = lo + torch.rand(n, n_in, generator=g, dtype=D) * 3
    hi[0] = lo[0] + 1e-9  # a very thin box
    dims = torch.randint(0, n_in, (2 * n,), generator=g)  # two candidate dimensions per box
    c_lo, c_hi = split_boxes(lo, hi, dims, parts)
    reps = 2
    m = reps * n
    assert c_lo.shape == (parts * m, n_in)
    P_lo, P_hi = lo.repeat(reps, 1), hi.repeat(reps, 1)
    for j in range(m):
        k = int(dims[j])
        kids = [j + p * m for p in range(parts)]
        other = [i for i in range(n_in) if i != k]
        for c in kids:
            assert torch.equal(c_lo[c, other], P_lo[j, other]) and torch.equal(c_hi[c, other], P_hi[j, other])
        ends = sorted((float(c_lo[c, k]), float(c_hi[c, k])) for c in kids)
        assert ends[0][0] == float(P_lo[j, k]) and ends[-1][1] == float(P_hi[j, k])
        assert all(a[1] == b[0] for a, b in zip(ends, ends[1:]))
        t = torch.rand(200, n_in, generator=g, dtype=D)
        t[:2] = torch.tensor([0.0, 1.0], dtype=D)[:, None]
        pts = P_lo[j] + t * (P_hi[j] - P_lo[j])
        pts = torch.minimum(pts, P_hi[j])
        inside = ((pts[:, None] >= c_lo[kids][None]) & (pts[:, None] <= c_hi[kids][None])).all(-1).any(-1)
        assert bool(inside.all())


# ------------------------------------------------------------------ whole searches, in proof-only mode
NETS = [([2, 8, 8, 1], 0), ([3, 8, 8, 1], 1), ([2, 10, 1], 2), ([3, 6, 6, 6, 1], 3)]


def _search(widths, seed, branching, rel, seconds):
    """Proof-only branch and bound of ``y >= t`` (violated where ``y <= t``) for ``t`` at ``rel`` (relative)
    from the exact MILP minimum; returns the status."""
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    exact = milp_bounds(net, lo, hi)[0][0]
    t = exact + rel * max(1.0, abs(exact))
    cfg = proof_only(Config())
    cfg.general.dtype = "float64"
    cfg.bab.branching = branching
    cfg.bab.batch_size = 16
    cfg.bounds.alpha_iters = 10
    return decide(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([t]))], cfg, seconds)


@pytest.mark.parametrize("widths,seed", NETS)
def test_proof_only_relu_splitting_decides_both_sides_of_the_exact_minimum(widths, seed):
    """ReLU splitting with no falsification: a threshold 1e-3 (relative) above the exact minimum (reachable) is
    never unsat (the search ends unknown once every neuron is fixed), one 1e-3 below is unsat."""
    assert _search(widths, seed, "relu", 1e-3, 20.0) in ("unknown", "timeout")
    assert _search(widths, seed, "relu", -1e-3, 20.0) == "unsat"


@pytest.mark.parametrize("widths,seed", NETS[:2])
def test_proof_only_input_splitting_decides_both_sides_of_the_exact_minimum(widths, seed):
    """Input splitting with no falsification: 1e-3 above the exact minimum is never unsat within a short
    deadline (boxes are bisected until the deadline), 1e-3 below is unsat."""
    assert _search(widths, seed, "input", 1e-3, 1.5) in ("unknown", "timeout")
    assert _search(widths, seed, "input", -1e-3, 20.0) == "unsat"
