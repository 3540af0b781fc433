"""Float32 semantics (issue 24): exact-point counterexamples in boxes that hold no float32 point, float32-typed
VNN-LIB 2.0 queries decided with a proven evaluation-error margin, and that error bound itself.

Ground truth: onnxruntime (the float32 network users run) against the float64 evaluation of the same weights,
hand-built networks whose real and float32 outputs are known in closed form, sub-boxes of ACAS Xu boxes
labelled ``unsat`` in expected.csv (a sub-box of an unsat box is unsat), and the independent witness checker
``benchmarks/check_witness.py`` (its own VNN-LIB reader, VNN-COMP's tolerances) on every ``sat`` results file.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bnb.config import Config, load_config
from bnb.errors import BnbError
from bnb.io.onnx_loader import load_onnx
from bnb.io.spec import Property
from bnb.io.vnnlib import parse_vnnlib
from bnb.pipeline.verify import verify
from bnb.results import Verdict
from relaxations.float_error import evaluation_error
from relaxations.fp import outward_box

import onnx_builders
from conftest import ROOT, acas, export_onnx, require_bench, write_vnnlib

sys.path.insert(0, str(ROOT / "benchmarks"))
from check_witness import check  # noqa: E402

vnnlib2 = pytest.importorskip("vnnlib", reason="the float32 query tests need the 'vnnlib' package (extra vnnlib2)")
from bnb.io.vnnlib2 import parse_query_text  # noqa: E402

pytestmark = pytest.mark.fast

PROOF_ONLY = ("general.proof_only=true",)  # soundness checks run with every falsification off (docs/soundness.md)


def cfg(*overrides: str) -> Config:
    c = load_config((), overrides)
    c.general.threads = 1
    return c


def linear_model(path: Path, W, b=None, extra=None) -> Path:
    """ONNX ``y = x W^T + b`` (float32, batch 1) with an optional chain of ``(op, constant)`` nodes after it."""
    W = np.asarray(W, np.float32)
    n_out, n_in = W.shape
    inits = [numpy_helper.from_array(W.T.copy(), "W")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h0"])]
    last = "h0"
    if b is not None:
        inits.append(numpy_helper.from_array(np.asarray(b, np.float32), "b"))
        nodes.append(helper.make_node("Add", [last, "b"], ["h1"]))
        last = "h1"
    for i, (op, const) in enumerate(extra or []):
        inits.append(numpy_helper.from_array(np.full(n_out, const, np.float32), f"c{i}"))
        nodes.append(helper.make_node(op, [last, f"c{i}"], [f"e{i}"]))
        last = f"e{i}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def query(n_in: int, n_out: int, box: str, out: str, etype: str = "float32") -> Property:
    text = ("(vnnlib-version <2.0>)\n(declare-network N\n"
            f"    (declare-input X {etype} [1,{n_in}])\n    (declare-output Y {etype} [1,{n_out}])\n)\n"
            f"(assert (and {box}))\n(assert {out})\n")
    q = parse_query_text(text, "q.vnnlib")
    assert q.prop.float32 == (etype == "float32")
    return q.prop


def decide(onnx_path, spec, config=None, timeout=30.0):
    return verify(str(onnx_path), spec if isinstance(spec, Property) else str(spec), config or cfg(),
                  timeout=timeout)


def results_ok(onnx_path, vnnlib_path, result) -> str:
    return check(str(onnx_path), str(vnnlib_path), result.to_vnncomp())


# ------------------------------------------------------------------------------ the error bound
def _box_of(vnnlib_path, n_in, n_out, shrink=1.0):
    """The property's first box, shrunk about its centre by ``shrink``."""
    spec = parse_vnnlib(vnnlib_path, n_in, n_out).specs[0]
    c, r = (spec.lower + spec.upper) / 2, (spec.upper - spec.lower) / 2 * shrink
    return np.maximum(spec.lower, c - r), np.minimum(spec.upper, c + r)


