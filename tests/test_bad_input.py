"""Bad input on the command line: one readable line on stderr naming the file, exit code 2, no traceback,
no results file."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from bnb.cli.main import main
from bnb.io.onnx_ops import REFUSED
from bnb.results import EXIT_BAD_INPUT

from conftest import ROOT, write_vnnlib

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)


@pytest.fixture
def tiny(tiny_unsat):
    """A valid tiny network (2 inputs, 1 output) and a valid property for it."""
    return tiny_unsat


def check_error(code: int, stdout: str, stderr: str, *needles: str):
    assert code == EXIT_BAD_INPUT, f"exit code {code}, stderr: {stderr!r}"
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    (line,) = lines
    assert line.startswith("bnb: error: "), line
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


def run_cli(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def verify_fails(tmp_path, net, spec, *needles, extra=()):
    out = tmp_path / "out.results"
    code, stdout, stderr = run_cli(["verify", net, spec, "--results-file", out, *extra])
    line = check_error(code, stdout, stderr, *needles)
    assert not out.exists(), "a results file was written for bad input"
    return line


def make_onnx(path, nodes, inits, n_in, n_out, ir_version=8, out_type=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("y", out_type, [1, n_out])],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), name=k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir_version
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------ through a real process
def run_process(args):
    proc = subprocess.run([sys.executable, "-m", "bnb.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_process_truncated_onnx(tmp_path, tiny):
    net, spec = tiny
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(net.read_bytes()[:60])
    out = tmp_path / "r.txt"
    check_error(*run_process(["verify", trunc, spec, "--results-file", out]), str(trunc), "ONNX")
    assert not out.exists()


def test_process_vnnlib_syntax_error(tmp_path, tiny):
    net, spec = tiny
    bad = tmp_path / "bad.vnnlib"
    bad.write_text(spec.read_text() + "(assert (<= Y_0 (+ 1 2))\n")
    n_lines = len(spec.read_text().splitlines())
    out = tmp_path / "r.txt"
    check_error(*run_process(["verify", net, bad, "--results-file", out]), f"{bad}:{n_lines + 1}:", "unbalanced")
    assert not out.exists()


def test_process_unknown_set_key(tiny):
    net, spec = tiny
    line = check_error(*run_process(["verify", net, spec, "--set", "attack.stesp=3"]), "--set", "attack.stesp")
    assert "did you mean 'attack.steps'" in line


# ------------------------------------------------------------------------ ONNX problems
def test_garbage_onnx(tmp_path, tiny):
    _, spec = tiny
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff\xfe")
    verify_fails(tmp_path, bad, spec, str(bad))


def test_empty_onnx(tmp_path, tiny):
    _, spec = tiny
    bad = tmp_path / "empty.onnx"
    bad.write_bytes(b"")
    verify_fails(tmp_path, bad, spec, str(bad))


@pytest.mark.parametrize("op", ["Elu", "Softmax", "HardSigmoid", "LogSoftmax"])
def test_unsupported_op(tmp_path, tiny, op):
    _, spec = tiny
    net = make_onnx(tmp_path / f"{op}.onnx", [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
                                              helper.make_node(op, ["h"], ["y"])],
                    {"W": np.ones((1, 2))}, 2, 1)
    line = verify_fails(tmp_path, net, spec, str(net), op, "unsupported")
    assert REFUSED[op] in line


@pytest.mark.parametrize("case,needle", [("ir", "IR version"), ("type", "Type Error")])
def test_model_onnxruntime_refuses(tmp_path, tiny, case, needle):
    """bnb reads the model, but onnxruntime, which checks every converted network, will not load it."""
    _, spec = tiny
    kw = {"ir_version": 100} if case == "ir" else {"out_type": TensorProto.DOUBLE}
    net = make_onnx(tmp_path / f"{case}.onnx", [helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)],
                    {"W": np.ones((1, 2))}, 2, 1, **kw)
    line = verify_fails(tmp_path, net, spec, str(net), "onnxruntime cannot load the model", needle)
    assert "ONNXRuntimeError" not in line and ".cc:" not in line


def test_missing_network(tmp_path, tiny):
    _, spec = tiny
    missing = tmp_path / "nope.onnx"
    verify_fails(tmp_path, missing, spec, str(missing), "no such file")


# ------------------------------------------------------------------------ VNN-LIB problems
def test_missing_spec(tmp_path, tiny):
    net, _ = tiny
    missing = tmp_path / "nope.vnnlib"
    verify_fails(tmp_path, net, missing, str(missing), "no such file")


def test_unbalanced_parens(tmp_path, tiny):
    net, _ = tiny
    bad = tmp_path / "paren.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real))\n(declare-const Y_0 Real)\n")
    verify_fails(tmp_path, net, bad, f"{bad}:2:", "unbalanced")


def test_undeclared_variable(tmp_path, tiny):
    net, _ = tiny
    bad = tmp_path / "undeclared.vnnlib"
    write_vnnlib(bad, [-1, -1], [1, 1], 1, "(<= Y_3 0.5)")
    n = len(bad.read_text().splitlines())
    verify_fails(tmp_path, net, bad, f"{bad}:{n}:", "Y_3")


def test_more_inputs_than_network(tmp_path, tiny):
    net, _ = tiny
    bad = tmp_path / "wide.vnnlib"
    write_vnnlib(bad, [-1, -1, -1], [1, 1, 1], 1, "(<= Y_0 0.5)")
    verify_fails(tmp_path, net, bad, str(bad), "3 inputs", "2")


def test_more_outputs_than_network(tmp_path, tiny):
    net, _ = tiny
    bad = tmp_path / "outs.vnnlib"
    write_vnnlib(bad, [-1, -1], [1, 1], 4, "(<= Y_3 0.5)")
    verify_fails(tmp_path, net, bad, str(bad), "4 outputs")


def test_empty_input_box(tmp_path, tiny):
    net, _ = tiny
    bad = tmp_path / "empty.vnnlib"
    write_vnnlib(bad, [-1, 1], [1, 0], 1, "(<= Y_0 0.5)")
    verify_fails(tmp_path, net, bad, str(bad), "empty input box", "X_1")


def test_unbounded_input(tmp_path, tiny):
    net, _ = tiny
    bad = tmp_path / "unbounded.vnnlib"
    bad.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                   "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= Y_0 0))\n")
    verify_fails(tmp_path, net, bad, str(bad), "X_1", "upper bound")


# ------------------------------------------------------------------------ configuration problems
def test_unknown_key_in_yaml(tmp_path, tiny):
    net, spec = tiny
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("general:\n  timout: 3\n")
    line = verify_fails(tmp_path, net, spec, str(cfg), "general.timout", extra=["--config", cfg])
    assert "did you mean 'general.timeout'" in line


def test_unknown_section_in_yaml(tmp_path, tiny):
    net, spec = tiny
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("atack:\n  steps: 3\n")
    verify_fails(tmp_path, net, spec, str(cfg), "atack", "did you mean 'attack'", extra=["--config", cfg])


def test_unknown_key_via_set(tmp_path, tiny):
    net, spec = tiny
    verify_fails(tmp_path, net, spec, "--set", "general.sed", extra=["--set", "general.sed=1"])


def test_ill_typed_set_value(tmp_path, tiny):
    net, spec = tiny
    verify_fails(tmp_path, net, spec, "--set", "attack.steps", extra=["--set", "attack.steps=lots"])


def test_missing_config_file(tmp_path, tiny):
    net, spec = tiny
    cfg = tmp_path / "absent.yaml"
    verify_fails(tmp_path, net, spec, str(cfg), "no such file", extra=["--config", cfg])


# ------------------------------------------------------------------------ other commands
def test_bounds_bad_input(tmp_path, tiny):
    net, _ = tiny
    missing = tmp_path / "nope.vnnlib"
    check_error(*run_cli(["bounds", net, missing, "--method", "ibp"]), str(missing))


def test_config_show_bad_key(tmp_path):
    check_error(*run_cli(["config", "show", "--set", "bounds.nope=1"]), "--set", "bounds.nope")
