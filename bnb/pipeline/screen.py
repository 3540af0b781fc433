"""Cheap work first: on a small network, one CROWN bound of every (box, polytope) pair before the attack.

On ACAS Xu the root CROWN bound takes ~7 ms and proves many properties outright, while the attack takes ~0.2 s;
so on networks with at most ``attack.bound_first`` ReLU neurons the pipeline bounds first, attacks only the
pairs the bound did not refute, and branches only on those (:func:`remaining`). A pair counts as refuted only
through :func:`relaxations.verdict.proven`, on the box rounded outward, as in branch and bound.
"""
from __future__ import annotations

import dataclasses

from bnb.engine.bound_options import bound_options
from bnb.engine.rows import Rows, output_reach, polytope_values
from bnb.io.spec import Property
from relaxations.fp import outward_box
from relaxations.methods import bound_rows
from relaxations.state import DomainState
from relaxations.verdict import proven


def worthwhile(net, cfg) -> bool:
    """Whether the root bound is cheap enough to run before the attack (by the network's activation count)."""
    limit = cfg.attack.bound_first
    if limit <= 0:
        return False
    return sum(net.layers[i].out_size for i in net.activation_indices()) <= limit


def refuted_pairs(net, prop: Property, cfg, deadline) -> list[bool]:
    """One boolean per (box, polytope) pair, in the property's order: True where CROWN proves the polytope
    unreachable from the box. Polytopes without constraints are never refuted."""
    opts = bound_options(cfg)
    out = []
    for spec in prop.specs:
        deadline.check()
        if not spec.disjuncts or any(len(p.d) == 0 for p in spec.disjuncts):
            out += [False] * len(spec.disjuncts)
            continue
        lo, hi = outward_box(spec.lower, spec.upper, net.dtype, net.device)
        rows = Rows(spec.disjuncts, net.out_size, net.dtype, net.device, lambda lo=lo, hi=hi: output_reach(net, lo, hi))
        res = bound_rows(net, DomainState(lo[None], hi[None]), rows.C, "crown", opts)
        values, _ = polytope_values(rows, res, lo[None], hi[None], opts.mix_iters)
        out += proven(values, cfg.bab.verify_margin, res.infeasible)[0].tolist()
    return out


def remaining(prop: Property, refuted: list[bool]):
    """The property restricted to the pairs not refuted: ``(property, box_map, poly_map)`` where ``box_map[i]``
    is the original index of the restricted property's box ``i`` and ``poly_map[i][k]`` that of its polytope
    ``k``. Boxes with nothing left are dropped (they are proven)."""
    specs, box_map, poly_map, k = [], [], [], 0
    for bi, spec in enumerate(prop.specs):
        keep = [j for j in range(len(spec.disjuncts)) if not refuted[k + j]]
        k += len(spec.disjuncts)
        if keep or not spec.disjuncts:
            specs.append(dataclasses.replace(spec, disjuncts=[spec.disjuncts[j] for j in keep]))
            box_map.append(bi)
            poly_map.append(keep)
    return dataclasses.replace(prop, specs=specs), box_map, poly_map


def to_original(ce, box_map, poly_map):
    """A counterexample of the restricted property, with the box and polytope indices of the original one."""
    if ce is not None:
        ce.disjunct = poly_map[ce.box][ce.disjunct] if poly_map[ce.box] else ce.disjunct
        ce.box = box_map[ce.box]
    return ce
