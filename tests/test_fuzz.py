"""The fuzzing harness (benchmarks/fuzz.py): its ground truth, and verdicts on random and awkward instances.

The targeted tests pin the cases where a verifier working in floating point is most likely to be unsound:
point boxes (lower == upper for every input) and boxes with all inputs fixed but one of width 1e-7, with the
threshold a hair above or below the exact value. A wrong verdict here is a soundness bug of the verifier.
"""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks import fuzz as F  # noqa: E402
from bnb.io.vnnlib import parse_vnnlib  # noqa: E402

torch.set_num_threads(1)
METHODS = ("ibp", "crown", "dp0", "dp1", "alpha", "beta", "mn-crown")
DTYPES = ("float32", "float64")


# ------------------------------------------------------------------------------------ the harness itself
def test_ground_truth_is_a_true_minimum():
    """The MILP's lower bound is below every sampled point and matches the value at its argmin."""
    checked = 0
    for i in range(12):
        rng = np.random.default_rng([11, i])
        net = F.random_net(rng)
        box = F.random_box(rng, net.n_in, "box" if i % 2 else "mixed")
        boxes, polys, _ = F.random_spec(rng, net, box)
        try:
            v_lo, v_hi, S = F.ground_truth(net, boxes, polys)
        except F.MILPFailed:
            continue
        checked += 1
        assert v_lo <= v_hi + 1e-9 * S and v_hi - v_lo <= F.MILP_ACCEPT * S
        for (lo, hi), ps in zip(boxes, polys):
            xs = lo + (hi - lo) * rng.random((500, lo.size))
            ys = net.forward(xs)
            g = np.min([np.max(ys @ C.T - d, axis=1) for C, d in ps], axis=0)
            assert g.min() >= v_lo - 1e-9 * S, (i, g.min(), v_lo)
    assert checked >= 8


def test_instances_round_trip_through_files(tmp_path):
    """The ONNX file computes the float64 network, and the VNN-LIB file parses to the same boxes and rows."""
    for i in range(8):
        insts, why = F.make_instances(3, i, {"spec": F.SPEC_KINDS[i % 4]})
        if why:
            continue
        for inst in insts:
            onnx_path, vnn_path = F.write_instance(inst, tmp_path, f"i{i}_{inst.label}")
            F.check_onnx(inst.net, onnx_path, inst.boxes, inst.polys)
            prop = parse_vnnlib(vnn_path, inst.net.n_in, inst.net.n_out)
            assert len(prop.specs) == len(inst.boxes)
            for spec, (lo, hi), ps in zip(prop.specs, inst.boxes, inst.polys):
                assert np.array_equal(spec.lower, lo) and np.array_equal(spec.upper, hi)
                assert len(spec.disjuncts) == len(ps)
                for poly, (C, d) in zip(spec.disjuncts, ps):
                    assert np.array_equal(poly.C, C) and np.array_equal(poly.d, d)


def test_labels_follow_from_the_shift():
    """The sat label's argmin reaches a polytope by delta; the unsat label misses every one by delta."""
    insts, why = F.make_instances(0, 1, {"box": "point", "spec": "disj"})
    assert why is None
    sat, unsat = insts
    lo, _ = sat.boxes[0]
    g = lambda inst: min(F.margin(inst.net, lo, C, d) for C, d in inst.polys[0])  # noqa: E731
    assert g(sat) < 0 < g(unsat)


# ------------------------------------------------------------------------------------ random instances
def test_fuzz_no_wrong_verdicts():
    """A few hundred (instance, configuration) pairs over every family: no wrong verdict and no error."""
    s = F.fuzz(40, seed=2024, n_configs=3, timeout=3.0, log=lambda msg: None)
    bad = [f"{r['status']}: {r['kind']} label {r['label']} -> {r['verdict']} [{r['overrides']}] "
           f"(python benchmarks/fuzz.py --seed {r['seed']} --instance {r['index']} "
           + " ".join(f"--set {o}" for o in r["overrides"].split()) + ")"
           for r in s["rows"] if r["status"] != "ok"]
    assert s["pairs"] >= 200
    assert not bad, f"{len(bad)} wrong/error pairs of {s['pairs']}:\n" + "\n".join(bad[:20])


# ------------------------------------------------------------------------------------- awkward boxes
def _awkward(tmp_path, box_kind, label, seed=7, net="dense"):
    """A random dense MLP (or DAG), a point or one-free box, one row ``c.y <= d`` just above/below the exact minimum."""
    for index in range(50):
        insts, why = F.make_instances(seed, index, {"net": net, "box": box_kind, "spec": "row",
                                                    "delta": "tight"})
        if why is None:
            inst = insts[0] if label == "sat" else insts[1]
            return F.write_instance(inst, tmp_path, f"{box_kind}_{label}")
    raise AssertionError("no instance")


def _verdicts(onnx_path, vnn_path, method, dtype):
    out = {}
    for branching in ("input", "relu"):
        verdict, _, msg = F.run_verify(onnx_path, vnn_path, ("attack.enabled=false", f"bounds.method={method}",
                                                             f"general.dtype={dtype}", f"bab.branching={branching}"),
                                       timeout=5.0)
        out[branching] = (verdict, msg)
    return out


# (a) lower == upper for every input, threshold just above f(x): violated, so never unsat;
# (b) every input fixed except one 1e-7 wide, threshold just above the minimum: violated;
# (c) the same point box with the threshold just below f(x): the property holds, so never sat.
AWKWARD = [("point", "sat", ("sat", "unknown", "timeout")), ("one_free", "sat", ("sat", "unknown", "timeout")),
           ("point", "unsat", ("unsat", "unknown", "timeout"))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("box,label,allowed", AWKWARD, ids=["point-violated", "one_free-violated", "point-holds"])
def test_awkward_boxes_never_contradict_the_label(tmp_path, method, dtype, box, label, allowed):
    onnx_path, vnn_path = _awkward(tmp_path, box, label)
    for branching, (verdict, msg) in _verdicts(onnx_path, vnn_path, method, dtype).items():
        assert verdict in allowed, f"{branching}: {verdict} ({msg})"


@pytest.mark.parametrize("net", ["residual", "concat"])
@pytest.mark.parametrize("box,label,allowed", AWKWARD, ids=["point-violated", "one_free-violated", "point-holds"])
def test_awkward_boxes_on_graph_networks(tmp_path, net, box, label, allowed):
    """The same awkward boxes on computation graphs (residual Add, Concat, Slice; tests/test_graph.py)."""
    onnx_path, vnn_path = _awkward(tmp_path, box, label, seed=11, net=net)
    for method in ("crown", "alpha", "beta"):
        for branching, (verdict, msg) in _verdicts(onnx_path, vnn_path, method, "float32").items():
            assert verdict in allowed, f"{method} {branching}: {verdict} ({msg})"
