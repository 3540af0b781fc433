"""CROWN / DeepPoly back-substitution, alpha-CROWN (optimised slopes) and beta-CROWN (split multipliers).

All methods are batched over ``N`` domains; there is no Python loop over domains or neurons.

Back-substitution bounds a linear function ``A . h`` of the input ``h`` of layer ``end`` from below: walking
backwards, affine layers are substituted exactly (``Layer.backward``) and each activation is replaced by the
lower linear bound of its relaxation (``Activation.relaxation``, for ReLU
:class:`relaxations.layers.relu.ReluRelaxation`) where the coefficient is positive and its upper bound where it
is negative. The result ``A_in . x + bias`` is minimised over the input box in closed form.

beta-CROWN: a split ``s * z >= 0`` (``s = +1`` active, ``-1`` inactive) enters the Lagrangian as
``- beta * s * z`` with ``beta >= 0``, i.e. the coefficient of ``z`` is shifted by ``-beta * s`` when the
walk passes that ReLU. Every ``alpha`` in ``[0, 1]`` and ``beta >= 0`` gives a valid bound, so the
optimisation (projected Adam) only ever tightens.
"""
from __future__ import annotations

import torch

from relaxations.fp import cast_down, dot_abs, down, err_coeff, loosen, reach, tiny
from relaxations.ibp import ibp
from relaxations.state import BoundResult, DomainState

SLOPE_MODES = {"crown": "adaptive", "dp0": "zero", "dp1": "one"}


class ErrorCache:
    """:func:`layer_errors` computed once per set of relaxations and extended as more ReLU layers get theirs."""

    def __init__(self, net, lower, upper):
        self.net, self.out, self.k = net, [], 0
        self.r = reach(lower, upper).reshape(lower.shape[0], *net.in_shape)

    def upto(self, relax, end: int):
        N = self.r.shape[0]
        for layer in self.net.layers[len(self.out):end]:
            if layer.affine:
                self.out.append(layer.err_weight(self.r))
                self.r = layer.reach_out(self.r)
            else:
                self.out.append(None)
                self.r = relax[self.k].out_reach().reshape(N, *layer.out_shape)
                self.k += 1
        return self.out[:end]


def layer_errors(net, lower, upper, relax, end: int, cache: ErrorCache | None = None):
    """Per layer of ``net.layers[:end]``, its rounding weights ``Layer.err_weight(r)`` (``(w, under)``, each
    ``(N, ...)`` or None) for ``r`` a rigorous bound ``(N, *in_shape)`` on ``|input|`` over the domains: the
    box's ``max(|l|, |u|)`` pushed through ``Layer.reach_out``, restarted after every ReLU from its
    relaxation's bound on its output (``ActivationRelaxation.out_reach``: ``0 <= relu(z) <= max(u, 0)``).
    Entries of ReLU layers are None.
    ``cache``: reuse (and extend) the weights of earlier calls with the same ``relax``."""
    cache = cache if cache is not None else ErrorCache(net, lower, upper)
    return cache.upto(relax, end)


