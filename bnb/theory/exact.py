"""The exact ranges the theory commands compare with: :mod:`relaxations.milp` with tighter feasibility
tolerances than HiGHS's defaults (``1e-7``, which times the big-M coefficients left errors of ``1e-6`` on
the universal-barrier network). An oracle for measuring gaps, never a certificate."""
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
