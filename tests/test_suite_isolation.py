"""Suites that survive (issue 15): deadlines that cannot corrupt state, worker isolation, complete rows.

- a first instance that leaves its process broken (a half-initialised module in ``sys.modules``) and
  overruns its limit, a worker killed by a signal, a native abort, an exit, running out of memory: each
  is recorded on its own row and every other row keeps its correct verdict;
- a timeout injected at many random points of a run never gives a verdict the instance does not have,
  and never an error;
- the deadline raises nothing asynchronously (the old SIGALRM backstop raised inside library code);
- the results CSV is resumable after a kill, with no lost or repeated rows.
"""
from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pytest
import torch

from bnb.config import Config
from bnb.pipeline.verify import verify
from bnb.runs.suite import FIELDS, read_results, run_suite
from bnb.timing import Deadline

from conftest import ROOT, write_vnnlib


# ------------------------------------------------------------------ hooks (run inside the worker)
def fault_hook(task):
    """What the instance's file name asks for: the ways an instance can break its process."""
    name = os.path.basename(task.vnnlib)
    if name.startswith("poison"):
        # what the SIGALRM backstop did: a module left half-initialised, then the run does not stop
        sys.modules["torch._dynamo"] = types.ModuleType("torch._dynamo")
        torch.optim = sys.modules["torch.optim"] = types.ModuleType("torch.optim")
        import relaxations.optimize
        relaxations.optimize._Adam = types.ModuleType("half-initialised")  # calling it raises a TypeError
        if "hang" in name:
            time.sleep(120)
    elif name.startswith("sigkill"):
        os.kill(os.getpid(), signal.SIGKILL)
    elif name.startswith("abort"):
        os.abort()
    elif name.startswith("exit"):
        os._exit(3)
    elif name.startswith("oom"):
        # 8 GiB of address space, never touched: granted without a limit (overcommit), refused with it
        np.empty(8 * 2 ** 30, dtype=np.uint8)


# ------------------------------------------------------------------ tiny instances with known answers
def _mlp(seed, widths=(2, 12, 12, 1)):
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(widths[:-1], widths[1:]):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*mods[:-1])


def _exact_min(onnx_path, lo, hi):
    from bnb.io.onnx_loader import load_onnx
    from relaxations.milp import milp_bounds
    net = load_onnx(onnx_path).network.to(dtype=torch.float64)
    lb, _ = milp_bounds(net, np.asarray(lo, float), np.asarray(hi, float))
    return float(lb[0])


@pytest.fixture(scope="module")
def instances(tmp_path_factory):
    """``(folder, {vnnlib name: (onnx path, vnnlib path, truth)})``: sat and unsat instances of a small
    ReLU network whose exact minimum over the box is known (MILP); the unsat ones need branching."""
    return make_instances(tmp_path_factory.mktemp("suite"))


def make_instances(folder):
    from conftest import export_onnx
    lo, hi = [-1.0, -1.0], [1.0, 1.0]
    onnx = export_onnx(_mlp(3), (2,), folder / "net.onnx")
    m = _exact_min(onnx, lo, hi)
    out = {}
    for name, bound, truth in (("unsat_a", m - 0.02, "unsat"), ("unsat_b", m - 0.2, "unsat"),
                               ("sat_a", m + 0.05, "sat")):
        out[name] = (onnx, write_vnnlib(folder / f"{name}.vnnlib", lo, hi, 1, f"(<= Y_0 {bound!r})"), truth)
    return folder, out


