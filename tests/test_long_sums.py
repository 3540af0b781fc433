"""Rounding of long sums in float32 bounds: the minimisation over a many-input box summed in float64
(``relaxations.crown.concretize``, ``LONG_SUM``), and the product count of a convolution's backward
(``Conv2d.n_coefficient``), each against exact arithmetic.

Both only tighten the a-priori rounding bound; what they must keep is its validity. The concretisation is
checked against the exact minimum over the box (``fractions.Fraction``: the float32 coefficients and box ends
taken as exact), on inputs far from the origin with cancelling coefficients, where rounding is all there is; the
product count against the number of non-zero terms a transposed convolution sums (all-ones coefficients and
weights, evaluated exactly in float64), and the backward's rounding weights against the exact backward. The exact
rounding tests of beta-CROWN and mn-crown (``tests/test_rounding_exact.py``) run again with every rigorous
float32 concretisation summed in float64 (``LONG_SUM = 1``), so the float64 path is seen on small networks too.
"""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

import relaxations.crown as crown
import tests.test_rounding_exact as exact_rounding
from relaxations.fp import cast_down, dot_abs, reach, to_dtype_down, to_dtype_up
from relaxations.layers import Conv2d

pytestmark = pytest.mark.fast

F32, F64 = torch.float32, torch.float64


def _exact_min(A, bias, lower, upper):
    """``min over the box of A . x + bias`` in exact arithmetic: ``(N, m)`` lists of Fractions."""
    out = []
    for b in range(A.shape[0]):
        lo = [Fraction(v) for v in lower[b].double().tolist()]
        hi = [Fraction(v) for v in upper[b].double().tolist()]
        row = []
        for i in range(A.shape[1]):
            s = Fraction(float(bias[b, i]))
            for a, l, h in zip(A[b, i].double().tolist(), lo, hi):
                s += Fraction(a) * (l if a >= 0 else h)
            row.append(s)
        out.append(row)
    return out


def _cancelling_case(n, seed, centre, width):
    """Coefficients of both signs that cancel over a box far from the origin: the exact minimum is small next to
    ``|A| |x|`` and the float32 sum's rounding is what decides its sign."""
    g = torch.Generator().manual_seed(seed)
    N, m = 2, 4
    A = (torch.randn(N, m, n, generator=g, dtype=F64) * 10.0 ** torch.randint(-2, 3, (N, m, n), generator=g)).to(F32)
    c = (centre * (1 + torch.rand(N, n, generator=g, dtype=F64))).to(F32)
    lower = (c - width * torch.rand(N, n, generator=g)).to(F32)
    upper = (c + width * torch.rand(N, n, generator=g)).to(F32)
    bias = -(A.double() * c.double()[:, None]).sum(-1).to(F32)  # the value at c nearly cancels
    return A, bias, lower, upper


@pytest.mark.parametrize("n", [1024, 3072])
@pytest.mark.parametrize("centre,width", [(100.0, 0.0), (1.0, 1e-3), (1e3, 1e-6)])
def test_concretize_long_sum_is_below_the_exact_minimum_and_tighter(n, centre, width, monkeypatch):
    """Over ``n >= LONG_SUM`` float32 inputs, the rigorous minimum (summed in float64, rounded down to float32) is
    at most the exact one, stays within float32's own rounding of it (a few ulps of the result and float64's
    ``n u |A| |x|``), and is tighter than the same minimum summed in float32."""
    assert n >= crown.LONG_SUM
    A, bias, lower, upper = _cancelling_case(n, 7 + n, centre, width)
    err = torch.zeros(A.shape[:2], dtype=F32)
    got = crown.concretize(A, bias, lower, upper, err)
    monkeypatch.setattr(crown, "LONG_SUM", n + 1)
    in_f32 = crown.concretize(A, bias, lower, upper, err)  # the float32 sum it replaces
    assert got.dtype == F32
    truth = _exact_min(A, bias, lower, upper)
    mag = dot_abs(A.double(), reach(lower, upper).double()) + bias.double().abs()
    for b in range(A.shape[0]):
        for i in range(A.shape[1]):
            g, t = Fraction(float(got[b, i])), truth[b][i]
            assert g <= t, (b, i, float(g), float(t))
            assert float(t - g) <= 4 * abs(float(t)) * 2.0 ** -23 + 1e-12 * float(mag[b, i]) + 1e-30
            assert float(in_f32[b, i]) < float(got[b, i])  # float32's a-priori bound is ~2 n u |A| |x| wide


