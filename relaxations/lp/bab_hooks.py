"""LP relaxations inside branch and bound.

Two hooks called by :mod:`bnb.engine.root` and :mod:`bnb.engine.strategies.relu_split`:

- :func:`refine_root_bounds` (``bounds.lp_refine``): at the root, before ReLU branching, re-bound the
  unstable neurons' pre-activations by two certified triangle LPs each (min and max over the LP of the
  layers before), within the time budget ``BoundOptions.lp_refine_time``: earliest layers first, within a layer
  the most unstable neurons first (largest ``min(-l, u)``); neurons not reached keep their bounds. The
  result is intersected with the input bounds (never looser).
- :func:`lp_tighten` (``bab.relu_method = "lp"``): per domain, a certified triangle-LP lower bound of every
  row of ``C y`` with the domain's intermediate bounds and split phases (split neurons are exact, only
  unstable free neurons get triangles). Meant for small networks: one LP per row and domain.

The :class:`~relaxations.lp.model.NetworkLP` (one compiled cvxpy problem per depth) is built once per
network and solver (``BoundOptions.lp_solver``) and cached (weakly keyed by the network object). All LP values
are float64 dual certificates; they are rounded outward when cast to the network's dtype.
"""
from __future__ import annotations

import time
import weakref

import numpy as np
import torch

from relaxations.fp import finite_or_neg_inf, to_dtype_down, to_dtype_up
from relaxations.lp.model import NetworkLP
from relaxations.options import BoundOptions

_MODELS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# seconds kept in hand at the deadline: one LP solve must still fit before the engine's own check
_RESERVE = 1.0


def network_lp(net, solver="HIGHS") -> NetworkLP:
    """The cached :class:`NetworkLP` of ``net`` for ``solver`` (built on first use).

    Kept in a module-level weak dictionary, not on the network: a network must stay deep-copyable
    (``Network.to``), and the solver objects inside a compiled model are not."""
    try:
        cache = _MODELS.setdefault(net, {})
    except TypeError:  # not weak-referenceable: no caching
        cache = {}
    key = str(solver).upper()
    if key not in cache:
        cache[key] = NetworkLP(net, key)
    return cache[key]


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy().reshape(-1)


def _budget_end(seconds, deadline) -> float:
    end = time.monotonic() + max(0.0, float(seconds))
    if deadline is not None:
        end = min(end, time.monotonic() + deadline.remaining() - _RESERVE)
    return end


def refine_root_bounds(net, lower, upper, pre_bounds, opts: BoundOptions, deadline):
    """Tighten the root's intermediate bounds by LP; returns bounds in the same format (never looser).

    ``lower``/``upper``: ``(n_in,)`` tensors; ``pre_bounds``: list of ``(l, u)`` tensors ``(1, n_i)``;
    ``opts``: the LP solver and the time budget (``lp_solver``, ``lp_refine_time``); ``deadline``: a
    ``bnb.timing.Deadline`` or None (``remaining()``, ``expired()``).
    Returns a new list of ``(l, u)`` of the same shapes, dtype and device, each within the input's.
    """
    if not pre_bounds:
        return pre_bounds
    end = _budget_end(opts.lp_refine_time, deadline)
    model = network_lp(net, opts.lp_solver)
    dom = model.set_box(_np(lower), _np(upper), [(_np(l), _np(u)) for l, u in pre_bounds])
    if dom.empty:
        return pre_bounds
    pre = dom.pre  # float64 (n_i,) arrays, updated in place
    n_solved = 0
    out_of_time = False
    # layer 0's bounds are exact over the box (a linear map), the LP cannot improve them
    for i in range(1, model.n_layers):
        if out_of_time or dom.empty:
            break
        model.set_domain(dom)
        l, u = pre[i]
        uns = np.flatnonzero(dom.phases(i) == 0)
        uns = uns[np.argsort(-np.minimum(-l[uns], u[uns]), kind="stable")]
        for j in uns:
            if time.monotonic() >= end or (deadline is not None and deadline.expired()):
                out_of_time = True
                break
            e = np.zeros(model.sizes[i])
            e[j] = 1.0
            c, c0 = model.pre_objective(i, e)
            lo, _ = model.minimize(c, c0, depth=i, fallback=l[j])
            if lo < 0 and time.monotonic() < end:  # an upper bound only matters while still unstable
                hi, _ = model.minimize(-c, -c0, depth=i, fallback=-u[j])
                u[j] = min(u[j], -hi)
            l[j] = max(l[j], lo)
            n_solved += 1
            if l[j] > u[j]:  # cannot happen for a non-empty box; keep the input bounds then
                return pre_bounds
    out = []
    for (l0, u0), (l1, u1) in zip(pre_bounds, pre):
        ln = to_dtype_down(l1, l0.dtype, l0.device).reshape(l0.shape)
        un = to_dtype_up(u1, u0.dtype, u0.device).reshape(u0.shape)
        ln, un = torch.maximum(ln, l0), torch.minimum(un, u0)
        bad = ln > un
        if bool(bad.any()):
            ln, un = torch.where(bad, l0, ln), torch.where(bad, u0, un)
        out.append((ln, un))
    refine_root_bounds.last_solved = n_solved
    return out


