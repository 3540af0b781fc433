"""The tight hull of one neuron ``y = f(w.x + b)`` over a box ``[L, U]``, ``f`` S-shaped (sigmoid, tanh: convex on
``z <= 0``, concave on ``z >= 0``) or convex (softplus): its envelopes, their supporting cuts, and the exact
check of a cut (float64 numpy; the construction of ``/work/shared/SSHAPED.md`` section 1, checked in
``tests/test_sshaped_hull.py`` against hulls computed as LPs over dense grids of the graph).

**Normalised problem.** ``f(t) = f(c + a.t)`` over ``t`` in ``[0, 1]^n`` with ``a >= 0`` (a coordinate with
``w_i < 0`` is flipped, every one scaled: ``a_i = |w_i| (U_i - L_i)``, ``c = b + sum_i w_i (L_i or U_i)`` the
least pre-activation). ``zhat(c)``: the point where the concave envelope of ``f`` on ``[c, +inf)`` stops being
the secant from ``c`` (the tie point of :func:`relaxations.layers.sshaped.tie_point` for ``c < 0``, ``c`` itself
for ``c >= 0``, ``+inf`` for a convex ``f``).

**Concave envelope at ``t``** (``m = max t``, ``i*`` its index, ``e = t / m`` where the ray from ``0`` leaves the
box, ``s = c + a.t``): (1) ``s >= zhat(c)``: ``f(s)``; (2) else if ``c + a.e >= zhat(c)``: the one-dimensional
hull ``f(c) + f'(zhat)(s - c)``; (3) else ``(1 - m) f(c) + m conc_F(e)``, the same problem on the facet
``t_i* = 1`` (``c + a_i*``, ``a`` without ``i*``, the point ``e`` without ``i*``). Sorting ``t`` once makes the
facets of the recursion the prefixes of that order, so every level is evaluated at once (one vectorised
tie-point bisection) and the recursion unrolls into a loop of length at most ``n``. A supergradient comes with
it: ``f'(s) a`` in case 1, ``f'(zhat) a`` in case 2, and in case 3 the facet's supergradient ``g'`` extended by
``g_i* = -f(c) + v' - g'.e`` (the plane through ``(0, f(c))`` and the facet's supporting plane). For a convex
``f`` case 3 always applies: the staircase (Lovasz) hull. The convex envelope is the concave one of ``-f``:
``f(-z) = K - f(z)`` (``K`` = 1 for sigmoid, 0 for tanh) makes it ``K - conc`` of the flipped problem; softplus is
convex, its convex envelope ``f`` itself.

**Cuts are checked, never trusted.** :func:`upper_cut` / :func:`lower_cut` turn the supergradient into a cut
``y <= alpha + beta.x`` (``>=``) in the original coordinates and raise (lower) ``alpha`` by the positive part of
:func:`cut_violation`, a rigorous bound of the cut's largest violation over the box: for each ``s`` the
violation is ``f(s) - alpha - phi(s)`` with ``phi(s) = min beta.x`` over the slice ``w.x + b = s`` of the box
(a continuous knapsack: convex and piecewise linear, slopes ``beta_i / w_i`` in sorted order); weak duality
gives, for every float ``lam``, the line ``lam s + D(lam) <= phi(s)`` on the whole range of ``s``, with ``D``
a sum over the coordinates evaluated with an a-priori rounding bound; with ``lam`` the slope of each piece the
line is that piece, and the line's violation over the piece is bounded by
:func:`relaxations.transcendental.max_violation` (enclosures of ``f`` and ``f'`` only). ``docs/soundness.md``
has the argument. The tie points, the sort and the envelope are plain float64: an error there costs tightness.
"""
from __future__ import annotations

import numpy as np
import torch

from relaxations import transcendental as tr
from relaxations.layers.sshaped import tie_point

_U = 2.0 ** -53
_TINY = float(np.finfo(np.float64).tiny)
REFLECT = {"sigmoid": 1.0, "tanh": 0.0}  # f(-z) = K - f(z)


def _f(kind, z):
    return tr.value(kind, torch.as_tensor(np.asarray(z, dtype=np.float64))).numpy()