def _suite(folder, rows, name="instances.csv"):
    """Write ``instances.csv`` (rows ``(vnnlib name, timeout)``, the faults as copies of an instance)
    and ``expected.csv``; returns its path."""
    inst, exp = [], []
    for vnn, timeout, truth in rows:
        inst.append(["net.onnx", vnn, timeout])
        exp.append(["net.onnx", vnn, truth])
    with open(folder / name, "w", newline="") as f:
        csv.writer(f).writerows(inst)
    with open(folder / "expected.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["onnx", "vnnlib", "expected"])
        w.writerows(exp)
    return folder / name


def _copy(folder, src, dst):
    (folder / dst).write_text((folder / src).read_text())
    return dst


def _cfg():
    cfg = Config()
    cfg.general.threads = 1
    return cfg


# ------------------------------------------------------------------ isolation
def test_faults_stay_on_their_own_rows(instances):
    """Poisoned-and-hung first instance, SIGKILL, abort, exit, out of memory: each its own row, every
    other row correct, the suite goes on; more rows than workers, so workers are replaced."""
    folder, inst = instances
    faults = {"poison_hang.vnnlib": (1, "timeout", "worker killed"),
              "sigkill.vnnlib": (20, "error", "SIGKILL"),
              "abort.vnnlib": (20, "error", "SIGABRT"),
              "exit.vnnlib": (20, "error", "exited with code 3"),
              "oom.vnnlib": (20, "error", "MemoryError")}
    rows = []
    for fault in faults:
        rows.append((_copy(folder, "unsat_a.vnnlib", fault), faults[fault][0], "unsat"))
        rows.append(("unsat_a.vnnlib", 20, "unsat"))
        rows.append(("sat_a.vnnlib", 20, "sat"))
    path = _suite(folder, rows)
    out = folder / "out.csv"
    log = []
    res = run_suite(path, _cfg(), out, log.append, workers=2, grace=1.0, memory_mb=4096, hook=fault_hook)
    assert len(res) == len(rows)
    by_name = {}
    for r in res:
        by_name.setdefault(r["vnnlib"], []).append(r)
    for fault, (_, verdict, why) in faults.items():
        (r,) = by_name[fault]
        assert r["verdict"] == verdict and why in r["message"], r
    assert [r["verdict"] for r in by_name["unsat_a.vnnlib"]] == ["unsat"] * len(faults)
    assert [r["verdict"] for r in by_name["sat_a.vnnlib"]] == ["sat"] * len(faults)
    assert not any(r["wrong"] for r in res)
    assert sorted((r["vnnlib"], r["verdict"]) for r in read_results(out)) == \
        sorted((r["vnnlib"], r["verdict"]) for r in res)
    assert any(line.startswith("worker warm-up:") for line in log)


def test_poison_without_overrun_replaces_the_worker(instances):
    """The poisoned instance returns (an error row, since its optimiser is gone): the worker it broke
    is not reused, so the next instances are answered correctly (one worker: strictly in order)."""
    folder, inst = instances
    rows = [(_copy(folder, "unsat_b.vnnlib", "poison.vnnlib"), 20, "unsat"), ("unsat_b.vnnlib", 20, "unsat"),
            ("sat_a.vnnlib", 20, "sat"), ("unsat_a.vnnlib", 20, "unsat")]
    cfg = _cfg()
    cfg.attack.bound_first = 0  # the root CROWN bound alone would prove it without reaching the broken optimiser
    cfg.general.preset = "none"  # (so would the input-splitting preset's CROWN root): keep alpha-CROWN at the root
    res = run_suite(_suite(folder, rows), cfg, None, lambda m: None, workers=1, hook=fault_hook)
    assert res[0]["verdict"] == "error" and "module" in res[0]["message"]
    assert [r["verdict"] for r in res[1:]] == ["unsat", "sat", "unsat"]


def test_in_process_mode(instances):
    folder, inst = instances
    rows = [("unsat_a.vnnlib", 20, "unsat"), ("sat_a.vnnlib", 20, "sat")]
    res = run_suite(_suite(folder, rows), _cfg(), None, lambda m: None, workers=0)
    assert [r["verdict"] for r in res] == ["unsat", "sat"]


# ------------------------------------------------------------------ deadlines
class InjectedDeadline(Deadline):
    """Expires at its ``n``-th call of ``expired``/``remaining`` (``n=None``: never; counts the calls)."""

    def __init__(self, n=None):
        super().__init__(None)
        self.n, self.calls = n, 0

    def _tick(self) -> bool:
        self.calls += 1
        return self.n is not None and self.calls >= self.n

    def expired(self) -> bool:
        return self._tick()

    def remaining(self) -> float:
        return 0.0 if self._tick() else 1e9


@pytest.mark.parametrize("branching", ["input", "relu"])
def test_injected_timeouts_never_give_a_wrong_verdict(instances, branching):
    folder, inst = instances
    cfg = _cfg()
    cfg.bab.branching = branching
    cfg.attack.restarts = 4
    rng = random.Random(15)
    seen = set()
    for name, (onnx, vnn, truth) in inst.items():
        probe = InjectedDeadline()
        full = verify(onnx, vnn, cfg, deadline=probe)
        assert full.verdict.value == truth, (name, full)
        points = sorted({1, 2, probe.calls, probe.calls + 1} | {rng.randint(1, probe.calls) for _ in range(10)})
        for n in points:
            res = verify(onnx, vnn, cfg, deadline=InjectedDeadline(n))
            v = res.verdict.value
            seen.add(v)
            assert v in (truth, "timeout", "unknown"), (name, n, probe.calls, res)
    assert "timeout" in seen


def test_deadline_raises_nothing_inside_library_code(instances, monkeypatch):
    """A slow call (standing for an import, a write, a solver) past the limit runs to its end; the
    timeout is then answered where the pipeline checks. The old backstop raised inside it."""
    import bnb.pipeline.verify as V
    folder, inst = instances
    onnx, vnn, _ = inst["unsat_a"]
    done = []

    def slow_prove(model, net, prop, cfg, deadline, stats, log, certificate=None):
        assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None)
        time.sleep(1.8)  # the old backstop fired at limit + 1 s = 1.5 s, inside this call
        done.append(True)
        deadline.check()
        raise AssertionError("the deadline has passed")

    monkeypatch.setattr(V, "prove", slow_prove)
    res = V.verify(onnx, vnn, _cfg(), timeout=0.5)
    assert res.verdict.value == "timeout" and done == [True]