def _check_bound(model, lower, upper, n_points=48, seed=0, useful=True):
    """E >= |float64 network - onnxruntime| at float32 points of the box, and E is small enough to be useful."""
    lo, hi = outward_box(lower, upper, torch.float64)
    E = evaluation_error(model.chain, lo, hi).numpy()
    rng = np.random.default_rng(seed)
    x = (lower + rng.random((n_points, len(lower))) * (upper - lower)).astype(np.float32)
    x[0], x[1] = np.asarray(lower, np.float32), np.asarray(upper, np.float32)
    x = np.clip(x.astype(np.float64), lower, upper).astype(np.float32)
    y_ort = model.run_onnx(x)
    with torch.no_grad():
        y64 = model.chain.to(dtype=torch.float64)(torch.as_tensor(x.astype(np.float64))).numpy()
    err = np.abs(y64 - y_ort).max(axis=0)
    assert np.all(np.isfinite(E))
    assert np.all(err <= E), (err, E)
    assert not useful or E.max() <= 1e-2 * (1 + np.abs(y64).max()), E  # a bound that still decides real properties
    return E, err


@pytest.mark.parametrize("bench, net, prop, n_in, n_out, shrink", [
    # ACAS Xu's whole boxes are wide: there the bound is loose (docs/soundness.md), so a local box of one
    ("acasxu", "ACASXU_run2a_2_1_batch_2000.onnx", "prop_2.vnnlib", 5, 5, 0.02),
    ("mnist_fc", "mnist-net_256x2.onnx", "prop_0_0.03.vnnlib", 784, 10, 1.0),
    ("oval21", "cifar_base_kw.onnx", "cifar_base_kw-img4549-eps0.00392156862745098.vnnlib", 3072, 10, 1.0),
])
def test_error_bound_contains_onnxruntime(bench, net, prop, n_in, n_out, shrink):
    folder = require_bench(bench)
    model = load_onnx(folder / "onnx" / net)
    _check_bound(model, *_box_of(folder / "vnnlib" / prop, n_in, n_out, shrink))


def test_error_bound_on_a_wide_box_still_contains_onnxruntime():
    """ACAS Xu's whole prop_2 box: loose (intermediate bounds over the box are), never below what is observed."""
    folder = require_bench("acasxu")
    model = load_onnx(folder / "onnx" / "ACASXU_run2a_2_1_batch_2000.onnx")
    lower, upper = _box_of(folder / "vnnlib" / "prop_2.vnnlib", 5, 5)
    lo, hi = outward_box(lower, upper, torch.float64)
    E = evaluation_error(model.chain, lo, hi).numpy()
    x = np.random.default_rng(0).uniform(lower, upper, (256, 5)).astype(np.float32)
    x = np.clip(x.astype(np.float64), lower, upper).astype(np.float32)
    with torch.no_grad():
        y64 = model.chain.to(dtype=torch.float64)(torch.as_tensor(x.astype(np.float64))).numpy()
    assert np.all(np.abs(y64 - model.run_onnx(x)) <= E)


def test_error_bound_conv_batchnorm(tmp_path):
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 5 * 5, 3))
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    net.eval()
    model = load_onnx(export_onnx(net, (2, 5, 5), tmp_path / "convbn.onnx"))
    rng = np.random.default_rng(1)
    centre = rng.uniform(-1, 1, 50)
    _check_bound(model, centre - 0.05, centre + 0.05)


def test_error_bound_grows_with_cancellation(tmp_path):
    """(x + 2^24) - 2^24: float32 loses x entirely; the bound must cover the whole loss."""
    model = load_onnx(linear_model(tmp_path / "c.onnx", [[1.0]], extra=[("Add", 2.0 ** 24), ("Sub", 2.0 ** 24)]))
    lo, hi = np.array([0.25]), np.array([0.75])
    E, err = _check_bound(model, lo, hi, useful=False)
    assert err[0] >= 0.25 and E[0] >= 0.75  # ORT gives 0 at every point; the real output is x


