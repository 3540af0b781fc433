"""End to end through the command line: verdicts, witnesses, results files, timeouts, bounds, config."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from bnb.cli.main import main
from bnb.config import Config, to_dict
from bnb.io.vnnlib import parse_vnnlib
from bnb.results import EXIT_CODES, Verdict

from conftest import ROOT, acas, expected_label, random_points, require_bench

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)

_ENTRY = re.compile(r"\(([XY])_(\d+)\s+(\S+?)\)")


def run_cli(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def parse_results_file(text: str):
    """VNN-COMP results file -> (verdict, {X index: value}, {Y index: value})."""
    lines = text.splitlines()
    verdict = lines[0].strip()
    xs, ys = {}, {}
    body = "\n".join(lines[1:]).strip()
    if body:
        assert body.startswith("((") and body.endswith("))"), body[:80]
        for kind, i, v in _ENTRY.findall(body):
            (xs if kind == "X" else ys)[int(i)] = float(v)
    return verdict, xs, ys


def onnx_outputs(onnx_path, x: np.ndarray) -> np.ndarray:
    """The ONNX model's outputs for flat float32 inputs (one run per point, batch 1)."""
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in inp.shape]
    return np.stack([sess.run(None, {inp.name: xi.astype(np.float32).reshape(shape)})[0].reshape(-1)
                     for xi in np.atleast_2d(x)]).astype(np.float64)


def check_witness(onnx_path, vnnlib_path, text: str):
    """The results file says sat and its witness lies in a box and violates the property on onnxruntime."""
    verdict, xs, ys = parse_results_file(text)
    assert verdict == "sat"
    prop = parse_vnnlib(vnnlib_path)
    assert sorted(xs) == list(range(prop.n_inputs)) and sorted(ys) == list(range(prop.n_outputs))
    x = np.array([xs[i] for i in range(prop.n_inputs)])
    assert np.all(x == x.astype(np.float32)), "witness inputs should be float32 values"
    y = onnx_outputs(onnx_path, x)[0]
    np.testing.assert_allclose([ys[j] for j in range(prop.n_outputs)], y, rtol=1e-5, atol=1e-6)
    hits = [spec for spec in prop.specs
            if np.all(x >= spec.lower) and np.all(x <= spec.upper)
            and any(p.margin(y[None])[0] <= 0 for p in spec.disjuncts)]
    assert hits, "the witness does not violate the property on onnxruntime"


# ------------------------------------------------------------------------ sat instances
SAT = [("2_1", "prop_2"), ("2_2", "prop_2"), ("1_7", "prop_3"), ("4_8", "prop_2")]


@pytest.mark.parametrize("net,prop", SAT, ids=[f"{n}-{p}" for n, p in SAT])
def test_sat_with_valid_witness(tmp_path, net, prop):
    onnx_path, spec = acas(net, prop)
    assert expected_label("acasxu", onnx_path.name, spec.name) == "sat"
    out = tmp_path / "r.txt"
    code, stdout, _ = run_cli(["verify", onnx_path, spec, "--results-file", out, "--timeout", 60])
    assert code == EXIT_CODES[Verdict.SAT] == 10, stdout
    assert "sat" in stdout
    check_witness(onnx_path, spec, out.read_text())


