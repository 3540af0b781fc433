"""The piecewise-linear sandwich MILP (:mod:`relaxations.milp_sandwich`), an oracle for smooth networks.

What is ground truth here, and what each check can catch:

- a *sampled* value ``s = C f(x)`` at a point ``x`` of the box (float64, within ~1e-15 of the real value) is an
  upper bound of the true minimum ``m`` (and a lower bound of the maximum). The sandwich's lower bound ``S`` must
  satisfy ``S <= m <= s``: a sandwich that cuts off part of the graph (a wrong offset sign, a missed piece, a
  pre-activation bound too tight) can put ``S`` above a sampled value, which these tests catch (shown once with a
  planted sign error on the lower offset: ``test_brackets_sampled_values`` failed on every smooth kind);
- the sandwich's own argmin ``x*`` is a real point: ``a = C f(x*)`` (``attained_min``) is another upper bound of
  ``m``, so ``[S, a]`` brackets the true minimum; its width must shrink like ``(width / K)**2`` (halving at least
  when ``K`` doubles), which a valid but loose sandwich (offsets not per piece, breakpoints ignored) fails;
- every sound lower bound ``L`` of bnb (CROWN, alpha-CROWN, activation branching with beta) is ``<= m <= a``:
  ``L <= a`` is the real check (``L`` vs ``S`` proves nothing: both are below ``m``); and activation branching
  must never prove ``unsat`` for a threshold above ``a``;
- LeakyReLU and ReLU are encoded exactly: the bracket closes (``a - S`` at the solver's tolerance), and on a ReLU
  network the value equals the exact MILP oracle's (:mod:`relaxations.milp`, a separate encoding);
- the offsets themselves: ``P - e_lo <= f <= P + e_hi`` at dense points of each piece (float64 ``f``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from relaxations import transcendental as tr
from relaxations.milp import milp_bounds
from relaxations.milp_sandwich import breakpoints, piece_offsets, sandwich_epigraph, sandwich_solve
from relaxations.network import Network

F64 = torch.float64
ACTS = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus,
        "leaky_relu": lambda: torch.nn.LeakyReLU(0.25), "relu": torch.nn.ReLU}


def _net(kind, widths, seed, scale=2.0):
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(widths[:-1], widths[1:]):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.mul_(scale)
        mods += [lin, ACTS[kind]()]
    return Network.from_torch(torch.nn.Sequential(*mods[:-1]), (widths[0],))


def _samples(net, lo, hi, n=20000, seed=0):
    x = lo + (hi - lo) * np.random.default_rng(seed).random((n, lo.size))
    with torch.no_grad():
        return net.to(dtype=F64)(torch.from_numpy(x)).numpy()


@pytest.mark.fast
@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "softplus"])
def test_offsets_enclose_the_activation(kind):
    """``P - e_lo <= f <= P + e_hi`` at 2,000 points of every piece, on intervals crossing 0, saturated, narrow."""
    for l, u in ((-6.0, 3.0), (2.0, 30.0), (-40.0, -5.0), (-1e-3, 2e-3)):
        p = breakpoints(kind, l, u, 6)
        assert p[0] == l and p[-1] == u and np.all(np.diff(p) > 0)
        fp, s, e_lo, e_hi = piece_offsets(kind, p)
        for k in range(p.size - 1):
            z = np.linspace(p[k], p[k + 1], 2000)
            f = tr.value(kind, torch.from_numpy(z)).numpy()
            P = fp[k] + s[k] * (z - p[k])
            assert np.all(P - e_lo[k] <= f + 1e-15) and np.all(f <= P + e_hi[k] + 1e-15), (kind, l, u, k)
            # and the offsets are not vacuous: within 10x of the sampled interpolation error (+ rounding)
            assert e_lo[k] <= 10 * max(np.max(P - f), 0) + 1e-12 and e_hi[k] <= 10 * max(np.max(f - P), 0) + 1e-12


@pytest.mark.fast
@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "softplus", "leaky_relu"])
def test_brackets_sampled_values(kind):
    """``S <= sampled min``, ``sampled max <= U``, and the bracket ``[S, attained]`` of the minimum is narrow (exact
    for LeakyReLU, within 5 % of the output range with 4 pieces on the smooth ones)."""
    net = _net(kind, [2, 4, 2], 3)
    lo, hi = -np.ones(2), np.ones(2)
    y = _samples(net, lo, hi)
    r = sandwich_solve(net, lo, hi, pieces=4)
    assert np.all(r.lb <= y.min(0)) and np.all(y.max(0) <= r.ub)
    assert np.all(r.lb <= r.attained_min) and np.all(r.attained_max <= r.ub)
    tol = 1e-6 if kind == "leaky_relu" else 0.05 * (r.ub - r.lb)  # exact encoding; 4 pieces: within 5 % of the range
    assert np.all(r.attained_min - r.lb <= tol) and np.all(r.ub - r.attained_max <= tol), (r.lb, r.attained_min)


@pytest.mark.fast
def test_relu_matches_the_exact_milp():
    """On a ReLU network the sandwich is the exact big-M MILP: the same values as :mod:`relaxations.milp`."""
    net = _net("relu", [3, 5, 4, 2], 0)
    lo, hi = -np.ones(3), np.ones(3)
    r = sandwich_solve(net, lo, hi)
    elb, eub = milp_bounds(net, lo, hi)
    assert np.allclose(r.lb, elb, atol=1e-6) and np.allclose(r.ub, eub, atol=1e-6)


@pytest.mark.fast
def test_epigraph_on_plain_blocks():
    """The harness entry: ``min max_i (C f(x) - d)_i`` on ``(W, b)`` blocks is below every sampled value."""
    from relaxations.milp_sandwich import Act
    rng = np.random.default_rng(1)
    blocks = [(rng.normal(0, 1.5, (4, 2)), rng.normal(0, 0.3, 4)), (rng.normal(0, 1, (2, 4)), rng.normal(0, 0.3, 2))]
    C, d = np.array([[1.0, -1.0], [0.5, 1.0]]), np.array([0.1, -0.2])
    lo, hi = -np.ones(2), np.ones(2)
    low, x = sandwich_epigraph(blocks, Act("tanh"), lo, hi, C, d, pieces=4)
    pts = np.vstack([lo + (hi - lo) * rng.random((5000, 2)), x[None]])
    h = np.tanh(pts @ blocks[0][0].T + blocks[0][1]) @ blocks[1][0].T + blocks[1][1]
    g = (h @ C.T - d).max(axis=1)
    assert low <= g.min() and g[-1] - low < 0.1 * (g.max() - g.min()) and np.all(x >= lo) and np.all(x <= hi)


def _gap(net, lo, hi, K):
    r = sandwich_solve(net, lo, hi, pieces=K)
    return float(np.max(r.attained_min - r.lb)), r


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "softplus"])
def test_gap_shrinks_quadratically(kind):
    """The bracket ``attained_min - S`` at K = 2, 4, 8, 16: never larger after doubling K, and at ``4K`` at most a
    quarter of that at ``K`` (``(w/K)^2``: a sixteenth in theory; measured 6-44x, one doubling alone may gain only
    2x because the argmin moves); every lower bound below the sampled minimum."""
    net = _net(kind, [3, 6, 2], 5)
    lo, hi = -np.ones(3), np.ones(3)
    y = _samples(net, lo, hi)
    gaps = []
    for K in (2, 4, 8, 16):
        g, r = _gap(net, lo, hi, K)
        assert np.all(r.lb <= y.min(0))
        gaps.append(g)
    assert gaps[0] > 1e-6, "the sandwich is already exact: no test of convergence"
    assert all(b <= a for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[2] <= gaps[0] / 4 and gaps[3] <= gaps[1] / 4, gaps


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "softplus", "leaky_relu"])
def test_bnb_bounds_below_the_attained_minimum(kind):
    """CROWN and alpha-CROWN lower (upper) bounds are below (above) the value at the sandwich's argmin (argmax), a
    real point: ``L <= m <= attained_min``."""
    from relaxations.methods import output_bounds
    net = _net(kind, [3, 6, 5, 2], 7)
    lo, hi = -np.ones(3), np.ones(3)
    r = sandwich_solve(net, lo, hi, pieces=6)
    t = lambda a: torch.from_numpy(a)[None]  # noqa: E731
    for method in ("crown", "alpha"):
        L, U = output_bounds(net.to(dtype=F64), t(lo), t(hi), method)
        assert np.all(L[0].numpy() <= r.attained_min) and np.all(U[0].numpy() >= r.attained_max), method


@pytest.mark.slow
@pytest.mark.parametrize("kind,seed", [("sigmoid", 0), ("tanh", 1)])
def test_activation_branching_against_the_bracket(kind, seed):
    """Activation splitting with beta children (proof-only): a threshold above the sandwich's attained minimum
    (violated at a real point) is never ``unsat``; one halfway between CROWN's root bound and the sandwich's lower
    bound (holding, up to the MIP tolerance: a certain label, unlike one below a sampled minimum) is ``unsat``."""
    from bnb.config import Config
    from bnb.io.spec import Polytope
    from relaxations.methods import output_bounds

    from proof_only_runs import NOT_PROVEN, decide, proof_only
    cfg = proof_only(Config())
    cfg.general.dtype, cfg.bounds.method = "float64", "crown"
    cfg.bab.branching, cfg.bab.batch_size = "activation", 64
    cfg.bab.activation_heuristic, cfg.bab.activation_method = "gap-gain", "beta"
    net = _net(kind, [2, 6, 6, 1], seed, scale=3.0)
    lo, hi = -np.ones(2), np.ones(2)
    r = sandwich_solve(net, lo, hi, pieces=8)
    tlo, thi = torch.from_numpy(lo), torch.from_numpy(hi)
    for t in (r.attained_min[0] + 1e-3, r.attained_min[0] + 1e-6):
        assert decide(net, tlo, thi, [Polytope(np.array([[1.0]]), np.array([t]))], cfg, 3) in NOT_PROVEN
    root = float(output_bounds(net, tlo[None], thi[None], "crown")[0][0, 0])
    assert root < r.lb[0] - 1e-3, "the root bound alone is already tight: no test of branching"
    hold = [Polytope(np.array([[1.0]]), np.array([(root + r.lb[0]) / 2]))]
    assert decide(net, tlo, thi, hold, cfg, 30) == "unsat", (root, r.lb[0])
