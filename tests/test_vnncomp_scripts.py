"""The VNN-COMP scripts (vnncomp/*.sh) run end to end as the competition calls them: results files checked
against expected.csv, and every sat witness replayed with onnxruntime."""
from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bnb.io.vnnlib import parse_vnnlib

from conftest import ROOT, acas, expected_label

SCRIPTS = ROOT / "vnncomp"
_ENTRY = re.compile(r"^\(?\((?P<name>[XY])_(?P<i>\d+) (?P<v>[^\s()]+)\)\)?$")


def run(script, *args, venv=sys.prefix, timeout=300, **env):
    e = dict(os.environ, BNB_VENV=str(venv), OMP_NUM_THREADS="1", **env)
    e.pop("PYTHONPATH", None)  # the scripts must find the repository's code themselves
    return subprocess.run(["bash", str(SCRIPTS / script), *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout)


def read_witness(text: str):
    """A VNN-COMP results file: the verdict, and for sat the arrays X and Y of ((X_0 v) ... (Y_0 v) ...)."""
    lines = text.splitlines()
    values = {"X": {}, "Y": {}}
    for line in lines[1:]:
        m = _ENTRY.match(line.strip())
        assert m, f"not a witness line: {line!r}"
        values[m["name"]][int(m["i"])] = float(m["v"])
    if lines[0] == "sat":
        assert lines[1].startswith("((X_0 ") and lines[-1].endswith("))"), text
    to_array = lambda d: np.array([d[i] for i in range(len(d))])  # noqa: E731
    return lines[0], to_array(values["X"]), to_array(values["Y"])


@pytest.mark.parametrize("net,prop,gz", [("2_1", "prop_2", True), ("4_1", "prop_4", False)])
def test_acas_instance_through_the_scripts(tmp_path, net, prop, gz):
    onnx_path, spec = acas(net, prop)
    expected = expected_label("acasxu", onnx_path.name, spec.name)
    args = [onnx_path, spec]
    if gz:  # the competition ships .onnx.gz and .vnnlib.gz
        args = []
        for p in (onnx_path, spec):
            args.append(tmp_path / (p.name + ".gz"))
            args[-1].write_bytes(gzip.compress(p.read_bytes()))
    cache = {"BNB_VNNCOMP_CACHE": str(tmp_path / "cache")}
    prep = run("prepare_instance.sh", "v1", "acasxu", *args, **cache)
    assert prep.returncode == 0, prep.stderr
    assert "configs/acasxu.yaml" in prep.stdout
    results = tmp_path / "out.txt"
    results.write_text("stale\n")  # a results file left from before is not taken for this run's
    proc = run("run_instance.sh", "v1", "acasxu", *args, results, 60, **cache)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict, x, y = read_witness(results.read_text())
    assert verdict == expected
    if verdict == "sat":
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32).reshape(1, 1, 1, 5)})[0].reshape(-1)
        np.testing.assert_array_equal(got, y)
        p = parse_vnnlib(spec, 5, 5).specs[0]
        assert np.all(x >= p.lower) and np.all(x <= p.upper)
        assert p.disjuncts[0].margin(y[None])[0] <= 0
    else:
        assert x.size == 0 and y.size == 0


def test_bad_input_and_wrong_version(tmp_path):
    _, spec = acas("2_1", "prop_2")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    results = tmp_path / "out.txt"
    proc = run("run_instance.sh", "v1", "acasxu", bad, spec, results, 30)
    assert proc.returncode == 1 and results.read_text() == "error\n"
    assert "bad.onnx" in proc.stderr and "Traceback" not in proc.stderr
    for script, n in (("run_instance.sh", 6), ("prepare_instance.sh", 4), ("install_tool.sh", 1)):
        proc = run(script, "v2", *["x"] * (n - 1))
        assert proc.returncode == 1 and "expected first argument (version string) 'v1'" in proc.stderr
    proc = run("run_instance.sh", "v1", "acasxu", bad, spec, results, "soon")
    assert proc.returncode == 1 and results.read_text() == "error\n" and "TIMEOUT" in proc.stderr


def test_install_tool_with_an_existing_environment():
    proc = run("install_tool.sh", "v1")
    assert proc.returncode == 0, proc.stderr
    assert "ready" in proc.stdout


def test_a_run_past_its_limit_is_killed_and_answers_timeout(tmp_path):
    """A verifier that ignores its limit is killed a few seconds after TIMEOUT; the results file says timeout."""
    fake = tmp_path / "venv"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "python").write_text("#!/bin/bash\nexec sleep 60\n")
    (fake / "bin" / "python").chmod(0o755)
    _, spec = acas("2_1", "prop_2")
    results = tmp_path / "out.txt"
    proc = run("run_instance.sh", "v1", "acasxu", spec, spec, results, 1, venv=fake, timeout=60)
    assert proc.returncode == 0 and results.read_text() == "timeout\n"


@pytest.mark.parametrize("category,config", [("acasxu", "acasxu.yaml"), ("ACASXU_2023", "acasxu.yaml"),
                                             ("mnist_fc", "mnist_fc.yaml"), ("mnist_fc_2022", "mnist_fc.yaml"),
                                             ("oval21", "oval21.yaml"), ("oval21_2022", "oval21.yaml"),
                                             ("cifar2020", ""), ("default", "")])
def test_category_configs(category, config):
    out = subprocess.run(["bash", "-c", f'source "{SCRIPTS}/common.sh"; config_for "$1"', "-", category],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == (str(ROOT / "configs" / config) if config else "")
    if config:
        assert Path(out).is_file()
