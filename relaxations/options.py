"""What stays fixed for a whole run of the bounding methods: :class:`BoundOptions`.

Per-call choices (the method, its iteration count, which rows need an upper bound, when to stop) stay
arguments of :func:`relaxations.methods.bound_rows`; everything else that used to travel as a dozen keyword
arguments lives here, frozen, with the library's defaults. ``bnb.engine.bound_options`` is the one place that
maps a configuration to it. No imports beyond the standard library: the command line reads this without torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MultiNeuronOptions:
    """How ``mn-crown`` finds its multi-neuron constraints (:func:`relaxations.methods.mn_constraints`)."""

    k: int = 2                 # neurons per group hull (2 or 3; 3 gives ~10x more constraints)
    max_groups: int = 64       # groups per ReLU layer, the widest unstable neurons first
    time_budget: float = 10.0  # seconds each source of constraints (hulls, Anderson cuts) may take per box
    octa_iters: int = 20       # alpha-CROWN steps of each group's octahedral bounds
    cuts: str = "hull"         # where the constraints come from: "hull", "anderson" or "both"
    rounds: int = 4            # Anderson separation rounds per open output row (one LP solve each)
    tighten: bool = False      # re-bound each layer's unstable neurons with the earlier layers' constraints first
    tighten_time: float = 10.0  # seconds of that re-bounding per box (apart from time_budget)
    hull_cuts: int = 128       # multi-input hull cuts per sigmoid / tanh / softplus layer (relaxations.hull_cuts)
    hull_rounds: int = 3       # their separation rounds (each one more optimisation pass at the root)


@dataclass(frozen=True)
class BoundOptions:
    """The options of the bounding methods that are the same for every call of a run."""

    intermediate: str = "crown"     # intermediate (pre-activation) bounds: "crown", "forward" or "ibp"
    lower_slope: str = "adaptive"   # default lower slope of an unstable ReLU: "adaptive", "zero" or "one"
    alpha_lr: float = 0.1           # Adam step of the relaxation slopes (alpha)
    beta_lr: float = 0.05           # Adam step of the split multipliers (beta)
    gamma_lr: float = 0.05          # Adam step of the multi-neuron constraint multipliers (gamma)
    rigorous: bool = True           # bound the floating-point rounding of every bound (off: only to measure it)
    mn: MultiNeuronOptions = field(default_factory=MultiNeuronOptions)  # the constraints of mn-crown
    lp_solver: str = "HIGHS"        # LP solver through cvxpy: "HIGHS", "CLARABEL" or "SCS"
    lp_refine_time: float = 30.0    # seconds of LP refinement of the root's intermediate bounds
    mix_iters: int = 20             # ascent steps mixing a multi-row output polytope into one bound (0: none)
    certify: bool = False           # bounds a certificate can prove (set by the engine when one is recorded):
    #                                 alpha-CROWN optimising intermediate layers ends with one pass over its last slopes


DEFAULTS = BoundOptions()  # the library's defaults (frozen: safe to share)