# ------------------------------------------------------------------------------ real vs float32 answers
def test_cancellation_real_unsat_float32_sat(tmp_path):
    onnx_path = linear_model(tmp_path / "c.onnx", [[1.0]], extra=[("Add", 2.0 ** 24), ("Sub", 2.0 ** 24)])
    box, out = "(>= X[0,0] 0.25) (<= X[0,0] 0.75)", "(<= Y[0,0] 0.125)"
    real = decide(onnx_path, query(1, 1, box, out, "real"))
    assert real.verdict is Verdict.UNSAT, real.message  # y = x >= 0.25 in real arithmetic
    f32 = decide(onnx_path, query(1, 1, box, out, "float32"))
    assert f32.verdict is Verdict.SAT, f32.message  # onnxruntime computes y = 0
    ce = f32.counterexample
    assert 0.25 <= ce.x[0] <= 0.75 and ce.x[0] == np.float32(ce.x[0]) and ce.x32 is None
    assert ce.y[0] <= 0.125
    # the 1.0 file is real arithmetic
    spec = write_vnnlib(tmp_path / "c.vnnlib", [0.25], [0.75], 1, "(<= Y_0 0.125)")
    assert decide(onnx_path, spec).verdict is Verdict.UNSAT


@pytest.mark.parametrize("out, verdict", [
    ("(<= Y[0,0] 0.4)", Verdict.UNSAT), ("(>= Y[0,0] 1.2)", Verdict.SAT), ("(<= Y[0,0] 0.5)", Verdict.SAT),
    ("(>= Y[0,0] 1.5)", Verdict.SAT), ("(>= Y[0,0] 1.6)", Verdict.UNSAT), ("(<= Y[0,0] 0.4999)", Verdict.UNSAT),
])
def test_x_plus_half_float32(tmp_path, out, verdict):
    """Y = X + 0.5 on [0, 1]: the float32 outputs are exactly [0.5, 1.5], the endpoints attained."""
    onnx_path = linear_model(tmp_path / "p.onnx", [[1.0]], b=[0.5])
    r = decide(onnx_path, query(1, 1, "(>= X[0,0] 0.0) (<= X[0,0] 1.0)", out))
    assert r.verdict is verdict, r.message
    if verdict is Verdict.SAT:
        x, y = r.counterexample.x[0], r.counterexample.y[0]
        assert 0.0 <= x <= 1.0 and x == np.float32(x) and y == np.float32(np.float32(x) + np.float32(0.5))


def test_float32_query_refuses_no_float32_point(tmp_path):
    """A float32 query whose box holds no float32 point has no input: never sat (its witness could not exist)."""
    onnx_path = linear_model(tmp_path / "p.onnx", [[1.0]], b=[0.5])
    r = decide(onnx_path, query(1, 1, "(>= X[0,0] 0.1) (<= X[0,0] 0.1)", "(>= Y[0,0] 0.0)"))
    assert r.verdict is not Verdict.SAT, r.message


# ------------------------------------------------------------------------------ exact points (real semantics)
def test_exact_point_witness(tmp_path):
    """y = x0 + x1 with x0 fixed at 0.1 (no float32 equal): every float32 candidate lies outside the box."""
    onnx_path = linear_model(tmp_path / "s.onnx", [[1.0, 1.0]])
    spec = write_vnnlib(tmp_path / "s.vnnlib", [0.1, 0.0], [0.1, 1.0], 1, "(>= Y_0 0.6)")
    r = decide(onnx_path, spec)
    assert r.verdict is Verdict.SAT, r.message
    ce = r.counterexample
    assert ce.x32 is not None and ce.x[0] == 0.1 and 0.0 <= ce.x[1] <= 1.0
    assert ce.x[0] + ce.x[1] >= 0.6 and ce.real_margin is not None and ce.real_margin < 0
    assert ce.margin <= 1e-4
    assert "exact point" in ce.describe()
    # the results file: x* round-trips float64 and the independent checker accepts it
    text = r.to_vnncomp()
    xs = {int(i): float(v) for i, v in re.findall(r"\(X_(\d+) ([^\s()]+)\)", text)}
    assert xs[0] == 0.1 and xs[1] == ce.x[1]
    assert results_ok(onnx_path, spec, r) == "ok"


