"""Smooth monotone activations: the S-shaped sigmoid and tanh (one inflection, at 0) and the convex softplus, and
their linear relaxation (:class:`SmoothRelaxation`), every line repaired exactly (:mod:`relaxations.transcendental`).

Lines on ``[l, u]`` (chord ``k = (f(u) - f(l)) / (u - l)``, ``T(p)`` the tangent at ``p``, ``m`` the midpoint):

- S-shaped, ``u <= 0`` (convex): upper chord, lower ``T(m)``; ``l >= 0`` (concave): lower chord, upper ``T(m)``;
  ``l < 0 < u``: lower chord if ``k <= f'(l)`` else ``T(d_l)``, ``d_l <= 0`` the tie point whose tangent passes
  through ``(u, f(u))``; upper chord if ``k <= f'(u)`` else ``T(d_u)``, ``d_u >= 0`` the tie point whose tangent
  passes through ``(l, f(l))`` (tie points by a vectorised bisection in float64);
- softplus: upper chord, lower ``T(m)``;
- an interval narrower than :data:`TINY_WIDTH` (relative), or any line that is not finite: constant bounds
  ``f(l) <= f(z) <= f(u)``.

alpha-CROWN optimises the tangent points (a parameter ``(N, m, 2, n)``: lower, upper), each projected to the range
where its tangent stays a valid bound and starting at the default line's: lower ``[l, d_l]`` (``[l, u]`` where
``u <= 0``; softplus ``[l, u]``), upper ``[d_u, u]`` (``[l, u]`` where ``l >= 0``); a side whose default line is a
chord is not optimised (no tangent in ``[l, u]`` is valid there). Whatever the values, every line is repaired
before use, so a tie point or projection error costs tightness, never soundness.

``mask`` (a numpy bool array over the flattened neurons, or None for all): the neurons the activation acts on;
the others are the identity (a graph's carried tensors, see :mod:`bnb.io.onnx_lowering`).
"""
from __future__ import annotations

import numpy as np
import torch

from relaxations import transcendental as tr
from relaxations.fp import down, reach
from relaxations.layers.activation import Activation, ActivationRelaxation

TINY_WIDTH = 1e-9  # relative width below which a neuron gets constant bounds
LINE_MODES = ("adaptive", "tangent", "endpoint")  # (the ReLU names zero / one select tangent / endpoint)
_TIE_HI = 60.0     # bisection bracket of the tie points: [0, _TIE_HI]


def cast_down(v: torch.Tensor, dtype) -> torch.Tensor:
    """float64 ``v`` into ``dtype``, each entry ``<=`` its float64 value (keeps the gradient); a finite value
    beyond ``dtype``'s range becomes its largest finite number (or ``-inf``), never ``+inf``."""
    t = v.to(dtype)
    big = torch.isposinf(t) & ~torch.isposinf(v.detach())
    t = torch.where(big, torch.full_like(t, torch.finfo(dtype).max), t)
    return torch.where(t.detach().double() > v.detach(), down(t), t)


def cast_up(v: torch.Tensor, dtype) -> torch.Tensor:
    return -cast_down(-v, dtype)


def tie_point(kind: str, l: torch.Tensor, iters: int = 60) -> torch.Tensor:
    """S-shaped ``f``, float64 ``l < 0``: the ``d >= 0`` with ``f'(d) (d - l) = f(d) - f(l)`` (the tangent at ``d``
    passes through ``(l, f(l))``), by bisection on ``[0, 60]`` (not rigorous; ``l >= 0`` gives garbage that callers
    mask)."""
    fl = tr.value(kind, l)
    lo, hi = torch.zeros_like(l), torch.full_like(l, _TIE_HI)
    for _ in range(iters):
        mid = (lo + hi) / 2
        phi = tr.value(kind, mid) - fl - tr.deriv(kind, mid) * (mid - l)
        below = phi < 0
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def _tangent(kind, p):
    """Slope and intercept (float64) of the tangent at ``p``."""
    k = tr.deriv(kind, p)
    return k, tr.value(kind, p) - k * p