def test_concretize_keeps_what_float32_cannot_hold_below_the_truth():
    """A minimum beyond float32's range comes back as float32's largest finite number (below the truth), and a
    non-finite one stays non-finite (it proves nothing)."""
    n = 1100
    A = torch.full((1, 3, n), 1e30, dtype=F32)
    A[0, 2, 0] = float("nan")
    lower = torch.full((1, n), 1e10, dtype=F32)
    upper = lower.clone()
    bias = torch.zeros(1, 3, dtype=F32)
    bias[0, 1] = -float("inf")
    got = crown.concretize(A, bias, lower, upper, torch.zeros(1, 3, dtype=F32))
    assert float(got[0, 0]) == torch.finfo(F32).max
    assert got[0, 1] == -float("inf") and torch.isnan(got[0, 2])


def test_outward_float32_conversions_of_values_beyond_its_range():
    """``fp.cast_down`` (shared by ``concretize`` and ``to_dtype_down``): a finite float64 value above float32's
    range comes down to float32's largest number (rounding to nearest would give ``+inf``, above it); ``to_dtype_up``
    mirrors it below; infinities stay."""
    big = 1e300
    f32max = torch.finfo(F32).max
    assert float(to_dtype_down([big], F32)[0]) == f32max
    assert float(to_dtype_up([-big], F32)[0]) == -f32max
    assert float(to_dtype_down([-big], F32)[0]) == -float("inf") and float(to_dtype_up([big], F32)[0]) == float("inf")
    assert float(to_dtype_down([float("inf")], F32)[0]) == float("inf")
    x = torch.tensor([0.1, -0.1, 1 / 3], dtype=F64)
    t = cast_down(x, F32)
    assert bool((t.double() <= x).all()) and bool((torch.nextafter(t, torch.full_like(t, 1.0)).double() > x).all())


def test_concretize_gradient_reaches_the_coefficients():
    """The float64 path is differentiable in the coefficients (the optimisers step on it)."""
    A, bias, lower, upper = _cancelling_case(1024, 3, 1.0, 0.1)
    A.requires_grad_(True)
    lb = crown.concretize(A, bias, lower, upper, torch.zeros(A.shape[:2], dtype=F32))
    lb.sum().backward()
    c, r = (lower + upper) / 2, (upper - lower) / 2
    expect = c[:, None] - torch.sign(A.detach()) * r[:, None]
    assert torch.allclose(A.grad, expect.expand_as(A.grad), atol=1e-5)