def _df(kind, z):
    return tr.deriv(kind, torch.as_tensor(np.asarray(z, dtype=np.float64))).numpy()


def _check_kind(kind):
    if kind not in tr.KINDS:
        raise ValueError(f"unknown activation {kind!r}; choose from {tr.KINDS}")


def tie_levels(kind: str, c) -> np.ndarray:
    """``zhat(c)`` elementwise (float64, not rigorous): the tie point for ``c < 0``, ``c`` for ``c >= 0``
    (S-shaped ``f``); ``+inf`` for the convex softplus (the secant never stops)."""
    c = np.asarray(c, dtype=np.float64)
    if kind not in tr.S_SHAPED:
        return np.full_like(c, np.inf)
    neg = c < 0
    z = c.copy()
    if neg.any():
        z[neg] = tie_point(kind, torch.as_tensor(c[neg])).numpy()
    return z


def concave_envelope(kind: str, a, c: float, t):
    """``(value, grad)``: the concave envelope of ``f(c + a.t)`` over ``t`` in ``[0, 1]^n`` at ``t`` (``a >= 0``,
    ``t`` clipped into the box) and a supergradient there (float64 ``(n,)``; see the module docstring)."""
    _check_kind(kind)
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    t = np.clip(np.asarray(t, dtype=np.float64).reshape(-1), 0.0, 1.0)
    c = float(c)
    n = a.size
    if t.size != n or not (np.all(np.isfinite(a)) and np.isfinite(c) and np.all(np.isfinite(t))):
        raise ValueError("concave_envelope: a, c and t must be finite, a and t of one length")
    if np.any(a < 0):
        raise ValueError("concave_envelope: a must be non-negative (flip the coordinates first)")
    order = np.argsort(-t, kind="stable")
    tau, ap = t[order], a[order]
    ck = c + np.concatenate([[0.0], np.cumsum(ap)])                      # corner of level k = 0..n
    ssuf = np.concatenate([np.cumsum((ap * tau)[::-1])[::-1], [0.0]])    # sum_{j >= k} a_j tau_j
    asuf = np.concatenate([np.cumsum(ap[::-1])[::-1], [0.0]])            # sum_{j >= k} a_j
    d = np.concatenate([[1.0], tau])                                     # level k's point is tau_j / d_k
    virtual = d <= 0             # the point is 0: the ray's direction is taken as all ones (any is a limit)
    s = np.where(virtual, ck + asuf, ck + ssuf / np.where(virtual, 1.0, d))
    m = np.where(virtual[:n], 1.0, tau / np.where(virtual[:n], 1.0, d[:n]))
    pos = tau > 0
    r = np.where(pos, ck[:n] + ssuf[:n] / np.where(pos, tau, 1.0), ck[:n] + asuf[:n])  # where the ray leaves
    zhat = tie_levels(kind, ck)
    case1 = s >= zhat
    case2 = np.concatenate([r >= zhat[:n], [False]])
    stop = case1 | case2
    stop[n] = True
    K = int(np.argmax(stop))
    fc = _f(kind, ck[:K + 1])
    g = np.zeros(n)
    if K < n and case1[K]:
        gam = float(_df(kind, s[K]))
        v = float(_f(kind, s[K]))
    elif K < n:  # case 2: the one-dimensional hull in s
        gam = float(_df(kind, zhat[K]))
        v = float(fc[K]) + gam * (s[K] - ck[K])
    else:
        gam, v = 0.0, float(fc[n])
    g[K:] = gam * ap[K:]
    w_tau, w_one = gam * ssuf[K], gam * asuf[K]  # sum_{j > k} g_j tau_j and sum_{j > k} g_j
    for k in range(K - 1, -1, -1):  # case 3 levels, innermost first
        dot = w_tau / tau[k] if tau[k] > 0 else w_one
        g[k] = -fc[k] + v - dot
        v = (1.0 - m[k]) * fc[k] + m[k] * v
        w_tau += g[k] * tau[k]
        w_one += g[k]
    grad = np.empty(n)
    grad[order] = g
    return v, grad


