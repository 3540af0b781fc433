"""Interval step and CROWN back-substitution with rigorous error terms, batched over rows.

Bounds of a batch of nodes `B`: dict with 'lo', 'hi' (lists over ReLU layers of (nV, n_k) effective bounds),
'blo', 'bhi' (nV, n_in) boxes, 'sgn' (nV, n_total) int8: +1 / -1 / 0 the phase of the path's splits (2: both).
"""
from fractions import Fraction

import numpy as np

from .arith import INFL, TINY, U, dot_err, down, gam, lower_value, up


def ibp(seg, ylo, yhi, ex):
    """Rigorous bounds of W y + b for y in the boxes [ylo, yhi] (nV, n): returns (zlo, zhi), (nV, m)."""
    W, b, Wr, br = seg
    Wp, Wn = np.where(W > 0, W, 0), np.where(W < 0, W, 0)
    lo, hi = ylo @ Wp.T + yhi @ Wn.T + b, yhi @ Wp.T + ylo @ Wn.T + b
    if ex:
        return lo, hi
    ym = np.maximum(np.abs(ylo), np.abs(yhi))
    e = gam(2 * W.shape[1] + 1) * (ym @ np.abs(W).T + np.abs(b)) + (2 * W.shape[1] + 3) * TINY
    e = (e + (0 if Wr is None else ym @ Wr.T) + (0 if br is None else br)) * INFL
    return down(lo - e), up(hi + e)


def backsub(net, K, A, rn, ra, rb, B, ex):
    """Lower bound of A . z_K over each row's node domain (K = L + 1: the output), as an affine function of x.

    A (R, n_K) coefficients; rn (R,) node of each row in B; ra, rb (R,) rows of net.alpha / net.beta or -1.
    Returns (G (R, n_in), const (R,), err (R,)): A . z_K(x) >= G . x + const - err on the domain.
    """
    R = A.shape[0]
    const = np.zeros(R, dtype=object) if ex else np.zeros(R)
    err = np.zeros(R)
    for k in range(K, 0, -1):
        W, b, Wr, br = net.segs[k - 1]
        aA = None if ex else np.abs(A)
        if k > 1:
            ym = np.maximum(B["hi"][k - 2][rn], 0)
        else:
            ym = np.maximum(np.abs(B["blo"][rn]), np.abs(B["bhi"][rn]))
        const = const + A @ b
        if not ex:
            ym = ym.astype(np.float64)
            err += gam(W.shape[0]) * (aA @ np.abs(b) + (aA * (ym @ net.absW[k - 1].T)).sum(1)) + U * np.abs(const)
            err += (W.shape[0] + 2) * TINY * (1 + ym.sum(1))
            err += (0 if Wr is None else (aA * (ym @ Wr.T)).sum(1)) + (0 if br is None else aA @ br)
        G = A @ W
        if k == 1:
            return G, const, err
        l, u = B["lo"][k - 2][rn], B["hi"][k - 2][rn]
        act = l >= 0
        uns = ~act & (u > 0)
        a = (u >= -l).astype(int).astype(object) if ex else (u >= -l).astype(np.float64)
        if (ra >= 0).any():
            a = np.where((ra >= 0)[:, None], net.alpha[ra, net.off[k - 2]:net.off[k - 1]], a)
        den = np.where(uns, u - l, 1)
        s = np.where(uns, u, 0) / den if ex else up(np.where(uns, u, 0) / down(den))
        P = G * np.where(act, 1, np.where(uns, np.where(G >= 0, a, s), 0))
        ic = np.where(uns & (G < 0), P * l, 0)
        const = const - ic.sum(1)
        if (rb >= 0).any():
            sg = B["sgn"][rn, net.off[k - 2]:net.off[k - 1]]
            bt = net.beta[rb, net.off[k - 2]:net.off[k - 1]] * ((sg == -1).astype(int) - (sg == 1))
            A = P + np.where((rb >= 0)[:, None], bt, 0)
        else:
            A = P
        if not ex:
            zm = np.maximum(np.abs(l), np.abs(u))
            err += U * INFL * (((4 * np.abs(P) + np.abs(A)) * zm).sum(1)) + 2 * TINY * zm.sum(1)
            err += gam(P.shape[1]) * np.abs(ic).sum(1) + U * np.abs(const)


def row_min(G, const, err, rn, B, ex):
    """Rigorous lower bound of min over each row's box of G . x + const - err."""
    xs = np.where(G >= 0, B["blo"][rn], B["bhi"][rn])
    val = (G * xs).sum(1)
    if ex:
        if not all(isinstance(v, (Fraction, int)) for v in val):
            raise RuntimeError("a float in exact mode")
        return val + const
    return lower_value(val, const, err + dot_err(np.abs(G), np.abs(xs), G.shape[1]), ex)


def mix(G, const, err, lam, starts, ex):
    """Per closure (terms grouped from `starts`), the lambda-weighted sums, the rounding moved into err."""
    lG, lc = lam[:, None] * G, lam * const
    Gm, cm = np.add.reduceat(lG, starts, axis=0), np.add.reduceat(lc, starts)
    if ex:
        return Gm, cm, 0, None
    T = int(np.diff(np.append(starts, len(lam))).max()) + 1
    em = np.add.reduceat(lam * err, starts) * INFL + gam(T) * np.add.reduceat(np.abs(lc), starts)
    return Gm, cm, em, gam(T) * np.add.reduceat(np.abs(lG), starts, axis=0) + TINY
