"""Refuting a multi-row output polytope with one mixed bound (relaxations.polytope)."""
from __future__ import annotations

import pytest
import torch

from relaxations.crown import crown
from relaxations.polytope import group_index, mix_rows
from relaxations.state import DomainState

from conftest import random_fc

pytestmark = pytest.mark.fast

D = torch.float64


def test_mixing_refutes_a_polytope_that_no_single_row_refutes():
    # y = (x, -x) on x in [-1, 1]; the polytope {y1 <= -0.5, y2 <= -0.5} is empty, yet each row alone is
    # reachable; with lam = (1/2, 1/2) the bound is 0.5 everywhere
    A = torch.tensor([[[1.0], [-1.0]]], dtype=D)
    bias = torch.zeros(1, 2, dtype=D)
    d = torch.tensor([-0.5, -0.5], dtype=D)
    lo, hi = torch.tensor([[-1.0]], dtype=D), torch.tensor([[1.0]], dtype=D)
    index, valid = group_index(torch.tensor([0, 0]), 1)
    single, _, _ = mix_rows(A, bias, d, lo, hi, index, valid, iters=0)
    mixed, best_row, w = mix_rows(A, bias, d, lo, hi, index, valid, iters=30)
    assert float(single) == pytest.approx(-0.5, abs=1e-12) and float(single) <= -0.5  # rounded down
    assert 0.4 < float(mixed) <= 0.5 + 1e-12
    # the weights reported are the ones behind the value: their mixture's exact minimum is at least the value
    lam = w[0, 0]
    assert bool((lam >= 0).all()) and 0 < float(lam[0]) < 1
    coef, const = float(lam @ A[0, :, 0]), float(lam @ (bias[0] - d))
    assert -abs(coef) + const >= float(mixed)
    assert best_row.shape == (1, 1)


def test_group_index_pads_polytopes_of_different_sizes():
    index, valid = group_index(torch.tensor([0, 0, 0, 1, 2, 2]), 3)
    assert index.tolist() == [[0, 1, 2], [3, 0, 0], [4, 5, 0]]
    assert valid.tolist() == [[True, True, True], [True, False, False], [True, True, False]]


def test_mixed_bound_is_sound_and_never_below_the_best_row_on_random_networks():
    helped = 0
    for seed in range(6):
        net = random_fc([3, 12, 12, 4], seed)
        g = torch.Generator().manual_seed(seed)
        N = 16
        c = torch.rand(N, 3, generator=g, dtype=D) * 2 - 1
        w = torch.rand(N, 3, generator=g, dtype=D) * 0.5
        lo, hi = c - w, c + w
        # two polytopes: rows 0-2 and rows 3-4, thresholds just above the rows' typical lower bound, where
        # single rows sit near zero and mixing can decide
        C = torch.randn(5, 4, generator=g, dtype=D)
        r = crown(net, DomainState(lo, hi), C)
        d = r.lb.median(0).values + 0.02
        groups = torch.tensor([0, 0, 0, 1, 1])
        index, valid = group_index(groups, 2)
        single, _, _ = mix_rows(r.A_input, r.bias, d, lo, hi, index, valid, r.lb, iters=0)
        mixed, _, _ = mix_rows(r.A_input, r.bias, d, lo, hi, index, valid, r.lb, iters=30)
        assert (mixed >= single).all()
        helped += int(((mixed > single + 1e-9) & (mixed > 0) & (single <= 0)).sum())
        # lam . (C y - d) <= max_i (C_i y - d_i): the value never exceeds any sampled point's polytope margin
        x = lo[:, None] + (hi - lo)[:, None] * torch.rand(N, 2000, 3, generator=g, dtype=D)
        with torch.no_grad():
            z = net(x.reshape(-1, 3)).reshape(N, 2000, 4) @ C.T - d
        for k in range(2):
            margin = z[..., groups == k].max(-1).values.min(-1).values  # (N,)
            assert (mixed[:, k] <= margin + 1e-9).all()
    assert helped > 0  # mixing refuted some polytope that no single row could
