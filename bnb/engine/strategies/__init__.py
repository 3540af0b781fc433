"""Branching strategies of the one branch-and-bound loop (:func:`bnb.engine.bab.search`).

The loop is the same for every strategy: pop a batch of open domains (best bound first), drop the ones
that cannot be split any more, **branch** them (the strategy's heuristic chooses what, the strategy splits
and bounds all children in one batched call), drop the verified children, **falsify** (check the
candidate points the bounds give, periodic PGD inside the most promising children) and push the rest.
A strategy owns what a domain carries and implements the four steps:

- ``root()``: the fields of the root domain (a dict of tensors, or lists of tensors per ReLU layer, one row
  per domain; see :class:`bnb.engine.store.DomainStore`), or None when the strategy decided the box already
  (``verdict``);
- ``prune(dom)``: the domains that can still be split (the others are counted as undecided);
- ``branch(dom)``: a :class:`Children` of the batch;
- ``falsify(children, open_)``: a counterexample among the open children, or None;
- ``keep(children, open_)``: the fields of the open children to push.

Input splitting (:mod:`bnb.engine.strategies.input_split`), ReLU splitting (:mod:`bnb.engine.strategies.relu_split`) and
partitioning along activation hyperplanes (:mod:`bnb.engine.strategies.partition`, ReLU splitting layer by layer)
are the strategies; another one is a class with these methods, a heuristic kind in
:mod:`heuristics.registry` and a name in :data:`STRATEGIES`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


@dataclass
class Search:
    """What every strategy shares for one box: the network, the output rows, the settings, the deadline,
    the replay of candidates on the ONNX model, the statistics, the log, the root box ``lo``/``hi``
    ``(1, n_in)`` and the seeded generator."""
    net: object
    rows: object
    cfg: object
    deadline: object
    validate: object
    stats: dict
    log: object
    lo: torch.Tensor
    hi: torch.Tensor
    gen: torch.Generator = field(default=None)
    it: int = 0  # iterations that left open children (every cfg.bab.attack_every-th runs PGD)

    def bound(self, state, method, iters, optimize_intermediate, floor=None, units=None):
        from bnb.engine.bab import _bound
        return _bound(self.net, state, self.rows, method, self.cfg, iters, optimize_intermediate, self.stats,
                      self.deadline, floor, units)

    def attack_now(self) -> bool:
        every = self.cfg.bab.attack_every
        return bool(every) and self.it % every == 0

    def timed(self, key, t0):
        self.stats[key] = self.stats.get(key, 0) + time.monotonic() - t0


@dataclass
class Children:
    """The bounded children of one batch: ``score`` ``(m,)`` (> 0 verified), ``infeasible`` ``(m,)`` and what
    the strategy needs to falsify and keep them (``data``)."""
    score: torch.Tensor
    infeasible: torch.Tensor
    data: dict


class Strategy:
    """Base of the branching strategies (see the module docstring)."""
    verdict = None  # set by a strategy that decides the box before branching (e.g. "unsat")

    def __init__(self, ctx: Search):
        self.ctx = ctx
        self.undecided = 0

    def root(self):  # pragma: no cover - interface
        raise NotImplementedError

    def prune(self, dom):  # pragma: no cover - interface
        raise NotImplementedError

    def branch(self, dom) -> Children:  # pragma: no cover - interface
        raise NotImplementedError

    def falsify(self, children: Children, open_):  # pragma: no cover - interface
        raise NotImplementedError

    def keep(self, children: Children, open_) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def drop_stuck(self, dom, can):
        """Keep the domains ``can`` ``(n,)``; count the others as undecided (the answer is then unknown)."""
        if bool(can.all()):
            return dom
        self.undecided += int((~can).sum())
        self.ctx.stats["undecided_domains"] = self.undecided
        if not bool(can.any()):
            return None
        return _select(dom, can)


def _select(dom, mask):
    return {k: ([None if t is None else t[mask] for t in v] if isinstance(v, list) else v[mask])
            for k, v in dom.items()}


def strategy_class(name: str):
    if name == "input":
        from bnb.engine.strategies.input_split import InputSplitting
        return InputSplitting
    if name == "relu":
        from bnb.engine.strategies.relu_split import ReluSplitting
        return ReluSplitting
    if name == "partition":
        from bnb.engine.strategies.partition import PhasePartitioning
        return PhasePartitioning
    raise ValueError(f"unknown branching strategy {name!r}")


STRATEGIES = ("input", "relu", "partition")