def convex_envelope(kind: str, a, c: float, t):
    """``(value, grad)``: the convex envelope of ``f(c + a.t)`` over ``[0, 1]^n`` at ``t`` and a subgradient;
    S-shaped: ``K - conc`` of ``f(-c - sum(a) + a.t')`` at ``t' = 1 - t``; softplus: ``f`` and its gradient."""
    _check_kind(kind)
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    t = np.clip(np.asarray(t, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if kind not in tr.S_SHAPED:
        s = float(c) + float(a @ t)
        return float(_f(kind, s)), float(_df(kind, s)) * a
    v, g = concave_envelope(kind, a, -float(c) - float(a.sum()), 1.0 - t)
    return REFLECT[kind] - v, g


def normalise(w, b, L, U, x):
    """``(a, c, t, live, neg, width)`` of the box problem: ``live`` the coordinates with ``w_i != 0`` and
    ``L_i < U_i`` (the others are constants folded into ``c``)."""
    w, L, U = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (w, L, U))
    x = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), L, U)
    width = U - L
    if not (w.size == L.size == U.size == x.size) or np.any(width < 0):
        raise ValueError("hull cut: w, L, U, x must have one length and L <= U")
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(width)) and np.isfinite(b)):
        raise ValueError("hull cut: w, b, L, U must be finite")
    neg = w < 0
    live = (w != 0) & (width > 0)
    c = float(b) + float(np.where(neg, w * U, w * L).sum())
    wl = np.where(live, width, 1.0)
    t = np.where(neg, U - x, x - L) / wl
    return np.abs(w[live]) * width[live], c, t[live], live, neg, wl, x


def _cut(kind, w, b, L, U, x, side):
    a, c, t, live, neg, wl, x = normalise(w, b, L, U, x)
    env = concave_envelope if side == "upper" else convex_envelope
    v, g = env(kind, a, c, t)
    beta = np.zeros(x.size)
    beta[live] = np.where(neg[live], -g, g) / wl[live]
    alpha = float(v - beta @ x)
    sign = 1.0 if side == "upper" else -1.0
    # raised by the violation bound (enough in real arithmetic) plus a margin of rounding size, so that the
    # check of the returned cut itself, with its own rounding slack, also says valid
    margin = 64 * _U * (1.0 + abs(alpha) + float(np.abs(beta) @ np.maximum(np.abs(L), np.abs(U))))
    for _ in range(4):
        viol = cut_violation(kind, w, b, L, U, beta, alpha, side)
        if not np.isfinite(viol):
            return np.zeros(x.size), sign * np.inf
        if viol <= 0:
            return beta, alpha
        alpha = float(np.nextafter(alpha + sign * (viol + margin), sign * np.inf))
        margin *= 4
    return beta, alpha  # valid: raised by at least the first bound


def upper_cut(kind: str, w, b: float, L, U, x):
    """``(beta, alpha)``: the cut ``y <= alpha + beta.x`` supporting the concave envelope of ``f(w.x + b)`` over
    ``[L, U]`` at ``x`` (clipped into the box), valid in real arithmetic for the returned floats (``alpha`` raised
    by :func:`cut_violation`); ``beta = 0, alpha = +inf`` (no cut) when the check is not finite."""
    return _cut(kind, w, b, L, U, x, "upper")


def lower_cut(kind: str, w, b: float, L, U, x):
    """``(beta, alpha)``: the cut ``y >= alpha + beta.x`` supporting the convex envelope (the mirror of
    :func:`upper_cut`; ``alpha = -inf`` when not finite)."""
    return _cut(kind, w, b, L, U, x, "lower")


# ------------------------------------------------------------------ the exact check of a cut
def _err(n):
    """Relative error coefficient of a float64 sum of ``n`` rounded products (twice ``gamma_{n+4}``)."""
    g = (n + 4) * _U
    return 2 * g / (1 - g)