def test_violation_within_rounding_is_not_sat(tmp_path):
    """y = x0, x0 = 0.1: the float32 point 0.1000000015 gives y > 0.1 + 1e-12 on onnxruntime (a checker would
    accept it), but the real network's output at the file's point is 0.1, which does not violate: never sat.
    Float32 bounds cannot separate 1e-12 either (unknown); float64 bounds prove unsat."""
    onnx_path = linear_model(tmp_path / "i.onnx", [[1.0]])
    spec = write_vnnlib(tmp_path / "i.vnnlib", [0.1], [0.1], 1, "(>= Y_0 0.100000000001)")
    r = decide(onnx_path, spec)
    assert r.verdict in (Verdict.UNSAT, Verdict.UNKNOWN), r.message
    r = decide(onnx_path, spec, cfg("general.dtype=float64"))
    assert r.verdict is Verdict.UNSAT, r.message


def test_real_violation_unprovable_at_rounding_scale(tmp_path):
    """y = x0, x0 = 0.1, asked y <= 0.1 + 1e-12: true at the real point, but the nearest float32 input moves y by
    1.5e-9, more than the margin; bnb cannot prove the witness and must not answer unsat."""
    onnx_path = linear_model(tmp_path / "i.onnx", [[1.0]])
    spec = write_vnnlib(tmp_path / "i.vnnlib", [0.1], [0.1], 1, "(<= Y_0 0.100000000001)")
    r = decide(onnx_path, spec, timeout=5.0)
    assert r.verdict is not Verdict.UNSAT, r.message
    if r.verdict is Verdict.SAT:  # would need a proof at the exact point
        assert r.counterexample.real_margin is not None and r.counterexample.real_margin < 0


# ------------------------------------------------------------------------------ ACAS Xu rewritten
def _rewrite(src: Path, dst: Path, fixed: dict[int, float]) -> Path:
    """The property file with inputs ``fixed`` pinned at decimal values (``lower == upper``)."""
    text = src.read_text()
    for i, v in fixed.items():
        assert float(np.float32(v)) != v  # a decimal with no float32 equal
        text = re.sub(rf"\(assert \(<= X_{i} [^)]+\)\)", f"(assert (<= X_{i} {v!r}))", text)
        text = re.sub(rf"\(assert \(>= X_{i} [^)]+\)\)", f"(assert (>= X_{i} {v!r}))", text)
    dst.write_text(text)
    return dst


def test_acas_sat_with_decimal_fixed_inputs(tmp_path):
    """2_1 / prop_2 (sat) with three inputs pinned next to its witness at decimals: still sat, at the exact point."""
    onnx_path, src = acas("2_1", "prop_2")
    spec = _rewrite(src, tmp_path / "prop_2_fixed.vnnlib", {0: 0.679857769, 3: 0.4999, 4: -0.4999})
    r = decide(onnx_path, spec, timeout=60.0)
    assert r.verdict is Verdict.SAT, r.message
    ce = r.counterexample
    assert ce.x32 is not None and (ce.x[0], ce.x[3], ce.x[4]) == (0.679857769, 0.4999, -0.4999)
    assert results_ok(onnx_path, spec, r) == "ok"