def test_sat_through_a_real_process(tmp_path):
    onnx_path, spec = acas("2_1", "prop_2")
    assert expected_label("acasxu", onnx_path.name, spec.name) == "sat"
    out = tmp_path / "r.txt"
    proc = subprocess.run([sys.executable, "-m", "bnb.cli", "verify", str(onnx_path), str(spec),
                           "--results-file", str(out), "--timeout", "60"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 10, proc.stderr
    assert proc.stdout.startswith("ACASXU_run2a_2_1_batch_2000.onnx / prop_2.vnnlib: sat")
    assert "Traceback" not in proc.stderr
    text = out.read_text()
    # exact layout: verdict line, then ((X_0 v)\n (X_1 v) ... (Y_j v))
    lines = text.splitlines()
    assert lines[0] == "sat"
    assert re.fullmatch(r"\(\(X_0 \S+\)", lines[1])
    assert all(re.fullmatch(r" \([XY]_\d+ \S+\)", line) for line in lines[2:-1])
    assert re.fullmatch(r" \(Y_4 \S+\)\)", lines[-1])
    assert len(lines) == 1 + 5 + 5 and text.endswith("\n")
    check_witness(onnx_path, spec, text)


# ------------------------------------------------------------------------ unsat instances
UNSAT = [("acasxu", "ACASXU_run2a_2_6_batch_2000.onnx", "prop_1.vnnlib"),
         ("acasxu", "ACASXU_run2a_3_9_batch_2000.onnx", "prop_3.vnnlib"),
         ("acasxu", "ACASXU_run2a_4_3_batch_2000.onnx", "prop_4.vnnlib"),
         ("mnist_fc", "mnist-net_256x2.onnx", "prop_0_0.03.vnnlib")]


@pytest.mark.parametrize("bench_name,net,prop", UNSAT,
                         ids=[f"{n.removesuffix('.onnx')}-{p.removesuffix('.vnnlib')}" for _, n, p in UNSAT])
def test_never_sat_on_unsat_instances(tmp_path, bench_name, net, prop):
    folder = require_bench(bench_name)
    assert expected_label(bench_name, net, prop) == "unsat"
    out = tmp_path / "r.txt"
    code, stdout, stderr = run_cli(["verify", folder / "onnx" / net, folder / "vnnlib" / prop,
                                    "--results-file", out, "--timeout", 2])
    verdict = out.read_text().splitlines()[0]
    assert verdict in ("unsat", "unknown", "timeout"), (verdict, stdout, stderr)
    assert code == EXIT_CODES[Verdict(verdict)]


def test_tiny_unsat_instance(tmp_path, tiny_unsat):
    net, spec = tiny_unsat
    out = tmp_path / "r.txt"
    code, stdout, _ = run_cli(["verify", net, spec, "--results-file", out, "--timeout", 30])
    assert code == 0, stdout
    assert ": unsat in " in stdout
    assert out.read_text() == "unsat\n"


def test_tiny_sat_instance(tmp_path, tiny_net):
    """y = relu(x0 - x1) on [-1, 1]^2 reaches y >= 1.5 (at x = (1, -1))."""
    import torch
    lin1, lin2 = torch.nn.Linear(2, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        lin1.weight[:] = torch.tensor([[1.0, -1.0]])
        lin1.bias.zero_()
        lin2.weight[:] = 1.0
        lin2.bias.zero_()
    net = tiny_net(torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2), (2,), name="sat")
    from conftest import write_vnnlib
    spec = write_vnnlib(tmp_path / "sat.vnnlib", [-1, -1], [1, 1], 1, "(>= Y_0 1.5)")
    out = tmp_path / "r.txt"
    code, stdout, _ = run_cli(["verify", net, spec, "--results-file", out, "--timeout", 30])
    assert code == 10, stdout
    check_witness(net, spec, out.read_text())


def test_network_without_relus(tmp_path, tiny_net):
    """A purely affine network: the default alpha-CROWN root has nothing to optimise and must not crash.
    y = x0 + 2 x1 on [0, 1]^2 stays >= 0, so "Y_0 <= -0.5" is unsat."""
    import torch
    lin = torch.nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight[:] = torch.tensor([[1.0, 2.0]])
        lin.bias.zero_()
    net = tiny_net(torch.nn.Sequential(lin), (2,), name="affine")
    from conftest import write_vnnlib
    spec = write_vnnlib(tmp_path / "affine.vnnlib", [0, 0], [1, 1], 1, "(<= Y_0 -0.5)")
    code, stdout, _ = run_cli(["verify", net, spec, "--timeout", 30])
    assert code == 0 and "unsat" in stdout, stdout


# ------------------------------------------------------------------------ timeouts
def test_timeout_is_honoured(tmp_path):
    onnx_path, spec = acas("4_3", "prop_4")
    assert expected_label("acasxu", onnx_path.name, spec.name) == "unsat"
    out = tmp_path / "r.txt"
    t = time.monotonic()
    # an attack that cannot finish in time on an unsat instance
    code, stdout, _ = run_cli(["verify", onnx_path, spec, "--timeout", 1,
                               "--set", "attack.steps=1000000", "--results-file", out])
    elapsed = time.monotonic() - t
    assert code == EXIT_CODES[Verdict.TIMEOUT] == 30, stdout
    assert out.read_text() == "timeout\n"
    assert ": timeout in " in stdout
    assert elapsed < 1 + 3, f"timeout of 1s answered after {elapsed:.1f}s"


def test_timeout_is_honoured_while_proving(tmp_path):
    """The attack is off, so the 1 s go to bounding; the instance is labelled sat, so any verdict but unsat is
    acceptable here (the test is about the deadline and about never being wrong)."""
    folder = require_bench("mnist_fc")
    assert expected_label("mnist_fc", "mnist-net_256x6.onnx", "prop_1_0.05.vnnlib") == "sat"
    out = tmp_path / "r.txt"
    t = time.monotonic()
    code, stdout, _ = run_cli(["verify", folder / "onnx" / "mnist-net_256x6.onnx",
                               folder / "vnnlib" / "prop_1_0.05.vnnlib", "--timeout", 1,
                               "--set", "attack.enabled=false", "--results-file", out])
    elapsed = time.monotonic() - t
    verdict = out.read_text().splitlines()[0]
    assert verdict in ("timeout", "unknown", "sat"), stdout
    assert code == EXIT_CODES[Verdict(verdict)]
    if verdict == "sat":
        check_witness(folder / "onnx" / "mnist-net_256x6.onnx", folder / "vnnlib" / "prop_1_0.05.vnnlib",
                      out.read_text())
    assert elapsed < 1 + 6, f"timeout of 1s answered after {elapsed:.1f}s"


# ------------------------------------------------------------------------ other commands
def test_config_show():
    code, stdout, _ = run_cli(["config", "show"])
    assert code == 0
    assert yaml.safe_load(stdout) == to_dict(Config())
    assert "#" in stdout  # help comments
    code, stdout, _ = run_cli(["config", "show", "--no-help", "--set", "general.seed=7"])
    assert code == 0 and "#" not in stdout
    assert yaml.safe_load(stdout)["general"]["seed"] == 7


def test_config_show_with_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("general:\n  seed: 4\n  timeout: 12\n")
    code, stdout, _ = run_cli(["config", "show", "--config", cfg, "--set", "general.timeout=13"])
    data = yaml.safe_load(stdout)
    assert code == 0 and data["general"]["seed"] == 4 and data["general"]["timeout"] == 13.0


@pytest.mark.parametrize("prop", ["prop_1", "prop_3"])
def test_bounds_ibp_json_contain_sampled_outputs(prop):
    onnx_path, spec = acas("1_1", prop)
    code, stdout, stderr = run_cli(["bounds", onnx_path, spec, "--method", "ibp", "--json"])
    assert code == 0, stderr
    data = json.loads(stdout)
    lo, hi = np.array(data["lower"]), np.array(data["upper"])
    assert lo.shape == hi.shape == (5,)
    assert np.all(lo <= hi)
    (box,) = parse_vnnlib(spec).specs
    x = random_points(box.lower, box.upper, 64)
    y = onnx_outputs(onnx_path, np.concatenate([x, box.lower[None], box.upper[None]]).astype(np.float32))
    slack = 1e-4 * (1 + np.abs(y))
    assert np.all(y >= lo - slack) and np.all(y <= hi + slack)


def test_bounds_two_boxes_and_text_output():
    onnx_path, spec = acas("1_1", "prop_6")
    code, stdout, _ = run_cli(["bounds", onnx_path, spec, "--method", "ibp", "--json"])
    assert code == 0
    data = json.loads(stdout)
    lo, hi = np.array(data["lower"]), np.array(data["upper"])
    assert lo.shape == hi.shape == (2, 5)
    # each box's bounds contain onnxruntime's outputs on that box (and the boxes are not mixed up)
    for k, box in enumerate(parse_vnnlib(spec).specs):
        x = random_points(box.lower, box.upper, 32, seed=k)
        y = onnx_outputs(onnx_path, np.concatenate([x, box.lower[None], box.upper[None]]).astype(np.float32))
        slack = 1e-4 * (1 + np.abs(y))
        assert np.all(y >= lo[k] - slack) and np.all(y <= hi[k] + slack), k
    code, stdout, _ = run_cli(["bounds", onnx_path, spec, "--method", "ibp"])
    assert code == 0 and "box 1:" in stdout and "Y_4:" in stdout
