"""The interface every branching strategy implements, and what its ``branch`` returns (see
:mod:`bnb.engine.strategies`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bnb.engine.context import Stats
from bnb.engine.domains import DomainBatch


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
        self.undecided += int((~can).sum())
        self.stats["undecided_domains"] = self.undecided
        if not bool(can.any()):
            return None
        return batch.select(can)