class SmoothActivation(Activation):
    """``y = f(x)`` elementwise for ``kind`` in ``sigmoid``, ``tanh``, ``softplus`` (identity off ``mask``);
    per-sample shape ``(*s) -> (*s)``."""

    piecewise_linear = False  # every neuron's bounds shape its lines (not only the unstable ones')

    def __init__(self, shape, kind: str, mask=None):
        super().__init__(shape)
        if kind not in tr.KINDS:
            raise ValueError(f"unknown activation {kind!r}; choose from {tr.KINDS}")
        self.kind = kind
        self.mask = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1)

    def _mask(self, like: torch.Tensor):
        """``(1, *s)`` bool tensor (True: the activation acts) or None."""
        if self.mask is None:
            return None
        return torch.as_tensor(self.mask, device=like.device).reshape(1, *like.shape[1:])

    def forward(self, x):
        """``(N, *s) -> (N, *s)``."""
        fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": torch.nn.functional.softplus}[self.kind]
        y = fn(x)
        m = self._mask(x)
        return y if m is None else torch.where(m, y, x)

    def interval(self, l, u):
        """``(f(l), f(u))`` rounded outward (``f`` is increasing), each ``(N, *s)``."""
        lo = cast_down(tr.enclose(self.kind, l.detach())[0], l.dtype)
        hi = cast_up(tr.enclose(self.kind, u.detach())[1], u.dtype)
        m = self._mask(l)
        if m is not None:
            lo, hi = torch.where(m, lo, l), torch.where(m, hi, u)
        return lo, hi

    def float_error(self, e, l, u):
        raise NotImplementedError(f"float32 semantics are not supported for {self.kind} networks (no a-priori "
                                  "bound on onnxruntime's float32 transcendental functions)")

    def relaxation(self, l, u, split=None, lower_slope="adaptive") -> "SmoothRelaxation":
        """:class:`SmoothRelaxation` of input bounds ``(N, n)`` with line mode ``lower_slope`` (:data:`LINE_MODES`,
        or ReLU's ``zero``/``one``: tangent/endpoint); no split applies (a non-zero ``split`` raises)."""
        if split is not None and bool((split != 0).any()):
            raise ValueError(f"activation splits are not supported on {self.kind} layers")
        mask = None if self.mask is None else torch.as_tensor(self.mask, device=l.device)[None]
        return SmoothRelaxation(self.kind, l, u, mask, lower_slope)

    def __repr__(self):
        return f"{self.kind}({self.in_shape})"