def cut_violation(kind: str, w, b: float, L, U, beta, alpha: float, side: str) -> float:
    """A rigorous upper bound of ``max_{x in [L, U]} f(w.x + b) - alpha - beta.x`` (``side`` "upper") or of
    ``max alpha + beta.x - f(w.x + b)`` ("lower"), in real arithmetic for the given floats; ``+inf`` when any
    input or intermediate is not finite (see the module docstring and ``docs/soundness.md``)."""
    _check_kind(kind)
    if side not in ("upper", "lower"):
        raise ValueError(f"side must be 'upper' or 'lower', not {side!r}")
    w, L, U, beta = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (w, L, U, beta))
    n = w.size
    vals = np.concatenate([w, L, U, beta, [b, alpha]])
    if not (L.size == U.size == beta.size == n) or not np.all(np.isfinite(vals)) or np.any(L > U):
        return np.inf
    with np.errstate(all="ignore"):
        return _violation(kind, w, float(b), L, U, beta, float(alpha), side)


def _violation(kind, w, b, L, U, beta, alpha, side):
    n = w.size
    gam = beta if side == "upper" else -beta  # min of gam.x on the slice (the lower side: max of beta.x)
    live = (w != 0) & (L < U)
    lo_x = np.where(w > 0, L, U)  # the end that makes w_i x_i least
    hi_x = np.where(w > 0, U, L)
    # constants: dead coordinates (w_i = 0: gam_i x_i at its least; zero width: x_i = L_i = U_i)
    dead_x = np.where(w == 0, np.where(gam >= 0, L, U), L)
    cP = np.where(live, 0.0, gam * dead_x)
    cQ = np.where(live, 0.0, w * dead_x)
    idx = np.flatnonzero(live)
    rho = gam[idx] / w[idx]
    order = idx[np.argsort(rho, kind="stable")]
    mu = gam[order] / w[order]
    Phi, Plo = gam[order] * hi_x[order], gam[order] * lo_x[order]
    Qhi, Qlo = w[order] * hi_x[order], w[order] * lo_x[order]

    def split_sum(hi, lo, const):
        """For p = 0..m: const + sum_{j < p} hi_j + sum_{j >= p} lo_j, with the same sum of magnitudes."""
        pre = np.concatenate([[0.0], np.cumsum(hi)])
        suf = np.concatenate([np.cumsum(lo[::-1])[::-1], [0.0]])
        pre_a = np.concatenate([[0.0], np.cumsum(np.abs(hi))])
        suf_a = np.concatenate([np.cumsum(np.abs(lo)[::-1])[::-1], [0.0]])
        cs, ca = const.sum(), np.abs(const).sum()
        return cs + pre + suf, ca + pre_a + suf_a

    P, Pabs = split_sum(Phi, Plo, cP)
    Q, Qabs = split_sum(Qhi, Qlo, cQ)
    e = _err(n)
    errP = e * Pabs + 2 * (n + 4) * _TINY
    errQ = e * Qabs + 2 * (n + 4) * _TINY
    # a coordinate put on the wrong side of segment p by the rounding of rho costs at most u |gam_i| width_i
    width = U - L
    amb = 4 * _U * float(np.sum(np.where(live, np.abs(gam) * width + np.abs(w) * width * _TINY, 0.0))) \
        * (1 + e) + 4 * n * _TINY
    m = order.size
    if m == 0:  # s is constant: one line of slope 0 on [s_min, s_max]
        mu = np.zeros(1)
    lines = max(m, 1)
    Pl, errPl, Ql, errQl = P[:lines], errP[:lines], Q[:lines], errQ[:lines]
    # D_p = -mu_p b + P_p - mu_p Q_p, and a rigorous lower bound of its real value
    t1, t2 = mu * b, mu * Ql
    D = Pl - t1 - t2
    E = errPl + np.abs(mu) * errQl * (1 + 4 * _U) + 8 * _U * (np.abs(Pl) + np.abs(t1) + np.abs(t2)) + amb \
        + 16 * _TINY
    D_low = np.nextafter(D - E * (1 + 16 * _U), -np.inf)
    # the breakpoints b + Q_p in s: the outermost rounded outward (they bound the real range of s), the rest
    # any monotone floats (the pieces only need to cover the range: every line is valid on all of it)
    S = b + Q if m else np.array([b + Q[0], b + Q[0]])
    ends = np.array([Q[0], Q[-1]])
    slack = (errQ[[0, -1]] + 2 * _U * (abs(b) + np.abs(ends) + np.abs(S[[0, -1]])) + 2 * _TINY) * (1 + 8 * _U)
    lo_s, hi_s = np.nextafter(S[0] - slack[0], -np.inf), np.nextafter(S[-1] + slack[1], np.inf)
    S = np.maximum.accumulate(np.clip(S, lo_s, hi_s))
    S[0], S[-1] = lo_s, hi_s
    if side == "upper":  # f(s) - alpha - phi(s) <= f(s) - mu s - (D_low + alpha)
        k = mu
        B = np.nextafter(D_low + alpha, -np.inf)
    else:  # alpha + psi(s) - f(s) <= (-mu) s + (alpha - D_low) - f(s), psi(s) = max beta.x = -min gam.x
        k = -mu
        B = np.nextafter(alpha - D_low, np.inf)
    if not (np.all(np.isfinite(B)) and np.all(np.isfinite(S)) and np.all(np.isfinite(k))):
        return np.inf
    T = lambda v: torch.as_tensor(np.ascontiguousarray(v, dtype=np.float64))  # noqa: E731
    viol = tr.max_violation(kind, T(k), T(B), T(S[:-1]), T(S[1:]), side).numpy()
    out = float(np.max(viol))
    return out if np.isfinite(out) else np.inf


