"""Rigorous float64 helpers (a-priori error bounds, Higham §3.1) and their exact (rational) twins.

Float mode: every error bound below is itself computed in float64 from non-negative terms; the factor INFL
(1 + 2^-20) dominates the rounding of any such computation with fewer than 2^30 operations, and TINY (2^-1022
per operation) dominates underflow. Exact mode (`ex`): arrays hold exact rationals (`rat`: python-flint's `fmpq`
when it is installed, else `fractions.Fraction`), every bound is 0; `mm` multiplies them (flint's `fmpq_mat`).
"""
from fractions import Fraction

import numpy as np

try:
    from flint import fmpq, fmpq_mat
except ImportError:  # exact mode in pure Python (slower, same values)
    fmpq = fmpq_mat = None


def rat(x):
    """A number (int, float, Fraction) as the exact mode's rational."""
    f = Fraction(x)
    return f if fmpq is None else fmpq(f.numerator, f.denominator)


def mm(X, Y):
    """X (..., m) @ Y (m, n) or (m,) for object arrays of rationals, exactly."""
    if fmpq_mat is None or 0 in X.shape + Y.shape:
        return X @ Y
    Ys = Y.reshape(Y.shape[0], -1)
    R = fmpq_mat(X.size // X.shape[-1], X.shape[-1], list(X.ravel())) * fmpq_mat(*Ys.shape, list(Ys.ravel()))
    return np.array(R.entries(), dtype=object).reshape(X.shape[:-1] + Y.shape[1:])


U = 2.0 ** -53
INFL = 1.0 + 2.0 ** -20
TINY = 2.0 ** -1022


def gam(n):
    """Relative factor bounding |fl(sum of n products) - exact| by gam(n) * fl(sum |products|)."""
    return (n + 2) * U * INFL ** 3


def down(x):
    return np.nextafter(x, -np.inf)


def up(x):
    return np.nextafter(x, np.inf)


def conv(a, ex):
    """float array (float32 read exactly) -> float64 array, or an object array of rationals (rat) in exact mode."""
    a = np.asarray(a, dtype=np.float64)
    return np.array([rat(v) for v in a.ravel().tolist()], dtype=object).reshape(a.shape) if ex else a


def up_float(q):
    """The smallest float64 >= the rational q."""
    f = float(q)
    return f if Fraction(f) >= q else float(np.nextafter(f, np.inf))


def dot_err(absA, absv, n):
    """Bound of the rounding error of rows . v: gam(n) * (|A| . |v|) + underflow; absA (..., n), absv (..., n)."""
    return (absA * absv).sum(-1) * gam(n) + (n + 2) * TINY


def lower_value(val, const, err):
    """A rigorous lower bound of val + const - err (all float64 arrays of one shape; err >= 0)."""
    s = val + const
    return down(s - (err + 2 * U * np.abs(s) + TINY) * INFL)
