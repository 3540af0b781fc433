"""Per-process overhead: what one ``bnb verify`` process spends around the proof, stage by stage.

VNN-COMP and most users' scripts start one verifier process per instance, so the interpreter start, the
imports, loading and checking the model and the attack count as much as the proof. Two modes:

``suite`` (default): N instances (every ``--every``-th row of an ``instances.csv``), one ``bnb verify -v``
process each; prints per stage (start-up: interpreter and imports; load; onnxruntime check; parse; attack;
bounding; BaB; writing results; exit) the median seconds, the total wall time, and the total of the same
instances in one ``bnb run`` process. With ``--peer nnenum`` every instance also runs nnenum, alternating
with bnb (bnb first on even rows, nnenum first on odd ones), and the totals are compared.

``easy``: ``bnb verify`` on one instance against ``python -c "import torch"`` in the same environment,
alternating, ``--pairs`` times; prints both medians and the difference.

Verdicts are compared with the ``expected.csv`` beside the instances file; a wrong verdict is reported.
Run from the repository root (commands in docs/performance.md, section "Per-process overhead").
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCES = ROOT / ".." / "shared" / "benchmarks" / "acasxu" / "instances.csv"
EASY = ("onnx/ACASXU_run2a_4_1_batch_2000.onnx", "vnnlib/prop_4.vnnlib")

# (label, how to get it from the stats of `bnb verify -v`)
STAGES = [
    ("start-up (interpreter, imports)", lambda s: s.get("time_startup", 0.0)),
    ("load (incl. onnx import)", lambda s: s.get("time_load", 0.0)),
    ("onnxruntime check", lambda s: s.get("time_check", 0.0)),
    ("parse VNN-LIB", lambda s: s.get("time_parse", 0.0)),
    ("root screen", lambda s: s.get("time_screen", 0.0)),
    ("attack", lambda s: s.get("time_attack_stage", s.get("time_attack", 0.0))),
    ("bounding (in BaB)", lambda s: s.get("time_bounding", 0.0)),
    ("BaB (rest)", lambda s: s.get("time_prove", 0.0) - s.get("time_bounding", 0.0)),
    ("writing results", lambda s: s.get("time_write", 0.0)),
]


def env1():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def parse_stats(stderr: str) -> dict:
    """The ``[bnb] stats: k=v, ...`` line of ``bnb verify -v`` as a dict of floats (others kept as text)."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("[bnb] stats: "):
            out = {}
            for item in line[len("[bnb] stats: "):].split(", "):
                k, _, v = item.partition("=")
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
            return out
    return {}


def run_bnb(python, onnx, vnnlib, timeout, configs, sets):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.txt"
        cmd = [python, "-m", "bnb.cli", "verify", str(onnx), str(vnnlib), "--timeout", str(timeout), "-v",
               "--results-file", str(out)]
        for c in configs:
            cmd += ["--config", c]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env1(), cwd=ROOT)
        wall = time.monotonic() - t0
        verdict = out.read_text().split("\n", 1)[0].strip() if out.exists() else f"exit {p.returncode}"
    return wall, verdict, parse_stats(p.stderr)


def run_nnenum(python, src, onnx, vnnlib, timeout):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.txt"
        env = env1()
        env["PYTHONPATH"] = str(src)
        cmd = [python, "-m", "nnenum.nnenum", str(onnx), str(vnnlib), str(timeout), str(out)]
        t0 = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.monotonic() - t0
        verdict = out.read_text().split("\n", 1)[0].strip() if out.exists() else f"exit {p.returncode}"
    verdict = {"violated": "sat", "holds": "unsat"}.get(verdict, verdict)
    return wall, verdict


def read_rows(instances: Path, every: int, limit: int | None):
    with instances.open() as f:
        rows = [r for r in csv.reader(f) if r and "".join(r).strip()]
    rows = rows[::every]
    return rows[:limit] if limit else rows


def read_expected(instances: Path) -> dict:
    path = instances.parent / "expected.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(f)}


def one_process_run(python, instances: Path, rows, configs, sets):
    """The same instances in one ``bnb run`` process: wall seconds of the whole command and its rows."""
    folder = instances.parent.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path, out = Path(tmp) / "instances.csv", Path(tmp) / "out.csv"
        csv_path.write_text("".join(f"{folder / r[0]},{folder / r[1]},{r[2]}\n" for r in rows))
        cmd = [python, "-m", "bnb.cli", "run", str(csv_path), "--out", str(out)]
        for c in configs:
            cmd += ["--config", c]
        for s in sets:
            cmd += ["--set", s]
        t0 = time.monotonic()
        subprocess.run(cmd, capture_output=True, text=True, env=env1(), cwd=ROOT)
        wall = time.monotonic() - t0
        with out.open() as f:
            recs = list(csv.DictReader(f))
    return wall, recs


