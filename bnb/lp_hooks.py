"""LP relaxations inside branch and bound (stubs until implemented; see the functions' contracts)."""
from __future__ import annotations


def refine_root_bounds(net, lower, upper, pre_bounds, cfg, deadline):
    """Tighten the root's intermediate bounds by LP; returns bounds in the same format (never looser)."""
    return pre_bounds


def lp_tighten(net, state, C, lb, cfg, deadline):
    """Per-domain sound LP lower bounds of ``C y`` ``(N, m)``; must never exceed the true minimum."""
    return lb
