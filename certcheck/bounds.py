"""Interval step and CROWN back-substitution with rigorous error terms, batched over rows.

Bounds of a batch of nodes `B`: dict with 'lo', 'hi' (lists over ReLU layers of (nV, n_k) effective bounds),
'blo', 'bhi' (nV, n_in) boxes, 'sgn' (nV, n_total) int8: +1 / -1 / 0 the phase of the path's splits (2: both).
"""
import numpy as np

from .arith import INFL, TINY, U, conv, dot_err, down, gam, lower_value, mm, up


def ibp(seg, ylo, yhi, ex):
    """Rigorous bounds of W y + b for y in the boxes [ylo, yhi] (nV, n): returns (zlo, zhi), (nV, m)."""
    W, b, Wr, br = seg
    Wp, Wn = np.where(W > 0, W, 0), np.where(W < 0, W, 0)
    if ex:
        return mm(ylo, Wp.T) + mm(yhi, Wn.T) + b, mm(yhi, Wp.T) + mm(ylo, Wn.T) + b
    lo, hi = ylo @ Wp.T + yhi @ Wn.T + b, yhi @ Wp.T + ylo @ Wn.T + b
    ym = np.maximum(np.abs(ylo), np.abs(yhi))
    e = gam(2 * W.shape[1] + 1) * (ym @ np.abs(W).T + np.abs(b)) + (2 * W.shape[1] + 3) * TINY
    e = (e + (0 if Wr is None else ym @ Wr.T) + (0 if br is None else br)) * INFL
    return down(lo - e), up(hi + e)


def backsub(net, K, A, nd, ra, rb, rg, B, ex):
    """Lower bound of A . z_K over each row's node domain (K = L + 1: the output), as an affine function of x.

    A (nN, r, n_K): r coefficient rows per node; nd (nN,) the nodes in B; ra, rb, rg (nN, r) rows of net.alpha /
    net.beta / net.gamma or -1. Returns (G (nN, r, n_in), const, err (nN, r)): A . z_K(x) >= G . x + const - err on
    the domain. gamma . (cy . (x, y) + cz . z + cp) <= 0 is added: cy on the inputs of segments, cz after ReLUs.
    """
    nN, r = A.shape[:2]
    const, err = np.zeros((nN, r), dtype=object if ex else np.float64), np.zeros((nN, r))
    aA, gy, n_in, prod = None if ex else np.abs(A), None, net.segs[0][0].shape[1], mm if ex else np.matmul
    if (rg >= 0).any():
        Gm = np.where((rg >= 0)[..., None], net.gamma[rg], 0)
        gy, gz, const = prod(Gm, net.cy), prod(Gm, net.cz), const + Gm @ net.cp
        if not ex:  # (no error terms in exact mode)
            aG, nc = np.abs(Gm), Gm.shape[-1]
            ey, ez = (gam(nc) * (aG @ np.abs(c)) + nc * TINY for c in (net.cy, net.cz))
            err = err + gam(nc) * (aG @ np.abs(net.cp)) + U * np.abs(const) + nc * TINY
    for k in range(K, 0, -1):
        W, b, Wr, br = net.segs[k - 1]
        m, n = W.shape
        const = const + prod(A, b)
        if not ex:
            ylo, yhi = (B["lo"][k - 2][nd], B["hi"][k - 2][nd]) if k > 1 else (B["blo"][nd], B["bhi"][nd])
            ym = np.maximum(np.abs(ylo), np.abs(yhi))  # |y| also on the relaxation's lines (a z < 0 for z < 0)
            err += gam(m) * (aA @ np.abs(b) + mv(aA, ym @ net.absW[k - 1].T)) + U * np.abs(const)
            err += (m + 2) * TINY * (1 + ym.sum(1))[:, None] + (0 if br is None else aA @ br)
            err += 0 if Wr is None else mv(aA, ym @ Wr.T)
        G = np.broadcast_to(prod(A[0], W), (nN, r, n)) if A.strides[0] == 0 else prod(A.reshape(-1, m), W).reshape(
            nN, r, n)
        if gy is not None:
            cols = slice(0, n_in) if k == 1 else slice(n_in + net.off[k - 2], n_in + net.off[k - 1])
            G = G + gy[..., cols]
            err += 0 if ex else mv(U * np.abs(G) + ey[..., cols], ym)
        if k == 1:
            return G, const, err
        sl = slice(net.off[k - 2], net.off[k - 1])
        l, u = B["lo"][k - 2][nd][:, None], B["hi"][k - 2][nd][:, None]
        act = l >= 0
        uns = ~act & (u > 0)
        a = (u >= -l).astype(int).astype(object) if ex else (u >= -l).astype(np.float64)
        if (ra >= 0).any():
            a = np.where((ra >= 0)[..., None], net.alpha[ra, sl], a)
        # the chord's slope rounded up to a float (any s >= u / (u - l) gives a valid upper line): in exact mode too,
        # which keeps its numbers dyadic (float conversions of rationals: two steps outward)
        uf, den = (np.asarray(x, dtype=np.float64) for x in (np.where(uns, u, 0), np.where(uns, u - l, 1)))
        s = conv(up(up(up(uf)) / down(down(den))), ex) if ex else up(uf / down(den))
        P = G * np.where(G >= 0, np.where(act, 1, np.where(uns, a, 0)), np.where(act, 1, np.where(uns, s, 0)))
        lneg = np.where(uns, l, 0)[:, 0]  # P < 0 on an unstable neuron: the chord's intercept -P l
        Pn = np.minimum(P, 0)
        const = const - mv(Pn, lneg)
        E, sg = 0 if gy is None else gz[..., sl], B["sgn"][nd, sl][:, None]
        if (rb >= 0).any():
            E = E + np.where((rb >= 0)[..., None], net.beta[rb, sl] * ((sg == -1).astype(int) - (sg == 1)), 0)
        A = P + E if gy is not None or (rb >= 0).any() else P
        if not ex:
            zm = np.maximum(np.abs(l), np.abs(u))[:, 0]
            aP = np.abs(P)
            aA = aP if A is P else np.abs(A)
            err += U * INFL * (4 * mv(aP, zm) + mv(aA, zm)) + 2 * TINY * zm.sum(1)[:, None]
            err += gam(n) * mv(-Pn, np.abs(lneg)) + U * np.abs(const)
            err += 0 if gy is None else mv(U * np.abs(E) + ez[..., sl], zm)


