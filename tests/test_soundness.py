"""Soundness of the proof machinery itself: rigorous rounding against exact rational arithmetic, crossing bounds
that are no proof, NaN and inf that never verify, outward-rounded boxes and thresholds (docs/soundness.md)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from bnb.config import Config
from bnb.engine.context import Stats
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.engine.rows import Rows
from bnb.io.spec import Polytope
from bnb.timing import Deadline
from relaxations.fp import outward_box, threshold_up
from relaxations.layers import Linear, ReLU
from relaxations.layers.relu import ReluRelaxation, upper_relaxation
from relaxations.methods import bound_rows
from relaxations.network import Network
from relaxations.options import BoundOptions
from relaxations.state import DomainState
from relaxations.verdict import proven

pytestmark = pytest.mark.fast

F32 = torch.float32


def _exact_forward(net, x):
    """``net`` at the point ``x`` in exact rational arithmetic (Linear / ReLU layers), float weights as exact."""
    v = [Fraction(float(t)) for t in x]
    for layer in net.layers:
        if isinstance(layer, Linear):
            W, b = layer.weight.double().tolist(), layer.bias.double().tolist()
            v = [sum((Fraction(w) * xi for w, xi in zip(row, v)), Fraction(bi)) for row, bi in zip(W, b)]
        else:
            v = [max(t, Fraction(0)) for t in v]
    return v


def _net(seed, sizes, bias_scale=1.0, dtype=F32):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(len(sizes) - 1):
        W = torch.randn(sizes[i + 1], sizes[i], generator=g, dtype=torch.float64)
        b = torch.randn(sizes[i + 1], generator=g, dtype=torch.float64) * bias_scale
        layers.append(Linear(W.to(dtype), b.to(dtype)))
        if i < len(sizes) - 2:
            layers.append(ReLU((sizes[i + 1],)))
    return Network(layers, (sizes[0],))


def test_proven_rejects_nan_and_infinities():
    v = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 0.0, 1e-30])
    assert proven(v).tolist() == [True, False, False, False, False, True]
    inf = torch.tensor([False, True, False, False, False, False])
    assert proven(v, 0.0, inf).tolist() == [True, True, False, False, False, True]
    assert proven(torch.tensor([[0.5, float("nan")]]), 0.0).tolist() == [[True, False]]


def test_crossing_bounds_are_repaired_not_infeasible():
    l = torch.tensor([[0.5, -1.0, 2.0]])
    u = torch.tensor([[0.4999999, 1.0, 1.0]])  # the first and last cross, the middle is fine
    r = ReluRelaxation(l, u, None, "adaptive")
    assert not bool(r.infeasible.any())
    assert bool((r.l <= r.u).all()) and bool(r.l[0, 0] <= u[0, 0]) and float(r.u[0, 0]) >= 0.5
    # splits: a contradiction within rounding is repaired; beyond it, the domain is proven empty
    split = torch.tensor([[1, 0, 0], [1, 0, 0], [-1, 0, 0]], dtype=torch.int8)
    l3 = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0], [1e-9, -1.0, -1.0]])
    u3 = torch.tensor([[-1e-12, 1.0, 1.0], [-0.5, 1.0, 1.0], [2.0, 1.0, 1.0]])
    r = ReluRelaxation(l3, u3, split, "adaptive")
    assert r.infeasible.tolist() == [False, True, False]  # 1e-9 > 0 is within the float32 rounding margin
    assert bool((r.l <= r.u).all())


def test_upper_relaxation_is_above_relu_in_exact_arithmetic():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for scale in (1e-6, 1.0, 1e4):
            l = -(torch.rand(2000, generator=g, dtype=torch.float64) * scale + 1e-30).to(dtype)
            u = (torch.rand(2000, generator=g, dtype=torch.float64) * scale * 3 + 1e-30).to(dtype)
            s, t = upper_relaxation(l, u)
            assert bool(((s >= 0) & (s <= 1)).all())
            for li, ui, si, ti in zip(l.tolist(), u.tolist(), s.tolist(), t.tolist()):
                L, U, S, T = map(Fraction, (li, ui, si, ti))
                assert S * L + T >= 0 and S * U + T >= U


@pytest.mark.parametrize("intermediate", ["crown", "forward"])
@pytest.mark.parametrize("method", ["ibp", "crown", "dp0", "dp1", "alpha"])
def test_float32_bounds_contain_the_exact_value_far_from_the_origin(method, intermediate):
    """Point boxes (and nearly-point boxes) far from the origin, large biases: the float32 bounds hold for the
    exact real value of the float32 network, where rounding errors are largest relative to the result."""
    for seed in range(6):
        net = _net(seed, [6, 16, 16, 3], bias_scale=1e3)
        g = torch.Generator().manual_seed(100 + seed)
        x = (torch.randn(6, generator=g, dtype=torch.float64) * 1e4).to(F32)
        exact = _exact_forward(net, x.tolist())
        for width in (0.0, 1e-3):
            lo, hi = x[None] - width, x[None] + width
            r = bound_rows(net, DomainState(lo, hi), torch.eye(3), method, BoundOptions(intermediate=intermediate),
                           want_upper=True, iters=5)
            for i in range(3):
                if width == 0.0:
                    assert Fraction(float(r.lb[0, i])) <= exact[i] <= Fraction(float(r.ub[0, i])), (seed, i)
                else:
                    assert float(r.lb[0, i]) <= float(exact[i]) + 0 and float(r.ub[0, i]) >= float(exact[i])


def test_without_rigour_float32_crown_can_claim_more_than_the_truth():
    """The reason for the error bound: on a point box the plain float32 CROWN value is f(x) rounded, which
    lies above the exact value on some outputs; the rigorous bound never does."""
    above = 0
    for seed in range(20):
        net = _net(seed, [8, 32, 32, 4], bias_scale=1e2)
        g = torch.Generator().manual_seed(seed)
        x = (torch.randn(8, generator=g, dtype=torch.float64) * 1e3).to(F32)[None]
        exact = _exact_forward(net, x[0].tolist())
        plain = bound_rows(net, DomainState(x, x), torch.eye(4), "crown", BoundOptions(rigorous=False)).lb[0]
        rig = bound_rows(net, DomainState(x, x), torch.eye(4), "crown").lb[0]
        for i in range(4):
            assert Fraction(float(rig[i])) <= exact[i]
            above += Fraction(float(plain[i])) > exact[i]
    assert above > 0


def test_threshold_and_box_are_rounded_outward():
    d = threshold_up([0.1, -0.1, 1.0, 3.991125645861615], F32)
    for v, text in zip(d.tolist(), ["0.1", "-0.1", "1.0", "3.991125645861615"]):
        assert Fraction(v) >= Fraction(text)
    lo, hi = outward_box([0.1, -2.0, 0.3], [0.1, 1.0, 0.7], F32)
    for a, b, ta, tb in zip(lo.tolist(), hi.tolist(), ["0.1", "-2.0", "0.3"], ["0.1", "1.0", "0.7"]):
        assert Fraction(a) <= Fraction(ta) and Fraction(b) >= Fraction(tb)
    rows = Rows([Polytope(np.array([[1.0, -1.0]]), np.array([0.1]))], 2, F32, "cpu")
    assert Fraction(float(rows.d[0])) >= Fraction("0.1")
    # a coefficient float32 cannot hold raises the threshold by |C - C32| . |y|
    with pytest.raises(ValueError):
        Rows([Polytope(np.array([[0.1, -1.0]]), np.array([0.0]))], 2, F32, "cpu")
    r = Rows([Polytope(np.array([[0.1, -1.0]]), np.array([0.0]))], 2, F32, "cpu", lambda: torch.tensor([1e6, 1e6]))
    assert float(r.d[0]) >= abs(0.1 - float(np.float32(0.1))) * 1e6


def _tiny_net():
    return _net(3, [2, 6, 1])


def _run(net, lo, hi, d, cfg):
    poly = Polytope(np.array([[1.0]]), np.array([d]))
    return run_bab(net, lo, hi, [poly], engine_options(cfg), Deadline(30), lambda xs: None, Stats())[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("branching", ["input", "relu"])
def test_nan_or_inf_bounds_never_verify(monkeypatch, bad, branching):
    """Every bound the engine sees is NaN (or +inf): no domain is ever verified, so the answer is unknown or
    the run is cut by the deadline, never unsat."""
    import bnb.engine.context as context_mod
    real = context_mod.bound_rows

    def poisoned(*a, **k):
        res = real(*a, **k)
        res.lb = torch.full_like(res.lb, bad)
        if res.bias is not None:
            res.bias = torch.full_like(res.bias, bad)
        return res

    monkeypatch.setattr(context_mod, "bound_rows", poisoned)
    net = _tiny_net()
    cfg = Config()
    cfg.general.proof_only = True  # nothing may answer in place of the bounds
    cfg.bab.branching = branching
    cfg.bab.batch_size = 64
    lo, hi = torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0])
    deadline = Deadline(3)
    poly = Polytope(np.array([[1.0]]), np.array([-1e6]))  # true property (far below the range)
    try:
        status = run_bab(net, lo, hi, [poly], engine_options(cfg), deadline, lambda xs: None, Stats())[0]
    except Exception as e:  # the deadline (VerificationTimeout) is an acceptable end
        assert type(e).__name__ == "VerificationTimeout"
        return
    assert status != "unsat"


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha", "beta", "mn-crown"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_point_box_just_above_the_value_is_never_unsat(method, dtype):
    """The issue's reproduction: every input fixed, threshold just above f(x) (violated), in proof-only mode (no
    falsification anywhere: only the bounds decide)."""
    cfg = Config()
    cfg.general.proof_only = True
    cfg.bounds.method = method
    for seed in range(2):
        net = _net(seed, [5, 12, 12, 1], dtype=dtype)
        x = torch.randn(5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
        fx = float(_exact_forward(net, x.tolist())[0])
        for branching in ("input", "relu"):
            cfg.bab.branching = branching
            for d in (fx + 1e-5 * (1 + abs(fx)), fx + 1e-9 * (1 + abs(fx))):
                assert _run(net, x, x, d, cfg) != "unsat"
            assert _run(net, x, x, fx - 1e-3 * (1 + abs(fx)), cfg) == "unsat"
