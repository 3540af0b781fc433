"""Strategy (ii) of Mao et al.: partition the input domain into convex polytopes by ReLU-phase splits and
stop refining a piece as soon as the chosen relaxation is exact on it.

:class:`PhasePartition` is a branching strategy of the engine's loop (:func:`bnb.engine.loop.search`,
:mod:`bnb.engine.strategies`) whose "verified" test is exactness instead of a property:

- the root is the whole box; :meth:`PhasePartition.bound` bounds a batch of pieces with
  the chosen relaxation (certified: LP methods by dual certificates, single-neuron methods with their
  rounding error) and finds the exact range of each piece (sampled points first, the MILP when they do not
  already meet the bound);
- :meth:`PhasePartition.done` a piece is finished when its bounds meet the exact range (within ``tol``),
  when it is empty, or when every neuron is phased (an activation region: nothing is left to split);
- :meth:`PhasePartition.split` splits the most balanced unstable neuron of the piece's current layer
  (layers are split in order, so every piece stays a convex polytope, :mod:`bnb.theory.regions`): the
  ``phase`` heuristic of ``bab.branching: partition`` (:mod:`bnb.engine.strategies.partition`), here on the exact
  ranges of the piece's neurons (LP over the piece) instead of the relaxation's bounds.

:func:`partition` runs it through the engine's loop and reports the number of pieces the relaxation needs
against the number of activation patterns of the network on the box.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from bnb.engine.context import Stats, heuristic
from bnb.engine.domains import PieceDomains
from bnb.engine.loop import search
from bnb.engine.options import LoopOptions
from bnb.engine.strategies.base import Children, Strategy
from bnb.theory.exact import exact_solve
from bnb.theory.networks import blocks_of, evaluate
from bnb.theory.regions import Regions
from bnb.timing import Deadline
from heuristics.base import ReluBatch
from relaxations.names import LP_METHODS
from relaxations.state import DomainState

PARTITION_METHODS = ("ibp", "crown", "dp0", "dp1", "alpha", "beta", "lp", "mn", "p1", "anderson")


@dataclass
class Piece:
    splits: list                 # per ReLU layer int8 (n_i,): the split decisions that define the piece
    layer: int | None = None     # current layer (None: every neuron phased)
    unstable: list = field(default_factory=list)  # [(j, lo, hi)] of the current layer
    empty: bool = False
    lb: np.ndarray | None = None        # relaxation bounds of every output (certified)
    ub: np.ndarray | None = None
    exact_lb: np.ndarray | None = None  # true range of every output on the piece
    exact_ub: np.ndarray | None = None


def relaxation_bounds(net, lower, upper, splits, method):
    """Certified ``(lb, ub)`` numpy ``(n_out,)`` of every output on one piece.

    The piece's intermediate bounds are first tightened by :func:`piece_pre_bounds`, so that a neuron the
    piece makes stable is stable for every method."""
    from relaxations.methods import bound_rows, lp_rows
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
    pre = piece_pre_bounds(net, lower, upper, splits)
    st = DomainState(t(lower), t(upper), [torch.as_tensor(s)[None] for s in splits],
                     [(torch.as_tensor(l), torch.as_tensor(u)) for l, u in pre])
    C = torch.eye(net.out_size, dtype=torch.float64)
    if method in LP_METHODS:
        r = lp_rows(net, st, C, method, want_upper=True)
    else:
        r = bound_rows(net, st, C, method, want_upper=True)
    return r.lb[0].double().numpy(), r.ub[0].double().numpy()


def piece_pre_bounds(net, lower, upper, splits):
    """Certified intermediate bounds ``[(l (1, n_i), u (1, n_i))]`` of a piece: layer by layer, every neuron
    not yet stable is bounded by the triangle LP of the layers before it
    (:func:`relaxations.lp.triangle.refine_model`), then by the LP that includes its own layer, whose split
    constraints can decide it. Exact up to the current layer (its predecessors are fixed by the splits);
    every value is a dual certificate (:mod:`relaxations.lp.sound`)."""
    from relaxations.lp.model import NetworkLP
    from relaxations.lp.triangle import refine_model
    model = NetworkLP(net)
    dom = model.set_box(lower, upper, None, splits)
    for i in range(model.n_layers):
        if dom.empty:
            break
        dom = refine_model(model, dom, layers=[i])
        l, u = dom.pre[i]
        for j in np.flatnonzero(dom.phases(i) == 0):
            c = np.zeros(model.n_total)
            c[model.z_off[i] + j] = 1.0
            lo, _ = model.minimize(c, 0.0, depth=i + 1, fallback=l[j])
            hi, _ = model.minimize(-c, 0.0, depth=i + 1, fallback=-u[j])
            l[j], u[j] = max(l[j], lo), min(u[j], -hi)
        model.set_domain(dom)
    return [(l.reshape(1, -1), u.reshape(1, -1)) for l, u in dom.pre]


class PhasePartition(Strategy):
    """See the module docstring. ``net``: a :class:`relaxations.network.Network`; ``tol``: exactness
    tolerance, relative to ``1 + |exact range|``; ``samples``: points drawn per piece before the MILP;
    ``max_pieces``: pieces (open and finished) after which open pieces are no longer split.

    A domain of the engine carries ``score`` (> 0 finished), ``depth`` and ``piece``, the index of its
    :class:`Piece` in :attr:`pieces`; :attr:`finished` collects the pieces the loop stopped refining."""

    def __init__(self, net, lower, upper, method="p1", tol=1e-6, samples=256, seed=0, max_pieces=4096):
        if method not in PARTITION_METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(PARTITION_METHODS)}")
        super().__init__(Stats())
        self.net = net.to(dtype=torch.float64)
        self.blocks = blocks_of(self.net)
        self.lower, self.upper = np.asarray(lower, float), np.asarray(upper, float)
        self.method, self.tol, self.max_pieces = method, tol, max_pieces
        self.regions = Regions(self.blocks, self.lower, self.upper)
        self.chooser = heuristic("relu", "phase")
        self.rng = np.random.default_rng(seed)
        self.points = self.lower + (self.upper - self.lower) * self.rng.random((samples * 16, self.lower.size))
        self.samples = samples
        self.milp_calls = 0
        self.pieces, self.finished, self.n_open, self.n_splits = [], [], 0, 0
        first = self._classified(Piece([np.zeros(n, dtype=np.int8) for n in self.regions.sizes]))
        self.bound([first])
        self._root = self._domains([first], torch.zeros(1))
        if bool((self._root.score > 0).all()):
            self.verdict = "unsat"  # (the engine's word for "every domain finished")

    # ------------------------------------------------------------------ the engine's interface
    def _domains(self, pieces, depth) -> PieceDomains:
        """Record ``pieces`` (finished ones also in :attr:`finished`) as a batch: score ``+1`` finished, ``-1``
        open."""
        first = len(self.pieces)
        self.pieces.extend(pieces)
        finished = [self.done(p) for p in pieces]
        self.finished.extend(p for p, f in zip(pieces, finished) if f)
        self.n_open += finished.count(False)
        score = torch.tensor([1.0 if f else -1.0 for f in finished], dtype=torch.float64)
        return PieceDomains(score=score, depth=depth, piece=torch.arange(first, first + len(pieces)))

    def root(self):
        return self._root

    def prune(self, batch: PieceDomains):
        can = torch.ones(len(batch), dtype=torch.bool)
        for k, i in enumerate(batch.piece.tolist()):
            if self.n_open - 1 + len(self.finished) >= self.max_pieces:  # the budget: finished as it is
                self.finished.append(self.pieces[i])
                self.n_open -= 1
                can[k] = False
        return self.drop_stuck(batch, can)

    def branch(self, batch: PieceDomains):
        parents = [self.pieces[i] for i in batch.piece.tolist()]
        self.n_open -= len(parents)
        pieces = [c for p in parents for c in self.split(p)]
        self.n_splits += len(parents)
        self.bound(pieces)
        children = self._domains(pieces, (batch.depth + 1).repeat_interleave(2))
        return Children(children, torch.zeros(len(pieces), dtype=torch.bool))

    def falsify(self, children, open_mask):
        return None  # nothing to falsify: the loop only refines until exact

    # ------------------------------------------------------------------ pieces
    def _classified(self, piece: Piece) -> Piece:
        res = self.regions.classify(piece.splits)
        if res is None:
            piece.empty = True
        else:
            piece.layer, _, piece.unstable = res
        return piece

    def _in_piece(self, x, splits):
        """Rows of ``x`` inside the piece (every split neuron on its side)."""
        ok = np.ones(len(x), dtype=bool)
        h = x
        for k, (W, b) in enumerate(self.blocks[:-1]):
            z = h @ W.T + b
            idx = np.flatnonzero(splits[k] != 0)
            if idx.size:
                ok &= np.all(z[:, idx] * splits[k][idx] >= 0, axis=1)
            h = np.maximum(z, 0)
        return ok

    def bound(self, pieces):
        """Relaxation bounds and exact range of every non-empty piece of ``pieces``."""
        for p in pieces:
            # bounded even when an LP calls the piece empty: only certified values enter the final bounds
            p.lb, p.ub = relaxation_bounds(self.net, self.lower, self.upper, p.splits, self.method)
            if p.empty:
                continue
            x = self.points[self._in_piece(self.points, p.splits)][:self.samples]
            if len(x):
                y = evaluate(self.blocks, x)
                smin, smax = y.min(axis=0), y.max(axis=0)
                scale = self.tol * (1 + np.abs(smax - smin) + np.abs(smax))
                if np.all(p.lb >= smin - scale) and np.all(p.ub <= smax + scale):
                    p.exact_lb, p.exact_ub = smin, smax  # lb <= min <= smin: the bound meets the optimum
                    continue
            self.milp_calls += 1
            res = exact_solve(self.net, self.lower, self.upper, p.splits)
            if res.status == "infeasible":
                p.empty = True
                continue
            p.exact_lb, p.exact_ub = res.lb, res.ub

    def is_exact(self, p: Piece) -> bool:
        scale = self.tol * (1 + np.abs(p.exact_ub - p.exact_lb) + np.abs(p.exact_ub))
        return bool(np.all(p.exact_lb - p.lb <= scale) and np.all(p.ub - p.exact_ub <= scale))

    def done(self, p: Piece) -> bool:
        return p.empty or p.layer is None or self.is_exact(p)

    def split(self, p: Piece) -> list:
        """Two children (inactive, active) on the neuron the ``phase`` heuristic picks: the most balanced
        unstable neuron of the current layer, by its exact range on the piece."""
        pre = [(torch.zeros(1, n, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64))
               for n in self.regions.sizes]
        for j, lo, hi in p.unstable:
            pre[p.layer][0][0, j], pre[p.layer][1][0, j] = lo, hi
        batch = ReluBatch(pre, [torch.zeros_like(l) for l, _ in pre], [torch.as_tensor(s)[None] for s in p.splits])
        j = int(self.chooser(batch)[0]) - sum(self.regions.sizes[:p.layer])
        children = []
        for s in (-1, 1):
            splits = [a.copy() for a in p.splits]
            splits[p.layer][j] = s
            children.append(self._classified(Piece(splits)))
        return children


def partition(net, lower, upper, method="p1", tol=1e-6, max_pieces=4096, count_patterns=True) -> dict:
    """Refine until every piece is finished (or ``max_pieces`` pieces); the keys of
    ``bnb recover partition --json``: ``pieces`` (non-empty finished pieces), ``activation_patterns``
    (activation regions of the network on the box; None when not counted), ``lower``/``upper`` (min / max
    over all pieces of their certified bounds: sound bounds of each output over the whole box),
    ``exact_lower``/``exact_upper`` (the exact range), ``exact`` (every piece exact), ``not_exact_regions``
    (activation regions on which the relaxation is still not exact), ``splits``, ``milp_calls``, ``time``."""
    t0 = time.perf_counter()
    strat = PhasePartition(net, lower, upper, method, tol, max_pieces=max_pieces)
    search(strat, LoopOptions(batch_size=1, order="best", max_domains=max_pieces + 1, verify_margin=0.0,
                              proof_only=False),
           Deadline(None), strat.stats)
    finished = strat.finished
    live = [p for p in finished if not p.empty]
    # the pieces cover the box (every split keeps both children) and every piece's bounds are certified;
    # pieces the LP or the MILP call empty keep their certified bounds too (+-inf when the relaxation agrees)
    lower_b = np.min([p.lb for p in finished], axis=0)
    upper_b = np.max([p.ub for p in finished], axis=0)
    exact = [strat.is_exact(p) for p in live]
    out = {"method": method, "pieces": len(live),
           "activation_patterns": strat.regions.patterns() if count_patterns else None,
           "lower": lower_b.tolist(), "upper": upper_b.tolist(),
           "exact_lower": np.min([p.exact_lb for p in live], axis=0).tolist(),
           "exact_upper": np.max([p.exact_ub for p in live], axis=0).tolist(),
           "exact": all(exact), "not_exact_regions": sum(1 for p, e in zip(live, exact) if not e and p.layer is None),
           "splits": strat.n_splits, "milp_calls": strat.milp_calls, "time": time.perf_counter() - t0}
    return out
