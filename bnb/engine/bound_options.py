"""The one map from the configuration's ``bounds`` section to :class:`relaxations.options.BoundOptions`.

``relaxations/`` never reads a configuration: whatever of it the bounding methods need is fixed for a run and
passed down as one frozen :class:`~relaxations.options.BoundOptions`, built here.
"""
from __future__ import annotations

from relaxations.options import BoundOptions, MultiNeuronOptions


def bound_options(cfg) -> BoundOptions:
    """The bounding options of ``cfg`` (a :class:`bnb.config.Config`), from its ``bounds`` section."""
    b = cfg.bounds
    mn = MultiNeuronOptions(k=b.mn_k, max_groups=b.mn_max_groups, time_budget=b.mn_time, octa_iters=b.mn_iters,
                            cuts=b.mn_cuts, rounds=b.mn_rounds, tighten=b.mn_tighten,
                            tighten_time=b.mn_tighten_time, hull_cuts=b.mn_hull_cuts,
                            hull_rounds=b.mn_hull_rounds)
    return BoundOptions(intermediate=b.intermediate, lower_slope=b.lower_slope, alpha_lr=b.alpha_lr,
                        beta_lr=b.beta_lr, gamma_lr=b.gamma_lr, rigorous=b.fp_sound, mn=mn, lp_solver=b.lp_solver,
                        lp_refine_time=b.lp_refine_time, mix_iters=b.mix_iters)
