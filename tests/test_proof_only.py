"""Proof-only mode (``general.proof_only``, ``--proof-only``): no falsification anywhere, so a violated property
can only end ``unknown`` / ``timeout`` and ``unsat`` on one is a soundness bug (docs/soundness.md)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from bnb.config import Config, load_config
from bnb.engine.context import Stats
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.io.spec import Polytope
from bnb.pipeline.verify import verify
from bnb.results import Counterexample
from bnb.timing import Deadline, VerificationTimeout
from relaxations.milp import milp_bounds

from conftest import acas, random_fc

pytestmark = pytest.mark.fast


def _cfg(branching, proof_only):
    cfg = Config()
    cfg.general.dtype = "float64"
    cfg.general.proof_only = proof_only
    cfg.bab.branching = branching
    cfg.bab.batch_size = 64
    cfg.bounds.alpha_iters = 10
    cfg.attack.enabled = False
    return cfg


class Replays:
    """A stand-in for the ONNX replay that counts its calls and accepts every truly violating point."""

    def __init__(self, net, poly):
        self.net, self.poly, self.calls = net, poly, 0

    def __call__(self, xs):
        self.calls += 1
        y = self.net(torch.tensor(xs, dtype=torch.float64)).numpy()
        m = self.poly.margin(y)
        i = int(np.argmin(m))
        return Counterexample(xs[i], y[i], 0, 0, float(m[i])) if m[i] <= 0 else None


def _run(net, lo, hi, poly, cfg, seconds=3.0):
    replay = Replays(net, poly)
    try:
        status, _ = run_bab(net, torch.tensor(lo), torch.tensor(hi), [poly], engine_options(cfg), Deadline(seconds),
                            replay, Stats())
    except VerificationTimeout:
        status = "timeout"
    return status, replay.calls


@pytest.mark.parametrize("branching", ["input", "relu"])
def test_engine_never_replays_in_proof_only_mode(branching):
    """On a violated property the same run falsifies when allowed to (attack before bounding off, which is not
    enough) and, in proof-only mode, never looks at a candidate and cannot answer sat."""
    net = random_fc([3, 10, 10, 1], 1)
    lo, hi = -np.ones(3), np.ones(3)
    exact, _ = milp_bounds(net, lo, hi)
    poly = Polytope(np.array([[1.0]]), np.array([exact[0] + 0.02]))  # violated: some x gives y <= t
    status, calls = _run(net, lo, hi, poly, _cfg(branching, proof_only=False))
    assert status == "sat" and calls > 0  # falsification inside branch and bound with attack.enabled false
    status, calls = _run(net, lo, hi, poly, _cfg(branching, proof_only=True), seconds=2.0)
    assert status in ("unknown", "timeout") and calls == 0


@pytest.mark.parametrize("branching", ["input", "relu"])
def test_proof_only_still_proves(branching):
    net = random_fc([3, 10, 10, 1], 1)
    lo, hi = -np.ones(3), np.ones(3)
    exact, _ = milp_bounds(net, lo, hi)
    poly = Polytope(np.array([[1.0]]), np.array([exact[0] - 0.02]))
    assert _run(net, lo, hi, poly, _cfg(branching, proof_only=True), seconds=60.0) == ("unsat", 0)


def test_unconstrained_polytope_is_unknown_in_proof_only_mode():
    net = random_fc([2, 4, 1], 0)
    poly = Polytope(np.zeros((0, 1)), np.zeros(0))  # no constraint: every input violates
    assert _run(net, -np.ones(2), np.ones(2), poly, _cfg("input", proof_only=True)) == ("unknown", 0)
    assert _run(net, -np.ones(2), np.ones(2), poly, _cfg("input", proof_only=False))[0] == "sat"


def test_acas_sat_instance_is_not_sat_in_proof_only_mode():
    """ACAS Xu 1_2 / prop_2 is violated (expected.csv: sat): without falsification it cannot be answered."""
    onnx, spec = acas("1_2", "prop_2")
    cfg = load_config([], ["general.proof_only=true", "general.device=cpu"])
    r = verify(str(onnx), str(spec), cfg, timeout=3.0)
    assert r.verdict.value in ("unknown", "timeout"), r.message
    assert "time_attack" not in r.stats and r.counterexample is None
    r = verify(str(onnx), str(spec), load_config([], ["general.device=cpu"]), timeout=30.0)
    assert r.verdict.value == "sat"  # the label, reached once falsification is on


@pytest.mark.slow  # ~10 s: a whole ACAS Xu proof in a process
def test_cli_flag_sets_the_option(tmp_path):
    onnx, spec = acas("1_1", "prop_1")  # unsat
    out = subprocess.run([sys.executable, "-m", "bnb.cli", "verify", str(onnx), str(spec), "--proof-only",
                          "--timeout", "60", "-v"], capture_output=True, text=True)
    assert out.returncode == 0 and ": unsat" in out.stdout, out.stdout + out.stderr
    assert "time_attack" not in out.stderr
    helps = subprocess.run([sys.executable, "-m", "bnb.cli", "run", "--help"], capture_output=True, text=True)
    assert "--proof-only" in helps.stdout