def test_verify_watchdog_ends_a_run_that_ignores_its_limit(instances, tmp_path):
    folder, inst = instances
    onnx, vnn, _ = inst["unsat_a"]
    results = tmp_path / "res.txt"
    code = textwrap.dedent(f"""
        import sys, time
        import bnb.cli.main, bnb.cli.process, bnb.pipeline.verify
        bnb.cli.process.WATCHDOG_GRACE = 0.5
        bnb.pipeline.verify.prove = lambda *a: time.sleep(60)
        sys.argv = ["bnb", "verify", {str(onnx)!r}, {str(vnn)!r}, "--timeout", "0.5",
                    "--results-file", {str(results)!r}, "--set", "attack.enabled=false"]
        bnb.cli.main.main()
    """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 30, proc.stderr
    assert "timeout" in proc.stdout and results.read_text() == "timeout\n"
    assert time.monotonic() - t0 < 30


# ------------------------------------------------------------------ results file
def test_resume_after_a_kill_loses_and_repeats_nothing(instances):
    folder, inst = instances
    rows = [("unsat_a.vnnlib", 20, "unsat"), ("sat_a.vnnlib", 20, "sat"), ("unsat_b.vnnlib", 20, "unsat")]
    path = _suite(folder, rows)
    out = folder / "resume.csv"
    run_suite(path, _cfg(), out, lambda m: None, workers=0, limit=2)
    text = out.read_text()
    assert text.count("\n") == 3 and text.splitlines()[0] == ",".join(FIELDS)
    out.write_text(text[:-7])  # killed in the middle of writing the second row
    assert [r["vnnlib"] for r in read_results(out)] == ["unsat_a.vnnlib"]
    log = []
    res = run_suite(path, _cfg(), out, log.append, workers=1, resume=True)
    assert any("1 instance(s) already done, 2 to run" in m for m in log)
    assert sorted(r["vnnlib"] for r in res) == sorted(r[0] for r in rows)
    final = read_results(out)
    assert sorted((r["vnnlib"], r["verdict"]) for r in final) == \
        [("sat_a.vnnlib", "sat"), ("unsat_a.vnnlib", "unsat"), ("unsat_b.vnnlib", "unsat")]
    assert out.read_text().endswith("\n") and out.read_text().count(",".join(FIELDS)) == 1
    # resuming a finished suite runs nothing
    assert len(run_suite(path, _cfg(), out, log.append, workers=1, resume=True)) == 3
    assert len(read_results(out)) == 3


def test_rows_are_single_lines(instances):
    from bnb.runs.suite import ResultsFile
    folder, _ = instances
    f = ResultsFile(folder / "lines.csv")
    f.append({"onnx": "a.onnx", "vnnlib": "b.vnnlib", "verdict": "error", "time": 1.0, "expected": "",
              "wrong": 0, "branches": 0, "domains": 0, "message": "internal error:\nTraceback, \"quoted\"\n  x"})
    f.close()
    assert (folder / "lines.csv").read_text().count("\n") == 2
    (r,) = read_results(folder / "lines.csv")
    assert r["message"] == 'internal error: Traceback, "quoted" x'


def test_cli_run_with_workers_and_resume(instances):
    folder, _ = instances
    rows = [("unsat_a.vnnlib", 20, "unsat"), ("sat_a.vnnlib", 20, "sat")]
    path = _suite(folder, rows, "cli.csv")
    out = folder / "cli_out.csv"
    cmd = [sys.executable, "-m", "bnb.cli", "run", str(path), "--out", str(out), "--set", "general.threads=1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd + ["--workers", "1"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "worker warm-up:" in proc.stdout and "| instances |" in proc.stdout
    assert [r["verdict"] for r in read_results(out)] == ["unsat", "sat"]
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0 and "2 instance(s) already done, 0 to run" in proc.stdout
    proc = subprocess.run(cmd[:5] + ["--resume"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 2 and "--resume needs --out" in proc.stderr
