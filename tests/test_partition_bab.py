"""``bab.branching: partition`` (ReLU phases split layer by layer, :mod:`bnb.engine.strategies.partition`): the split
order of its heuristic, and ``bnb verify`` against the exact MILP on small random networks (proof-only mode with
thresholds just around the optimum; the sat witness replayed on onnxruntime)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_verify import check_witness, run_cli

from bnb.config import load_config
from bnb.io.onnx_loader import load_onnx
from bnb.pipeline.verify import verify
from heuristics import resolve
from heuristics.base import ReluBatch

from conftest import torch_mlp, write_vnnlib
from proof_only_runs import NOT_PROVEN, exact_min, margins

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)


def test_phase_heuristic_splits_the_first_layer_with_unstable_neurons_most_balanced_first():
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    # domain 0: layer 0 has unstable neurons 0 (balance 0.5) and 2 (balance 1); layer 1's neuron (balance 5)
    # must wait. domain 1: layer 0 is stable or split, so layer 1 (neuron 1, the only free one) is next.
    l0, u0 = torch.stack([t(-0.5, 0.1, -1.0), t(-1.0, 0.5, -2.0)]), torch.stack([t(2.0, 3.0, 1.0), t(1.0, 4.0, 2.0)])
    l1, u1 = torch.stack([t(-5.0, -1.0), t(-5.0, -1.0)]), torch.stack([t(5.0, 1.0), t(5.0, 1.0)])
    splits = [torch.tensor([[0, 0, 0], [1, 0, -1]], dtype=torch.int8), torch.tensor([[0, 0], [-1, 0]],
                                                                                    dtype=torch.int8)]
    batch = ReluBatch([(l0, u0), (l1, u1)], [torch.zeros(2, 3), torch.zeros(2, 2)], splits)
    assert resolve("relu", "phase")(batch).tolist() == [2, 3 + 1]


@pytest.mark.parametrize("widths,seed", [([2, 12, 12, 1], 1), ([3, 8, 8, 8, 1], 3)])
def test_verify_partition_matches_milp(tmp_path, tiny_net, widths, seed):
    """Against the exact MILP minimum ``opt`` and the witness value ``w`` (tests/proof_only_runs.py), in
    proof-only mode: never unsat at ``w + max(1e-3 |opt|, 1e-3)`` or ``w + 1e-6``, and unsat at ``opt - 0.02``
    only: a piece with every phase fixed keeps the whole input box and is bounded with its phases as split
    constraints, not exactly, so the search ends unknown closer to the optimum (measured: at 2e-3 and 5e-3 on
    both networks, at 1e-2 on the deeper one, with crown, alpha or beta). With falsification on, sat 0.02
    above, the witness replayed on onnxruntime."""
    path = tiny_net(torch_mlp(widths, seed), (widths[0],), name=f"net{seed}")
    n = widths[0]
    lo, hi = -np.ones(n), np.ones(n)
    o = exact_min(load_onnx(str(path)).network, lo, hi)
    rel, tiny = margins(o.opt)
    sets = ["bab.branching=partition", "bounds.method=crown", "general.threads=1"]
    unsat = write_vnnlib(tmp_path / "unsat.vnnlib", lo, hi, 1, f"(<= Y_0 {o.opt - 0.02!r})")
    cfg = load_config([], sets + ["general.proof_only=true"])
    cfg.general.timeout = 60
    r = verify(str(path), str(unsat), cfg)
    assert r.verdict.value == "unsat", r
    assert r.stats["branching"] == "partition" and r.stats.get("branches", 0) > 0, r.stats
    cfg.general.timeout = 0.5  # a violated property never ends in proof-only mode but by running out of pieces
    for m in (rel, tiny):
        violated = write_vnnlib(tmp_path / "violated.vnnlib", lo, hi, 1, f"(<= Y_0 {o.witness + m!r})")
        r = verify(str(path), str(violated), cfg)
        assert r.verdict.value in NOT_PROVEN, (m, o, r)
    sat = write_vnnlib(tmp_path / "sat.vnnlib", lo, hi, 1, f"(<= Y_0 {o.witness + 0.02!r})")
    args = ["verify", path, sat, "--timeout", 60, "--results-file", tmp_path / "out.txt"]
    for s in sets:
        args += ["--set", s]
    code, out, err = run_cli(args)
    assert code == 10, (out, err)
    check_witness(path, sat, (tmp_path / "out.txt").read_text())