def backward(net, end: int, A: torch.Tensor, relax: list, alphas=None, betas=None, collect=False,
             errors=None, gammas=None, constraints=None):
    """Lower-bound coefficients of ``A . h`` where ``h`` is the input of ``net.layers[end]``.

    ``A``: ``(N, m, *shape of h)``; ``relax``: the relaxation
    (:class:`~relaxations.layers.activation.ActivationRelaxation`) of every ReLU before ``end``; ``alphas``:
    per ReLU ``(N, m, n_i)`` or None; ``betas``: per ReLU ``(N, m, n_i)`` or None; ``errors``: from
    :func:`layer_errors`, to bound the rounding (None: no error bound, ``err`` is zero).
    Returns ``(A_in (N, m, n_in), bias (N, m), coeffs, err (N, m))``: for every point of the domain,
    ``A . h >= A_in . x + bias - err`` in real arithmetic, for the computed (float) ``A_in`` and ``bias``;
    ``err`` is computed from detached coefficients: optimisers see it as a constant.
    ``coeffs`` (if ``collect``) holds the coefficient on every activation's output, ``(N, m, n_i)``; on a ReLU
    layer before the terms of its multi-neuron constraints (``A``, not ``A + gamma Pz``: what the ReLU branching
    heuristics score, a neuron whose triangle a constraint relieves keeping the weight it has without it), on
    other activations after them (what activation splitting was measured with).
    ``constraints``: per ReLU, :class:`relaxations.multineuron.LayerConstraints` or None, taken with
    multipliers ``gammas``: per ReLU ``(N, m, c_i)`` (``>= 0``) or None.
    """
    N, m = A.shape[:2]
    dt = A.dtype
    bias = torch.zeros(N, m, dtype=dt, device=A.device)
    err = torch.zeros(N, m, dtype=dt, device=A.device)
    acc = err_coeff(0, dt)  # rounding of one addition to the running constant
    pending = None  # error weights on |A| not yet applied: (N, *shape of A), one product when A changes
    k = sum(1 for layer in net.layers[:end] if not layer.affine)
    coeffs = [None] * k
    carry = None  # (gamma, constraints) of a ReLU whose constraints act on h, its affine layers' input
    for idx in range(end - 1, -1, -1):
        layer = net.layers[idx]
        if layer.affine:
            if errors is not None:
                w, under = errors[idx]
                if w is not None:
                    w = w if pending is None else pending + w
                    err = err + dot_abs(A.detach(), w) + under
                    pending = None
            A, c = layer.backward(A)
            if pending is not None:  # an exact reshape: the weights follow the coefficients
                pending = pending.reshape(N, *layer.in_shape)
            if c is not None:
                bias = bias + c
                if errors is not None:
                    err = err + acc * bias.detach().abs()
            continue
        k -= 1
        r = relax[k]
        general = getattr(r, "general_lines", False)
        if r.low_int is not None and not general:  # (the ReLU-form error bound covers lines through the origin)
            raise NotImplementedError("back-substitution through a lower bound with an intercept")
        Af = A.reshape(N, m, -1)
        if pending is not None:
            err = err + dot_abs(Af.detach(), pending.reshape(N, -1))
            pending = None
        if carry is not None:
            Af, err = _add_carry(Af, carry, err, errors is not None)
            carry = None
        cons = constraints[k] if constraints is not None and gammas is not None else None
        G = gammas[k] if cons is not None else None
        if G is not None:
            # gamma . (Pz y + Px z + p) <= 0 joins the bound: y's coefficient becomes A + gamma Pz
            Af0 = Af
            Af = Af0 + G @ cons.Pz                                      # (N, m, c) @ (c, n)
            bias = bias + G @ cons.p
            if errors is not None:
                nc, Gd = cons.count, G.detach().abs()
                ry = r.out_reach()                                      # |y| <= max(u, 0)
                pz = (ry @ cons.Pz.abs().T) * (1 + err_coeff(ry.shape[-1], dt))   # (N, c) >= |Pz| ry
                # |fl(A + fl(G Pz)) - (A + G Pz)| <= g (|A| + |G| |Pz|), times |y| <= ry; G . p likewise
                err = err + err_coeff(nc + 1, dt) * (dot_abs(Af0.detach(), ry) + dot_abs(Gd, pz)) \
                    + err_coeff(nc + 1, dt) * (Gd @ cons.p.abs()) + acc * bias.detach().abs()
            if cons.Ph is not None:
                carry = (G, cons)
        if collect:  # ReLU: before the constraint terms (the weight a split removes the triangle from)
            coeffs[k] = Af0 if G is not None and not general else Af
        if general:
            if betas is not None and r.split is not None:
                raise ValueError("ReLU split multipliers on a non-ReLU activation")
            A, bias, err, pending = _general_step(Af, r, None if alphas is None else alphas[k], bias, err,
                                                  errors is not None, layer.in_shape,
                                                  None if betas is None else betas[k])
            if G is not None:
                A, err, pending = _general_constraints(A, G, cons, r, err, pending, errors is not None)
            continue
        neg = Af.clamp(max=0)
        low = r.lower_slope(None if alphas is None else alphas[k])
        P = torch.where(Af >= 0, Af * low, Af * r.up_slope[:, None])  # one rounding per entry
        c = torch.bmm(neg, r.up_int[..., None]).squeeze(-1)            # every term <= 0
        bias = bias + c
        Az = P if G is None else P + G @ cons.Px
        beta_term = None
        if betas is not None and r.split is not None:
            beta_term = betas[k] * r.split[:, None]                     # exact: split is +-1 or 0
            Az = Az - beta_term
        if errors is not None and G is not None:
            n, nc, rz = Af.shape[-1], cons.count, r.reach
            px = (rz @ cons.Px.abs().T) * (1 + err_coeff(n, dt))        # (N, c) >= |Px| rz
            # the products of P, the sum P + G Px and the subtraction of beta s: <= g (|P| + |G||Px| + |beta s|)
            e = dot_abs(P.detach(), rz) + dot_abs(G.detach().abs(), px)
            if beta_term is not None:
                e = e + dot_abs(beta_term.detach(), rz)
            # one tiny per product that may underflow: nc in each entry of G Pz and of G Px, one in P, n in c,
            # nc in G . p (|y| <= ry <= rz)
            under = (2 * nc + n + 4) * tiny(dt) * (1 + rz.sum(-1, keepdim=True))
            err = err + err_coeff(nc + 3, dt) * e + err_coeff(n, dt) * c.detach().abs() + acc * bias.detach().abs() \
                + under
        elif errors is not None:
            n = Af.shape[-1]
            rz = r.reach
            g2 = err_coeff(2, dt)
            # product and subtraction round once each: <= u (|P| + |Az|) <= u (2 |Az| + |beta s|) per entry
            pending = (2 * g2 if beta_term is not None else g2) * rz
            if beta_term is not None:
                err = err + g2 * dot_abs(beta_term.detach(), rz)
            under = (n + 4) * tiny(dt) * (1 + rz.sum(-1, keepdim=True))
            err = err + err_coeff(n, dt) * c.detach().abs() + acc * bias.detach().abs() + under
            pending = pending.reshape(N, *layer.in_shape)
        A = Az.reshape(N, m, *layer.in_shape)
    if pending is not None:
        err = err + dot_abs(A.detach(), pending)
    A = A.reshape(N, m, -1)
    if carry is not None:
        A, err = _add_carry(A, carry, err, errors is not None)
    return A, bias, coeffs, err


