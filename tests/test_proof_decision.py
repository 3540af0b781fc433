"""What counts as a proof: a finite bound strictly above the margin (``relaxations.verdict.proven``, as the engine
calls it through ``Rows``), against a property whose decimal thresholds and box ends are rounded the safe way,
checked in exact rational arithmetic on random decimals (docs/soundness.md, rules 1 and 4)."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest
import torch

from bnb.engine.rows import Rows
from bnb.io.spec import Polytope
from relaxations.fp import outward_box
from relaxations.verdict import proven

pytestmark = pytest.mark.fast

DTYPES = [torch.float32, torch.float64]


def _next(x: float, dtype, toward: float) -> float:
    t = torch.tensor(x, dtype=dtype)
    return float(torch.nextafter(t, torch.tensor(toward, dtype=dtype)))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_proven_needs_a_finite_value_strictly_above_the_margin(dtype):
    """On the ``(N, K)`` values the engine decides with and a non-zero margin: a value equal to the margin, one
    just below it, NaN and both infinities prove nothing; the next float above the margin does, and so does an
    infeasible domain whatever its values."""
    m = 0.25
    above, below = _next(m, dtype, math.inf), _next(m, dtype, -math.inf)
    v = torch.tensor([[m, above, below], [math.inf, -math.inf, math.nan], [m, math.inf, above]], dtype=dtype)
    infeasible = torch.tensor([False, False, True])
    assert proven(v, m).tolist() == [[False, True, False], [False, False, False], [False, False, True]]
    assert proven(v, m, infeasible).tolist() == [[False, True, False], [False, False, False], [True, True, True]]
    assert not bool(proven(torch.full((2, 3), math.inf, dtype=dtype), -math.inf).any())


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_a_row_is_settled_only_by_a_refutation_above_the_margin(dtype):
    """``Rows.settled`` (what drops a domain from branch and bound): with the margin set to a row's refutation
    value exactly, that row is not settled; one float lower, it is."""
    rows = Rows([Polytope(np.array([[1.0, -1.0]]), np.array([0.3]))], 2, dtype, "cpu")
    lb = torch.tensor([[0.75]], dtype=dtype)
    value = float(rows.refutation(lb)[0, 0])
    assert value > 0
    no = torch.zeros(1, dtype=torch.bool)
    assert not bool(rows.settled(lb, no, value).any())
    assert bool(rows.settled(lb, no, _next(value, dtype, -math.inf)).all())
    # a bound that is not a finite number settles nothing, whatever the margin
    assert not bool(rows.settled(torch.tensor([[math.inf]], dtype=dtype), no, -1.0).any())


def _decimals(seed: int, k: int) -> list[str]:
    """Short and long decimals of both signs and many scales, most of them not representable in binary."""
    rnd = random.Random(seed)
    out = ["0.1", "-0.1", "0.3", "-2.37", "1e-7", "-1e-7", "1234.5678", "3.991125645861615"]
    while len(out) < k:
        digits = rnd.randint(1, 17)
        mant = rnd.randint(1, 10 ** digits - 1) * rnd.choice([-1, 1])
        out.append(f"{mant}e{rnd.randint(-12, 6) - digits}")
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_thresholds_and_box_contain_the_files_decimals_exactly(dtype):
    """For random decimals ``t`` as a VNN-LIB file writes them (parsed to the nearest float64, as the parsers do):
    the threshold ``Rows.d`` the engine refutes is ``>= t`` and the box ``outward_box`` it bounds over contains
    ``[t, t']``, compared as exact rationals."""
    texts = _decimals(17, 400)
    d = np.array([float(t) for t in texts])
    polys = [Polytope(np.array([[1.0]]), d[i:i + 1]) for i in range(len(d))]
    rows = Rows(polys, 1, dtype, "cpu")
    for got, text in zip(rows.d.tolist(), texts):
        assert Fraction(got) >= Fraction(text), (text, got)
    lo_t, hi_t = texts[0::2], texts[1::2]
    lo64 = np.array([float(a) for a in lo_t])
    hi64 = np.array([float(b) for b in hi_t])
    lo, hi = np.minimum(lo64, hi64), np.maximum(lo64, hi64)
    lo_x = [min(Fraction(a), Fraction(b)) for a, b in zip(lo_t, hi_t)]
    hi_x = [max(Fraction(a), Fraction(b)) for a, b in zip(lo_t, hi_t)]
    L, U = outward_box(lo, hi, dtype)
    assert L.dtype == dtype and U.dtype == dtype
    for a, b, ax, bx in zip(L.tolist(), U.tolist(), lo_x, hi_x):
        assert Fraction(a) <= ax and Fraction(b) >= bx, (a, ax, b, bx)
