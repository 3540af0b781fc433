"""What every branching strategy shares while one box is decided: :class:`SearchContext`, with the engine's
three services (bounding rows, checking candidate points, attacking inside domains), the run statistics
(:class:`Stats`) and the resolution of heuristics by name.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from bnb.engine.attack import pgd
from bnb.engine.options import EngineOptions
from bnb.engine.rows import Rows
from bnb.errors import ConfigError
from bnb.timing import Deadline
from heuristics import UnknownHeuristic, resolve
from relaxations.methods import bound_rows
from relaxations.network import Network
from relaxations.state import BoundResult, DomainState


class Stats(dict):
    """Run statistics by name (counts and seconds), summed over the boxes of a property."""

    def add(self, key, value):
        self[key] = self.get(key, 0) + value

    def timed(self, key, t0):
        """Add the seconds since ``t0`` (a ``time.monotonic()`` reading) to ``key``."""
        self.add(key, time.monotonic() - t0)


def heuristic(kind: str, name: str):
    """The branching heuristic ``name`` of strategy ``kind`` (:mod:`heuristics.registry`); a bad name is bad input."""
    try:
        return resolve(kind, name)
    except UnknownHeuristic as e:
        raise ConfigError(str(e), f"bab.{kind}_heuristic") from None


def check_heuristics(cfg) -> None:
    """Resolve the configured heuristics (loading plug-ins) before any work: a bad name is bad input."""
    heuristic("input", cfg.bab.input_heuristic)
    heuristic("relu", cfg.bab.relu_heuristic)
    heuristic("activation", cfg.bab.activation_heuristic)


@dataclass
class SearchContext:
    """One box being decided: the network, the output rows, the options, the deadline, ``validate`` (replays
    candidate points ``(K, n_in)`` numpy on the ONNX model: a counterexample or None), the statistics, the log,
    the root box ``lower``/``upper`` ``(1, n_in)``, the seeded generator and the proof log (or None)."""
    net: Network
    rows: Rows
    opts: EngineOptions
    deadline: Deadline
    validate: Callable[[np.ndarray], object]
    stats: Stats
    log: Callable[[str], None]
    lower: torch.Tensor
    upper: torch.Tensor
    gen: torch.Generator = field(default=None)
    proof: object = None  # the box's ProofLog (bnb.engine.prooflog) when a certificate is asked for, else None
    iteration: int = 0  # iterations that left open children (every attack_every-th runs PGD)
    every_rows: Rows | None = None  # bab.polytopes: each: the box's open polytopes, where ``rows`` is one tree's
    # (a candidate point inside any of them is a counterexample)

    def bound(self, state: DomainState, method: str, iters: int, optimize_intermediate: bool, floor=None,
              units=None) -> BoundResult:
        """Bounds of every row on every domain of ``state``; alpha/beta-CROWN stop optimising a domain once its
        polytopes are refuted (by its bound or by ``floor`` ``(N, M)``, bounds known to hold before).

        ``units``: ``(U,)`` row numbers: domain ``u`` of ``state`` bounds only row ``units[u]`` (``floor`` is then
        ``(U, 1)``) and is settled when that row is refuted."""
        t0 = time.monotonic()
        rows, margin = self.rows, self.opts.loop.verify_margin
        C = rows.C if units is None else rows.C[units][:, None]

        def settled(lb, infeasible):
            return rows.settled(lb, infeasible, margin, floor, units)

        r = bound_rows(self.net, state, C, method, self.opts.bounds, iters=iters,
                       optimize_intermediate=optimize_intermediate, settled=settled, should_stop=self.deadline.expired)
        self.stats.timed("time_bounding", t0)
        if units is None:  # (with units, the caller counts its domains)
            self.stats.add("domains_bounded", state.size)
        return r

    def check_points(self, xs: torch.Tensor):
        """Evaluate candidate points ``(N, n_in)``; replay the violating ones. Returns a counterexample or None,
        and the points' margins per polytope ``(N, K)`` (None for no points)."""
        if xs.shape[0] == 0:
            return None, None
        t0 = time.monotonic()
        with torch.no_grad():
            y = self.net(xs)
            per_polytope = self.rows.group_margins(y)
            m = (per_polytope if self.every_rows is None else self.every_rows.group_margins(y)).min(dim=1).values
        ce = None
        hits = torch.nonzero(m <= 0).flatten()
        if hits.numel():
            order = hits[torch.argsort(m[hits])][:32]
            ce = self.validate(xs[order].double().cpu().numpy())
        self.stats.timed("time_attack", t0)
        return ce, per_polytope

    def attack_domains(self, lower: torch.Tensor, upper: torch.Tensor, polytope: torch.Tensor, start: torch.Tensor):
        """PGD inside the first ``attack_domains`` boxes ``lower``/``upper`` ``(n, n_in)`` (most promising first)
        against their polytope ``polytope`` ``(n,)``, from ``start`` ``(n, n_in)``: a counterexample or None."""
        t0 = time.monotonic()
        a = self.opts.attack
        k = min(a.attack_domains, lower.shape[0])
        C, d = self.rows.Cg[polytope[:k]], self.rows.dg[polytope[:k]]
        x, m = pgd(self.net, lower[:k], upper[:k], C, d, a.attack_steps, 0.05, self.gen, self.deadline, start[:k])
        if self.every_rows is not None:  # (a point pushed towards one polytope may land in another)
            with torch.no_grad():
                m = torch.minimum(m, self.every_rows.margins(self.net(x)))
        self.stats.timed("time_attack", t0)
        hits = torch.nonzero(m <= 0).flatten()
        if hits.numel():
            return self.validate(x[hits[:32]].double().cpu().numpy())
        return None

    def attack_now(self) -> bool:
        """Count one iteration with open children; True on every ``attack_every``-th (0: never)."""
        self.iteration += 1
        every = self.opts.attack.attack_every
        return bool(every) and self.iteration % every == 0