def suite(args):
    instances = Path(args.instances)
    rows = read_rows(instances, args.every, args.limit)
    expected = read_expected(instances)
    folder = instances.parent
    records = []
    for i, (onnx, vnnlib, timeout) in enumerate(rows):
        rec = {"onnx": onnx, "vnnlib": vnnlib, "expected": expected.get((onnx, vnnlib), "")}
        order = ["bnb", "nnenum"] if args.peer and i % 2 else (["nnenum", "bnb"] if args.peer else ["bnb"])
        for tool in order:
            if tool == "bnb":
                rec["bnb_wall"], rec["bnb"], rec["stats"] = run_bnb(args.python, folder / onnx, folder / vnnlib,
                                                                     timeout, args.config, args.set)
            else:
                rec["nnenum_wall"], rec["nnenum"] = run_nnenum(args.peer_python, args.peer_src, folder / onnx,
                                                               folder / vnnlib, timeout)
        records.append(rec)
        peer = f"  nnenum {rec['nnenum']} {rec['nnenum_wall']:.2f}s" if args.peer else ""
        print(f"[{i + 1}/{len(rows)}] {Path(onnx).stem} {Path(vnnlib).stem} (expected {rec['expected'] or '?'}): "
              f"bnb {rec['bnb']} {rec['bnb_wall']:.2f}s{peer}", flush=True)
    one_wall, one_recs = (None, []) if args.no_run else one_process_run(args.python, instances, rows, args.config,
                                                                       args.set)
    print()
    print("| stage | median s | total s |")
    print("|---|---|---|")
    for label, get in STAGES:
        vals = [get(r["stats"]) for r in records]
        print(f"| {label} | {statistics.median(vals):.3f} | {sum(vals):.2f} |")
    exits = [r["bnb_wall"] - sum(get(r["stats"]) for _, get in STAGES) for r in records]
    print(f"| exit and the rest | {statistics.median(exits):.3f} | {sum(exits):.2f} |")
    walls = [r["bnb_wall"] for r in records]
    print(f"| **wall per process** | {statistics.median(walls):.3f} | {sum(walls):.2f} |")
    print()
    print(summary_line("bnb, one process per instance", [r["bnb"] for r in records], walls, records))
    if args.peer:
        pw = [r["nnenum_wall"] for r in records]
        print(summary_line("nnenum, one process per instance", [r["nnenum"] for r in records], pw, records))
        ratios = [b / p for b, p in zip(walls, pw) if p > 0]
        print(f"bnb/nnenum: {sum(walls) / sum(pw):.2f}x in total, {statistics.median(ratios):.2f}x per instance "
              "(median of the pairwise ratios)")
    if one_wall is not None:
        inside = [float(r["time"]) for r in one_recs]
        print(summary_line(f"bnb run, one process (wall of the command {one_wall:.1f} s; sum of rows)",
                           [r["verdict"] for r in one_recs], inside, records))
    if args.json:
        Path(args.json).write_text(json.dumps({"records": records, "one_process_wall": one_wall,
                                               "one_process_rows": one_recs}, indent=1))


def summary_line(what, verdicts, times, records):
    wrong = sum((v, r["expected"]) in (("sat", "unsat"), ("unsat", "sat")) for v, r in zip(verdicts, records))
    solved = sum(v in ("sat", "unsat") for v in verdicts)
    return (f"{what}: {solved}/{len(verdicts)} solved, {wrong} wrong, total {sum(times):.1f} s, "
            f"median {statistics.median(times):.2f} s")


def easy(args):
    folder = Path(args.instances).parent
    onnx, vnnlib = folder / EASY[0], folder / EASY[1]
    torch_walls, bnb_walls, verdicts = [], [], []
    for _ in range(args.pairs):
        t0 = time.monotonic()
        subprocess.run([args.python, "-c", "import torch"], check=True, env=env1())
        torch_walls.append(time.monotonic() - t0)
        wall, verdict, _ = run_bnb(args.python, onnx, vnnlib, 116, args.config, args.set)
        bnb_walls.append(wall)
        verdicts.append(verdict)
    mt, mb = statistics.median(torch_walls), statistics.median(bnb_walls)
    print(f"python -c 'import torch': {' '.join(f'{t:.2f}' for t in torch_walls)}  median {mt:.2f} s")
    print(f"bnb verify {EASY[0]} {EASY[1]}: {' '.join(f'{t:.2f}' for t in bnb_walls)}  median {mb:.2f} s "
          f"(verdicts: {', '.join(sorted(set(verdicts)))})")
    print(f"difference of the medians: {mb - mt:.2f} s")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", nargs="?", choices=("suite", "easy"), default="suite")
    ap.add_argument("--instances", default=str(DEFAULT_INSTANCES), help="a VNN-COMP instances.csv")
    ap.add_argument("--every", type=int, default=6, help="take every N-th row (default 6: 31 ACAS Xu instances)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many instances")
    ap.add_argument("--config", action="append", default=None, help="bnb --config (default configs/acasxu.yaml)")
    ap.add_argument("--set", action="append", default=[], help="bnb --set section.key=value")
    ap.add_argument("--python", default=sys.executable, help="the interpreter that runs bnb")
    ap.add_argument("--pairs", type=int, default=5, help="easy mode: alternating pairs")
    ap.add_argument("--no-run", action="store_true", help="suite mode: skip the one-process `bnb run`")
    ap.add_argument("--peer", choices=("nnenum",), default=None, help="also run this tool, alternating")
    ap.add_argument("--peer-python", default="/work/nnenum-venv/bin/python", help="the peer's interpreter")
    ap.add_argument("--peer-src", default="/work/nnenum/src", help="the peer's source folder (its PYTHONPATH)")
    ap.add_argument("--json", default=None, help="write the raw figures here")
    args = ap.parse_args(argv)
    args.config = args.config or [str(ROOT / "configs" / "acasxu.yaml")]
    (easy if args.mode == "easy" else suite)(args)


if __name__ == "__main__":
    main()
