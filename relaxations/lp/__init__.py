"""LP-based bounding methods: the triangle LP, multi-neuron relaxations and the exact MILP oracle.

Uniform entry point (stable API, used by the CLI and branch-and-bound)::

    lb, ub = lp_method_bounds(method, net, lower, upper, C=None, pre_bounds=None, splits=None, **opts)

- ``method``: ``"lp"`` (triangle LP, :func:`relaxations.lp.triangle.lp_bounds`; opts ``refine``,
  ``solver``, ``model``), ``"mn"`` (k-neuron groups, :func:`relaxations.lp.kneuron.kneuron_bounds`;
  opts ``k``, ``overlap``, ``neurons``, ``max_groups``, ``octahedron``, ``refine``, ``solver``),
  ``"p1"`` (exact layer-wise hull, :func:`relaxations.lp.layer_hull.p1_bounds`; opts
  ``max_unstable``, ``max_vars``, ``solver``; raises ``P1TooLarge``), ``"anderson"``
  (:func:`relaxations.lp.anderson.anderson_bounds`; opts ``max_rounds``, ``tol``, ``refine``,
  ``solver``), ``"milp"`` (:func:`relaxations.milp.milp_bounds`; opts ``solver``, ``time_limit``).
- ``lower``/``upper``: one box, ``(in_size,)`` or ``(1, in_size)``; ``C``: ``(m, out_size)`` (identity
  when None); ``pre_bounds``: intermediate bounds in the ``ibp(...)[2]`` format (IBP when None);
  ``splits``: per ReLU layer int8 arrays (-1/0/+1) or None.
- returns numpy ``(lb, ub)``, each ``(m,)``. The LP methods' bounds are dual-certified (sound); the
  MILP's are exact solver values, *not* certified (oracle only). Empty domains give ``(+inf, -inf)``.
"""
from __future__ import annotations

LP_METHODS = ("lp", "mn", "p1", "anderson", "milp")


def lp_method_bounds(method, net, lower, upper, C=None, pre_bounds=None, splits=None, **opts):
    """See the module docstring."""
    if method == "lp":
        from relaxations.lp.triangle import lp_bounds as f
    elif method == "mn":
        from relaxations.lp.kneuron import kneuron_bounds as f
    elif method == "p1":
        from relaxations.lp.layer_hull import p1_bounds as f
    elif method == "anderson":
        from relaxations.lp.anderson import anderson_bounds as f
    elif method == "milp":
        from relaxations.milp import milp_bounds as f
    else:
        raise ValueError(f"unknown LP method {method!r}; choose from {', '.join(LP_METHODS)}")
    return f(net, lower, upper, C=C, pre_bounds=pre_bounds, splits=splits, **opts)


__all__ = ["LP_METHODS", "lp_method_bounds"]
