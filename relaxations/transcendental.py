"""Rigorous enclosures of the smooth activations (sigmoid, tanh, softplus) and the exact repair of their lines.

libm (and torch) ``exp``/``tanh``/``log1p`` are not correctly rounded, so no proof may rest on one of their
values. Every value here is computed in float64 and widened by :data:`ULPS` units of float64 roundoff relative
to the result plus a few times the smallest normal float64 (underflow, subnormals): ``tests/test_sshaped.py``
checks against mpmath at more than 1e5 points (saturation, tiny ``|z|``, the float32 extremes included; its slow
tier, a fifth of them by default) that the float64 error stays below half of that allowance. The working-dtype
values are then rounded outward from the float64 enclosure (:func:`relaxations.fp.to_dtype_down` / ``to_dtype_up``).

A linear bound ``k z + b`` of an activation ``f`` on ``[l, u]`` is *repaired*, never trusted: its largest
violation is bounded rigorously and ``b`` shifted by its positive part (:func:`repair`). For an S-shaped ``f``
(convex on ``z <= 0``, concave on ``z >= 0``: sigmoid, tanh) and a lower line, ``g = k z + b - f`` is concave on
the left piece and convex on the right one; a convex piece attains its maximum at an end, and on a concave piece
``[a, c]`` ``g(z) <= g(p) + g'(p) (z - p) <= g(p) + max(max(g'(p), 0) (c - p), max(-g'(p), 0) (p - a))`` for
every ``p`` (a tangent of a concave function lies above it), which is tight when ``p`` is near the tangency point
``f'(p) = k`` (computed in plain float64: an error there costs tightness only) and, taken at an end, when the
piece is monotone (the least of the three bounds is used). Upper lines: the same with the pieces' roles
swapped. Softplus is convex: a lower line uses the tangent rule on the whole interval, an upper line the ends.
So a proof rests only on the enclosures of ``f`` and ``f'`` at a handful of points, evaluated with outward
rounding.

Shapes: every function is elementwise on float64 tensors of any (common, broadcastable) shape.
"""
from __future__ import annotations

import torch

KINDS = ("sigmoid", "tanh", "softplus")
S_SHAPED = ("sigmoid", "tanh")
ULPS = 16  # relative widening of a float64 value, in units of float64 roundoff (a test checks 2x margin)
_U = 2.0 ** -53
_TINY = float(torch.finfo(torch.float64).tiny)
_RANGE = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softplus": (0.0, float("inf"))}


def value(kind: str, z: torch.Tensor) -> torch.Tensor:
    """``f(z)`` in float64 (not rigorous: see :func:`enclose`)."""
    z = z.double()
    if kind == "sigmoid":
        e = torch.exp(-z.abs())
        return torch.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if kind == "tanh":
        return torch.tanh(z)
    if kind == "softplus":
        return z.clamp(min=0) + torch.log1p(torch.exp(-z.abs()))
    raise ValueError(f"unknown activation {kind!r}; choose from {KINDS}")


def deriv(kind: str, z: torch.Tensor) -> torch.Tensor:
    """``f'(z)`` in float64, without cancellation near saturation (not rigorous: see :func:`enclose_deriv`)."""
    z = z.double()
    if kind == "sigmoid":
        e = torch.exp(-z.abs())
        return e / (1.0 + e) ** 2
    if kind == "tanh":
        e = torch.exp(-2.0 * z.abs())
        return 4.0 * e / (1.0 + e) ** 2
    if kind == "softplus":
        return value("sigmoid", z)
    raise ValueError(f"unknown activation {kind!r}; choose from {KINDS}")


def _widen(v: torch.Tensor):
    w = ULPS * _U * v.abs() + 4 * _TINY
    return v - w, v + w


def enclose(kind: str, z: torch.Tensor):
    """``(lo, hi)`` float64 with ``lo <= f(z) <= hi`` for the real ``f`` at the float64 ``z`` (NaN stays NaN)."""
    lo, hi = _widen(value(kind, z))
    a, b = _RANGE[kind]
    lo, hi = lo.clamp(min=a), hi.clamp(max=b)
    if kind == "softplus":  # softplus(z) > max(z, 0)
        lo = torch.maximum(lo, z.double().clamp(min=0))
    return lo, hi


def enclose_deriv(kind: str, z: torch.Tensor):
    """``(lo, hi)`` float64 enclosing ``f'(z)``."""
    lo, hi = _widen(deriv(kind, z))
    return lo.clamp(min=0), hi.clamp(max=1.0 if kind != "sigmoid" else 0.25)


# ------------------------------------------------------------------ exact repair of a line
def _sum_up(*terms):
    """A float64 upper bound of the real sum of the float64 ``terms``: their float sum raised by its rounding."""
    s = terms[0]
    mag = terms[0].abs()
    for t in terms[1:]:
        s = s + t
        mag = mag + t.abs()
    return s + (len(terms) + 2) * _U * 2 * mag + 2 * _TINY


def _mul_up(k, z):
    """Upper bound of the real ``k z`` (float64)."""
    p = k * z
    return p + 2 * _U * p.abs() + _TINY


def _violation_at(kind, k, b, z, side, fz=None):
    """Upper bound of ``k z + b - f(z)`` (``side`` "lower") or ``f(z) - k z - b`` ("upper") at float64 ``z``;
    ``fz``: ``enclose(kind, z)`` when already known."""
    lo, hi = enclose(kind, z) if fz is None else fz
    if side == "lower":
        return _sum_up(_mul_up(k, z), b, -lo)
    return _sum_up(hi, _mul_up(-k, z), -b)


