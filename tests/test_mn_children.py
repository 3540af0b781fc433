"""``bab.mn_children_gain``: after an mn-crown root, children keep the constraints only when these closed enough of
alpha-CROWN's root margin; otherwise plain beta-CROWN children on the root's (tightened) intermediate bounds.
Both ways the verdicts equal the exact MILP's in proof-only mode, with every bound checked against samples."""
from __future__ import annotations

import numpy as np
import pytest

from bnb.engine.context import Stats
from bnb.io.spec import Polytope

from conftest import random_fc
from proof_only_runs import NOT_PROVEN, DomainBoundCheck, decide, exact_min, relu_bab_config, thresholds, witness_cloud

NET = ([3, 10, 10, 1], 1)


@pytest.mark.parametrize("gain,kept,tighten", [(1.0, "dropped", True), (1e-9, "kept", True), (1.0, "dropped", False)])
def test_children_with_or_without_the_constraints_match_milp(gain, kept, tighten, monkeypatch):
    """A gain threshold of 100% drops the constraints for the children (the root's did not close the whole
    margin: the instance needs branching), a tiny one keeps them; verdicts against the MILP both ways."""
    widths, seed = NET
    net = random_fc(widths, seed)
    lo, hi = -np.ones(widths[0]), np.ones(widths[0])
    o = exact_min(net, lo, hi)
    check = DomainBoundCheck(monkeypatch, net, witness_cloud(o, lo, hi))
    decisions = []
    for t, seconds in thresholds(o, 0.5):
        cfg = relu_bab_config(bounds__method="mn-crown", bounds__mn_tighten=tighten, bounds__alpha_iters=20,
                              bab__mn_children_gain=gain)
        stats = Stats()
        status = decide(net, lo, hi, [Polytope(np.array([[1.0]]), np.array([t]))], cfg, seconds, stats)
        assert status == "unsat" if t < o.opt else status in NOT_PROVEN, (t, o, status)
        decisions.append(stats.get("mn_children", ""))
    assert decisions[0].startswith(kept), decisions  # the proof branched, and the rule decided as asked
    assert check.checked > 500
