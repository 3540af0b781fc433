"""Multi-neuron constraints for the batched back-substitution (MN-BaB style): k-neuron group hulls.

For ReLU layer ``i`` with pre-activation ``z`` and output ``y = relu(z)`` (``n`` neurons), a constraint set is
``Pz y + Px z + p <= 0`` with ``Pz``, ``Px`` ``(c, n)`` and ``p`` ``(c,)``, valid for every point of the box
it was computed on (so on every subdomain of it, splits included). Back-substitution takes it with a multiplier
``gamma >= 0`` per (domain, row, constraint) (:func:`relaxations.crown.backward`): for any such gamma,

    A . y  >=  A . y + gamma . (Pz y + Px z + p)  =  (A + gamma Pz) . y + (gamma Px) . z + gamma . p,

and the single-neuron relaxation then bounds ``(A + gamma Pz) . y`` as usual. Every ``gamma >= 0`` gives a valid
bound; projected gradient ascent over gamma (with the slopes and split multipliers) tightens it.

Where the constraints come from (:func:`group_hull_constraints`): groups of ``k`` (2-3) unstable neurons of a
layer; for each group, rigorous upper bounds ``beta_d`` of ``d . z_g`` for the ``3^k - 1`` octahedral directions
``d`` (alpha-CROWN with its rounding bound, in float64, intersected with the box of the layer's bounds); then the
facets of ``conv{(z_g, relu z_g) : D z_g <= beta}``
(:func:`relaxations.lp.kneuron.relu_hull_facets`, whose right-hand sides are recomputed over the hull's lifted
vertices with a margin). Facets over a single neuron are dropped (the triangle relaxation has them). The
working-dtype coefficients differ from the float64 facet by rounding, so each right-hand side is raised by that
change's largest effect over the layer's box (``u |a| max(|l|, |u|)``), rounded up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from relaxations.fp import loosen, reach, to_dtype_down, to_dtype_up


@dataclass
class LayerConstraints:
    """``Pz y + Px z + Ph h + p <= 0`` for one ReLU layer: ``Pz``, ``Px`` ``(c, n)``, ``p`` ``(c,)``, valid in
    real arithmetic for the working-dtype values of all of them. ``Ph`` ``(c, n_h)`` or None: coefficients on
    ``h``, the flattened input of the affine layers that compute ``z`` (the previous ReLU's output, or the
    network's input), as in the Anderson cuts; ``rh`` ``(n_h,)``: a bound on ``|h|`` valid wherever the
    constraints are (their box), which the rounding bound of the back-substitution needs."""

    Pz: torch.Tensor
    Px: torch.Tensor
    p: torch.Tensor
    Ph: torch.Tensor | None = None
    rh: torch.Tensor | None = None
    cert: dict | None = None  # with BoundOptions.certify: each constraint's validity certificate (:func:`_cert`)

    @property
    def count(self) -> int:
        return self.p.shape[0]

    def to(self, device=None, dtype=None) -> "LayerConstraints":
        mv = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
        return LayerConstraints(mv(self.Pz), mv(self.Px), mv(self.p), mv(self.Ph), mv(self.rh), self.cert)

    def rows(self, keep: torch.Tensor) -> "LayerConstraints":
        """The constraints selected by ``keep`` (a boolean or index tensor over the ``c`` constraints)."""
        return LayerConstraints(self.Pz[keep], self.Px[keep], self.p[keep],
                                None if self.Ph is None else self.Ph[keep], self.rh)


def join(a: LayerConstraints | None, b: LayerConstraints | None) -> LayerConstraints | None:
    """Both constraint sets of one layer as one (zero ``Ph`` rows where one of them has none)."""
    if a is None or b is None:
        return a if b is None else b
    cert = None if a.cert is None or b.cert is None else _join_cert(a.cert, b.cert)
    if a.Ph is None and b.Ph is None:
        return LayerConstraints(torch.cat([a.Pz, b.Pz]), torch.cat([a.Px, b.Px]), torch.cat([a.p, b.p]), cert=cert)
    ref = a if a.Ph is not None else b
    ph = lambda c: c.Ph if c.Ph is not None else ref.Ph.new_zeros(c.count, ref.Ph.shape[1])  # noqa: E731
    rh = ref.rh if a.rh is None or b.rh is None else torch.maximum(a.rh, b.rh)
    return LayerConstraints(torch.cat([a.Pz, b.Pz]), torch.cat([a.Px, b.Px]), torch.cat([a.p, b.p]),
                            torch.cat([ph(a), ph(b)]), rh, cert)


def _cert(n, count):
    """An empty validity certificate of ``count`` constraints of a layer of ``n`` neurons (docs/certificates.md,
    version 2): octahedral rows ``oct_row`` ``(R, n)`` (float64 directions on the layer's pre-activations) with
    bounds ``oct_beta`` ``(R,)``, the slopes ``oct_alpha`` (per earlier ReLU layer ``(R, n_j)``) and the
    multipliers ``oct_gamma`` (per earlier layer ``(R, c_j)`` or None) of the back-substitution that proves them;
    per constraint its rows ``con_oct``/``con_noct`` (none: the constraint is proven with ``z = W h + b``) and its
    multipliers ``mu`` per orthant (a flat array ``(2^g * con_noct,)``)."""
    return {"oct_row": np.zeros((0, n)), "oct_beta": np.zeros(0), "oct_alpha": None, "oct_gamma": None,
            "con_oct": np.zeros(count, dtype=np.int64), "con_noct": np.zeros(count, dtype=np.int64),
            "mu": [np.zeros(0)] * count}


def _join_cert(a, b):
    """Certificates of two constraint sets of one layer as one (``b``'s rows after ``a``'s)."""
    R = len(a["oct_beta"])
    out = {"oct_row": np.vstack([a["oct_row"], b["oct_row"]]),
           "oct_beta": np.concatenate([a["oct_beta"], b["oct_beta"]]),
           "con_oct": np.concatenate([a["con_oct"], b["con_oct"] + R]),
           "con_noct": np.concatenate([a["con_noct"], b["con_noct"]]), "mu": a["mu"] + b["mu"]}
    for key in ("oct_alpha", "oct_gamma"):  # (None: no octahedral rows; only hull facets have them)
        x, y = a[key], b[key]
        out[key] = x if y is None else y if x is None else [
            None if u is None and v is None else np.vstack([u, v]) for u, v in zip(x, y)]
    return out


def _orthant_mu(az, ay, b, D, beta, l, u, nz):
    """The validity certificate of the facet ``az . z + ay . y <= b`` (``y = relu z``) of a group of ``k`` neurons
    (in the order of their flat indices) with bounds ``l``/``u`` and octahedral bounds ``D z <= beta``: per orthant
    ``s`` of the neurons ``nz`` the facet has a coefficient on (bit ``i``: neuron ``nz[i]`` active; the others
    anywhere in their bounds) multipliers ``mu >= 0`` minimising the largest value over the orthant's box of
    ``(c_s - mu D) . z + mu . beta`` (``c_s = az + ay`` on the active neurons): the smallest of
    :func:`_basic_mu`'s candidates, or where none reaches ``b`` a small LP (HiGHS). Returns ``(2^len(nz), R)``, or
    None when some orthant's value exceeds ``b`` (the facet cannot be certified this way)."""
    k, R = D.shape[1], D.shape[0]
    out = np.zeros((1 << len(nz), R))
    for s in range(1 << len(nz)):
        on, off = np.zeros(k, dtype=bool), np.zeros(k, dtype=bool)
        on[nz] = ((s >> np.arange(len(nz))) & 1).astype(bool)
        off[nz] = ~on[nz]
        zl, zu = np.where(on, np.maximum(l, 0), l), np.where(off, np.minimum(u, 0), u)
        if (zl > zu).any():
            continue
        c = az + np.where(on, ay, 0)
        mu = _basic_mu(c, D, beta, zl, zu)
        if _mu_value(mu, c, D, beta, zl, zu) > b:
            mu = _lp_mu(c, D, beta, zl, zu)
            if mu is None or _mu_value(mu, c, D, beta, zl, zu) > b:
                return None
        out[s] = mu
    return out


def _mu_value(mu, c, D, beta, zl, zu):
    """``max over [zl, zu] of (c - mu D) . z + mu . beta`` (float64, for choosing: the checker re-proves it)."""
    rho = c - mu @ D
    return np.maximum(rho * zl, rho * zu).sum(axis=-1) + mu @ beta


_BASES = {}


def _bases(D):
    """For the directions ``D`` ``(R, k)``: every choice of ``m <= k`` rows ``S`` and ``m`` coordinates ``J`` whose
    square submatrix ``D[S][:, J]`` is invertible, as ``[(S (n, m), J (n, m), inverse of its transpose (n, m, m))]``
    per ``m`` (cached per ``D``)."""
    from itertools import combinations
    key = D.tobytes()
    if key not in _BASES:
        R, k = D.shape
        out = []
        for m in range(1, k + 1):
            S = np.array(list(combinations(range(R), m)))
            J = np.array(list(combinations(range(k), m)))
            S, J = np.repeat(S, len(J), axis=0), np.tile(J, (len(S), 1))
            M = np.swapaxes(D[S[:, :, None], J[:, None, :]], 1, 2)  # (n, m, m): M[i] = D[S_i][:, J_i]^T
            ok = np.abs(np.linalg.det(M)) > 0.5  # integer matrices: 0 or at least 1
            out.append((S[ok], J[ok], np.linalg.inv(M[ok])))
        _BASES[key] = out
    return _BASES[key]


def _basic_mu(c, D, beta, zl, zu):
    """The best basic multipliers of ``min over mu >= 0 of max over [zl, zu] of (c - mu D) . z + mu . beta``: a
    basic optimum has as many nonzero multipliers ``S`` as coordinates ``J`` whose coefficient ``c - mu D``
    vanishes, so ``mu_S`` solves ``D[S][:, J]^T mu_S = c_J``. Every such candidate with ``mu >= 0`` (and ``mu = 0``)
    is evaluated; the smallest value's ``mu`` is returned ``(R,)`` (the LP's optimum on a non-degenerate box)."""
    R = D.shape[0]
    cands = [np.zeros((1, R))]
    for S, J, inv in _bases(D):
        mu_s = (inv @ c[J][..., None])[..., 0]
        good = (mu_s >= 0).all(axis=1)
        mu = np.zeros((int(good.sum()), R))
        np.put_along_axis(mu, S[good], mu_s[good], axis=1)
        cands.append(mu)
    mu = np.concatenate(cands)
    return mu[np.argmin(_mu_value(mu, c, D, beta, zl, zu))]


def _lp_mu(c, D, beta, zl, zu):
    """The multipliers of :func:`_basic_mu`'s problem by an LP (HiGHS), or None when it fails."""
    from scipy.optimize import linprog
    R, k = D.shape
    # variables (mu, t): min beta . mu + sum t with t_j >= (c_j - D[:, j] . mu) z_j at z_j = zl_j and zu_j
    A = np.vstack([np.hstack([-D.T * z[:, None], -np.eye(k)]) for z in (zl, zu)])
    res = linprog(np.concatenate([beta, np.ones(k)]), A_ub=A, b_ub=np.concatenate([-c * zl, -c * zu]),
                  bounds=[(0, None)] * R + [(None, None)] * k, method="highs")
    return None if res.status != 0 else np.maximum(res.x[:R], 0)


def _octahedral_bounds(net64, idx, l64, u64, pre64, cons64, lower64, upper64, groups, D, iters, certify=False):
    """``(G, |D|)`` rigorous upper bounds of ``d . z_g`` for every group and direction: alpha-CROWN (float64,
    ``iters`` steps, the earlier layers' bounds fixed, their constraints ``cons64`` taken with multipliers) on
    the network cut before layer ``idx``, intersected with the box of the layer's bounds. With ``certify``:
    ``(beta, slopes, gammas)``, the slopes and multipliers of each row's reported bound (per earlier ReLU layer
    ``(G |D|, n_j)``, ``(G |D|, c_j)`` or None), the bound raised by :func:`relaxations.fp.loosen` so that a checker's
    own rounding bound cannot put it out of reach."""
    from relaxations.network import Network
    from relaxations.optimize import optimized
    from relaxations.options import BoundOptions
    from relaxations.state import DomainState
    n = l64.shape[1]
    G, R = len(groups), D.shape[0]
    rows = torch.zeros(G * R, n, dtype=torch.float64)
    for g, grp in enumerate(groups):
        rows[g * R:(g + 1) * R, torch.as_tensor(grp)] = torch.as_tensor(-D)
    head = Network(net64.layers[:idx], net64.in_shape)
    res = optimized(head, DomainState(lower64, upper64, pre_bounds=pre64 or None, constraints=cons64 or None), rows,
                    BoundOptions(certify=True) if certify else BoundOptions(), iters=iters)
    beta = -res.lb[0].reshape(G, R).numpy()  # d . z <= -min(-d . z)
    box = np.empty((G, R))
    for g, grp in enumerate(groups):
        lg, ug = l64[0, grp].numpy(), u64[0, grp].numpy()
        terms = np.maximum(D * lg, D * ug)
        box[g] = np.nextafter(terms.sum(axis=1) + 4 * np.finfo(np.float64).eps * np.abs(terms).sum(axis=1), np.inf)
    beta = np.minimum(beta, box)
    beta = np.where(np.isfinite(beta), beta, box)
    if not certify:
        return beta
    beta = loosen(torch.as_tensor(beta), 1).numpy()
    gam = [None] * idx if res.lb_gammas is None else res.lb_gammas
    return beta, [a[0].numpy() for a in res.lb_alphas], [None if g is None else g[0].numpy() for g in gam]


def group_hull_constraints(net, lower, upper, pre_bounds, k=2, max_groups=64, time_budget=10.0, iters=20,
                           certify=False):
    """Constraints of every ReLU layer (a list, None where a layer has fewer than 2 unstable neurons) valid
    on the box ``lower``/``upper`` ``(1, n_in)`` with rigorous pre-activation bounds ``pre_bounds`` (per layer
    ``(l, u)`` ``(1, n_i)``), in the network's dtype. ``max_groups`` groups per layer (the widest unstable
    neurons first, consecutive groups sharing one neuron); ``time_budget``: seconds, after which the remaining
    layers get none; ``iters``: alpha-CROWN steps of the octahedral bounds. ``certify``: each layer's constraints
    carry their validity certificate (``LayerConstraints.cert``); facets that cannot be certified are left out,
    and the later layers' octahedral bounds take the earlier constraints at their working-dtype values (the ones
    a certificate records). Returns ``(constraints, seconds)``."""
    out, _, seconds, _ = _hull_layers(net, lower, upper, pre_bounds, k, max_groups, time_budget, iters, 0.0,
                                      certify)
    return out, seconds


def tightened_hull_constraints(net, lower, upper, pre_bounds, k=2, max_groups=64, time_budget=10.0, iters=20,
                               tighten_budget=10.0, certify=False, warm=None):
    """:func:`group_hull_constraints` built layer by layer on tightened intermediate bounds: before layer
    ``i >= 1``'s groups are chosen, its unstable neurons are re-bounded (:func:`rebound_unstable`: rigorous
    float64 alpha-CROWN of ``+-z_j`` on the network cut before the layer, with the tightened bounds and the
    constraints of layers ``< i``), intersected with the old bounds (``certify``: every neuron of every layer
    after the first, its new bounds replacing the old). ``pre_bounds`` (returned): per layer ``(l, u)`` in the
    working dtype, rounded outward, never looser than the given ones (but with ``certify``). ``tighten_budget``:
    seconds of re-bounding, counted apart from ``time_budget`` (the hulls' own seconds), so that tightening the
    first layers never starves the later ones of constraints; layers after it keep their bounds. ``certify``:
    the constraints carry their validity certificates and every tightened bound its hint
    (:func:`rebound_unstable`). Returns ``(constraints, pre_bounds, seconds, hints)``, ``hints`` per layer None
    or (with ``certify``) the hint rows of the bounds the re-bounding changed. ``warm``: the slopes behind
    ``pre_bounds`` (``BoundResult.pre_hints``), which start the certified re-bounding."""
    out, pre64, seconds, hints = _hull_layers(net, lower, upper, pre_bounds, k, max_groups, time_budget, iters,
                                              tighten_budget, certify, warm)
    dt, dev = lower.dtype, lower.device
    pre = []
    for (l0, u0), (l, u) in zip(pre_bounds, pre64):
        lw, uw = to_dtype_down(l, dt, dev).reshape(l0.shape), to_dtype_up(u, dt, dev).reshape(u0.shape)
        pre.append((lw, uw) if certify else (torch.maximum(l0, lw), torch.minimum(u0, uw)))
    return out, pre, seconds, hints


def rebound_unstable(net64, idx, l64, u64, pre64, cons64, lower64, upper64, iters, certify_dtype=None, warm=None):
    """Layer ``idx``'s pre-activation bounds ``l64``/``u64`` ``(1, n)`` (float64) with every neuron they leave
    unstable re-bounded by alpha-CROWN (float64, ``iters`` steps, its rounding bounded: the bounds hold in real
    arithmetic) on the network cut before layer ``idx``, with the earlier layers' bounds ``pre64`` and
    constraints ``cons64`` (their multipliers optimised per neuron), intersected with ``l64``/``u64``. A neuron
    whose new bounds would cross (impossible in real arithmetic on a non-empty box) keeps its old ones.

    ``certify_dtype`` (the working dtype; a certificate is being written): every neuron of the layer is re-bounded
    and its new bounds replace the old ones (these were computed on the earlier layers' old bounds, which are no
    longer the claims, so the old proofs need not hold on the new claims), each loosened by
    :func:`relaxations.fp.loosen` and rounded outward to that dtype (the value a certificate claims, within reach
    of a checker's own rounding bound); ``(l, u, hints)`` is returned: ``hints`` the hint rows
    (docs/certificates.md) of every bound, a dict of ``neuron`` ``(h,)`` (index in the layer), ``side`` ``(h,)``
    (+1 lower, -1 upper), ``alpha`` (per earlier ReLU layer ``(h, n_j)``) and ``gamma`` (per earlier ReLU layer
    ``(h, c_j)`` or None): the slopes and multipliers of each row's reported iterate. ``warm``: the slopes that
    proved the old bounds, as one entry of :attr:`relaxations.state.BoundResult.pre_hints` ``(sel, [per earlier
    layer (1, 2 k, n_j)])``: they start the optimisation of those neurons' rows (each row's best iterate is kept,
    so the new bound is at least what those slopes give on the new claims)."""
    from relaxations.network import Network
    from relaxations.optimize import optimized
    from relaxations.options import BoundOptions
    from relaxations.state import DomainState
    unstable = torch.nonzero((l64[0] < 0) & (u64[0] > 0) | (certify_dtype is not None)).flatten()
    m = unstable.numel()
    if m == 0:
        return (l64, u64) if certify_dtype is None else (l64, u64, None)
    rows = torch.zeros(2 * m, l64.shape[1], dtype=torch.float64)
    at = torch.arange(m)
    rows[at, unstable] = 1.0
    rows[m + at, unstable] = -1.0
    head = Network(net64.layers[:idx], net64.in_shape)
    cons = cons64 if any(c is not None for c in cons64) else None
    start = None
    if warm is not None and certify_dtype is not None:  # (every neuron is a row: lower ones first)
        sel, per_layer = warm
        k, pos = sel.shape[1], sel[0].cpu()
        start = []
        for (pl, pu), a in zip(pre64, per_layer):
            x = (pu >= -pl).double().expand(2 * m, -1).clone()  # the adaptive default slopes
            x[pos], x[m + pos] = a[0, :k].double().cpu(), a[0, k:].double().cpu()
            start.append(x[None])
    res = optimized(head, DomainState(lower64, upper64, pre_bounds=pre64 or None, constraints=cons,
                                      alphas=None if start is None else {"final": start}), rows,
                    BoundOptions(certify=certify_dtype is not None), iters=iters)
    lb = res.lb[0].detach()
    inf = torch.full((m,), float("inf"), dtype=torch.float64)
    lo = torch.where(torch.isfinite(lb[:m]), lb[:m], -inf)
    hi = torch.where(torch.isfinite(lb[m:]), -lb[m:], inf)  # z_j <= -min(-z_j)
    if certify_dtype is not None:  # the new bounds alone (rigorous: they cannot cross on a non-empty box)
        l = to_dtype_down(loosen(lo, -1), certify_dtype, "cpu").double()[None]
        u = to_dtype_up(loosen(hi, 1), certify_dtype, "cpu").double()[None]
        took = torch.cat([torch.isfinite(l[0]), torch.isfinite(u[0])])  # the rows that prove something
        l, u = torch.where(torch.isfinite(l), l, l64), torch.where(torch.isfinite(u), u, u64)  # (an overflow)
    else:
        nl, nu = torch.maximum(l64[0, unstable], lo), torch.minimum(u64[0, unstable], hi)
        ok = nl <= nu
        l, u = l64.clone(), u64.clone()
        l[0, unstable] = torch.where(ok, nl, l64[0, unstable])
        u[0, unstable] = torch.where(ok, nu, u64[0, unstable])
        return l, u
    gam = res.lb_gammas or [None] * len(res.lb_alphas)
    hints = {"neuron": torch.cat([unstable, unstable])[took].numpy(),
             "side": np.repeat([1, -1], m)[took.numpy()],
             "alpha": [a[0][took].numpy() for a in res.lb_alphas],
             "gamma": [None if g is None else g[0][took].numpy() for g in gam]}
    return l, u, hints


def _hull_layers(net, lower, upper, pre_bounds, k, max_groups, time_budget, iters, tighten_budget, certify=False,
                 warm=None):
    """The loop of :func:`group_hull_constraints` (and, with ``tighten_budget > 0`` seconds of re-bounding, of
    :func:`tightened_hull_constraints`): ``(constraints, float64 pre-activation bounds, seconds, hints)``,
    ``hints`` per layer the hint rows of its re-bounded bounds (with ``certify``; else None)."""
    from relaxations.lp.kneuron import make_groups, octahedral_directions, relu_hull_facets
    t0 = time.monotonic()
    dt, dev = lower.dtype, lower.device
    net64 = net.to(device="cpu", dtype=torch.float64)
    lo64, hi64 = lower.detach().double().cpu(), upper.detach().double().cpu()
    pre64 = [(l.detach().double().cpu(), u.detach().double().cpu()) for l, u in pre_bounds]
    relus = net.relu_indices()
    out, cons64 = [], []  # (working dtype, float64 for the next layers' octahedra)
    t_tight = 0.0  # seconds spent re-bounding (not counted against ``time_budget``)
    hints = [None] * len(relus)
    for i, idx in enumerate(relus):
        over = time.monotonic() - t0 - t_tight > time_budget
        # (certified: every layer after the first is re-bounded on the claims before it, past the budgets with
        # CROWN's slopes only: the old bounds rest on the earlier layers' old bounds)
        if i > 0 and tighten_budget > 0 and (certify or (not over and t_tight < tighten_budget)):
            t1 = time.monotonic()
            got = rebound_unstable(net64, idx, *pre64[i], pre64[:i], cons64[:i], lo64, hi64,
                                   iters if not over and t_tight < tighten_budget else 0, dt if certify else None,
                                   (warm or {}).get(i))
            pre64[i] = got[:2]
            hints[i] = got[2] if certify else None
            t_tight += time.monotonic() - t1
        if over:
            out.append(None)
            cons64.append(None)
            continue
        l, u = pre64[i]
        width = (u - l)[0]
        unstable = torch.nonzero((l[0] < 0) & (u[0] > 0)).flatten()
        cand = unstable[torch.argsort(width[unstable], descending=True)].tolist()
        groups = [g for g in make_groups(cand, k, overlap=1, max_groups=max_groups) if len(g) >= 2]
        if not groups:
            out.append(None)
            cons64.append(None)
            continue
        n = l.shape[1]
        rows_z, rows_y, rhs = [], [], []
        cert = _cert(n, 0) if certify else None
        by_size = {}
        for grp in groups:
            by_size.setdefault(len(grp), []).append(grp)
        for size, grps in by_size.items():
            D = octahedral_directions(size)
            betas = _octahedral_bounds(net64, idx, l, u, pre64[:i], cons64[:i], lo64, hi64, grps, D, iters, certify)
            if certify:
                betas, oct_a, oct_g = betas
            for g, (grp, beta) in enumerate(zip(grps, betas)):
                res = relu_hull_facets(D, beta)
                if res is None:
                    continue
                A, b = res
                multi = (np.abs(A[:, :size]) + np.abs(A[:, size:]) > 0).sum(axis=1) >= 2
                if certify:  # this group's octahedral rows, and per facet its multipliers (facets without: left out)
                    R0, at, o = len(cert["oct_beta"]), slice(g * len(D), (g + 1) * len(D)), np.argsort(grp)
                    mus = []
                    for a, bb in zip(A[multi], b[multi]):  # the neurons in the order of their flat indices
                        az, ay = a[:size][o], a[size:][o]
                        nz = np.flatnonzero(torch.as_tensor(np.abs(az) + np.abs(ay)).to(dt).numpy() != 0)
                        mus.append(_orthant_mu(az, ay, bb, D[:, o], beta, l[0, grp].numpy()[o], u[0, grp].numpy()[o],
                                               nz))
                    ok = np.array([m is not None for m in mus], dtype=bool)
                    if not ok.any():
                        continue
                    rows = np.zeros((len(D), n))
                    rows[:, grp] = D
                    cert["oct_row"], cert["oct_beta"] = np.vstack([cert["oct_row"], rows]), np.concatenate(
                        [cert["oct_beta"], beta])
                    cert["oct_alpha"] = [a[at] if c is None else np.vstack([c, a[at]]) for a, c in
                                         zip(oct_a, cert["oct_alpha"] or [None] * len(oct_a))]
                    cert["oct_gamma"] = [None if x is None else x[at] if c is None else np.vstack([c, x[at]])
                                         for x, c in zip(oct_g, cert["oct_gamma"] or [None] * len(oct_g))]
                    cert["con_oct"] = np.concatenate([cert["con_oct"], np.full(int(ok.sum()), R0)])
                    cert["con_noct"] = np.concatenate([cert["con_noct"], np.full(int(ok.sum()), len(D))])
                    cert["mu"] = cert["mu"] + [m.ravel() for m in mus if m is not None]
                    multi[np.flatnonzero(multi)[~ok]] = False
                for a, bb in zip(A[multi], b[multi]):
                    z = np.zeros(n)
                    y = np.zeros(n)
                    z[grp], y[grp] = a[:size], a[size:]
                    rows_z.append(z)
                    rows_y.append(y)
                    rhs.append(bb)
        if not rhs:
            out.append(None)
            cons64.append(None)
            continue
        Px64, Pz64, b64 = (torch.as_tensor(np.array(v)) for v in (rows_z, rows_y, rhs))
        work, exact = working_constraints(Pz64, Px64, None, b64, reach(l, u)[0], None, dt, dev)
        work.cert = cert
        out.append(work)
        # (certified: the later octahedral bounds take the constraints as recorded, the working-dtype values)
        cons64.append(work.to(device="cpu", dtype=torch.float64) if certify else exact)
    return out, pre64, time.monotonic() - t0, hints


def working_constraints(Pz64, Px64, Ph64, b64, r, rh, dt, dev):
    """``Pz y + Px z + Ph h <= b`` (float64, valid in real arithmetic; ``|y|, |z| <= r``, ``|h| <= rh``) as
    :class:`LayerConstraints` of the working dtype ``dt`` and of float64: ``(work, exact)``. The working-dtype
    coefficients move each constraint by at most ``|a' - a| . r`` on the box, so the right-hand side is raised
    by that (and by the float64 rounding of computing it), then rounded up."""
    Pz, Px = Pz64.to(dt), Px64.to(dt)
    shift = ((Px.double() - Px64).abs() + (Pz.double() - Pz64).abs()) @ r
    mag = (Px64.abs() + Pz64.abs()) @ r + b64.abs()
    Ph = None
    if Ph64 is not None:
        Ph = Ph64.to(dt)
        shift = shift + (Ph.double() - Ph64).abs() @ rh
        mag = mag + Ph64.abs() @ rh
    slack = 4 * (Pz64.shape[1] + (0 if Ph64 is None else Ph64.shape[1]) + 2) * np.finfo(np.float64).eps * mag
    b_work = torch.as_tensor(np.nextafter((b64 + shift + slack).numpy(), np.inf))
    mv = lambda t: None if t is None else t.to(dev)  # noqa: E731
    rh_work = None if rh is None else to_dtype_up(rh, dt, dev)
    work = LayerConstraints(Pz.to(dev), Px.to(dev), -to_dtype_up(b_work, dt, dev), mv(Ph), rh_work)
    exact = LayerConstraints(Pz64, Px64, -torch.as_tensor(np.nextafter(b64.numpy(), np.inf)), Ph64, rh)
    return work, exact


def anderson_constraints(net, lower, upper, pre_bounds, C, max_rounds=4, time_budget=10.0, solver="HIGHS"):
    """Anderson cuts (:mod:`relaxations.lp.anderson`) of every ReLU layer as constraints over ``y`` and the
    layer's input ``h`` (a list, None where a layer gets none), valid on the box ``lower``/``upper``
    ``(1, n_in)`` with rigorous pre-activation bounds ``pre_bounds`` (per layer ``(l, u)`` ``(1, n_i)``).

    The cuts are those most violated at the optimum of the triangle LP of each row of ``C`` ``(m, n_out)``
    (in the given order: put the worst-bounded rows first), ``max_rounds`` separation rounds per row, until
    ``time_budget`` seconds have passed (a HiGHS solve is stopped at the budget; building the LP is not). Each cut
    ``y_j <= a . h + c0`` (float64, its intercept rounded
    outward) becomes ``Pz = e_j``, ``Ph = -a``, ``p = -c0``. Returns ``(constraints, seconds)``."""
    from relaxations.lp.anderson import separate
    from relaxations.lp.triangle import fresh_domain
    t0 = time.monotonic()
    dt, dev = lower.dtype, lower.device
    net64 = net.to(device="cpu", dtype=torch.float64)
    lo64, hi64 = lower.detach().double().cpu(), upper.detach().double().cpu()
    pre64 = [(l.detach().double().cpu(), u.detach().double().cpu()) for l, u in pre_bounds]
    n_layers = len(pre64)
    model, dom = fresh_domain(net64, lo64[0].numpy(), hi64[0].numpy(), [(l.numpy(), u.numpy()) for l, u in pre64],
                              None, False, solver)
    if dom.empty:
        return [None] * n_layers, time.monotonic() - t0
    C64 = np.atleast_2d(C.detach().double().cpu().numpy())
    for row in C64:
        c, c0 = model.output_objective(row)
        cc = np.zeros(model.n_total)
        cc[:c.size] = c
        for _ in range(max_rounds):
            left = time_budget - (time.monotonic() - t0)
            if left <= 0:
                break
            if str(solver).upper() == "HIGHS":  # one solve must not outlast the budget (large conv networks)
                model.solver_opts["time_limit"] = max(left, 0.1)
            _, status = model.minimize(cc, c0)
            if status != "optimal" or separate(model, model.primal()) == 0:
                break
        if time.monotonic() - t0 > time_budget:
            break
    out = []
    for i in range(n_layers):
        cuts = [(A, b) for layer, A, b, eq in model.cuts if layer == i and not eq]
        if not cuts:
            out.append(None)
            continue
        A = np.vstack([a.toarray() for a, _ in cuts])
        b64 = torch.as_tensor(np.concatenate([b for _, b in cuts]))
        ys, hs = model.post_slice(i), model.post_slice(i - 1)
        Pz64 = torch.as_tensor(A[:, ys])
        Ph64 = torch.as_tensor(A[:, hs])
        Px64 = torch.zeros_like(Pz64)
        l, u = pre64[i]
        rh = reach(lo64, hi64)[0] if i == 0 else pre64[i - 1][1][0].clamp(min=0)
        work, _ = working_constraints(Pz64, Px64, Ph64, b64, reach(l, u)[0], rh, dt, dev)
        work.cert = _cert(l.shape[1], work.count)  # an Anderson cut is proven with z = W h + b: no extra data
        out.append(work)
    return out, time.monotonic() - t0


def implied_by_box(cons: LayerConstraints, l, u, hl=None, hu=None):
    """``(N, c)`` bool: where constraint ``c`` of ``cons`` cannot cut anything off domain ``N``'s box: its
    :func:`box_max` is ``<= 0``."""
    return box_max(cons, l, u, hl, hu) <= 0


def box_max(cons: LayerConstraints, l, u, hl=None, hu=None):
    """``(N, c)``: the largest value of ``Pz y + Px z + Ph h + p`` over domain ``N``'s box. ``l``/``u``
    ``(N, n)``: the layer's pre-activation bounds with the split phases applied (``l >= 0``: ``y = z``;
    ``u <= 0``: ``y = 0``; otherwise ``y`` in ``[0, u]`` independently of ``z``, a box around the triangle);
    ``hl``/``hu`` ``(N, n_h)``: bounds of ``h`` (only read when ``cons.Ph`` is set; without them
    ``|h| <= cons.rh``).

    It only decides which constraints a batch still carries (leaving one out never makes a bound invalid), so
    it is plain floating point, without a rounding analysis."""
    act = (l >= 0).to(l.dtype)
    free = ((l < 0) & (u > 0)).to(l.dtype)
    neg = lambda t: t.clamp(max=0)  # noqa: E731
    pos = lambda t: t.clamp(min=0)  # noqa: E731
    # sum over neurons of the largest term: where a split made y = z the coefficient on z is Px + Pz; every
    # sum below is a product (c, n) x (n, N)
    cs = cons.Px + cons.Pz
    val = (pos(cs) @ (act * u).T + neg(cs) @ (act * l).T
           + pos(cons.Px) @ ((1 - act) * u).T + neg(cons.Px) @ ((1 - act) * l).T
           + pos(cons.Pz) @ (free * u).T).T + cons.p[None]
    if cons.Ph is not None:
        if hl is not None and hu is not None:
            val = val + (pos(cons.Ph) @ hu.T + neg(cons.Ph) @ hl.T).T
        else:
            val = val + (cons.Ph.abs() @ cons.rh)[None]
    return val


def active_only(constraints, gammas, tol=0.0, index=False):
    """The constraints whose multiplier is above ``tol`` for some domain and row, with their multipliers:
    ``(constraints, gammas)`` per layer (None where a layer keeps none). Children of a split need only these:
    a constraint the optimised parent bound does not lean on rarely matters below it, and every one costs two
    products per layer and step. ``index``: also return, per layer, the kept constraints' numbers (or None)."""
    out_c, out_g, out_i = [], [], []
    for c, g in zip(constraints, gammas if gammas is not None else [None] * len(constraints)):
        keep = None if c is None or g is None else torch.nonzero((g > tol).flatten(0, -2).any(dim=0)).flatten()
        if keep is None or not keep.numel():
            out_c.append(None)
            out_g.append(None)
            out_i.append(None)
            continue
        out_c.append(c.rows(keep))
        out_g.append(g[..., keep])
        out_i.append(keep)
    return (out_c, out_g, out_i) if index else (out_c, out_g)