@pytest.mark.parametrize("net", ["1_1", "3_3"])
def test_acas_unsat_with_decimal_fixed_inputs(tmp_path, net):
    """prop_1 (unsat on every network) on a sub-box with decimal fixed inputs: still unsat, proven."""
    onnx_path, src = acas(net, "prop_1")
    spec = _rewrite(src, tmp_path / "prop_1_fixed.vnnlib", {0: 0.61, 3: 0.46, 4: -0.46})
    r = decide(onnx_path, spec, cfg(*PROOF_ONLY), timeout=120.0)
    assert r.verdict is Verdict.UNSAT, r.message


# ------------------------------------------------------------------------------ every claimed operator
def _num(v) -> str:
    """A decimal literal of the 2.0 grammar (no exponent) that reads back as the same float64."""
    return np.format_float_positional(float(v), unique=True, trim="0")


def _float32_query(in_shape, out_shape, lower, upper, out: str) -> Property:
    def name(v, shape, flat):
        return f"{v}[{','.join(str(int(i)) for i in np.unravel_index(flat, shape))}]"

    num = _num

    box = " ".join(f"(>= {name('X', in_shape, i)} {num(lo)}) (<= {name('X', in_shape, i)} {num(hi)})"
                   for i, (lo, hi) in enumerate(zip(lower, upper)))
    dims = lambda s: "[" + ",".join(map(str, s)) + "]"  # noqa: E731
    text = ("(vnnlib-version <2.0>)\n(declare-network N\n"
            f"    (declare-input X float32 {dims(in_shape)})\n    (declare-output Y float32 {dims(out_shape)})\n)\n"
            f"(assert (and {box}))\n(assert {out.replace('Y0', name('Y', out_shape, 0))})\n")
    prop = parse_query_text(text, "q.vnnlib").prop
    assert prop.float32
    return prop


# activations without an a-priori float32 evaluation bound yet: float32 queries on them are refused
NO_FLOAT32_BOUND = ("Sigmoid", "Tanh", "Softplus", "LeakyRelu")


@pytest.mark.parametrize("op", sorted(onnx_builders.BUILDERS))
def test_obvious_float32_queries_on_every_operator(tmp_path, op):
    """On a tiny model of each converted operator: ``Y0 <= y0`` over a box holding x0 (sat: x0 itself violates),
    and ``Y0 >= y0 + 1`` on a box 1e-3 wide about x0 (unsat: far beyond any float32 error or slope there)."""
    for variant in range(len(onnx_builders.BUILDERS[op])):
        model, in_shape = onnx_builders.build_model(op, variant)
        if model.graph.output[0].type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        path = tmp_path / f"{op}_{variant}.onnx"
        onnx.save(model, path)
        x0 = np.random.default_rng(variant).uniform(-1, 1, int(np.prod(in_shape))).astype(np.float32)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = sess.run(None, {sess.get_inputs()[0].name: x0.reshape(in_shape)})[0]
        out_shape, y0 = out.shape, float(out.reshape(-1)[0])
        lo32, hi32 = x0 - np.float32(0.25), x0 + np.float32(0.25)
        if op in NO_FLOAT32_BOUND:  # refused in one line, never answered
            with pytest.raises(BnbError, match="float32 semantics .* ReLU networks only"):
                decide(path, _float32_query(in_shape, out_shape, lo32, hi32, f"(<= Y0 {_num(y0)})"))
            continue
        r = decide(path, _float32_query(in_shape, out_shape, lo32, hi32, f"(<= Y0 {_num(y0)})"))
        assert r.verdict is Verdict.SAT, (op, variant, r.message)
        ce = r.counterexample
        assert np.all(ce.x == ce.x.astype(np.float32)) and np.all((ce.x >= lo32) & (ce.x <= hi32))
        assert ce.y[0] <= y0
        lo32, hi32 = x0 - np.float32(5e-4), x0 + np.float32(5e-4)
        r = decide(path, _float32_query(in_shape, out_shape, lo32, hi32, f"(>= Y0 {_num(y0 + 1.0)})"))
        assert r.verdict is Verdict.UNSAT, (op, variant, r.message)
