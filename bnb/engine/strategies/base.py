"""The interface every branching strategy implements, and what its ``branch`` returns (see
:mod:`bnb.engine.strategies`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bnb.engine.context import Stats
from bnb.engine.domains import DomainBatch
from relaxations.state import DomainState
from relaxations.verdict import proven


@dataclass
class Children:
    """The bounded children of one batch: ``batch`` (their ``score`` ``(m,)`` > 0 means verified),
    ``infeasible`` ``(m,)`` (no point at all, rigorously), and for falsification ``polytope`` ``(m,)`` the
    polytope deciding each score and ``coef`` ``(m, n_in)`` the input coefficients of that bound (whose
    minimiser over the box is a candidate counterexample); None where a strategy does not falsify."""
    batch: DomainBatch
    infeasible: torch.Tensor
    polytope: torch.Tensor | None = None
    coef: torch.Tensor | None = None

    @property
    def score(self) -> torch.Tensor:
        return self.batch.score


def with_coefficients(ctx, root, ref_bounds=None):
    """``(bound, verified)``: the root bound ``root`` if it has coefficients to branch on, else (IBP and the LP
    methods give none) a CROWN bound of the box (on ``ref_bounds``, known to hold there) with ``root``'s lower
    bounds and infeasibility kept; ``verified``: that bound already proves the box (through ``proven``)."""
    if root.relu_coeffs is not None:
        return root, False
    c = ctx.bound(DomainState(ctx.lower, ctx.upper, ref_bounds=ref_bounds), "crown", 0, False)
    c.lb = torch.maximum(c.lb, root.lb)
    c.infeasible = c.infeasible | root.infeasible
    return c, bool(proven(ctx.rows.score(c.lb)[0], ctx.opts.loop.verify_margin, c.infeasible)[0])


class Strategy:
    """Base of the branching strategies (see the module docstring); ``stats`` receives the count of
    domains left undecided (``undecided_domains``)."""
    verdict = None  # set by a strategy that decides the box before branching (e.g. "unsat")

    def __init__(self, stats: Stats):
        self.stats = stats
        self.undecided = 0

    def root(self) -> DomainBatch | None:  # pragma: no cover - interface
        raise NotImplementedError

    def prune(self, batch: DomainBatch) -> DomainBatch | None:  # pragma: no cover - interface
        raise NotImplementedError

    def branch(self, batch: DomainBatch) -> Children:  # pragma: no cover - interface
        raise NotImplementedError

    def falsify(self, children: Children, open_mask: torch.Tensor):  # pragma: no cover - interface
        raise NotImplementedError

    def drop_stuck(self, batch: DomainBatch, can: torch.Tensor) -> DomainBatch | None:
        """Keep the domains ``can`` ``(n,)``; count the others as undecided (the answer is then unknown)."""
        if bool(can.all()):
            return batch
        stuck = int((~can).sum())
        self.undecided += stuck
        self.stats.add("undecided_domains", stuck)  # (summed over the trees of bab.polytopes: each)
        if not bool(can.any()):
            return None
        return batch.select(can)