refine_root_bounds.last_solved = 0


def lp_tighten(net, state, C, lb, opts: BoundOptions, deadline, d=None):
    """Per-domain sound LP lower bounds of ``C y`` ``(N, m)`` with the solver ``opts.lp_solver``; must never
    exceed the true minimum.

    ``state``: the domains (input boxes ``(N, n_in)``, splits and intermediate bounds ``(N, n_i)``);
    ``C``: ``(m, n_out)``; ``lb``: the current lower bounds ``(N, m)``, returned unchanged for domains the
    LP is not run on: those whose bounds cross (crossing is no certificate of emptiness: an LP bound of
    ``+inf`` never replaces a finite one), already verified ones when the rows' right-hand
    sides ``d`` ``(m,)`` are given (every row ``lb > d``; without ``d`` that is unknown, since the
    verification test is ``lb > d`` and not ``lb > 0``), and every domain left once the deadline is near.
    """
    out = lb.clone()
    N = state.size
    if N == 0:
        return out
    model = network_lp(net, opts.lp_solver)
    pre = state.pre_bounds
    if pre is None:
        from relaxations.methods import bound_rows
        pre = bound_rows(net, state, C, "crown").pre_bounds
    Cn = C.detach().cpu().double().numpy()
    lbn = lb.detach().cpu().double().numpy()
    res = lbn.copy()
    dn = None if d is None else np.asarray(d.detach().cpu().double().numpy() if torch.is_tensor(d) else d,
                                           dtype=np.float64).reshape(-1)
    objs = [model.output_objective(Cn[r]) for r in range(Cn.shape[0])]
    for k in range(N):
        if deadline is not None and deadline.remaining() < _RESERVE:
            break
        if dn is not None and np.all(np.isfinite(lbn[k]) & (lbn[k] > dn)):
            continue  # already verified
        splits = None if state.splits is None else [s[k].detach().cpu().numpy().astype(np.int8)
                                                    for s in state.splits]
        dom = model.set_box(_np(state.lower[k]), _np(state.upper[k]),
                            [(_np(l[k]), _np(u[k])) for l, u in pre], splits)
        if dom.empty:
            continue  # crossing bounds are no certificate of emptiness: keep the current bound
        for r, (c, c0) in enumerate(objs):
            v, _ = model.minimize(c, c0, fallback=lbn[k, r])
            res[k, r] = max(v, lbn[k, r])
            if deadline is not None and deadline.remaining() < _RESERVE:
                break
    return torch.maximum(out, finite_or_neg_inf(to_dtype_down(res, lb.dtype, lb.device).reshape(lb.shape)))
