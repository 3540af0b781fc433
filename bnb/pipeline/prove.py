"""Proving stage of the pipeline: branch and bound over every input box of the property.

The property holds (``unsat``) iff every box is decided safe; a counterexample in any box is ``sat``.
"""
from __future__ import annotations

from bnb.engine.context import Stats
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.io.witness import replay
from bnb.results import Verdict
from relaxations.fp import outward_box


def falsification_off(xs, *boxes):
    """The replay of proof-only mode (``general.proof_only``): the engine must not look for counterexamples,
    so a call is an internal error (the run ends ``error``), never a verdict."""
    raise RuntimeError("a candidate counterexample was replayed in proof-only mode (general.proof_only)")


def prove(model, net, prop, cfg, deadline, stats, log):
    """Returns ``(verdict, counterexample, message)``."""
    bab_stats = Stats()
    undecided = 0
    opts = engine_options(cfg)
    for b, spec in enumerate(prop.specs):
        # rounded outward: the working box contains every real point of the file's box
        lo, hi = outward_box(spec.lower, spec.upper, net.dtype, net.device)
        validate = (falsification_off if cfg.general.proof_only else
                    lambda xs, b=b: replay(model, prop, xs, [b] * len(xs)))  # noqa: E731
        try:
            status, ce = run_bab(net, lo, hi, spec.disjuncts, opts, deadline, validate, bab_stats, log)
        finally:
            for k, v in bab_stats.items():  # accumulate over boxes, next to the pipeline's own figures
                both_numeric = isinstance(v, (int, float)) and isinstance(stats.get(k), (int, float))
                stats[k] = stats[k] + v if both_numeric else v
            bab_stats = Stats()
        if status == "sat":
            return Verdict.SAT, ce, f"counterexample found in box {b} during branch and bound; {ce.describe()}"
        undecided += status == "unknown"
    if undecided:
        reason = ("branch and bound disabled" if not cfg.bab.enabled else
                  "domains left undecided" + ("; proof-only mode: no falsification" if cfg.general.proof_only else ""))
        return Verdict.UNKNOWN, None, f"{undecided} input box(es) not decided ({reason})"
    return Verdict.UNSAT, None, "every output polytope is unreachable"
