"""Exact interval bounds of every ReLU pre-activation, for the MILP oracle's big-M.

The exact MILP (:mod:`relaxations.milp`) is the ground truth the bounding code is tested against, so its big-M
must not come from the bounding code (:mod:`relaxations.ibp` and friends): a bug there would otherwise reach
the oracle too. This module computes them from the network's own affine maps only (the float64 blocks of
:func:`relaxations.lp.encoding.affine_blocks`, which is what the MILP encodes), in exact rational arithmetic:
every float is a dyadic rational ``m * 2**-k``, so a layer's interval is computed with Python integers scaled
by a common power of two, without any rounding, and the bounds stay exact from layer to layer. Only the final
values are rounded, outward, to float64 (the largest float ``<=`` each exact lower bound and the smallest float
``>=`` each exact upper bound), so every returned interval contains the exact one.

For a block ``z = W y + b`` over ``y`` in ``[l, u]``: ``min z_i = b_i + sum_j (W_ij l_j if W_ij > 0 else
W_ij u_j)``, and the max symmetrically; the next block's input is ``[relu(l), relu(u)]`` of the exact values.
The cost is one Python big-integer product per stored weight and bound, so it is meant for the networks an
exact MILP can handle, not for production bounding.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np


def _dyadic(values) -> tuple[np.ndarray, int]:
    """``(ints, k)`` with ``values == ints / 2**k`` exactly: object array of Python ints, common ``k >= 0``."""
    vals = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(vals)):
        raise ValueError("exact interval bounds need finite weights and input bounds")
    ratios = [float(v).as_integer_ratio() for v in vals]  # denominators are powers of two
    k = max((d.bit_length() - 1 for _, d in ratios), default=0)
    ints = np.empty(len(ratios), dtype=object)
    for i, (n, d) in enumerate(ratios):
        ints[i] = n << (k - (d.bit_length() - 1))
    return ints, k


def _floor_float(num: int, k: int) -> float:
    """The largest float64 ``<= num / 2**k``."""
    f = num / (1 << k)  # Python's int / int is correctly rounded
    if Fraction(f) > Fraction(num, 1 << k):
        f = float(np.nextafter(f, -np.inf))
    return f


def _ceil_float(num: int, k: int) -> float:
    """The smallest float64 ``>= num / 2**k``."""
    return -_floor_float(-num, k)


def _block_interval(W, b, lo, hi, k_in):
    """Exact ``(lo, hi, k)`` of ``W y + b`` over ``y`` in ``[lo, hi] / 2**k_in`` (ints over ``2**k``)."""
    W = W.tocsr()
    w_int, k_w = _dyadic(W.data)
    b_int, k_b = _dyadic(b)
    k = max(k_w + k_in, k_b)
    cols, rows = W.indices, np.repeat(np.arange(W.shape[0]), np.diff(W.indptr))
    pos = W.data > 0
    lo_terms = w_int * np.where(pos, lo[cols], hi[cols])  # object arrays: exact Python int products
    hi_terms = w_int * np.where(pos, hi[cols], lo[cols])
    shift_b = 1 << (k - k_b)
    new_lo = np.array([int(v) * shift_b for v in b_int], dtype=object)
    new_hi = new_lo.copy()
    shift_p = 1 << (k - k_w - k_in)
    for r, a, c in zip(rows, lo_terms, hi_terms):
        new_lo[r] += a * shift_p
        new_hi[r] += c * shift_p
    return new_lo, new_hi, k


def exact_pre_bounds(blocks, lower, upper, activations=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(l_i, u_i)]`` float64 ``(n_i,)`` per ReLU layer: the exact interval bounds of the pre-activations of
    ReLU layer ``i`` over the box ``[lower, upper]``, rounded outward. ``blocks``: the list of
    :func:`relaxations.lp.encoding.affine_blocks` (the last block, to the output, is not bounded).

    ``activations``: None (every activation a ReLU, exact), or one entry per activation layer: None for a ReLU,
    else a function ``(l, u) -> (lo, hi)`` of float64 arrays returning rigorous bounds of that monotone
    activation's outputs over ``[l, u]`` (rounded outward by the function; e.g. the enclosures of
    :mod:`relaxations.transcendental`): the next block then starts from those floats, exactly."""
    lo, k_lo = _dyadic(lower)
    hi, k_hi = _dyadic(upper)
    k = max(k_lo, k_hi)
    lo = lo * (1 << (k - k_lo))
    hi = hi * (1 << (k - k_hi))
    out = []
    for i, blk in enumerate(blocks[:-1]):
        lo, hi, k = _block_interval(blk.W, blk.b, lo, hi, k)
        out.append((np.array([_floor_float(int(v), k) for v in lo]),
                    np.array([_ceil_float(int(v), k) for v in hi])))
        act = None if activations is None else activations[i]
        if act is None:
            lo = np.array([max(int(v), 0) for v in lo], dtype=object)
            hi = np.array([max(int(v), 0) for v in hi], dtype=object)
            continue
        a_lo, a_hi = act(*out[-1])
        (lo, k_lo), (hi, k_hi) = _dyadic(a_lo), _dyadic(a_hi)
        k = max(k_lo, k_hi)
        lo = lo * (1 << (k - k_lo))
        hi = hi * (1 << (k - k_hi))
    return out