def _general_step(Af, r, alpha, bias, err, rigorous, in_shape, beta=None):
    """One activation with general lines (:meth:`ActivationRelaxation.lines`: both intercepts, any sign) in
    :func:`backward`: ``y`` replaced by its lower line where the coefficient ``Af`` ``(N, m, n)`` is positive, its
    upper line where negative. Returns ``(A (N, m, *in_shape), bias, err, pending)``: with ``rigorous``, ``err``
    grows by the rounding of the constant (``2 n`` rounded products summed: ``err_coeff(2 n)`` times their
    magnitude) and ``pending`` holds the weights of the coefficients' own rounding (one product per entry, times
    ``|z| <= r.reach``), as in the ReLU step.

    ``beta``: ``(N, m, 2, n)`` (``>= 0``) or None: multipliers of the interval constraints ``z - l >= 0`` and
    ``u - z >= 0`` (``l``/``u``: the relaxation's interval, valid on the domain; after an activation split one of
    them is the split constraint): ``- beta_l (z - l) - beta_u (u - z) <= 0`` joins the bound, so ``z``'s
    coefficient moves by ``- beta_l + beta_u`` and the constant by ``beta_l l - beta_u u`` (neurons with an
    infinite end take no multiplier). With ``rigorous``: the two extra roundings of each coefficient (``<= u
    (3 |A| + 2 |beta_l| + 2 |beta_u|)`` per entry with the product's, times ``|z|``) and the ``2 n`` products of
    the constant are bounded too."""
    N, m, n = Af.shape
    dt = Af.dtype
    lo_s, lo_i, up_s, up_i = r.lines(alpha)
    pos, neg = Af.clamp(min=0), Af.clamp(max=0)
    P = torch.where(Af >= 0, Af * lo_s, Af * up_s)                  # one rounding per entry
    c = (pos * lo_i).sum(-1) + (neg * up_i).sum(-1)
    bias = bias + c
    pending = None
    if rigorous:
        mag = (pos.detach() * lo_i.detach().abs()).sum(-1) + (neg.detach().abs() * up_i.detach().abs()).sum(-1)
        rz = r.reach
        under = (3 * n + 4) * tiny(dt) * (1 + rz.sum(-1, keepdim=True))
        err = err + err_coeff(2 * n + 1, dt) * mag + err_coeff(0, dt) * bias.detach().abs() + under
        pending = (err_coeff(2, dt) * rz).reshape(N, *in_shape)
    if beta is not None:
        lo, hi = r.l.reshape(N, 1, n), r.u.reshape(N, 1, n)
        fin = torch.isfinite(lo) & torch.isfinite(hi)
        zero = torch.zeros((), dtype=dt, device=Af.device)
        bl = torch.where(fin, beta[:, :, 0], zero)
        bh = torch.where(fin, beta[:, :, 1], zero)
        lo_f, hi_f = torch.where(fin, lo, zero), torch.where(fin, hi, zero)
        P = P - bl + bh
        cb = (bl * lo_f).sum(-1) - (bh * hi_f).sum(-1)
        bias = bias + cb
        if rigorous:
            rz = r.reach
            g2 = err_coeff(2, dt)
            bsum = bl.detach().abs() + bh.detach().abs()
            mag_b = (bl.detach().abs() * lo_f.abs()).sum(-1) + (bh.detach().abs() * hi_f.abs()).sum(-1)
            err = err + g2 * dot_abs(bsum, rz) + err_coeff(2 * n + 1, dt) * mag_b \
                + err_coeff(0, dt) * bias.detach().abs() + (2 * n + 4) * tiny(dt) * (1 + rz.sum(-1, keepdim=True))
            pending = (2 * err_coeff(2, dt) * rz).reshape(N, *in_shape)  # 3 roundings of |A| (<= 4 u |A|)
    return P.reshape(N, m, *in_shape), bias, err, pending


