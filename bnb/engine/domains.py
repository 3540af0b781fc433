"""Typed batches of open domains: structure of arrays, one row per domain (no Python list of domain objects).

Every field of a batch is a tensor whose first dimension indexes domains, or a list of such tensors with one
entry per ReLU layer (``None`` where a layer has none), or ``None`` when a run does not use it. The field list
of each kind of domain is its dataclass: the store (:class:`bnb.engine.store.DomainStore`), the strategies and
the heuristics all go through it. ``score`` (``(N,)``, > 0 verified; lowest first is best-first search) and
``depth`` (``(N,)``) are common to all.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from relaxations.state import DomainState


def _map_field(value, fn):
    if value is None:
        return None
    if isinstance(value, list):
        return [None if t is None else fn(t) for t in value]
    return fn(value)


def _tile(t: torch.Tensor, reps: int) -> torch.Tensor:
    return t.repeat(reps, *([1] * (t.dim() - 1)))


@dataclass
class DomainBatch:
    """The fields every kind of domain has; subclasses add their own."""
    score: torch.Tensor
    depth: torch.Tensor

    def __len__(self) -> int:
        return self.score.shape[0]

    def map(self, fn):
        """The batch with ``fn`` applied to every tensor (per-layer lists entry by entry)."""
        return type(self)(**{f.name: _map_field(getattr(self, f.name), fn) for f in fields(self)})

    def select(self, which: torch.Tensor):
        """The domains ``which``: a boolean mask ``(N,)`` or indices ``(k,)``."""
        return self.map(lambda t: t[which])

    def tile(self, reps: int):
        """``reps`` copies of the batch one after the other (``reps N`` domains)."""
        return self.map(lambda t: _tile(t, reps))


@dataclass
class InputDomains(DomainBatch):
    """Input boxes (:mod:`bnb.engine.strategies.input_split`).

    - ``lower``/``upper``: ``(N, n_in)`` the box;
    - ``refutation``: ``(N, K)`` per open polytope its refutation value (> 0 refuted);
    - ``coef``: ``(N, K, n_in)`` per open polytope the input coefficients of the bound behind that value;
    - ``pre_lower``/``pre_upper``: per ReLU layer ``(N, n_i)`` intermediate bounds (they hold on every child box);
    - ``node``: ``(N,)`` long, each domain's node in the proof log (:mod:`bnb.engine.prooflog`; -1 without one).
    """
    lower: torch.Tensor
    upper: torch.Tensor
    refutation: torch.Tensor
    coef: torch.Tensor
    pre_lower: list
    pre_upper: list
    node: torch.Tensor

    @property
    def pre_bounds(self):
        """Per ReLU layer ``(l, u)``, or None when there is no ReLU."""
        return list(zip(self.pre_lower, self.pre_upper)) or None


@dataclass
class ReluDomains(DomainBatch):
    """Split phases of ReLU neurons over the one input box (:mod:`bnb.engine.strategies.relu_split`).

    - ``row``: ``(N,)`` the output row that decides the domain's score;
    - ``lb``: ``(N, M)`` the lower bound of every output row;
    - per ReLU layer (lists): ``splits`` ``(N, n_i)`` int8 (+1 active, -1 inactive, 0 free), the intermediate
      bounds ``pre_lower``/``pre_upper`` ``(N, n_i)``, ``coeffs`` ``(N, n_i)`` the deciding row's coefficients on
      the layer's output (what heuristics score), per row the slopes ``alphas`` ``(N, M, n_i)`` and split
      multipliers ``betas`` ``(N, M, n_i)``;
    - ``gammas``: with multi-neuron constraints, per ReLU layer their multipliers ``(N, M, c_i)`` (None on layers
      without constraints); None without constraints;
    - ``node``: ``(N,)`` long, each domain's node in the proof log (:mod:`bnb.engine.prooflog`), or None without one.
    """
    row: torch.Tensor
    lb: torch.Tensor
    splits: list
    pre_lower: list
    pre_upper: list
    coeffs: list
    alphas: list
    betas: list
    gammas: list | None = None
    node: torch.Tensor | None = None

    @property
    def pre_bounds(self):
        return list(zip(self.pre_lower, self.pre_upper))

    def fix(self, dom: torch.Tensor, pos: torch.Tensor, sign: torch.Tensor, sizes) -> None:
        """Split, in place, the neuron at flat position ``pos`` ``(k,)`` (over the concatenated ReLU layers of
        ``sizes`` neurons) of the domains ``dom`` ``(k,)`` in phase ``sign`` ``(k,)`` (+1 active, -1 inactive),
        clamping its intermediate bounds to that phase (``l >= 0`` or ``u <= 0``)."""
        offsets = torch.tensor([0] + list(sizes), device=pos.device).cumsum(0)
        layer = torch.searchsorted(offsets, pos, right=True) - 1
        idx = pos - offsets[layer]
        for i in range(len(sizes)):
            sel = layer == i
            if not bool(sel.any()):
                continue
            d, j, s = dom[sel], idx[sel], sign[sel]
            self.splits[i][d, j] = s.to(self.splits[i].dtype)
            lo, up = self.pre_lower[i], self.pre_upper[i]
            lo[d, j] = torch.where(s > 0, lo[d, j].clamp(min=0), lo[d, j])
            up[d, j] = torch.where(s < 0, up[d, j].clamp(max=0), up[d, j])

    def state(self, lower: torch.Tensor, upper: torch.Tensor, constraints=None) -> DomainState:
        """The bounding state of these domains over the box ``lower``/``upper`` ``(1, n_in)``, warm-started
        with their slopes and multipliers."""
        n = len(self)
        return DomainState(lower.expand(n, -1), upper.expand(n, -1), self.splits, self.pre_bounds,
                           {"final": self.alphas}, self.betas, constraints=constraints,
                           gammas=None if constraints is None else self.gammas)


@dataclass
class ActivationDomains(DomainBatch):
    """Neurons of any activation split at a point (:mod:`bnb.engine.strategies.activation_split`) over the one
    input box: a domain is the box's points whose pre-activations lie in its intermediate bounds.

    - ``row``: ``(N,)`` the output row that decides the domain's score; ``lb``: ``(N, M)`` every row's bound;
    - per activation layer (lists): the intermediate bounds ``pre_lower``/``pre_upper`` ``(N, n_i)`` (a split
      narrowed them: they are the domain's constraints as well as bounds), ``coeffs`` ``(N, n_i)`` the deciding
      row's coefficients on the layer's output (what heuristics score);
    - ``alphas``: per activation layer the parameters of the children's alpha-CROWN warm start (float32, any value
      is sound: lines are repaired), or None when children are bounded by CROWN; ``betas``: per activation layer
      ``(N, M, 2, n_i)`` the multipliers of the interval constraints (float32 warm start, ``bab.activation_method:
      beta``), or None; ``gammas``: with the root's multi-neuron constraints (``bounds.method: mn-crown``), per
      activation layer their multipliers ``(N, M, c_i)`` (float32 warm start; None on layers without), or None.
    """
    row: torch.Tensor
    lb: torch.Tensor
    pre_lower: list
    pre_upper: list
    coeffs: list
    alphas: list | None = None
    betas: list | None = None
    gammas: list | None = None

    @property
    def pre_bounds(self):
        return list(zip(self.pre_lower, self.pre_upper))


@dataclass
class PieceDomains(DomainBatch):
    """Pieces of the theory's partition (:mod:`bnb.theory.partition`): ``piece`` ``(N,)`` indexes the
    strategy's own list of pieces."""
    piece: torch.Tensor