def _tangent_at(kind, k, b, a, c, p, side):
    """Upper bound of the concave violation ``g`` over ``[a, c]`` by its tangent at ``p`` in ``[a, c]``:
    ``g(z) <= g(p) + g'(p) (z - p)``, whose largest value is ``max(g'(p), 0) (c - p)`` right of ``p`` or
    ``max(-g'(p), 0) (p - a)`` left of it (``g'(p)`` enclosed: ``k - f'(p)`` for a lower line, ``f'(p) - k``
    for an upper one)."""
    g = _violation_at(kind, k, b, p, side)
    dlo, dhi = enclose_deriv(kind, p)
    gp_lo, gp_hi = (k - dhi, k - dlo) if side == "lower" else (dlo - k, dhi - k)
    rise = gp_hi.clamp(min=0) + 4 * _U * gp_hi.abs() + _TINY     # >= max(g'(p), 0)
    fall = (-gp_lo).clamp(min=0) + 4 * _U * gp_lo.abs() + _TINY   # >= max(-g'(p), 0)
    right, left = c - p, p - a
    right, left = right + 2 * _U * right.abs() + _TINY, left + 2 * _U * left.abs() + _TINY
    return _sum_up(g, torch.maximum(_mul_up(rise, right), _mul_up(fall, left)))


def _tangent_rule(kind, k, b, a, c, p, side):
    """Upper bound of the concave violation over ``[a, c]``: the least of the tangent bounds
    (:func:`_tangent_at`) at ``p`` (clamped into ``[a, c]``; ``a`` where not finite) and at both ends (an end's
    bound is its value when the violation decreases away from it: a monotone piece costs nothing)."""
    p = torch.minimum(torch.maximum(p, a), c)
    p = torch.where(torch.isfinite(p), p, a)
    out = _tangent_at(kind, k, b, a, c, p, side)
    for end in (a, c):
        out = torch.minimum(out, _tangent_at(kind, k, b, a, c, end, side))
    return out


def tangency(kind: str, k: torch.Tensor, sign: int) -> torch.Tensor:
    """The point ``z`` with ``f'(z) = k`` on the side ``sign`` (+1: ``z >= 0``, -1: ``z <= 0``), float64, not
    rigorous (NaN where none exists). Sigmoid: ``s = (1 + sign sqrt(1 - 4k)) / 2``, ``z = log(s / (1 - s))``; tanh:
    ``z = atanh(sign sqrt(1 - k))``; softplus: ``z = log(k / (1 - k))``."""
    k = k.double()
    if kind == "sigmoid":
        r = torch.sqrt((1 - 4 * k).clamp(min=0))
        s = (1 + sign * r) / 2
        return torch.log(s) - torch.log1p(-s)
    if kind == "tanh":
        return torch.atanh(sign * torch.sqrt((1 - k).clamp(min=0)))
    return torch.log(k) - torch.log1p(-k)


def max_violation(kind: str, k, b, l, u, side: str, ends=None) -> torch.Tensor:
    """A rigorous float64 upper bound of the largest violation of the line ``k z + b`` as a ``side`` bound of
    ``f`` over ``[l, u]``: ``max (k z + b - f(z))`` for "lower", ``max (f(z) - k z - b)`` for "upper" (all float64,
    broadcastable; ``l <= u``). ``+inf``/NaN inputs give NaN or inf: callers treat a non-finite result as no line.
    ``ends``: ``(enclose(kind, l), enclose(kind, u))`` when already known (a relaxation repairing many lines on
    the same intervals)."""
    k, b, l, u = (t.double() for t in (k, b, l, u))
    fl, fu = (None, None) if ends is None else ends
    v = torch.maximum(_violation_at(kind, k, b, l, side, fl), _violation_at(kind, k, b, u, side, fu))
    if kind == "softplus":  # convex f: a lower line's violation is concave, an upper line's convex
        if side == "lower":
            v = torch.maximum(v, _tangent_rule(kind, k, b, l, u, tangency(kind, k, 1), side))
        return v
    zero = torch.zeros_like(l)
    left_a, left_c = l, torch.minimum(u, zero)      # f convex here
    right_a, right_c = torch.maximum(l, zero), u    # f concave here
    has_left, has_right = l < 0, u > 0
    v = torch.where(has_left & has_right, torch.maximum(v, _violation_at(kind, k, b, zero, side)), v)
    if side == "lower":   # concave violation on the left piece
        t = _tangent_rule(kind, k, b, left_a, left_c, tangency(kind, k, -1), side)
        return torch.where(has_left, torch.maximum(v, t), v)
    t = _tangent_rule(kind, k, b, right_a, right_c, tangency(kind, k, 1), side)
    return torch.where(has_right, torch.maximum(v, t), v)


def repair(kind: str, k, b, l, u, side: str, ends=None) -> torch.Tensor:
    """``b`` (float64) shifted so that ``k z + b'`` is a valid ``side`` bound of ``f`` on ``[l, u]`` in real
    arithmetic (lower: ``b' = b - max(v, 0)`` rounded down; upper: ``b + max(v, 0)`` rounded up; ``v`` from
    :func:`max_violation`, ``ends`` passed on). NaN where the violation is not finite."""
    b = b.double()
    v = max_violation(kind, k, b, l, u, side, ends).clamp(min=0)
    v = torch.where(torch.isfinite(v), v, torch.full_like(v, float("nan")))
    if side == "lower":
        out = b - v
        return out - 2 * _U * out.abs() - _TINY
    out = b + v
    return out + 2 * _U * out.abs() + _TINY
