"""The exact ranges the theory commands compare with: :mod:`relaxations.milp` with tighter feasibility
tolerances than HiGHS's defaults (``1e-7``, which times the big-M coefficients left errors of ``1e-6`` on
the universal-barrier network), and for networks with smooth activations, which no MILP encodes exactly, a
bracket of the range (:func:`smooth_bracket`). Oracles for measuring gaps, never certificates."""
from __future__ import annotations

from relaxations.milp import milp_solve

MILP_OPTS = {"mip_feasibility_tolerance": 1e-10, "primal_feasibility_tolerance": 1e-10}


def exact_solve(net, lower, upper, splits=None):
    """:func:`relaxations.milp.milp_solve` with :data:`MILP_OPTS`."""
    return milp_solve(net, lower, upper, splits=splits, solver_opts=MILP_OPTS)


def exact_bounds(net, lower, upper, splits=None):
    """``(lb, ub)`` numpy ``(n_out,)``: the exact min and max of every output over the box."""
    r = exact_solve(net, lower, upper, splits)
    return r.lb, r.ub


PIECES = 8  # pieces per smooth neuron of the sandwich MILP behind a smooth network's bracket


def smooth_bracket(net, lower, upper, pieces=PIECES, samples=2000, seed=0) -> dict:
    """For a network with smooth activations (no exact MILP): brackets of the true minimum and maximum of every
    output over the box, numpy ``(n_out,)`` each: ``min_lo <= min <= min_hi`` and ``max_lo <= max <= max_hi``.

    ``min_lo`` / ``max_hi``: the piecewise-linear sandwich MILP (:mod:`relaxations.milp_sandwich`: valid up to the
    MIP solver's tolerance, an oracle, not a certificate); ``min_hi`` / ``max_lo``: the network's float64 values at
    the sandwich's argmin / argmax and at ``samples`` uniform points (real points of the box: attained)."""
    import numpy as np
    import torch

    from relaxations.milp_sandwich import sandwich_solve
    r = sandwich_solve(net, lower, upper, pieces=pieces)
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    x = lo + (hi - lo) * np.random.default_rng(seed).random((samples, lo.size))
    with torch.no_grad():
        y = net.to(dtype=torch.float64)(torch.from_numpy(x)).numpy()
    return {"min_lo": r.lb, "min_hi": np.minimum(r.attained_min, y.min(0)),
            "max_lo": np.maximum(r.attained_max, y.max(0)), "max_hi": r.ub}
