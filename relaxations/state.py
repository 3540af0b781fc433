"""Per-domain state and bound results, kept apart from the network (MN-BaB style).

Shapes: ``N`` domains, ``n_in`` inputs, ``n_i`` neurons of ReLU layer ``i`` (flattened), ``m`` rows of the
specification matrix ``C`` being bounded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

ACTIVE, INACTIVE, FREE = 1, -1, 0


@dataclass
class DomainState:
    """A batch of ``N`` subdomains.

    - ``lower``/``upper``: ``(N, n_in)`` input box of each domain.
    - ``splits``: per ReLU layer, ``(N, n_i)`` int8 of +1 (fixed active, pre-activation >= 0),
      -1 (fixed inactive, pre-activation <= 0) or 0 (free); None when nothing is split.
    - ``pre_bounds``: per ReLU layer, known pre-activation bounds ``(l, u)`` of shape ``(N, n_i)`` (e.g.
      inherited from the parent domain); None to compute them.
    - ``alphas``/``betas``: optimised parameters to warm-start alpha/beta-CROWN (from the parent).
    - ``ref_bounds``: pre-activation bounds known to hold on the domain (e.g. the parent's, since a child's
      box lies inside its parent's); computed bounds are intersected with them.
    - ``constraints``: per ReLU layer, :class:`relaxations.multineuron.LayerConstraints` (shared by all
      domains: computed on a box that contains them) or None; ``gammas``: their multipliers.
    """

    lower: torch.Tensor
    upper: torch.Tensor
    splits: list[torch.Tensor] | None = None
    pre_bounds: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    alphas: dict | None = None
    betas: list[torch.Tensor] | None = None
    ref_bounds: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # valid bounds to intersect with
    constraints: list | None = None  # per ReLU layer, multi-neuron constraints valid on every domain (or None)
    gammas: list[torch.Tensor] | None = None  # per ReLU layer, their multipliers (N, m, c_i) to warm-start

    @property
    def size(self) -> int:
        return self.lower.shape[0]


@dataclass
class BoundResult:
    """Bounds of ``C y`` for every domain.

    - ``lb``: ``(N, m)`` lower bounds, rigorous in real arithmetic (rounding included); NaN or infinite
      entries prove nothing (:func:`relaxations.verdict.proven`); ``ub``: ``(N, m)`` or None.
    - ``pre_bounds``: per ReLU layer ``(l, u)`` of shape ``(N, n_i)`` (split phases applied).
    - ``A_input``/``bias``: ``C f(x) >= A_input . x + bias`` for every ``x`` of the domain in real arithmetic
      (the float values taken as exact): ``(N, m, n_in)``, ``(N, m)`` (None for IBP); whoever evaluates it in
      floating point must bound that rounding too (:mod:`relaxations.polytope`).
    - ``relu_coeffs``: per ReLU layer ``(N, m, n_i)``, the coefficient of the final lower bound on that
      layer's output (what branching heuristics score); None for IBP.
    - ``alphas``/``betas``/``gammas``: optimised parameters for warm starts; ``constraints``: the multi-neuron
      constraints the bound used (``mn-crown``), for the children of these domains.
    - ``stats``: figures of the computation for the run statistics (e.g. ``mn-crown``'s unstable neurons per
      layer before and after tightening), or None.
    - ``base_lb``: ``mn-crown`` only, ``(N, m)``: the bound of its first pass (alpha-CROWN), before the constraints:
      what a rule weighing the constraints' gain against their cost reads; None otherwise.
    - ``lb_alphas``/``lb_betas``: alpha/beta-CROWN with ``BoundOptions.certify`` only (else None), per ReLU layer
      ``(N, m, n_i)``: the final rows' slopes and split multipliers of the iterate whose bound ``lb`` reports
      (``alphas``/``betas`` are the last iterate's, for warm starts); what a certificate records. ``lb_gammas``
      likewise the multipliers of the multi-neuron constraints (per ReLU layer ``(N, m, c_i)`` or None).
      ``lb_pre_exact``: False where ``pre_bounds`` are not the bounds the final rows were computed on (alpha-CROWN
      optimising the intermediate layers intersects several iterates).
      ``pre_hints``: with ``BoundOptions.certify``, how ``pre_bounds`` were computed where not by CROWN's default
      rows: ``{j: (sel (N, k), [per ReLU layer i < j the slopes (N, 2 k, n_i)])}``, ReLU layer ``j``'s neurons
      ``sel`` bounded from below (rows ``0..k-1``) and above (rows ``k..2k-1``) with those slopes; else None.
      ``pre_hint_rows``: ``mn-crown`` with ``mn_tighten`` and ``BoundOptions.certify`` (one domain), per ReLU
      layer None or the bounds its tightening changed, with what proves them: a dict of ``neuron`` ``(h,)``,
      ``side`` ``(h,)`` (+1 lower, -1 upper), ``alpha`` (per earlier layer ``(h, n_i)``) and ``gamma`` (per
      earlier layer ``(h, c_i)`` or None, over ``constraints``); these replace ``pre_hints`` on those neurons.
    - ``infeasible``: ``(N,)`` bool (always set by ``bound_rows``): True where a split phase rigorously contradicts the
      domain's bounds, so that the domain holds no point at all (see :class:`relaxations.layers.relu.ReluRelaxation`).
    """

    lb: torch.Tensor
    ub: torch.Tensor | None = None
    pre_bounds: list = field(default_factory=list)
    A_input: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    relu_coeffs: list | None = None
    alphas: dict | None = None
    betas: list | None = None
    infeasible: torch.Tensor | None = None
    gammas: list | None = None
    constraints: list | None = None
    stats: dict | None = None
    base_lb: torch.Tensor | None = None
    lb_alphas: list | None = None
    lb_betas: list | None = None
    lb_gammas: list | None = None
    lb_pre_exact: bool = True
    pre_hints: dict | None = None
    pre_hint_rows: list | None = None
