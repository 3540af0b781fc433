"""What the engine reads of the configuration: small frozen option objects, built once per box.

The defaults and help texts live only in :mod:`bnb.config`; these classes name which options each part of the
engine uses (the field names are the config's keys), so a strategy or the loop cannot read anything else.
:func:`engine_options` builds them from a :class:`~bnb.config.Config`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from bnb.engine.bound_options import bound_options
from relaxations.options import BoundOptions


@dataclass(frozen=True)
class LoopOptions:
    """The branch-and-bound loop (:func:`bnb.engine.loop.search`); from the ``bab`` section (and
    ``general.proof_only``)."""
    batch_size: int
    order: str
    max_domains: int
    verify_margin: float
    proof_only: bool  # general.proof_only: no falsification anywhere in the engine


@dataclass(frozen=True)
class AttackOptions:
    """Falsification inside branch and bound (:class:`bnb.engine.context.SearchContext`); from ``bab``."""
    attack_every: int
    attack_domains: int
    attack_steps: int


@dataclass(frozen=True)
class PgdOptions:
    """The attack before bounding (:func:`bnb.engine.attack.attack_property`); from the ``attack`` section."""
    restarts: int
    samples: int
    steps: int
    step_size: float
    max_batch: int


@dataclass(frozen=True)
class InputSplitOptions:
    """Input splitting (:mod:`bnb.engine.strategies.input_split`); from ``bab``."""
    input_heuristic: str
    input_lookahead: int
    input_split_parts: int
    sb_margin: float
    input_method: str
    input_alpha_after: int
    input_alpha_iters: int
    input_alpha_intermediate: bool


@dataclass(frozen=True)
class ReluSplitOptions:
    """ReLU splitting (:mod:`bnb.engine.strategies.relu_split`); from ``bab``."""
    relu_heuristic: str
    relu_lookahead: int
    fsb_topk: int
    deepsplit_weight: float
    relu_method: str
    mn_children_gain: float
    beta_iters: int
    retighten_depth: int
    clauses: bool
    clause_cap: int
    clause_reverify: int
    clause_iters: int
    clause_share: float


@dataclass(frozen=True)
class ActivationSplitOptions:
    """Activation splitting (:mod:`bnb.engine.strategies.activation_split`); from ``bab``."""
    activation_heuristic: str
    activation_method: str
    activation_alpha_iters: int
    activation_min_width: float
    activation_retighten_depth: int


@dataclass(frozen=True)
class RootOptions:
    """The root bound (:func:`bnb.engine.root.run_bab`); from ``bounds`` and ``bab``."""
    method: str        # bounds.method
    alpha_iters: int   # bounds.alpha_iters
    lp_refine: bool    # bounds.lp_refine
    sign_refine: bool  # bounds.sign_refine
    sign_layers: int   # bounds.sign_layers
    sign_max: int      # bounds.sign_max
    sign_time: float   # bounds.sign_time
    enabled: bool      # bab.enabled
    branching: str     # bab.branching
    polytopes: str     # bab.polytopes


@dataclass(frozen=True)
class EngineOptions:
    """Everything the engine reads, by part; ``bounds`` is the bounding options of :mod:`relaxations`."""
    root: RootOptions
    loop: LoopOptions
    attack: AttackOptions
    input: InputSplitOptions
    relu: ReluSplitOptions
    bounds: BoundOptions
    activation: ActivationSplitOptions
    seed: int


def _take(cls, *sections):
    """An instance of ``cls`` whose fields are read by name from the first of ``sections`` that has them."""
    values = {}
    for f in fields(cls):
        for sec in sections:
            if hasattr(sec, f.name):
                values[f.name] = getattr(sec, f.name)
                break
        else:
            raise AttributeError(f"no configuration option named {f.name!r} for {cls.__name__}")
    return cls(**values)


def pgd_options(cfg) -> PgdOptions:
    """The attack's options from a :class:`~bnb.config.Config`."""
    return _take(PgdOptions, cfg.attack)


def engine_options(cfg) -> EngineOptions:
    """The engine's options from a :class:`~bnb.config.Config`."""
    return EngineOptions(root=_take(RootOptions, cfg.bounds, cfg.bab), loop=_take(LoopOptions, cfg.bab, cfg.general),
                         attack=_take(AttackOptions, cfg.bab), input=_take(InputSplitOptions, cfg.bab),
                         relu=_take(ReluSplitOptions, cfg.bab), bounds=bound_options(cfg), seed=cfg.general.seed,
                         activation=_take(ActivationSplitOptions, cfg.bab))
