"""The LP bounds of sigmoid/tanh/softplus chains (methods hull1d and hull, relaxations/lp/smooth.py) against
independent ground truth: sampled values (every sound bound is outside them), the ordering the relaxations must
respect, the figures of SSHAPED.md section 1 (as printed there; the exact column by dense search and
polishing), and the refusal of what they cannot bound."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bnb.theory.hull_table import PRINTED, ROWS, hull_table, network
from relaxations.crown import crown
from relaxations.layers.sshaped import SmoothActivation
from relaxations.lp.smooth import smooth_lp_bounds
from relaxations.methods import bound_rows, output_bounds
from relaxations.network import Network, UnsupportedNetwork
from relaxations.state import DomainState

F64 = torch.float64


def _chain(kind, seed):
    torch.manual_seed(seed)
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus}[kind]
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), act(), torch.nn.Linear(4, 3), act(), torch.nn.Linear(3, 2))
    m = m.double()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(2.0)
    return m, Network.from_torch(m, (3,))


@pytest.mark.parametrize("kind", [pytest.param("sigmoid", marks=pytest.mark.slow),
                                  pytest.param("tanh", marks=pytest.mark.slow), "softplus"])
def test_hull_bounds_are_sound_and_ordered(kind):
    m, net = _chain(kind, {"sigmoid": 0, "tanh": 1, "softplus": 2}[kind])
    lo, hi = -0.6 * torch.ones(1, 3, dtype=F64), 0.6 * torch.ones(1, 3, dtype=F64)
    X = lo + (hi - lo) * torch.rand(100000, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        Y = m(X)
    st = DomainState(lo, hi)
    C = torch.eye(2, dtype=F64)
    pre = [(l[0].numpy(), u[0].numpy()) for l, u in crown(net, st, C).pre_bounds]
    cr = crown(net, st, torch.cat([C, -C]), "adaptive").lb[0]  # the same intermediate bounds
    b = {meth: smooth_lp_bounds(net, meth, lo[0].numpy(), hi[0].numpy(), pre, C.numpy()) for meth in ("hull1d", "hull")}
    for meth, (lb, ub) in b.items():
        assert np.all(lb <= Y.min(0).values.numpy()) and np.all(ub >= Y.max(0).values.numpy()), meth
    # the LPs' regions are inside CROWN's lines' and each other's (up to the separation tolerance)
    assert np.all(b["hull1d"][0] >= cr[:2].numpy() - 1e-5) and np.all(-b["hull1d"][1] >= cr[2:].numpy() - 1e-5)
    assert np.all(b["hull"][0] >= b["hull1d"][0] - 1e-5) and np.all(b["hull"][1] <= b["hull1d"][1] + 1e-5)
    if kind == "softplus":  # through the registry: the same certificates (floored by IBP)
        lb, ub = output_bounds(net, lo, hi, "hull")
        assert np.all(lb[0].numpy() >= b["hull"][0] - 1e-9) and np.all(ub[0].numpy() <= b["hull"][1] + 1e-9)


def test_hull_lp_reproduces_the_first_sshaped_row():
    """The sigmoid row of SSHAPED.md's table to its 4 printed decimals (the 1-D hull LP and the hull LP: the
    multi-input cuts close the gap to the exact value)."""
    kind, W1, b1, w2 = ROWS[0]
    net = network(kind, W1, b1, w2)
    lo, hi = -torch.ones(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64)
    pre = [(l[0].numpy(), u[0].numpy()) for l, u in crown(net, DomainState(lo, hi), torch.eye(1, dtype=F64)).pre_bounds]
    for meth, want in (("hull1d", PRINTED[0][2]), ("hull", PRINTED[0][3])):
        lb = smooth_lp_bounds(net, meth, lo[0].numpy(), hi[0].numpy(), pre, [[1.0]], want_upper=False)[0][0]
        assert round(lb, 4) == want, meth


@pytest.mark.slow
def test_hull_table_reproduces_sshaped():
    """Every figure of SSHAPED.md section 1's table (IBP, CROWN's default lines, 1-D hull LP, hull LP, exact)
    and the sigma(x1 + x2) vertex figures, as `bnb hull-table` prints them."""
    res, text = hull_table()
    for row, printed in zip(res["table"], PRINTED):
        got = tuple(round(row[c], 4) for c in ("ibp", "crown", "hull1d", "hull", "exact"))
        assert got == printed, (row["activation"], got, printed)
        assert row["crown_tangent"] == pytest.approx(row["crown"], abs=1e-9)  # the same lines on these boxes
        assert row["hull"] <= row["exact"] and row["hull1d"] <= row["hull"]
    assert [(round(f["hull"], 4), round(f["hull1d"], 4)) for f in res["vertex"]] == [(0.5, 0.5996), (0.0, 0.4123)]
    assert "0.5996" in text


def test_hull_methods_refuse_by_name():
    relu = Network.from_torch(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1)),
                              (2,))
    st = DomainState(-torch.ones(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64))
    with pytest.raises(UnsupportedNetwork, match="'hull'.*sigmoid, tanh or softplus"):
        bound_rows(relu.to(dtype=F64), st, torch.eye(1, dtype=F64), "hull")
    _, net = _chain("tanh", 0)
    net.layers[1] = SmoothActivation((4,), "tanh", mask=np.array([True, False, True, True]))  # a graph's
    with pytest.raises(UnsupportedNetwork, match="'hull1d' supports chains"):
        bound_rows(net, DomainState(-torch.ones(1, 3, dtype=F64), torch.ones(1, 3, dtype=F64)),
                   torch.eye(2, dtype=F64), "hull1d")