class SmoothRelaxation(ActivationRelaxation):
    """Linear bounds ``low_slope z + low_int <= f(z) <= up_slope z + up_int`` of one smooth activation layer on
    ``N`` domains (all ``(N, n)``, working dtype), valid in real arithmetic. ``general_lines``: the
    back-substitution takes both intercepts through :meth:`lines`.

    Per side two valid lines (float64, unrepaired, ``(N, 2, n)``: lower, upper): the tangent/chord line of the
    module docstring and the endpoint line (slope ``min(f'(l), f'(u)) <= f'`` on ``[l, u]``, through ``(l, f(l))``
    below and ``(u, f(u))`` above: DeepPoly's, close to the constant bounds on wide saturated intervals, where the
    tangents are poor). Lines valid on ``[l, u]`` form a convex set, so every mixture ``(1 - w) T + w E`` is valid
    too. ``mode``: ``tangent`` (``w = 0``), ``endpoint`` (``w = 1``) or ``adaptive`` (per side the one with the
    smaller area, i.e. the better value at the midpoint). alpha: ``(N, m, 4, n)``, the lower and upper tangent
    points, then the lower and upper weights ``w`` in ``[0, 1]``."""

    general_lines = True

    def __init__(self, kind, l, u, mask=None, mode="adaptive"):
        self.kind = kind
        self.infeasible = torch.zeros(l.shape[0], dtype=torch.bool, device=l.device)
        self.split = None
        l, u = torch.minimum(l, u), torch.maximum(l, u)
        self.l, self.u = l, u
        mask = None if mask is None else mask.expand(l.shape)  # (N, n): select() indexes it with the domains
        dt = l.dtype
        L, U = l.detach().double(), u.detach().double()
        fin = torch.isfinite(L) & torch.isfinite(U)
        L0, U0 = torch.where(fin, L, torch.zeros_like(L)), torch.where(fin, U, torch.zeros_like(U))
        wide = fin & (U0 - L0 > TINY_WIDTH * (1 + L0.abs() + U0.abs()))
        act = wide if mask is None else wide & mask
        fL, fU = tr.value(kind, L0), tr.value(kind, U0)
        width = torch.where(wide, U0 - L0, torch.ones_like(L0))
        k = (fU - fL) / width
        kc, bc = k, fL - k * L0                                      # chord
        mid = (L0 + U0) / 2
        km, bm = _tangent(kind, mid)                                 # tangent at the midpoint
        zero = torch.zeros_like(L0)
        if kind in tr.S_SHAPED:
            cross = (L0 < 0) & (U0 > 0)
            d_u = torch.where(L0 < 0, tie_point(kind, torch.where(L0 < 0, L0, -torch.ones_like(L0))),
                              torch.full_like(L0, float("inf")))
            d_l = torch.where(U0 > 0, -tie_point(kind, torch.where(U0 > 0, -U0, -torch.ones_like(U0))),
                              torch.full_like(L0, -float("inf")))
            kdl, bdl = _tangent(kind, torch.where(cross, d_l, zero))
            kdu, bdu = _tangent(kind, torch.where(cross, d_u, zero))
            low_chord = (L0 >= 0) | (cross & (k <= tr.deriv(kind, L0)))
            up_chord = (U0 <= 0) | (cross & (k <= tr.deriv(kind, U0)))
            lk = torch.where(low_chord, kc, torch.where(cross, kdl, km))
            lb = torch.where(low_chord, bc, torch.where(cross, bdl, bm))
            uk = torch.where(up_chord, kc, torch.where(cross, kdu, km))
            ub = torch.where(up_chord, bc, torch.where(cross, bdu, bm))
            # a lower tangent at d <= 0 stays below f up to a point past 0 that moves left as d grows: valid on
            # [l, u] iff d <= d_l; an upper tangent at d >= 0 iff d >= d_u
            rng_lo = torch.stack([L0, torch.where(cross, d_u, L0)], dim=1)
            rng_hi = torch.stack([torch.where(cross, d_l, U0), U0], dim=1)
            opt_t = torch.stack([act & (L0 < 0) & ~low_chord, act & (U0 > 0) & ~up_chord], dim=1)
            init = torch.stack([torch.where(cross, d_l, mid), torch.where(cross, d_u, mid)], dim=1)
        else:  # convex: tangents anywhere below, the chord above
            lk, lb, uk, ub = km, bm, kc, bc
            rng_lo, rng_hi = torch.stack([L0, zero], dim=1), torch.stack([U0, zero], dim=1)
            opt_t = torch.stack([act, torch.zeros_like(act)], dim=1)
            init = torch.stack([mid, zero], dim=1)
        lam = torch.minimum(tr.deriv(kind, L0), tr.deriv(kind, U0))  # endpoint lines
        self.tk, self.tb = torch.stack([lk, uk], dim=1), torch.stack([lb, ub], dim=1)
        self.ek, self.eb = torch.stack([lam, lam], dim=1), torch.stack([fL - lam * L0, fU - lam * U0], dim=1)
        ok = opt_t & torch.isfinite(rng_lo) & torch.isfinite(rng_hi) & (rng_lo <= rng_hi)
        self.opt_t = ok
        self.rng_lo = torch.where(ok, rng_lo, zero[:, None])
        self.rng_hi = torch.where(ok, rng_hi, zero[:, None])
        self.act = act
        t_init = torch.where(ok, torch.minimum(torch.maximum(init, rng_lo), rng_hi), zero[:, None])
        if mode in ("tangent", "zero"):
            w = torch.zeros_like(self.tk)
        elif mode in ("endpoint", "one"):
            w = torch.ones_like(self.tk)
        elif mode == "adaptive":  # the larger lower line / smaller upper line at the midpoint
            vt, ve = self.tk * mid[:, None] + self.tb, self.ek * mid[:, None] + self.eb
            better = torch.stack([ve[:, 0] > vt[:, 0], ve[:, 1] < vt[:, 1]], dim=1)
            w = better.to(torch.float64)
        else:
            raise ValueError(f"unknown line mode {mode!r} for {kind}; choose from {LINE_MODES}")
        w = torch.where(act[:, None], w, torch.zeros_like(w))
        self.init = torch.cat([t_init, w], dim=1).to(dt)             # (N, 4, n)
        self.mask = mask
        k0, b0 = self._mix(t_init, w)
        self.low_slope, self.low_int = _identity_off(mask, *self._finish(k0[:, 0], b0[:, 0], "lower", act, dt))
        self.up_slope, self.up_int = _identity_off(mask, *self._finish(k0[:, 1], b0[:, 1], "upper", act, dt))

    def _mix(self, t, w):
        """float64 slopes and intercepts ``(N, [m,] 2, n)`` of ``(1 - w) T(t) + w E`` (``T(t)``: the tangent at
        ``t`` where optimisable, else the tangent/chord line)."""
        opt = self.opt_t if t.dim() == 3 else self.opt_t[:, None]
        tk0 = self.tk if t.dim() == 3 else self.tk[:, None]
        tb0 = self.tb if t.dim() == 3 else self.tb[:, None]
        ek = self.ek if t.dim() == 3 else self.ek[:, None]
        eb = self.eb if t.dim() == 3 else self.eb[:, None]
        kt, bt = tr.deriv(self.kind, t), None
        bt = tr.value(self.kind, t) - kt * t
        kt, bt = torch.where(opt, kt, tk0), torch.where(opt, bt, tb0)
        return (1 - w) * kt + w * ek, (1 - w) * bt + w * eb

    def _finish(self, k, b, side, act, dt):
        """Slopes and intercepts in ``dt``, repaired on ``[l, u]``; constant bounds where ``act`` is False or the
        line is not finite."""
        kind = self.kind
        L, U = self.l.detach().double(), self.u.detach().double()
        kw = torch.where(act & torch.isfinite(k), k, torch.zeros_like(k)).to(dt).clamp(min=0)
        bw = torch.where(act & torch.isfinite(b), b, torch.zeros_like(b))
        b_rep = tr.repair(kind, kw.double(), bw, L, U, side)
        const = tr.enclose(kind, L)[0] if side == "lower" else tr.enclose(kind, U)[1]
        good = act & torch.isfinite(b_rep)
        kw = torch.where(good, kw, torch.zeros_like(kw))
        bfin = torch.where(good, b_rep, const)
        bw = cast_down(bfin, dt) if side == "lower" else cast_up(bfin, dt)
        return kw, bw

    @property
    def optimisable(self):
        """``(N, n)`` bool: neurons whose lines have a free parameter (every neuron the activation acts on, of
        positive width: the mixture weights)."""
        return self.act

    def initial_alpha(self, rows, warm=None):
        """``(N, rows, 4, n)``: ``warm`` where its shape fits, else the default lines' parameters."""
        N, _, n = self.init.shape
        if warm is not None and warm.shape == (N, rows, 4, n):
            return warm.detach().clone()
        return self.init[:, None].expand(N, rows, 4, n).clone()

    def project_(self, alpha):
        """Clamp ``(N, m, 4, n)`` in place: tangent points into their valid ranges, weights into ``[0, 1]``."""
        lo = torch.cat([self.rng_lo, torch.zeros_like(self.rng_lo)], dim=1).to(alpha.dtype)[:, None]
        hi = torch.cat([self.rng_hi, torch.ones_like(self.rng_hi)], dim=1).to(alpha.dtype)[:, None]
        return torch.maximum(torch.minimum(alpha, hi, out=alpha), lo, out=alpha)

    def lines(self, alpha=None):
        """``(low_slope, low_int, up_slope, up_int)``, each ``(N, 1, n)`` (defaults) or ``(N, m, n)`` with the
        lines of ``alpha`` ``(N, m, 4, n)`` on the optimisable neurons, repaired (the repair is a constant to
        the optimiser)."""
        d = (self.low_slope[:, None], self.low_int[:, None], self.up_slope[:, None], self.up_int[:, None])
        if alpha is None or not bool(self.act.any()):
            return d
        dt = alpha.dtype
        a = alpha.double()
        k, b = self._mix(a[:, :, :2], a[:, :, 2:])                  # (N, m, 2, n)
        kw = k.to(dt)
        L, U = self.l.detach().double()[:, None], self.u.detach().double()[:, None]
        if getattr(self, "_ends", None) is None:  # the enclosures at the ends, once per relaxation
            self._ends = (tr.enclose(self.kind, L), tr.enclose(self.kind, U))
        out = []
        for j, side in enumerate(("lower", "upper")):
            with torch.no_grad():
                kj = kw[:, :, j].detach().clamp(min=0)
                b_rep = tr.repair(self.kind, kj.double(), b[:, :, j].detach(), L, U, side, self._ends)
                good = self.act[:, None] & torch.isfinite(b_rep) & torch.isfinite(kj)
                b_rep = torch.where(good, b_rep, torch.zeros_like(b_rep))
            # the value is exactly the repaired intercept (x - x is exactly 0); the gradient is the line's own
            bf = b_rep + (b[:, :, j] - b[:, :, j].detach())
            bw = cast_down(bf, dt) if side == "lower" else cast_up(bf, dt)
            ks = kw[:, :, j].clamp(min=0)
            out += [torch.where(good, ks, d[2 * j]), torch.where(good, bw, d[2 * j + 1])]
        return tuple(out)

    def select(self, idx):
        """The relaxation of the domains ``idx`` (the cached end enclosures are dropped: they are recomputed)."""
        out = super().select(idx)
        out._ends = None
        return out

    def lower_slope(self, alpha=None):
        """The lower slopes of :meth:`lines`."""
        return self.lines(alpha)[0]

    def out_reach(self):
        """``(N, n)``: ``max(|f(l)|, |f(u)|)`` rounded up (``f`` increasing), ``max(|l|, |u|)`` off the mask."""
        lo = tr.enclose(self.kind, self.l.detach().double())[0]
        hi = tr.enclose(self.kind, self.u.detach().double())[1]
        r = cast_up(torch.maximum(lo.abs(), hi.abs()), self.l.dtype)
        return r if self.mask is None else torch.where(self.mask, r, reach(self.l, self.u))


def _identity_off(mask, slope, inter):
    """Slope 1, intercept 0 off ``mask`` ``(1, n)`` (None: all on)."""
    if mask is None:
        return slope, inter
    return torch.where(mask, slope, torch.ones_like(slope)), torch.where(mask, inter, torch.zeros_like(inter))
