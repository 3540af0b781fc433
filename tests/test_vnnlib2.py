"""VNN-LIB 2.0 queries (bnb.io.vnnlib2) and the standard's solver command line (bnb-vnnlib, bnb.cli.vnnlib).

Ground truth: the VNN-LIB 1.0 parser on the same property (exact arrays), onnxruntime on every printed
assignment, expected.csv for ACAS Xu, and the standard's reference test solver (``vnnlib-test-solver``),
which prints the same answers byte for byte when configured with bnb's capabilities and assignment.
"""
from __future__ import annotations

import gzip
import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from bnb.errors import SpecError
from bnb.io.spec import Property
from bnb.io.vnnlib import parse_vnnlib
from bnb.results import Result, Verdict

from conftest import ROOT, acas, expected_label, small_mlp

vnnlib = pytest.importorskip("vnnlib", reason="the VNN-LIB 2.0 tests need the 'vnnlib' package (extra vnnlib2)")
from bnb.cli import vnnlib as vnnlib_cli  # noqa: E402
from bnb.io.vnnlib2 import parse_query_text, read_query  # noqa: E402

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)

PROG = "bnb-vnnlib: error: "


def num(v: float) -> str:
    """A decimal literal the 2.0 grammar accepts (no exponent, always a point)."""
    return np.format_float_positional(float(v), unique=True, trim="0")


def write_query(path: Path, prop: Property, in_shape, out_shape, etype="real", network="N") -> Path:
    """``prop`` written in VNN-LIB 2.0 syntax: one ``(or (and box... polytope...) ...)`` assertion."""
    def elem(name, shape, flat):
        return f"{name}[{','.join(str(int(i)) for i in np.unravel_index(flat, shape))}]"

    def dims(shape):
        return "[" + ",".join(map(str, shape)) + "]"

    cases = []
    for spec in prop.specs:
        box = [f"(>= {elem('X', in_shape, i)} {num(lo)}) (<= {elem('X', in_shape, i)} {num(hi)})"
               for i, (lo, hi) in enumerate(zip(spec.lower, spec.upper))]
        for poly in spec.disjuncts:
            rows = []
            for c, d in zip(poly.C, poly.d):
                terms = [f"(* {num(cj)} {elem('Y', out_shape, j)})" for j, cj in enumerate(c) if cj != 0]
                lhs = terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
                rows.append(f"(<= {lhs} {num(d)})")
            cases.append(f"(and {' '.join(box + rows)})")
    path.write_text("(vnnlib-version <2.0>)\n"
                    f"(declare-network {network}\n"
                    f"    (declare-input X {etype} {dims(in_shape)})\n"
                    f"    (declare-output Y {etype} {dims(out_shape)})\n)\n"
                    f"(assert (or {' '.join(cases)}))\n")
    return path


def header(in_shape, out_shape, etype="real", network="N"):
    dims = lambda s: "[" + ",".join(map(str, s)) + "]"  # noqa: E731
    return ("(vnnlib-version <2.0>)\n"
            f"(declare-network {network}\n    (declare-input X {etype} {dims(in_shape)})\n"
            f"    (declare-output Y {etype} {dims(out_shape)})\n)\n")


def cli(args):
    result = CliRunner().invoke(vnnlib_cli.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def parse_answer(stdout: str):
    """The answer line and the section 5.3.1 assignment: {name: (type, shape, values)}."""
    lines = stdout.splitlines()
    answer, rest, out = lines[0], lines[1:], {}
    while rest:
        name, etype, dims = rest.pop(0).split(" ")
        shape = tuple(int(d) for d in dims.strip("[]").split(",") if d)
        n = int(np.prod(shape, dtype=np.int64))
        out[name] = (etype, shape, np.array([float(v) for v in rest[:n]]))
        rest = rest[n:]
    return answer, out


def onnx_out(onnx_path, x, in_shape):
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: np.asarray(x, np.float32).reshape(in_shape)})[0].reshape(-1)