def _general_constraints(A, G, cons, r, err, pending, rigorous):
    """The rest of the constraints ``gamma . (Pz y + Px z + p)`` at an activation with general lines (after
    :func:`_general_step`, whose ``A`` ``(N, m, *in_shape)`` already relaxed ``y``'s coefficient ``A + gamma
    Pz``): ``z``'s coefficient becomes ``A + gamma Px``. Returns ``(A, err, pending)``. With ``rigorous``,
    ``err`` grows by what :func:`backward`'s shared constraint terms leave to the step: the underflow of the
    ``nc`` products of every entry of ``gamma Pz`` (times ``|y| <= out_reach``, which for a smooth activation is
    not below ``|z|``) and of ``gamma . p``; and when ``Px`` is not zero, ``pending`` (the step's weights on
    ``|A|``) is applied to the step's ``A`` and the sum is bounded: ``|fl(A + fl(G Px)) - (A + G Px)| <= g (|A| +
    |G| |Px|)`` per entry, times ``|z| <= r.reach``, with ``nc`` products per entry that may underflow."""
    N, m = A.shape[:2]
    shape = A.shape[2:]
    dt, nc = A.dtype, cons.count
    if rigorous:
        ry = r.out_reach()
        err = err + nc * tiny(dt) * (1 + ry.sum(-1, keepdim=True))
    if not bool((cons.Px != 0).any()):
        return A, err, pending
    Af = A.reshape(N, m, -1)
    out = Af + G @ cons.Px                                              # (N, m, c) @ (c, n)
    if rigorous:
        rz = r.reach
        if pending is not None:
            err = err + dot_abs(Af.detach(), pending.reshape(N, -1))
            pending = None
        px = (rz @ cons.Px.abs().T) * (1 + err_coeff(rz.shape[-1], dt))  # (N, c) >= |Px| rz
        err = err + err_coeff(nc + 1, dt) * (dot_abs(Af.detach(), rz) + dot_abs(G.detach().abs(), px)) \
            + nc * tiny(dt) * (1 + rz.sum(-1, keepdim=True))
    return out.reshape(N, m, *shape), err, pending


def _add_carry(Af, carry, err, rigorous):
    """``Af + gamma Ph`` ``(N, m, n_h)``: the part of the constraints ``gamma . (Pz y + Px z + Ph h + p)`` on
    ``h``, joined when the back-substitution reaches ``h``; with ``rigorous``, ``err`` grows by the rounding
    of the product and the sum times ``|h| <= rh``."""
    G, cons = carry
    out = Af + G @ cons.Ph                                              # (N, m, c) @ (c, n_h)
    if rigorous:
        dt, nc, rh = Af.dtype, cons.count, cons.rh
        ph = (cons.Ph.abs() @ rh) * (1 + err_coeff(rh.shape[-1], dt))   # (c,) >= |Ph| rh
        # |fl(A + fl(G Ph)) - (A + G Ph)| <= g (|A| + |G| |Ph|) per entry, times |h| <= rh; nc products may underflow
        err = err + err_coeff(nc + 1, dt) * (dot_abs(Af.detach(), rh.expand(Af.shape[0], -1)) + G.detach().abs() @ ph) \
            + nc * tiny(dt) * (1 + rh.sum())
    return out, err


# a rigorous minimisation over at least this many float32 inputs sums in float64 (concretize): on CIFAR-10's 3,072
# inputs that decides proofs; on MNIST's 784 it costs 8% of the branch-and-bound throughput for margins far above
# float32's allowance there (docs/performance.md)
LONG_SUM = 1024


