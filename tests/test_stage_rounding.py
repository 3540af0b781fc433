"""The rounding bound of a graph stage (``Stage.err_weight``) in exact rational arithmetic, on stages with a single
term, where the term's own rounding is the only thing that covers back-substitution: the stage alone, and a chain
of two stages through ``crown.backward`` with ``layer_errors`` (docs/soundness.md, rule 7)."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from relaxations.crown import backward, layer_errors
from relaxations.fp import dot_abs, reach
from relaxations.layers import Linear, Stage
from relaxations.network import Network

pytestmark = pytest.mark.fast

F32 = torch.float32


def _linear(g, n_out, n_in, scale):
    """A float32 Linear layer without bias (so no constant term absorbs the coefficients' rounding)."""
    return Linear((torch.randn(n_out, n_in, generator=g, dtype=torch.float64) * scale).to(F32),
                  torch.zeros(n_out, dtype=F32))


def _stage(g, whole: bool):
    """One term: a Linear on one slot of a two-slot state (the other slot dropped), or on the whole state."""
    if whole:
        return Stage([7], [6], [(0, None, _linear(g, 6, 7, 1e3))])
    return Stage([4, 3], [6], [(0, 0, _linear(g, 6, 4, 1e3))])


def _frac(t):
    return [[Fraction(float(v)) for v in row] for row in t.double().reshape(t.shape[0], -1).tolist()]


def _apply(W, x):
    """``W x`` in exact arithmetic: ``W`` rows of Fractions, ``x`` a list of Fractions."""
    return [sum(w * xi for w, xi in zip(row, x)) for row in W]


def _box(g, n, N):
    lo = (torch.rand(1, n, generator=g, dtype=torch.float64) * 200 - 100).to(F32)
    hi = lo + (torch.rand(1, n, generator=g, dtype=torch.float64) * 50).to(F32)
    t = torch.rand(N, n, generator=g, dtype=torch.float64)
    x = torch.minimum(lo.double() + t * (hi.double() - lo.double()), hi.double()).to(F32)
    return lo, hi, torch.maximum(x, lo)


@pytest.mark.parametrize("whole", [False, True], ids=["slot", "whole-state"])
def test_single_term_stage_backward_error_is_bounded_exactly(whole):
    """``|A . stage(x) - (A' . x + c)| <= <|A|, w> + under`` for float32 ``A``, sampled ``|x| <= r``, exactly."""
    g = torch.Generator().manual_seed(11 + whole)
    stage = _stage(g, whole)
    lo, hi, x = _box(g, stage.in_size, 20)
    N, m = x.shape[0], 4
    A = torch.randn(N, m, stage.out_size, generator=g, dtype=torch.float64).to(F32)
    Ab, c = stage.backward(A)
    W, b = stage.dense()
    Wf, bf = _frac(W), [Fraction(float(v)) for v in b.tolist()]
    w, under = stage.err_weight(reach(lo, hi).expand(N, -1))
    bound = dot_abs(A.double(), w.double()) + under.double()
    worst = Fraction(0)
    for i in range(N):
        xi = [Fraction(float(v)) for v in x[i].tolist()]
        y = [v + bi for v, bi in zip(_apply(Wf, xi), bf)]
        for k in range(m):
            lhs = sum(Fraction(float(a)) * yj for a, yj in zip(A[i, k].tolist(), y))
            rhs = sum(Fraction(float(a)) * xj for a, xj in zip(Ab[i, k].tolist(), xi))
            rhs += Fraction(0) if c is None else Fraction(float(c[i, k]))
            err = abs(lhs - rhs)
            assert err <= Fraction(float(bound[i, k])), (i, k, float(err), float(bound[i, k]))
            worst = max(worst, err)
    assert worst > 0, "the test must exercise some rounding"


def test_chain_of_single_term_stages_back_substitution_is_rigorous():
    """Two single-term stages in a chain, back-substituted by ``crown.backward`` with ``layer_errors``: the
    returned ``A_in . x + bias`` is within ``err`` of ``A . f(x)`` at sampled points, in exact arithmetic."""
    g = torch.Generator().manual_seed(5)
    s1 = Stage([5], [6], [(0, 0, _linear(g, 6, 5, 30.0))])
    s2 = Stage([6], [3], [(0, None, _linear(g, 3, 6, 30.0))])
    net = Network([s1, s2], (5,))
    lo, hi, x = _box(g, 5, 25)
    N, m = x.shape[0], 4
    A = torch.randn(N, m, 3, generator=g, dtype=torch.float64).to(F32)
    L, U = lo.expand(N, -1), hi.expand(N, -1)
    errors = layer_errors(net, L, U, [], 2)
    A_in, bias, _, err = backward(net, 2, A, [], errors=errors)
    W1, b1 = s1.dense()
    W2, b2 = s2.dense()
    W1f, W2f = _frac(W1), _frac(W2)
    b1f, b2f = ([Fraction(float(v)) for v in b.tolist()] for b in (b1, b2))
    worst = Fraction(0)
    for i in range(N):
        xi = [Fraction(float(v)) for v in x[i].tolist()]
        h = [v + bi for v, bi in zip(_apply(W1f, xi), b1f)]
        y = [v + bi for v, bi in zip(_apply(W2f, h), b2f)]
        for k in range(m):
            lhs = sum(Fraction(float(a)) * yj for a, yj in zip(A[i, k].tolist(), y))
            rhs = sum(Fraction(float(a)) * xj for a, xj in zip(A_in[i, k].tolist(), xi)) + Fraction(float(bias[i, k]))
            gap = abs(lhs - rhs)
            assert gap <= Fraction(float(err[i, k])), (i, k, float(gap), float(err[i, k]))
            worst = max(worst, gap)
    assert worst > 0, "the test must exercise some rounding"
