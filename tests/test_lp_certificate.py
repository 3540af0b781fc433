"""The LP dual certificate (``relaxations.lp.sound.certified_min``) against its own value in exact rational
arithmetic, on inputs built so that float64 rounding is large where it matters: a right-hand side that cancels
the constant (rounding of the sum), and reduced costs ``r = c + A^T lam`` that cancel to near zero over a wide
box (rounding of ``r``). The certificate must never exceed the exact value of the expression it evaluates
(weak duality makes that value a lower bound of the LP), and must stay close to it (not vacuous)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from relaxations.lp.sound import certified_min

pytestmark = pytest.mark.fast

TRIALS = 40


def _exact(c, c0, blocks, L, U) -> Fraction:
    """``c0 - sum lam.b + sum_j min(r_j L_j, r_j U_j)``, ``r = c + sum A^T lam``, every float read as exact."""
    r = [Fraction(float(x)) for x in c]
    const = Fraction(float(c0))
    for A, b, lam in blocks:
        for i in range(A.shape[0]):
            li = Fraction(float(lam[i]))
            const -= li * Fraction(float(b[i]))
            for j in range(A.shape[1]):
                if A[i, j] != 0:
                    r[j] += Fraction(float(A[i, j])) * li
    return const + sum(min(rj * Fraction(float(a)), rj * Fraction(float(b))) for rj, a, b in zip(r, L, U))


def _check(c, c0, blocks, L, U, equalities: bool):
    ineqs, eqs = ([], blocks) if equalities else (blocks, [])
    got = certified_min(c, c0, ineqs, eqs, L, U)
    exact = _exact(c, c0, blocks, L, U)
    assert np.isfinite(got)
    assert Fraction(got) <= exact, f"certificate {got!r} above its exact value {float(exact)!r}"
    return got, exact


def _cancelling_constant(seed, equalities):
    """Small integer ``A``, ``lam``, ``c`` (``r`` exact), box in ``[-1, 1]``, right-hand sides ~1e12 that the
    constant ``c0`` cancels: the float sum of ``lam . b`` is off by ~1e-4, far more than the total's ulp."""
    g = np.random.default_rng(seed)
    m, n = 12, 20
    A = g.integers(-3, 4, size=(m, n)).astype(np.float64)
    lam = g.integers(0, 6, size=m).astype(np.float64)
    if equalities:
        lam = lam * g.choice([-1.0, 1.0], size=m)
    b = g.standard_normal(m) * 1e12
    c = g.integers(-5, 6, size=n).astype(np.float64)
    L = -g.random(n)
    U = g.random(n)
    c0 = float(sum(Fraction(float(x)) * Fraction(float(y)) for x, y in zip(lam, b)))  # nearest float to lam . b
    return c, c0, [(A, b, lam)], L, U


def _cancelling_reduced_costs(seed, equalities):
    """``c = -fl(A^T lam)``, so the exact ``r`` is the rounding residue of that product (~1e-9 of entries ~1e7),
    over a box of half-width 1e6: ``r``'s rounding moves the value by ~1e-3."""
    g = np.random.default_rng(seed)
    m, n = 12, 20
    A = g.standard_normal((m, n)) * 1e6
    lam = g.random(m)
    if equalities:
        lam = lam * g.choice([-1.0, 1.0], size=m)
    b = g.standard_normal(m)
    c = -(A.T @ lam)
    L = -1e6 * (1 + g.random(n))
    U = 1e6 * (1 + g.random(n))
    return c, 0.0, [(A, b, lam)], L, U


def _run(make, equalities):
    for seed in range(TRIALS):
        c, c0, blocks, L, U = make(seed, equalities)
        got, exact = _check(c, c0, blocks, L, U, equalities)
        A, b, lam = blocks[0]
        scale = abs(c0) + float(np.abs(lam * b).sum()) \
            + float((np.abs(c) + np.abs(A).T @ np.abs(lam)) @ np.maximum(np.abs(L), np.abs(U)))
        assert float(exact) - got <= 1e-12 * scale, "the certificate is far looser than its rounding"


def test_cancelling_constant_with_inequality_multipliers():
    _run(_cancelling_constant, equalities=False)


def test_cancelling_constant_with_equality_multipliers():
    _run(_cancelling_constant, equalities=True)


def test_cancelling_reduced_costs_with_inequality_multipliers():
    _run(_cancelling_reduced_costs, equalities=False)


def test_cancelling_reduced_costs_with_equality_multipliers():
    _run(_cancelling_reduced_costs, equalities=True)
