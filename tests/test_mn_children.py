"""``bab.mn_children_gain``: after an mn-crown root, children keep the constraints only when these closed enough of
alpha-CROWN's root margin; otherwise plain beta-CROWN children on the root's (tightened) intermediate bounds.
Both ways the verdicts equal the exact MILP's in proof-only mode, with every bound checked against samples."""
from __future__ import annotations

import numpy as np
import pytest

from bnb.config import Config
from bnb.engine.context import Stats
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.io.spec import Polytope
from bnb.timing import Deadline

from conftest import random_fc
from proof_only_runs import NOT_PROVEN, REL, DomainBoundCheck, exact_min, margins, no_replay, proof_only, witness_cloud

NET = ([3, 10, 10, 1], 1)


def _run(net, lo, hi, t, gain, tighten, seconds):
    cfg = Config()
    cfg.general.dtype = "float64"
    cfg.bounds.method, cfg.bounds.mn_tighten, cfg.bounds.alpha_iters = "mn-crown", tighten, 20
    cfg.bab.branching, cfg.bab.batch_size, cfg.bab.mn_children_gain = "relu", 64, gain
    stats = Stats()
    t_ = lambda a: __import__("torch").as_tensor(a, dtype=net.dtype)  # noqa: E731
    try:
        status, _ = run_bab(net, t_(lo), t_(hi), [Polytope(np.array([[1.0]]), np.array([t]))],
                            engine_options(proof_only(cfg)), Deadline(seconds), no_replay, stats)
    except Exception as e:  # noqa: BLE001 - only the deadline may end a run here
        from bnb.timing import VerificationTimeout
        assert isinstance(e, VerificationTimeout), e
        status = "timeout"
    return status, stats


@pytest.mark.parametrize("gain,kept,tighten", [(1.0, "dropped", True), (1e-9, "kept", True), (1.0, "dropped", False)])
def test_children_with_or_without_the_constraints_match_milp(gain, kept, tighten, monkeypatch):
    """A gain threshold of 100% drops the constraints for the children (the root's did not close the whole
    margin: the instance needs branching), a tiny one keeps them; verdicts against the MILP both ways."""
    widths, seed = NET
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    check = DomainBoundCheck(monkeypatch, net, witness_cloud(o, lo, hi))
    rel, tiny = margins(o.opt)
    decisions = []
    for t, seconds in ((o.opt - margins(o.opt, 2 * REL)[0], 60), (o.witness + rel, 0.5), (o.witness + tiny, 0.5)):
        status, stats = _run(net, lo, hi, t, gain, tighten, seconds)
        assert status == "unsat" if t < o.opt else status in NOT_PROVEN, (t, o, status)
        decisions.append(stats.get("mn_children", ""))
    assert decisions[0].startswith(kept), decisions  # the proof branched, and the rule decided as asked
    assert check.checked > 500