# ------------------------------------------------------------------ the one-dimensional hull, many neurons at once
def hull1d_lines(kind: str, l, u, z, side: str):
    """``(k, b)`` float64 ``(n,)``: per neuron the line ``y <= k z + b`` ("upper") / ``>=`` ("lower") supporting
    the one-dimensional concave / convex envelope of ``f`` on ``[l_j, u_j]`` at ``z_j`` (clipped into it),
    repaired by :func:`relaxations.transcendental.repair` (valid in real arithmetic; ``b`` is NaN where the
    repair is not finite). Upper, S-shaped: the secant from ``l`` to the tie point ``d`` (the chord where
    ``d >= u``) left of ``d``, the tangent at ``z`` right of it; softplus: the chord. Lower: the mirror
    ``f(z) = K - f(-z)`` of the upper case on ``[-u, -l]``; softplus: the tangent at ``z``. A neuron narrower
    than 1e-9 relative gets the constant line ``f(u)`` (upper) / ``f(l)`` (lower), repaired the same way."""
    _check_kind(kind)
    if side not in ("upper", "lower"):
        raise ValueError(f"side must be 'upper' or 'lower', not {side!r}")
    T = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1))  # noqa: E731
    L, Uu = T(l), T(u)
    Z = torch.minimum(torch.maximum(T(z), L), Uu)
    if side == "lower" and kind in tr.S_SHAPED:
        k, b = _upper_line(kind, -Uu, -L, -Z)
        b = REFLECT[kind] - b
    elif side == "lower":  # softplus: its tangent
        k = tr.deriv(kind, Z)
        b = tr.value(kind, Z) - k * Z
    else:
        k, b = _upper_line(kind, L, Uu, Z)
    narrow = (Uu - L) <= 1e-9 * (1 + L.abs() + Uu.abs())
    k = torch.where(narrow | ~torch.isfinite(k), torch.zeros_like(k), k)
    const = tr.value(kind, Uu if side == "upper" else L)
    b = torch.where(narrow | ~torch.isfinite(b), const, b)
    return k.numpy(), tr.repair(kind, k, b, L, Uu, side).numpy()


def _upper_line(kind, L, U, Z):
    """The (unrepaired) supporting line of the one-dimensional concave envelope, torch float64."""
    fL = tr.value(kind, L)
    if kind in tr.S_SHAPED:
        d = torch.as_tensor(tie_levels(kind, L.numpy()))
        d = torch.minimum(d, U)
    else:
        d = U
    secant = Z < d
    width = torch.where(d > L, d - L, torch.ones_like(L))
    ks = (tr.value(kind, d) - fL) / width
    kt = tr.deriv(kind, Z)
    k = torch.where(secant, ks, kt)
    b = torch.where(secant, fL - ks * L, tr.value(kind, Z) - kt * Z)
    return k, b