def concretize(A_in, bias, lower, upper, err=None):
    """``min over the box of A_in . x + bias``: ``(N, m)`` from ``(N, m, n)``, ``(N, n)`` boxes.

    With ``err`` ``(N, m)`` (the back-substitution's rounding bound, see :func:`backward`) the result is
    rigorous: the rounding of this minimisation is bounded too and the value rounded down. A rigorous float32
    minimisation over ``n >= LONG_SUM`` inputs is summed in float64 (a product of two float32 numbers is exact
    there) and rounded down to float32: the a-priori bound of a float32 sum grows with ``n`` (``2 n u |A| |x|``,
    about 0.04% of ``|A| |x|`` on a 3,072-pixel image, which on CIFAR-10 networks is as large as the margins
    left to prove), and in float64 it is negligible."""
    if err is not None and A_in.dtype == torch.float32 and A_in.shape[-1] >= LONG_SUM:
        f64 = torch.float64
        return cast_down(_concretize(A_in.to(f64), bias.to(f64), lower.to(f64), upper.to(f64), err.to(f64)),
                         torch.float32)
    return _concretize(A_in, bias, lower, upper, err)


def _concretize(A_in, bias, lower, upper, err):
    """:func:`concretize` in the dtype of its arguments."""
    c, r = (upper + lower) / 2, (upper - lower) / 2
    absA = A_in.abs()
    rad = torch.einsum("bmn,bn->bm", absA, r)
    lb = torch.einsum("bmn,bn->bm", A_in, c) - rad + bias
    if err is None:
        return lb
    dt = lb.dtype
    n = A_in.shape[-1]
    with torch.no_grad():  # the rounding bound is a constant to the optimisers: no gradient through it
        mag = torch.einsum("bmn,bn->bm", absA, c.abs()) + rad + bias.abs()
        e = err + err_coeff(n + 1, dt) * mag + (n + 4) * tiny(dt)
    return down(lb - e)


def rigorous_bias(bias, err):
    """``(N, m)``: a constant with ``A . h >= A_in . x + rigorous_bias`` for every point, in real arithmetic."""
    return down(bias - err)


def _eye_both(N, n, shape, dtype, device):
    eye = torch.eye(n, dtype=dtype, device=device)
    return torch.cat([eye, -eye]).expand(N, 2 * n, n).reshape(N, 2 * n, *shape)


def _magnitude(T, rx, n_in):
    """``(N, n)``: per neuron, ``sum_k |T_k| rx_k + |T_const|`` of coefficients ``T`` ``(N, n_in + 1, n)``."""
    return torch.einsum("bkn,bk->bn", T[:, :n_in].abs(), rx) + T[:, n_in].abs()


