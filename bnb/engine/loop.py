"""The one branch-and-bound loop, the same for every branching strategy (:mod:`bnb.engine.strategies`).

Each iteration pops a batch of open domains (best bound first, or deepest first when memory runs short),
drops the ones that cannot be split, branches and bounds all the others in one batched call, drops the
verified children (through :func:`relaxations.verdict.proven`, the one place that says "verified"), looks for
counterexamples among the open ones and pushes them back.
"""
from __future__ import annotations

import time
from typing import Callable

import torch

from bnb.engine.context import Stats
from bnb.engine.options import LoopOptions
from bnb.engine.store import DomainStore
from bnb.engine.strategies.base import Strategy
from bnb.timing import Deadline
from relaxations.verdict import proven

PROGRESS_EVERY = 5.0  # seconds between two progress lines in the log


def progress(log, stats: Stats, stores: list[DomainStore], last: float, deadline: Deadline, force=False) -> float:
    """Log one progress line (over the trees' ``stores``) when ``PROGRESS_EVERY`` seconds passed since ``last``
    (or ``force``); returns the time of the last line."""
    now = time.monotonic()
    if not force and now - last < PROGRESS_EVERY:
        return last
    n = sum(len(st) for st in stores)
    msg = f"{deadline.elapsed():7.1f}s  branches {stats.get('branches', 0):>9}  open {n:>8}  " \
          f"worst margin {min(st.min_score() for st in stores):.4g}"
    if n:
        depth = torch.cat([st.depths() for st in stores if len(st)])
        msg += f"  depth {int(depth.min())}-{int(depth.max())}"
    if len(stores) > 1:
        msg += f"  trees open {sum(1 for st in stores if len(st))} of {len(stores)}"
    log(msg)
    return now


def pop_order(opts: LoopOptions, store: DomainStore) -> str:
    """``score`` (best first) unless configured or forced depth-first: too many domains, or the GPU's memory
    nearly full."""
    if opts.order == "depth" or len(store) > opts.max_domains:
        return "depth"
    if torch.cuda.is_available() and store.n and store.scores().is_cuda:
        free, total = torch.cuda.mem_get_info()
        if free < 0.1 * total:
            return "depth"
    return "score"


def search(strategy: Strategy, opts: LoopOptions, deadline: Deadline, stats: Stats,
           log: Callable[[str], None] = lambda message: None) -> tuple[str, object]:
    """Branch and bound over the open domains of ``strategy`` until none is left. Returns
    ``("unsat" | "sat" | "unknown", counterexample or None)``; raises
    :class:`~bnb.timing.VerificationTimeout` at the deadline."""
    return search_trees([strategy], opts, deadline, stats, log)


def search_trees(strategies: list[Strategy], opts: LoopOptions, deadline: Deadline, stats: Stats,
                 log: Callable[[str], None] = lambda message: None) -> tuple[str, object]:
    """:func:`search` over several trees at once, one per strategy (``bab.polytopes: each``: one per polytope):
    every iteration branches a batch of the tree whose worst open domain is the worst of all, so the trees are
    searched best first together and a polytope that holds a counterexample is not left waiting until the others
    are proven. unsat when every tree is; sat at the first counterexample; else unknown."""
    trees = []
    for strategy in strategies:
        if strategy.verdict is None:  # (a strategy's own verdict before branching: unsat)
            store = DomainStore()
            store.push(strategy.root())
            trees.append((strategy, store))
        elif strategy.verdict != "unsat":
            return strategy.verdict, None
    if not trees:
        return "unsat", None
    stores = [store for _, store in trees]
    last = time.monotonic()
    while any(len(store) for store in stores):
        deadline.check()
        stats["max_queue"] = max(stats.get("max_queue", 0), sum(len(store) for store in stores))
        strategy, store = trees[0] if len(trees) == 1 else min((t for t in trees if len(t[1])),
                                                               key=lambda t: t[1].min_score())
        batch = strategy.prune(store.pop(opts.batch_size, pop_order(opts, store)))
        if batch is None:
            continue
        children = strategy.branch(batch)
        open_mask = ~proven(children.score, opts.verify_margin, children.infeasible)
        if bool(open_mask.any()):
            ce = None if opts.proof_only else strategy.falsify(children, open_mask)
            if ce is not None:
                return "sat", ce
            store.push(children.batch.select(open_mask))
        last = progress(log, stats, stores, last, deadline)
    progress(log, stats, stores, last, deadline, force=True)
    return ("unknown", None) if any(s.undecided for s in strategies) else ("unsat", None)