# ------------------------------------------------------------------------------------------ conversion
def test_acas_query_reads_as_the_1_0_property(tmp_path):
    _, spec = acas("2_1", "prop_2")
    prop = parse_vnnlib(spec, 5, 5)
    q = read_query(write_query(tmp_path / "prop_2.vnnlib", prop, (1, 1, 1, 5), (1, 5), network="acas"))
    assert (q.network, q.input.shape, q.output.shape) == ("acas", (1, 1, 1, 5), (1, 5))
    assert len(q.prop.specs) == len(prop.specs) == 1
    a, b = q.prop.specs[0], prop.specs[0]
    np.testing.assert_array_equal(a.lower, b.lower)
    np.testing.assert_array_equal(a.upper, b.upper)
    assert len(a.disjuncts) == len(b.disjuncts)
    for p, r in zip(a.disjuncts, b.disjuncts):
        np.testing.assert_array_equal(p.C, r.C)
        np.testing.assert_array_equal(p.d, r.d)


def test_terms_equalities_and_gz(tmp_path):
    text = header((2,), (3,)) + (
        "(assert (and (>= X[0] -1.0) (<= X[0] 1.0) (== X[1] 0.25)))\n"
        "(assert (or (<= (- Y[0] (* 2.0 Y[2]) 1.0) (- 0.5)) (>= (* 3.0 (+ Y[1] 1.0)) Y[0])))\n")
    q = parse_query_text(text, "q.vnnlib")
    (spec,) = q.prop.specs
    np.testing.assert_array_equal(spec.lower, [-1.0, 0.25])
    np.testing.assert_array_equal(spec.upper, [1.0, 0.25])
    (p0, p1) = spec.disjuncts
    np.testing.assert_array_equal(p0.C, [[1.0, 0.0, -2.0]])  # Y0 - 2 Y2 - 1 <= -0.5
    np.testing.assert_array_equal(p0.d, [0.5])
    np.testing.assert_array_equal(p1.C, [[1.0, -3.0, 0.0]])  # Y0 - 3 Y1 - 3 <= 0
    np.testing.assert_array_equal(p1.d, [3.0])
    gz = tmp_path / "q.vnnlib.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    np.testing.assert_array_equal(read_query(gz).prop.specs[0].disjuncts[1].C, p1.C)


BAD = [  # (text after the header or a whole query, needles)
    ("(assert (<= X[0] 1.0))", ["has no lower bound", "X[0]"]),
    ("(assert (and (>= X[0] 0.0) (<= X[0] 1.0) (>= X[1] 0.0) (<= X[1] 1.0)))\n(assert (< Y[0] 1.0))",
     [":7:", "strict comparison"]),
    ("(assert (and (>= X[0] 0.0) (<= X[0] 1.0)))\n(assert (<= (+ X[1] Y[0]) 1.0))", [":7:", "theory SNC"]),
    ("(assert (<= (+ X[0] X[1]) 1.0))", [":6:", "several input elements"]),
    ("(assert (<= (* Y[0] Y[1]) 1.0))", [":6:", "not linear", "POLY"]),
    ("(assert (<= Y[0] 1.0)", [":6:", "syntax error"]),
    ("(assert (<= Y[0] 3))", [":6:", "Type mismatch"]),
    ("(assert (<= Y[7] 1.0))", [":6:", "out of bounds"]),
]


@pytest.mark.parametrize("body,needles", BAD)
def test_bad_queries_give_one_line(body, needles):
    with pytest.raises(SpecError) as e:
        parse_query_text(header((2,), (2,)) + body, "q.vnnlib")
    line = str(e.value)
    assert "\n" not in line and line.startswith("q.vnnlib")
    for n in needles:
        assert n in line, line