def _forward_linear(net, state, lower_slope, rigorous=True):
    """Forward-mode linear bounds (symbolic intervals with DeepPoly relaxations) of every ReLU input.

    Each layer's input is kept between two linear functions of the network input, ``L(x) - e <= h <= U(x) + e``,
    stored as coefficients ``(N, n_in + 1, *shape)`` (the last slot is the constant) and a slack ``e``
    ``(N, *shape)`` that bounds the rounding so far. An affine layer maps them with ``M+ L + M- U = M mid -
    |M| rad`` (``Layer.interval`` without its widening, on the coefficients, its constant removed from the
    non-constant slots) and ``e' = |M| e + err_coeff * magnitude``; a ReLU maps them with its lower/upper
    linear bounds. Cheap when the input dimension is small; returns per ReLU layer ``(l, u)`` ``(N, n_i)``,
    IBP-intersected, rigorous unless ``rigorous`` is False.
    """
    N, n_in = state.lower.shape
    dt, dev = state.lower.dtype, state.lower.device
    coef = torch.cat([torch.eye(n_in, dtype=dt, device=dev), torch.zeros(1, n_in, dtype=dt, device=dev)])
    L = coef.expand(N, n_in + 1, n_in).reshape(N, n_in + 1, *net.in_shape)
    U = L
    e = torch.zeros(N, *net.in_shape, dtype=dt, device=dev)
    const_mask = torch.zeros(n_in + 1, dtype=dt, device=dev)
    const_mask[-1] = 1.0
    _, _, ibp_pre = ibp(net, state.lower, state.upper)
    out, j = [], 0
    rx = reach(state.lower, state.upper)

    def minimum(T, sign):
        """Per neuron, ``min over the box of sign * T(x)`` ``(N, n)`` (rigorous: the slack ``e`` included)."""
        Tf = sign * T.reshape(N, n_in + 1, -1)
        return concretize(Tf[:, :n_in].transpose(1, 2), Tf[:, n_in], state.lower, state.upper,
                          e.reshape(N, -1) if rigorous else None)

    for layer in net.layers:
        if layer.affine:
            shape = layer.in_shape
            Lf, Uf = L.reshape(-1, *shape), U.reshape(-1, *shape)
            cen, rad = (Uf + Lf) / 2, (Uf - Lf) / 2
            out_sh = (N, n_in + 1, *layer.out_shape)
            cm = const_mask.reshape(1, n_in + 1, *([1] * len(layer.out_shape)))
            yc = layer.linear(cen).reshape(out_sh) + cm * layer.offset()  # the constant only in its slot
            yr = layer.abs_linear(rad).reshape(out_sh)
            if rigorous:
                # slot errors <= err_coeff (|M| (|mid| + rad) + |b|), concretised over |x| <= rx (constant: 1)
                w = torch.cat([rx, torch.ones(N, 1, dtype=dt, device=dev)], dim=1)
                mag_in = torch.einsum("bk,bk...->b...", w, (cen.abs() + rad).reshape(N, n_in + 1, *shape))
                n = layer.n_forward
                grow = layer.abs_linear(e) * (1 + err_coeff(n, dt)) + (n + 4) * tiny(dt)  # >= |M| e
                e = grow + (err_coeff(n, dt, layer.rep_err) + err_coeff(2, dt)) * layer.magnitude(mag_in) \
                    + (n + 4) * tiny(dt) * (1 + rx.sum(-1)).reshape(N, *([1] * len(layer.out_shape)))
            L, U = yc - yr, yc + yr
            continue
        l = torch.maximum(minimum(L, 1), ibp_pre[j][0].reshape(N, -1))
        u = torch.minimum(-minimum(U, -1), ibp_pre[j][1].reshape(N, -1))
        out.append((l, u))
        split = None if state.splits is None else state.splits[j]
        rl = layer.relaxation(l, u, split, lower_slope)
        general = getattr(rl, "general_lines", False)
        if rl.low_int is not None and not general:  # (the slack below covers lower bounds through the origin only)
            raise NotImplementedError("forward linear bounds through a lower bound with an intercept")
        shape = (N, 1, *layer.in_shape)
        a = rl.low_slope.reshape(shape)
        s, t = rl.up_slope.reshape(shape), rl.up_int.reshape(shape)
        cm = const_mask.reshape(1, n_in + 1, *([1] * len(layer.in_shape)))
        # y >= a z >= a L (a >= 0);  y <= s z + t <= s U + t (s >= 0)
        if general:  # y >= a z + b >= a L + b: the lower intercept joins the constant slot
            b = rl.low_int.reshape(shape)
            L, U = a * L + cm * b, s * U + cm * t
            t = t.abs() + b.abs()  # (the magnitude of the intercepts, for the slack below)
        else:
            L, U = a * L, s * U + cm * t
        if rigorous:
            # one rounded product per slot (and the sum s U_c + t in the constant slot, whose product
            # |s U_c| <= |U_c'| + t may exceed the result): err_coeff(2) (|L'| + |U'| + t) over |x| <= rx
            magLU = _magnitude(L.reshape(N, n_in + 1, -1), rx, n_in) + _magnitude(U.reshape(N, n_in + 1, -1), rx, n_in)
            e = (torch.maximum(a, s).reshape(N, -1) * e.reshape(N, -1) * (1 + err_coeff(1, dt))
                 + err_coeff(2, dt) * (magLU + t.reshape(N, -1))
                 + 4 * tiny(dt) * (1 + rx.sum(-1, keepdim=True))).reshape(N, *layer.in_shape)
        j += 1
    return out


class Relaxations(list):
    """The relaxation of every ReLU layer (``Activation.relaxation``), with the :class:`ErrorCache` built while
    computing them."""
    error_cache = None


def _bound_rows_at(net, idx, A0, relax, state, alphas=None, rigorous=True, cache=None):
    """Lower bounds ``(N, m)`` of ``A0 . h`` for ``h`` the input of ``net.layers[idx]``, over each domain."""
    errors = layer_errors(net, state.lower, state.upper, relax, idx, cache) if rigorous else None
    A_in, bias, _, err = backward(net, idx, A0, relax, alphas, errors=errors)
    return concretize(A_in, bias, state.lower, state.upper, err if rigorous else None)


# bytes the coefficient tensors of one intermediate back-substitution may take (rows are bounded in chunks above it)
ROW_BUDGET_BYTES = 512 * 2 ** 20


