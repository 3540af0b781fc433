"""``bnb study`` (every instance under every heuristic), suites with two workers, resume after a real kill,
the Ray path against a local Ray instance the test starts, and a user's heuristic plug-in end to end.

Ground truth: the instances of :mod:`test_suite_isolation` (a small ReLU network whose exact minimum over
the box is known by MILP; the unsat ones need branching)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from test_suite_isolation import _cfg, _copy, _suite, make_instances

from bnb.runs.study import read_study, run_study
from bnb.runs.suite import read_results, run_suite

from conftest import ROOT


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    return make_instances(tmp_path_factory.mktemp("study"))


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TRUTH = {"unsat_a.vnnlib": "unsat", "unsat_b.vnnlib": "unsat", "sat_a.vnnlib": "sat"}


def _rows(n=1):
    return [(f"{name}", 30, truth) for name, truth in TRUTH.items()] * n


def test_study_with_two_workers_writes_results_summary_and_plots(instances):
    folder, _ = instances
    path = _suite(folder, _rows(), "study.csv")
    out = folder / "study_out"
    res = run_study(path, "widest,smart,relu=babsr", _cfg(), out, lambda m: None, workers=2, progress=False)
    assert len(res) == 9
    rows = read_study(out / "results.csv")
    assert sorted((r["heuristic"], r["vnnlib"]) for r in rows) == \
        sorted((h, v) for h in ("widest", "smart", "relu=babsr") for v in TRUTH)
    for r in rows:
        assert r["verdict"] == TRUTH[r["vnnlib"]] and not r["wrong"], r
    assert any(r["branches"] > 0 and r["max_queue"] > 0 for r in rows)  # the unsat ones branch
    summary = (out / "summary.md").read_text()
    assert "| widest | 3 | 3 | 0 | 0 |" in summary and "| relu=babsr | 3 | 3 | 0 | 0 |" in summary
    for png in ("cactus.png", "branches_smart.png", "branches_relu_babsr.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and png in summary


def test_study_rejects_unknown_heuristics(instances, tmp_path):
    folder, _ = instances
    path = _suite(folder, _rows(), "study_bad.csv")
    proc = subprocess.run([sys.executable, "-m", "bnb.cli", "study", str(path), "--heuristics", "widest,bsbsr",
                           "--out", str(tmp_path / "s")], capture_output=True, text=True, cwd=ROOT, env=ENV,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "bsbsr" in proc.stderr, proc.stderr


@pytest.mark.slow  # ~15 s: several study processes
def test_study_resume_after_a_kill_loses_and_repeats_nothing(instances):
    """Kill a running ``bnb study`` (the whole process group, SIGKILL) once rows have arrived, resume it:
    every (instance, heuristic) once, with its true verdict, and the rows from before the kill kept."""
    folder, _ = instances
    rows = []
    for k in range(4):
        for name, truth in TRUTH.items():
            rows.append((_copy(folder, name, f"k{k}_{name}"), 30, truth))
    path = _suite(folder, rows, "study_kill.csv")
    out = folder / "study_kill"
    cmd = [sys.executable, "-m", "bnb.cli", "study", str(path), "--heuristics", "widest,smart", "--out", str(out),
           "--set", "general.threads=1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = out / "runs" / "widest.csv"
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120 and len(read_results(first) if first.exists() else []) < 3:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_results(first)
    assert 3 <= len(before) < len(rows), "the kill came too late to test anything"
    assert not (out / "runs" / "smart.csv").exists() or len(read_results(out / "runs" / "smart.csv")) < len(rows)
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    final = read_study(out / "results.csv")
    keys = [(r["heuristic"], r["vnnlib"]) for r in final]
    assert len(keys) == len(set(keys)) == 2 * len(rows)
    truth = {v: t for v, _, t in rows}
    assert all(r["verdict"] == truth[r["vnnlib"]] for r in final)
    after = {r["vnnlib"]: r for r in read_results(first)}
    assert all(after[r["vnnlib"]]["time"] == r["time"] for r in before)  # kept, not redone


def test_run_with_two_workers(instances):
    folder, _ = instances
    path = _suite(folder, _rows(2), "two.csv")
    out = folder / "two_out.csv"
    log = []
    res = run_suite(path, _cfg(), out, log.append, workers=2)
    assert sorted((r["vnnlib"], r["verdict"]) for r in res) == sorted((v, t) for v, _, t in _rows(2))
    assert any("worker warm-up" in m for m in log) and len(read_results(out)) == 6


@pytest.mark.slow
def test_run_over_a_local_ray_instance(instances, tmp_path):
    """Start a local Ray instance (a driver process of its own), run a suite on it by address."""
    pytest.importorskip("ray")
    folder, _ = instances
    path = _suite(folder, _rows(), "ray.csv")
    env = {**ENV, "RAY_AUTH_MODE": "disabled"}  # a local test cluster: no token written to the home folder
    head = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        print(ray.get_runtime_context().gcs_address, flush=True)
        sys.stdin.read()
        ray.shutdown()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        address = head.stdout.readline().strip()
        assert ":" in address, address
        out = folder / "ray_out.csv"
        proc = subprocess.run([sys.executable, "-m", "bnb.cli", "run", str(path), "--out", str(out), "--ray", address,
                               "--workers", "2", "--set", "general.threads=1"], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sorted((r["vnnlib"], r["verdict"]) for r in read_results(out)) == sorted(TRUTH.items())
    finally:
        head.stdin.close()
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()


def test_plugin_heuristic_end_to_end(instances, tmp_path):
    """A user's ReLU rule from a file decides an instance correctly; a bad plug-in is bad input."""
    from bnb.errors import ConfigError
    from bnb.pipeline.verify import verify
    folder, inst = instances
    plug = tmp_path / "rules.py"
    plug.write_text(textwrap.dedent('''
        import torch
        def last_free(batch):  # split the last free neuron of the network
            flat = torch.cat(batch.free(), dim=1).int()
            return flat.shape[1] - 1 - flat.flip(1).argmax(dim=1)
    '''))
    onnx, vnn, truth = inst["unsat_a"]
    cfg = _cfg()
    cfg.bab.branching, cfg.general.proof_only = "relu", True  # the verdict from the bounds alone
    cfg.bab.relu_heuristic = f"{plug}:last_free"
    res = verify(onnx, vnn, cfg)
    assert res.verdict.value == truth and res.stats["branches"] > 0, (res.message, res.stats)
    cfg.bab.relu_heuristic = f"{plug}:nope"
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        verify(onnx, vnn, cfg)