@pytest.mark.parametrize("text,needles", [
    (header((2,), (2,), etype="float16") + "(assert (<= Y[0] 1.0))", [":3:", "float16", "real", "float32"]),
    (header((2,), (2,)).replace("Y real", "Y float32") + "(assert (<= Y[0] 1.0))", ["input X as real", "float32"]),
    (header((2,), (2,), etype="Real") + "(assert (<= Y[0] 1.0))", ["does not define"]),
    (header((2,), (2,)).replace("    (declare-output", "    (declare-hidden H real [2] \"relu\")\n    (declare-output")
     + "(assert (<= Y[0] 1.0))", ["hidden node H", "NH"]),
    (header((2,), (2,)) + header((2,), (2,), network="M").split("\n", 1)[1].replace("X ", "X2 ").replace("Y ", "Y2 ")
     + "(assert (<= Y[0] Y2[0]))", ["2 networks", "SNET"]),
    (header((2,), (2,)).replace("    (declare-output", "    (declare-input X2 real [1])\n    (declare-output")
     + "(assert (<= Y[0] 1.0))", ["SIO"]),
    ("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= Y_0 1.0))\n", ["VNN-LIB 1.0", "bnb verify"]),
])
def test_unsupported_queries_give_one_line(text, needles):
    with pytest.raises(SpecError) as e:
        parse_query_text(text, "q.vnnlib")
    for n in needles:
        assert n in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------ verify
@pytest.fixture
def tiny(tiny_unsat):
    """``y = relu(x0 + x1) + 1`` on [-1, 1]^2 (values in [1, 3]); the ONNX input has shape [1, 2]."""
    onnx_path, _ = tiny_unsat
    return onnx_path


def box2(out: str) -> str:
    return f"(assert (and (>= X[0,0] -1.0) (<= X[0,0] 1.0) (>= X[0,1] -1.0) (<= X[0,1] 1.0)))\n(assert {out})\n"


def test_verify_unsat_and_sat_on_a_small_network(tmp_path, tiny):
    q = tmp_path / "q.vnnlib"
    q.write_text(header((1, 2), (1, 1)) + box2("(<= Y[0,0] 0.5)"))
    assert cli(["verify", q, "--network", f"N={tiny}"])[:2] == (0, "unsat\n")
    q.write_text(header((1, 2), (1, 1)) + box2("(>= Y[0,0] 2.5)"))
    code, out, err = cli(["verify", q, "--network", f"N={tiny}", "--timeout", "30"])
    assert code == 0, err
    answer, assignment = parse_answer(out)
    assert answer == "sat" and list(assignment) == ["X", "Y"]
    (xt, xs, x), (yt, ys, y) = assignment["X"], assignment["Y"]
    assert (xt, xs, yt, ys) == ("real", (1, 2), "real", (1, 1))
    assert np.all(np.abs(x) <= 1.0) and np.all(x == x.astype(np.float32))
    np.testing.assert_array_equal(y, onnx_out(tiny, x, (1, 2)))
    assert y[0] >= 2.5


def test_verify_two_boxes_of_a_disjunction(tmp_path, tiny_net):
    net = tiny_net(small_mlp(2, 8, 2, seed=3), (2,), name="mlp", dynamic_batch=True)
    sess = ort.InferenceSession(str(net), providers=["CPUExecutionProvider"])
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 41), np.linspace(-1, 1, 41)), -1).reshape(-1, 2)
    ys = sess.run(None, {"input": grid.astype(np.float32)})[0]
    best_right = float((ys[grid[:, 0] >= 0.5, 0] - ys[grid[:, 0] >= 0.5, 1]).max())
    # box A = x0 in [-1, -0.5] asks for something impossible (Y0 - Y1 >= a bound far above any value);
    # box B = x0 in [0.5, 1] asks for Y0 - Y1 >= a value that a grid point reaches
    far = float(np.abs(ys).max()) * 10 + 10
    q = tmp_path / "q.vnnlib"
    q.write_text(header((1, 2), (1, 2)) + (
        f"(assert (or (and (>= X[0,0] -1.0) (<= X[0,0] -0.5) (>= X[0,1] -1.0) (<= X[0,1] 1.0) "
        f"(>= (- Y[0,0] Y[0,1]) {num(far)}))"
        f" (and (>= X[0,0] 0.5) (<= X[0,0] 1.0) (>= X[0,1] -1.0) (<= X[0,1] 1.0) "
        f"(>= (- Y[0,0] Y[0,1]) {num(best_right - 1e-3)}))))\n"))
    code, out, err = cli(["verify", q, "--network", f"N={net}", "--timeout", "60"])
    assert code == 0, err
    answer, a = parse_answer(out)
    x, y = a["X"][2], a["Y"][2]
    assert answer == "sat" and 0.5 <= x[0] <= 1.0
    np.testing.assert_array_equal(y, onnx_out(net, x, (1, 2)))
    assert y[0] - y[1] >= best_right - 1e-3