CONVS = [  # (C_in, H, W), C_out, kernel, stride, padding, dilation, groups
    ((3, 32, 32), 16, (4, 4), (2, 2), (1, 1), (1, 1), 1),   # cifar_*_kw's first layer
    ((16, 16, 16), 32, (4, 4), (2, 2), (1, 1), (1, 1), 1),  # and its second
    ((2, 9, 9), 4, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    ((2, 9, 9), 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    ((2, 11, 11), 2, (2, 2), (3, 3), (0, 0), (1, 1), 1),    # kernel smaller than the stride
    ((2, 13, 13), 4, (3, 3), (2, 2), (2, 2), (2, 2), 2),    # dilation sharing a factor with the stride
    ((4, 40, 20), 6, (5, 3), (3, 2), (1, 0), (3, 1), 2),     # dilation 3 with stride 3: every tap or none
]


@pytest.mark.parametrize("c_in_hw,c_out,k,s,p,d,groups", CONVS)
def test_conv_coefficient_count_is_the_most_terms_an_entry_sums(c_in_hw, c_out, k, s, p, d, groups):
    """``n_coefficient`` is the largest number of non-zero products in one entry of the transposed convolution
    (all-ones coefficients and weights count them), so ``err_coeff(n_coefficient)`` bounds every entry."""
    w = torch.ones(c_out, c_in_hw[0] // groups, *k, dtype=F64)
    layer = Conv2d(w, None, c_in_hw, stride=s, padding=p, dilation=d, groups=groups)
    back, _ = layer.backward(torch.ones(1, 1, *layer.out_shape, dtype=F64))
    assert layer.n_coefficient == int(back.max())
    assert layer.n_coefficient <= layer.n_backward


@pytest.mark.parametrize("c_in_hw,c_out,k,s,p,d,groups", CONVS[:4])
def test_conv_backward_rounding_within_its_weights(c_in_hw, c_out, k, s, p, d, groups):
    """The float32 backward of a convolution (coefficients and constant) against the exact one (float64 of the same
    float32 numbers: products exact, sums far inside the slack), with cancelling coefficients over a box far from
    the origin: ``|A . layer(x) - (A' . x + c)| <= <|A|, w> + under`` for every point ``|x| <= r``."""
    g = torch.Generator().manual_seed(11)
    w = torch.randn(c_out, c_in_hw[0] // groups, *k, generator=g).to(F32)
    b = (100 * torch.randn(c_out, generator=g)).to(F32)
    layer = Conv2d(w, b, c_in_hw, stride=s, padding=p, dilation=d, groups=groups)
    exact = Conv2d(w.double(), b.double(), c_in_hw, stride=s, padding=p, dilation=d, groups=groups)
    N, m = 3, 5
    x = (50 + torch.rand(N, *c_in_hw, generator=g)).to(F32)
    A = (torch.randn(N, m, *layer.out_shape, generator=g) * 1e3).to(F32)
    Ab, c = layer.backward(A)
    lhs = (A.double().reshape(N, m, -1) * exact.forward(x.double()).reshape(N, 1, -1)).sum(-1)
    rhs = (Ab.double().reshape(N, m, -1) * x.double().reshape(N, 1, -1)).sum(-1) + c.double()
    wt, under = layer.err_weight(x.abs())
    bound = dot_abs(A.double(), wt.double()) + under.double()
    slack = 1e-12 * (dot_abs(A.double(), exact.magnitude(x.double().abs())) + dot_abs(Ab.double(), x.double().abs()))
    assert bool(((lhs - rhs).abs() <= bound + slack).all())
    # and tighter than counting every kernel tap for the coefficients
    n_all = c_out // groups * k[0] * k[1]
    assert layer.n_coefficient < n_all or s == (1, 1)


@pytest.fixture
def float64_sums(monkeypatch):
    monkeypatch.setattr(crown, "LONG_SUM", 1)


@pytest.mark.parametrize("width", [0.0, 1e-6, 1e-2])
def test_beta_crown_rounding_exact_with_float64_sums(float64_sums, width):
    exact_rounding.test_beta_crown_rounding_in_exact_arithmetic(F32, width)


@pytest.mark.parametrize("where", ["root", "child"])
@pytest.mark.parametrize("cuts", ["hull", "anderson"])
def test_mn_crown_rounding_exact_with_float64_sums(float64_sums, cuts, where):
    exact_rounding.test_mn_crown_rounding_in_exact_arithmetic(F32, cuts, where)


@pytest.mark.parametrize("kind", exact_rounding.KINDS)
def test_cancelling_terms_covered_with_float64_sums(float64_sums, kind):
    exact_rounding.test_cancelling_multiplier_terms_are_covered_by_the_rounding_bound(kind, F32)