def unstable_rows(l, u, layer=None):
    """``(N, k)`` indices of the neurons that ``(l, u)`` leaves unstable (``k`` the largest count in the batch;
    domains with fewer pad with stable neurons, whose refined bounds are just as valid), or None when none is.
    A smooth activation ``layer`` (not piecewise linear: every neuron's bounds shape its lines) gives every
    neuron of positive width."""
    if layer is not None and not getattr(layer, "piecewise_linear", True):
        unstable = u > l
    else:
        unstable = (l < 0) & (u > 0)
    k = int(unstable.sum(dim=1).max()) if unstable.numel() else 0
    return None if k == 0 else torch.topk(unstable.to(torch.int8), k, dim=1).indices


def _bound_selected(net, idx, l, u, sel, relax, state, alphas=None, rigorous=True, cache=None):
    """``(l, u)`` with the neurons ``sel`` ``(N, k)`` of ReLU layer ``net.layers[idx]`` re-bounded by back-substitution
    (``2 k`` one-hot rows per domain; ``alphas``: slopes for exactly these rows, ``(N, 2 k, n_i)`` per earlier ReLU)."""
    N, n = l.shape
    k = sel.shape[1]
    rows = torch.zeros(N, k, n, dtype=l.dtype, device=l.device)
    rows.scatter_(2, sel[..., None], 1.0)
    A0 = torch.cat([rows, -rows], dim=1).reshape(N, 2 * k, *net.layers[idx].in_shape)
    b = _bound_rows_at(net, idx, A0, relax, state, alphas, rigorous, cache)
    l = l.scatter_reduce(1, sel, b[:, :k], reduce="amax")
    u = u.scatter_reduce(1, sel, -b[:, k:], reduce="amin")
    return l, u