def read_serialised(folder: Path) -> dict:
    """The serialised assignment of section 5.3.1 in ``folder``: {file name: array}, with each tensor's name."""
    from onnx import load_tensor, numpy_helper
    out = {}
    for f in sorted(folder.iterdir()):
        t = load_tensor(str(f))
        assert f.name == f"{t.name}.pb"
        out[f.name] = numpy_helper.to_array(t)
    return out


@pytest.mark.parametrize("etype,dtype", [("real", np.float64), ("float32", np.float32)])
def test_serialise_assignments_writes_one_tensor_per_variable(tmp_path, tiny, etype, dtype):
    q = tmp_path / "q.vnnlib"
    q.write_text(header((1, 2), (1, 1), etype=etype) + box2("(>= Y[0,0] 2.5)"))
    args = ["verify", q, "--network", f"N={tiny}", "--timeout", "30"]
    code, printed, err = cli(args)
    assert code == 0, err
    folder = tmp_path / "out" / "assignment"  # created, parents too
    code, out, err = cli(args + ["--serialise-assignments", folder])
    assert (code, out) == (0, "sat\n"), err  # the assignment goes to the folder instead of stdout
    tensors = read_serialised(folder)
    assert sorted(tensors) == ["X.pb", "Y.pb"]
    x, y = tensors["X.pb"], tensors["Y.pb"]
    assert (x.dtype, x.shape, y.dtype, y.shape) == (dtype, (1, 2), dtype, (1, 1))
    _, a = parse_answer(printed)  # the same search prints the same assignment
    np.testing.assert_array_equal(x.reshape(-1), a["X"][2])
    np.testing.assert_array_equal(y.reshape(-1), a["Y"][2])
    assert np.all(np.abs(x) <= 1.0) and y[0, 0] >= 2.5
    np.testing.assert_array_equal(y.reshape(-1), onnx_out(tiny, x, (1, 2)))
    assert not [f for f in folder.iterdir() if f.name.startswith(".")]  # no temporary file left


def test_serialise_assignments_writes_nothing_without_sat(tmp_path, tiny, monkeypatch):
    q = tmp_path / "q.vnnlib"
    q.write_text(header((1, 2), (1, 1)) + box2("(<= Y[0,0] 0.5)"))
    folder = tmp_path / "out"
    assert cli(["verify", q, "--network", f"N={tiny}", "--serialise-assignments", folder])[:2] == (0, "unsat\n")
    import bnb.pipeline.verify
    monkeypatch.setattr(bnb.pipeline.verify, "verify", lambda *a, **k: Result(Verdict.TIMEOUT, 1.0))
    assert cli(["verify", q, "--network", f"N={tiny}", "--serialise-assignments", folder])[:2] == (0, "timed-out\n")
    assert not folder.exists()
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    code, out, err = cli(["verify", q, "--network", f"N={tiny}", "--serialise-assignments", not_a_folder])
    assert (code, out) == (2, "") and err.splitlines() == [f"{PROG}--serialise-assignments {not_a_folder}: exists "
                                                            "and is not a folder"]


def test_serialised_tensors_hold_the_values_exactly(tmp_path):
    """``real`` values go out as float64 bit for bit; a float32 variable refuses a value float32 cannot hold."""
    from bnb.io.vnnlib2 import serialised_assignment
    q = parse_query_text(header((1, 2), (1, 1)) + box2("(>= Y[0,0] 2.5)"))
    x, y = np.array([0.1, -1 / 3]), np.array([2.5])
    for name, data in serialised_assignment(q, x, y):
        (tmp_path / name).write_bytes(data)
    got = read_serialised(tmp_path)
    assert got["X.pb"].dtype == np.float64 and got["X.pb"].tolist() == [[0.1, -1 / 3]]
    q32 = parse_query_text(header((1, 2), (1, 1), etype="float32") + box2("(>= Y[0,0] 2.5)"))
    assert serialised_assignment(q32, np.float32([0.1, 0.5]), y)[0][0] == "X.pb"
    with pytest.raises(ValueError, match="float32"):
        serialised_assignment(q32, x, y)


