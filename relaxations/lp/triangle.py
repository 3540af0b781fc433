"""The triangle LP (the tightest single-neuron relaxation), with optional LP refinement of the
intermediate bounds. Every returned bound is dual-certified (:mod:`relaxations.lp.sound`).
"""
from __future__ import annotations

import numpy as np

from relaxations.lp.encoding import DomainBounds
from relaxations.lp.model import NetworkLP


def output_rows(net, C) -> np.ndarray:
    """The rows to bound as a float64 ``(m, out_size)`` array: ``C`` (a row or rows), or the identity (every
    output) when ``C`` is None."""
    return np.eye(net.out_size) if C is None else np.atleast_2d(np.asarray(C, dtype=np.float64))


def fresh_domain(net, lower, upper, pre_bounds, splits, refine, solver, model=None):
    """The triangle LP of one domain, with no cuts: ``(model, dom)``, LP-refined when ``refine``.

    The common start of every LP method that adds constraints to the triangle LP.
    """
    model = NetworkLP(net, solver) if model is None else model
    model.reset_cuts()
    dom = model.set_box(lower, upper, pre_bounds, splits)
    if refine and not dom.empty:
        dom = refine_model(model, dom)
    return model, dom


def refine_model(model: NetworkLP, dom: DomainBounds, layers=None) -> DomainBounds:
    """Tighten the bounds of every unstable neuron, layer by layer (min and max of ``z_i[j]`` over the
    LP of the layers before ``i``), updating the model's parameters as it goes. Returns the refined
    (certified) :class:`DomainBounds`; stable neurons keep their bounds (the LP implies them)."""
    pre = [(l.copy(), u.copy()) for l, u in dom.pre]
    dom = DomainBounds(dom.x_lower, dom.x_upper, pre, dom.splits, dom.empty)
    model.set_domain(dom)
    for i in range(model.n_layers) if layers is None else layers:
        if dom.empty:
            break
        l, u = pre[i]
        for j in np.flatnonzero(dom.phases(i) == 0):
            e = np.zeros(model.sizes[i])
            e[j] = 1.0
            c, c0 = model.pre_objective(i, e)
            lo, _ = model.minimize(c, c0, depth=i, fallback=l[j])
            hi, _ = model.minimize(-c, -c0, depth=i, fallback=-u[j])
            l[j], u[j] = max(l[j], lo), min(u[j], -hi)
            if l[j] > u[j]:
                dom.empty = True
        model.set_domain(dom)
    return dom


def refined_pre_bounds(net, lower, upper, pre_bounds=None, splits=None, solver="HIGHS", model=None):
    """LP-refined intermediate bounds: list of ``(l, u)`` numpy ``(1, n_i)`` per ReLU layer (the format
    of :func:`relaxations.ibp.ibp`'s ``pre_relu``, flattened), split phases applied. If the domain is
    found empty, returned bounds have ``l > u`` somewhere."""
    model = NetworkLP(net, solver) if model is None else model
    dom = refine_model(model, model.set_box(lower, upper, pre_bounds, splits))
    return [(l.reshape(1, -1), u.reshape(1, -1)) for l, u in dom.pre]


def lp_bounds(net, lower, upper, C=None, pre_bounds=None, splits=None, refine=False, solver="HIGHS",
              model=None):
    """Certified ``(lb, ub)`` (``(m,)`` each) of the rows of ``C @ net(x)`` by the triangle LP.

    ``lower``/``upper``: ``(in_size,)``; ``C``: ``(m, out_size)`` (identity when None);
    ``pre_bounds``: intermediate bounds (IBP when None); ``splits``: per-layer int8 phases or None.
    ``model``: a :class:`NetworkLP` of ``net`` to reuse across domains (built when None).
    Empty domains give ``(+inf, -inf)``.
    """
    C = output_rows(net, C)
    model = NetworkLP(net, solver) if model is None else model
    dom = model.set_box(lower, upper, pre_bounds, splits)
    if refine:
        dom = refine_model(model, dom)
    if dom.empty:
        return np.full(C.shape[0], np.inf), np.full(C.shape[0], -np.inf)
    return model.output_bounds(C)
