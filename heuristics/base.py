"""What a branching heuristic receives, and the helpers every strategy shares.

A heuristic is a function of one *batch* of open domains (:class:`InputBatch` for input splitting,
:class:`ReluBatch` for ReLU splitting) that returns, per domain, what to split: an input dimension ``(N,)``
or a flat neuron position ``(N,)`` (over the concatenated ReLU layers; ``-1``: nothing left to split).
Everything it may use is a field of the batch, filled by the engine: the domains' bounds, the intermediate
bounds, the linear coefficients of the last bound computation, the split state, a seeded generator and a
cheap bounding callback ``evaluate`` for look-ahead. Heuristics read no global configuration; the few
knobs they have (``lookahead``, ``topk``, ``parts``, ``sb_margin``) travel in the batch.

Activation splitting has :class:`ActivationBatch` (a neuron of any activation split at a point). A further
strategy (e.g. partitioning a polytope along activation hyperplanes) adds its own batch type and
registry kind (:mod:`heuristics.registry`) without touching these two.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch


def lookahead_choice(child_scores: torch.Tensor) -> torch.Tensor:
    """``child_scores``: ``(parts, k, N)`` domain scores (> 0: verified) of the children of each of ``k``
    candidate splits; returns ``(N,)`` the candidate that leaves the least unverified margin in its
    children, ``max sum_children min(score, 0)`` (ties: the first).

    Summing rather than taking the worse child matters: a split that verifies one half outright but leaves
    the other half as bad as the parent beats one that changes neither half, which the worse-child rule
    cannot tell apart (and then keeps bisecting dimensions that are already tiny; ACAS Xu 4_2/prop_2).
    """
    return child_scores.clamp(max=0).sum(dim=0).argmax(dim=0)


def splittable(lower: torch.Tensor, upper: torch.Tensor, min_width: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``(N, n_in)``: dimensions whose bisection makes two proper, smaller boxes in the tensors' precision
    and that are wider than ``min_width`` (e.g. a millionth of the root box). Bisecting below float
    resolution returns the parent itself, which look-ahead can then prefer forever (ACAS Xu 3_3/prop_2)."""
    mid = (lower + upper) / 2
    return (mid > lower) & (mid < upper) & (upper - lower > min_width)


@dataclass
class InputBatch:
    """``N`` open boxes of input splitting.

    ``A``: ``(N, K, n_in)`` input coefficients of the bound of each open polytope (None without linear
    bounds); ``values``: ``(N, K)`` their refutation values (> 0: refuted); ``ok``: ``(N, n_in)`` the
    dimensions that may be split; ``C``: ``(N, R, n_out)`` the rows of each domain's worst polytope (zero
    rows pad); ``pre_bounds``: per ReLU layer ``(l, u)`` ``(N, n_i)`` or None; ``evaluate(cands (N, k))``:
    bounds the ``parts`` children of splitting each domain along each candidate (cheaply, the children's
    method) and returns their scores ``(parts, k, N)``; the engine keeps those children, so choosing one
    of the candidates costs no second bound."""
    lower: torch.Tensor
    upper: torch.Tensor
    ok: torch.Tensor
    A: torch.Tensor | None = None
    values: torch.Tensor | None = None
    C: torch.Tensor | None = None
    pre_bounds: list | None = None
    net: object = None
    evaluate: Callable | None = None
    generator: torch.Generator | None = None
    lookahead: int = 1
    parts: int = 2
    sb_margin: float = 0.0

    @property
    def n(self) -> int:
        return self.lower.shape[0]

    @property
    def width(self) -> torch.Tensor:
        return self.upper - self.lower

    @property
    def worst(self) -> torch.Tensor:
        """``(N,)`` the polytope with the lowest refutation value."""
        return self.values.argmin(dim=1)

    @property
    def A_row(self) -> torch.Tensor | None:
        """``(N, n_in)``: the coefficients of the worst polytope's bound."""
        if self.A is None:
            return None
        return self.A[torch.arange(self.n, device=self.A.device), self.worst]


@dataclass
class ReluBatch:
    """``N`` open domains of ReLU splitting.

    ``pre_bounds``: per ReLU layer ``(l, u)`` ``(N, n_i)``; ``coeffs``: per layer ``(N, n_i)`` the deciding
    row's coefficient on the ReLU's output in the last bound, before the terms of multi-neuron constraints (the
    coefficient after them: :func:`heuristics.relu_split.bound_coeffs`); ``splits``: per layer ``(N, n_i)`` int8 (+1
    active, -1 inactive, 0 free); ``biases``: per layer ``(n_i,)`` the bias of the affine layer feeding the
    ReLU, or None where there is none; ``gammas``/``constraints``: the deciding row's multi-neuron
    multipliers ``(N, c_i)`` and the constraints (``acs``), or None; ``evaluate(cands (N, k))``: bounds both
    children of splitting each candidate (flat positions) with the parent's parameters and returns their
    scores ``(2, k, N)``; ``links``: per ReLU layer ``i`` the dense matrix ``(n_i, n_{i-1})`` of the affine map
    from layer ``i-1``'s ReLU outputs to layer ``i``'s pre-activations (entry 0, and any link the engine could
    not build or that is too large to store densely, None), or None; ``indirect_weight``: the weight of
    ``deepsplit``'s indirect term."""
    pre_bounds: list
    coeffs: list
    splits: list
    biases: list | None = None
    gammas: list | None = None
    constraints: list | None = None
    evaluate: Callable | None = None
    generator: torch.Generator | None = None
    lookahead: int = 1
    topk: int = 3
    extra: dict = field(default_factory=dict)
    links: list | None = None
    indirect_weight: float = 1.0

    @property
    def n(self) -> int:
        return self.pre_bounds[0][0].shape[0]

    def free(self) -> list:
        """Per layer ``(N, n_i)``: the unstable neurons not split yet (the only ones worth splitting)."""
        out = []
        for (l, u), s in zip(self.pre_bounds, self.splits):
            m = (l < 0) & (u > 0)
            out.append(m if s is None else m & (s == 0))
        return out


@dataclass
class ActivationBatch:
    """``N`` open domains of activation splitting (:mod:`heuristics.activation_split`).

    Per activation layer: ``pre_bounds`` ``(l, u)`` ``(N, n_i)``; ``coeffs`` ``(N, n_i)`` the deciding row's
    coefficient on the layer's output in the last bound; ``ok`` ``(N, n_i)`` bool, the neurons that may be split
    (wide enough, the split point strictly inside); ``points`` ``(N, n_i)`` where each would be split; ``kinds``
    ``(kind, slope)``: ``sigmoid``, ``tanh``, ``softplus``, ``relu`` or ``leaky`` (with its negative slope)."""
    pre_bounds: list
    coeffs: list
    ok: list
    points: list
    kinds: list
    generator: torch.Generator | None = None

    @property
    def n(self) -> int:
        return self.pre_bounds[0][0].shape[0]