@pytest.mark.parametrize("net,prop", [("2_1", "prop_2"), ("4_1", "prop_4")])
def test_acas_instance_in_2_0_syntax_as_a_process(tmp_path, net, prop):
    onnx_path, spec = acas(net, prop)
    q = write_query(tmp_path / f"{prop}.vnnlib", parse_vnnlib(spec, 5, 5), (1, 1, 1, 5), (1, 5), network="acas")
    proc = subprocess.run([sys.executable, "-m", "bnb.cli.vnnlib", "verify", str(q), "--network", f"acas={onnx_path}",
                           "--timeout", "60", "--config", str(ROOT / "configs" / "acasxu.yaml")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr
    answer, a = parse_answer(proc.stdout)
    assert answer == expected_label("acasxu", onnx_path.name, spec.name)
    if answer == "sat":
        x, y = a["X"][2], a["Y"][2]
        assert a["X"][:2] == ("real", (1, 1, 1, 5)) and a["Y"][:2] == ("real", (1, 5))
        np.testing.assert_array_equal(y, onnx_out(onnx_path, x, (1, 1, 1, 5)))
        poly = parse_vnnlib(spec, 5, 5).specs[0]
        assert np.all(x >= poly.lower) and np.all(x <= poly.upper)
        assert poly.disjuncts[0].margin(y[None])[0] <= 0


def _env():
    import os
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def test_timeout_and_error_answers(tmp_path, tiny, monkeypatch):
    import bnb.pipeline.verify
    q = tmp_path / "q.vnnlib"
    q.write_text(header((1, 2), (1, 1)) + box2("(<= Y[0,0] 0.5)"))
    monkeypatch.setattr(bnb.pipeline.verify, "verify", lambda *a, **k: Result(Verdict.TIMEOUT, 1.0))
    assert cli(["verify", q, "--network", f"N={tiny}", "--timeout", "1"])[:2] == (0, "timed-out\n")
    monkeypatch.setattr(bnb.pipeline.verify, "verify", lambda *a, **k: Result(Verdict.ERROR, 0.0,
                                                                              message="internal error: X"))
    code, out, err = cli(["verify", q, "--network", f"N={tiny}"])
    assert (code, out) == (1, "") and "internal error" in err


@pytest.mark.parametrize("case,needles", [
    ("no-network", ["no model file for network 'N'", "--network N=FILE"]),
    ("wrong-name", ["'M'", "does not declare"]),
    ("twice", ["more than once"]),
    ("not-a-pair", ["NAME=FILE"]),
    ("shape", ["shape [2]", "[1,2]"]),
    ("outputs", ["3 element(s)", "1 outputs"]),
    ("missing-query", ["no such file"]),
    ("missing-model", ["no such file"]),
    ("bad-query", ["float16"]),
])
def test_cli_bad_input(tmp_path, tiny, case, needles):
    q = tmp_path / "q.vnnlib"
    q.write_text(header((1, 2), (1, 1)) + box2("(<= Y[0,0] 0.5)"))
    args = ["verify", q, "--network", f"N={tiny}"]
    if case == "no-network":
        args = ["verify", q]
    elif case == "wrong-name":
        args = ["verify", q, "--network", f"M={tiny}"]
    elif case == "twice":
        args += ["--network", f"N={tiny}"]
    elif case == "not-a-pair":
        args = ["verify", q, "--network", str(tiny)]
    elif case == "shape":
        q.write_text(header((2,), (1,)) + "(assert (and (>= X[0] 0.0) (<= X[0] 1.0) (>= X[1] 0.0) (<= X[1] 1.0)))\n"
                     "(assert (<= Y[0] 0.5))\n")
    elif case == "outputs":
        q.write_text(header((1, 2), (3,)) + box2("(<= Y[0] 0.5)"))
    elif case == "missing-query":
        args[1] = tmp_path / "absent.vnnlib"
    elif case == "missing-model":
        args[3] = f"N={tmp_path / 'absent.onnx'}"
    elif case == "bad-query":
        q.write_text(header((1, 2), (1, 1), etype="float16") + box2("(<= Y[0,0] 0.5)"))
    code, out, err = cli(args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith(PROG), (code, out, err)
    for n in needles:
        assert n in lines[0], lines[0]


# ------------------------------------------------------------------------------------------ supports
def test_supports_answers():
    assert cli(["supports", "--onnx-element-types"])[:2] == (0, "real\nfloat32\n")
    assert cli(["supports", "--vnnlib-versions"])[:2] == (0, "2.0\n2.0\n")
    assert cli(["supports", "--multiple-network-theories"])[:2] == (0, "SNET\n")
    assert cli(["supports", "--arithmetic-complexity-theories"])[:2] == (0, "BND\nOUTC\n")
    assert cli(["supports", "--serialise-assignments"])[:2] == (0, "true\n")
    assert cli(["capabilities", "--multiple-inputs-output-theories"])[:2] == (0, "SIO\n")
    from bnb.io.onnx_ops import OPERATORS
    assert cli(["supports", "--onnx-operators"])[1].split() == list(OPERATORS)
    from bnb import __version__
    assert cli(["--version"])[:2] == (0, f"{__version__}\n")
    assert cli(["--name"])[1].startswith("bnb")
    assert cli(["supports"])[0] == 2
    assert cli(["supports", "--vnnlib-versions", "--unsat-proofs"])[0] == 2
    assert cli(["supports", "--no-such-capability"])[0] == 2


def test_supports_and_version_import_no_torch():
    code = ("import sys\nfrom bnb.cli.vnnlib import main\n"
            "for a in (['supports', '--hidden-node-theories'], ['--version']):\n"
            "    try:\n        main(a)\n    except SystemExit:\n        pass\n"
            "print('torch' in sys.modules, 'vnnlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=_env(),
                         timeout=120, check=True).stdout.split()
    assert out[-2:] == ["False", "False"]


@pytest.mark.parametrize("opset", [int(v) for v in vnnlib_cli.ONNX_OPSETS])
def test_opset_range_loads(tmp_path, opset):
    """The ends of the opset range answered by `supports --onnx-opset-versions` load and match onnxruntime."""
    from onnx import numpy_helper

    from bnb.io.onnx_loader import load_onnx
    rng = np.random.default_rng(opset)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W1", (4, 3)), ("b1", (4,)), ("W2", (2, 4)), ("b2", (2,)))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset >= 13 else 4
    path = tmp_path / f"opset{opset}.onnx"
    path.write_bytes(model.SerializeToString())
    net = load_onnx(path).network  # checked against onnxruntime on load
    x = rng.uniform(-1, 1, (8, 3))
    ref = onnx_out_batch(path, x)
    np.testing.assert_allclose(net(torch.tensor(x)).detach().numpy(), ref, rtol=1e-4, atol=1e-4)


def onnx_out_batch(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": xi[None].astype(np.float32)})[0] for xi in x])


def test_console_script_and_extra_are_declared():
    import tomllib
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, func = meta["scripts"]["bnb-vnnlib"].split(":")
    assert getattr(importlib.import_module(module), func) is vnnlib_cli.main
    assert any(d.startswith("vnnlib") for d in meta["optional-dependencies"]["vnnlib2"])


# ------------------------------------------------------------------------------------------ reference solver
def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(e) for e in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reference_config(path: Path, assignments=None) -> Path:
    """A test-solver configuration that answers exactly what bnb-vnnlib answers."""
    from bnb import __version__
    from bnb.io.onnx_ops import OPERATORS
    caps = {k[2:]: v() for k, v in vnnlib_cli._LISTS.items() if k != "--onnx-operators"}
    caps.update({k[2:]: v for k, v in vnnlib_cli._BOOLEANS.items() if k != "--unsat-proofs"})
    lines = ["[solver]", f"name = {_toml(vnnlib_cli.NAME)}", f"version = {_toml(__version__)}", "", "[capabilities]"]
    lines += [f"{k} = {_toml(list(v) if isinstance(v, tuple) else v)}" for k, v in caps.items()]
    for op in OPERATORS:
        lines += ["", "[[capabilities.onnx-operators]]", f"name = {_toml(op)}"]
    lines += ["", "[[rules]]", 'match = "*.vnnlib"', f"result = {_toml('sat' if assignments else 'unsat')}"]
    if assignments:
        lines += ["", "[rules.assignments]"] + [f"{k} = {_toml([float(e) for e in v])}" for k, v in assignments.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _reference(args, config: Path):
    pytest.importorskip("vnnlib_test_solver", reason="the reference test solver (vnnlib-test-solver) is not installed")
    code = "import sys\nfrom vnnlib_test_solver.cli import main\nsys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "--config", str(config), *map(str, args)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_supports_output_matches_the_reference_solver(tmp_path):
    pytest.importorskip("vnnlib_test_solver")
    from vnnlib_test_solver.supports import CAPABILITIES
    config = _reference_config(tmp_path / "bnb.toml")  # the reference solver validates every value in it
    for flag in ("--name", "--version"):
        assert cli([flag])[1] == _reference([flag], config)
    for flag in CAPABILITIES:
        code, out, err = cli(["supports", flag])
        assert code == 0, err
        assert out == _reference(["supports", flag], config), flag


def test_sat_output_matches_the_reference_solver(tmp_path, tiny):
    q = tmp_path / "q.vnnlib"
    q.write_text(header((1, 2), (1, 1)) + box2("(>= Y[0,0] 2.5)"))
    code, out, err = cli(["verify", q, "--network", f"N={tiny}"])
    _, a = parse_answer(out)
    config = _reference_config(tmp_path / "sat.toml", {name: v[2] for name, v in a.items()})
    assert out == _reference(["verify", q, "--network", f"N={tiny}"], config)


def test_bad_query_as_a_process_gives_one_line(tmp_path, tiny):
    """The parser is native code: nothing of its own may reach the process's stderr or stdout."""
    q = tmp_path / "q.vnnlib"
    q.write_text(header((1, 2), (1, 1)) + "(assert (<= Y[0,0] 3))\n")
    proc = subprocess.run([sys.executable, "-m", "bnb.cli.vnnlib", "verify", str(q), "--network", f"N={tiny}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, env=_env())
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines() == [f"{PROG}{q}:6: Type mismatch in arithmetic expression (Expected type 'Real' "
                                        "(from 'Y'), but found a PositiveIntConstant constant '3'.)"]


def test_small_coefficients_are_kept():
    """The package's own linearisation drops coefficients below 1e-9; bnb walks the terms itself, so the row is
    the one the file states (here (5e-10 - 2) Y0 + Y1 + 3 <= 2.5)."""
    text = header((2,), (2,)) + (
        "(assert (and (>= X[0] 0.0) (<= X[0] 1.0) (>= X[1] 0.0) (<= X[1] 1.0)))\n"
        "(assert (<= (+ (* 0.0000000005 Y[0]) (* 1.0 Y[1]) 3.0) (- 2.5 (* 2.0 (- Y[0])))))\n")
    (spec,) = parse_query_text(text, "q.vnnlib").prop.specs
    (p,) = spec.disjuncts
    assert p.C.tolist() == [[5e-10 - 2.0, 1.0]] and p.d.tolist() == [-0.5]
    text = header((2,), (2,)) + (
        "(assert (and (>= X[0] 0.0) (<= X[0] 1.0) (>= X[1] 0.0) (<= X[1] 1.0)))\n"
        "(assert (<= (* 0.000000000001 (+ Y[0] 1.0)) 0.0))\n")
    (p,) = parse_query_text(text, "q.vnnlib").prop.specs[0].disjuncts
    assert p.C.tolist() == [[1e-12, 0.0]] and p.d.tolist() == [-1e-12]