def _crown_unstable_only(net, idx, l, u, relax, state, rigorous=True, cache=None):
    """CROWN bounds for the neurons that ``(l, u)`` leaves unstable; stable ones keep their bounds.

    The rows go in chunks whose coefficient tensors (``N x 2 chunk x`` the widest earlier layer) stay within
    ``ROW_BUDGET_BYTES``: a convolutional layer with thousands of unstable neurons is bounded without holding
    every row's coefficients at once."""
    sel = unstable_rows(l, u, net.layers[idx])
    if sel is None:
        return l, u
    N, k = sel.shape
    width = max([net.in_size] + [layer.in_size for layer in net.layers[:idx]])
    chunk = max(1, ROW_BUDGET_BYTES // (2 * N * width * l.element_size() * 2))  # x2: a layer's input and output
    for c in range(0, k, chunk):
        l, u = _bound_selected(net, idx, l, u, sel[:, c:c + chunk], relax, state, None, rigorous, cache)
    return l, u


def intermediate_bounds(net, state: DomainState, lower_slope="adaptive", mode="crown", alphas=None,
                        reference=None, rigorous=True, alpha_rows=None, fill=False, certify=False):
    """The relaxation (``Activation.relaxation``) of every ReLU layer, as :class:`Relaxations`.

    ``mode``: ``crown`` (back-substitution to the input, intersected with IBP), ``forward`` (forward-mode
    linear bounds, for low input dimension) or ``ibp``. Known
    ``state.pre_bounds`` are used as they are. ``alphas``: ``{j: [per-ReLU (N, 2 n_j, n_i)]}`` for the
    start node of ReLU layer ``j``; with ``alpha_rows`` ``{j: (N, k_j)}`` only those neurons of layer ``j`` are
    re-bounded, with ``alphas[j]`` of shape ``(N, 2 k_j, n_i)`` (a layer without an entry keeps its bounds:
    alpha-CROWN bounds only the neurons the reference leaves unstable); ``reference``: bounds to intersect with
    (e.g. best found so far). ``fill`` (with ``alpha_rows``): the neurons left unstable after the selected rows
    are re-bounded by CROWN's default rows too (what a pass without ``reference`` needs).
    Every bound is rigorous (rounding included) unless ``rigorous`` is False; IBP always is. ``certify`` (bounds a
    certificate claims): in float64 each computed bound is loosened (:func:`relaxations.fp.loosen`) before the
    later layers use it, so that a checker whose own rounding bound is a little larger still proves it (in float32
    the verifier's rounding bound is far larger than a float64 checker's).
    """
    N = state.size
    relus = net.activation_indices()
    if state.pre_bounds is None and mode == "forward":
        state = DomainState(state.lower, state.upper, state.splits,
                            _forward_linear(net, state, lower_slope, rigorous))
    _, _, ibp_pre = ibp(net, state.lower, state.upper) if state.pre_bounds is None else (None, None, None)
    relax = Relaxations()
    relax.error_cache = ErrorCache(net, state.lower, state.upper) if rigorous else None
    for j, idx in enumerate(relus):
        split = None if state.splits is None else state.splits[j]
        if state.pre_bounds is not None:
            l, u = state.pre_bounds[j]
        else:
            l, u = (t.reshape(N, -1) for t in ibp_pre[j])
            if state.ref_bounds is not None:
                l, u = torch.maximum(l, state.ref_bounds[j][0]), torch.minimum(u, state.ref_bounds[j][1])
            if mode == "crown" and j > 0 and alphas is None:
                l, u = _crown_unstable_only(net, idx, l, u, relax, state, rigorous, relax.error_cache)
            elif mode == "crown" and j > 0 and alpha_rows is not None:
                if j in alpha_rows:
                    l, u = _bound_selected(net, idx, l, u, alpha_rows[j], relax, state, alphas[j], rigorous,
                                           relax.error_cache)
                if fill:
                    l, u = _crown_unstable_only(net, idx, l, u, relax, state, rigorous, relax.error_cache)
            elif mode == "crown" and j > 0:
                shape = net.layers[idx].in_shape
                n = l.shape[1]
                A0 = _eye_both(N, n, shape, l.dtype, l.device)
                b = _bound_rows_at(net, idx, A0, relax, state, alphas[j], rigorous, relax.error_cache)
                l, u = torch.maximum(l, b[:, :n]), torch.minimum(u, -b[:, n:])
            if reference is not None:
                l, u = torch.maximum(l, reference[j][0]), torch.minimum(u, reference[j][1])
            if certify and l.dtype == torch.float64:
                l, u = loosen(l, -1), loosen(u, 1)
        relax.append(net.layers[idx].relaxation(l, u, split, lower_slope))
    return relax


def output_errors(net, state, relax):
    """:func:`layer_errors` of every layer (what :func:`final_bounds` needs), reusing ``relax``'s cache."""
    return layer_errors(net, state.lower, state.upper, relax, len(net.layers), getattr(relax, "error_cache", None))


def final_bounds(net, state, C, relax, alphas=None, betas=None, collect=False, rigorous=True, errors=None,
                 gammas=None):
    """Lower bounds of ``C y`` (``C``: ``(m, n_out)`` or ``(N, m, n_out)``) by one back-substitution from the
    output through the given relaxations ``relax`` (of :func:`intermediate_bounds`), with slopes ``alphas``
    (per ReLU ``(N, m, n_i)`` or None), split multipliers ``betas`` and constraint multipliers ``gammas`` (of
    ``state.constraints``; see :func:`backward`).

    Returns ``(lb (N, m), A_in (N, m, n_in), bias (N, m), coeffs, infeasible (N,))``: with ``rigorous``,
    ``C y >= A_in x + bias`` on the domain in real arithmetic and ``lb`` its minimum over the box, rounding
    bounded; ``coeffs`` (with ``collect``): per ReLU the coefficients ``(N, m, n_i)`` on its output.
    ``errors``: :func:`output_errors` of these domains, when already known."""
    N = state.size
    A0 = C.expand(N, *C.shape[-2:]) if C.dim() == 2 else C
    m = A0.shape[1]
    end = len(net.layers)
    if not rigorous:
        errors = None
    elif errors is None:
        errors = output_errors(net, state, relax)
    A_in, bias, coeffs, err = backward(net, end, A0.reshape(N, m, *net.out_shape), relax, alphas, betas,
                                       collect, errors, gammas, state.constraints)
    lb = concretize(A_in, bias, state.lower, state.upper, err if rigorous else None)
    if rigorous:
        bias = rigorous_bias(bias, err)
    infeasible = torch.zeros(N, dtype=torch.bool, device=lb.device)
    for r in relax:
        infeasible |= r.infeasible
    return lb, A_in, bias, coeffs, infeasible


def crown(net, state: DomainState, C, lower_slope="adaptive", intermediate="crown", want_upper=False,
          rigorous=True):
    """CROWN / DeepPoly bounds of ``C y`` (``C``: ``(m, n_out)`` or ``(N, m, n_out)``)."""
    with torch.no_grad():
        relax = intermediate_bounds(net, state, lower_slope, intermediate, rigorous=rigorous)
        lb, A_in, bias, coeffs, infeasible = final_bounds(net, state, C, relax, collect=True, rigorous=rigorous)
        ub = -final_bounds(net, state, -C, relax, rigorous=rigorous)[0] if want_upper else None
    return BoundResult(lb, ub, [(r.l, r.u) for r in relax], A_in, bias, coeffs, infeasible=infeasible)