def mv(X, v):
    """Per node, the rows of X (nN, r, n) times v (nN, n): (nN, r)."""
    return (X @ v[..., None])[..., 0]


def row_min(G, const, err, nd, B, ex):
    """Rigorous lower bound of min over each row's node box of G . x + const - err; G (nN, r, n_in)."""
    xs = np.where(G >= 0, B["blo"][nd][:, None], B["bhi"][nd][:, None])
    val = (G * xs).sum(-1)
    if ex:
        if any(isinstance(v, float) for v in val.ravel()):
            raise RuntimeError("a float in exact mode")
        return val + const
    return lower_value(val, const, err + dot_err(np.abs(G), np.abs(xs), G.shape[-1]))


def bmax(c, lo, hi, k, e, ex):
    """Rigorous upper bound of max over the boxes [lo, hi] of c . x + k (rows (r, n); k (r,) with error bound e)."""
    v = np.where(c >= 0, c * hi, c * lo).sum(-1) + k
    m = None if ex else (np.abs(c) * np.maximum(np.abs(lo), np.abs(hi))).sum(-1)
    return v if ex else -lower_value(-v, 0 * v, e + gam(c.shape[-1] + 1) * (m + np.abs(k)) + c.shape[-1] * TINY)


def mix(G, const, err, lam, starts, ex):
    """Per closure (terms grouped from `starts`), the lambda-weighted sums, the rounding moved into err."""
    lG, lc = lam[:, None] * G, lam * const
    Gm, cm = np.add.reduceat(lG, starts, axis=0), np.add.reduceat(lc, starts)
    if ex:
        return Gm, cm, 0, None
    T = int(np.diff(np.append(starts, len(lam))).max()) + 1
    em = np.add.reduceat(lam * err, starts) * INFL + gam(T) * np.add.reduceat(np.abs(lc), starts)
    return Gm, cm, em, gam(T) * np.add.reduceat(np.abs(lG), starts, axis=0) + TINY
