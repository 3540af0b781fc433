"""A new user's trial of a VNN-COMP benchmark folder: every instance through ``bnb verify`` (one process each, as a
user runs it), every ``sat`` results file checked by the independent checker (``benchmarks/check_witness.py``).

    python benchmarks/witness_trial.py FOLDER [--timeout S] [--limit N] [--out trial.csv]

``FOLDER`` holds ``instances.csv`` (onnx, vnnlib, timeout; ``.gz`` files are read as they are) and, when present,
``expected.csv``; the instance timeout is ``min(--timeout, the file's)``. Prints one line per instance (verdict,
seconds, whether the witness is an exact point of a box without float32 points, the checker's answer) and a
summary: verdicts, witnesses accepted, exact-point witnesses, disagreements with expected.csv.
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_witness import check  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--limit", type=int, default=0, help="first N instances only (0: all)")
    ap.add_argument("--out", help="CSV of the per-instance results")
    a = ap.parse_args(argv)
    folder = Path(a.folder)
    rows = [r for r in csv.reader(open(folder / "instances.csv")) if r]
    if a.limit:
        rows = rows[:a.limit]
    expected = {}
    if (folder / "expected.csv").exists():
        for r in csv.DictReader(open(folder / "expected.csv")):
            expected[(Path(r["onnx"]).name, Path(r["vnnlib"]).name)] = r["expected"]
    out, counts, t_all = [], {}, time.monotonic()
    for onnx, vnn, limit in rows:
        t = min(a.timeout, float(limit))
        with tempfile.TemporaryDirectory() as tmp:
            res = Path(tmp) / "out.txt"
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "bnb.cli", "verify", str(folder / onnx), str(folder / vnn),
                                "--timeout", str(t), "--results-file", str(res)], capture_output=True, text=True)
            secs = time.monotonic() - t0
            text = res.read_text() if res.exists() else ""
        verdict = text.split("\n", 1)[0].strip() or f"(exit {p.returncode})"
        exact = "no float32 point" in p.stdout + p.stderr
        checked = check(str(folder / onnx), str(folder / vnn), text) if verdict == "sat" else ""
        exp = expected.get((Path(onnx).name, Path(vnn).name), "")
        clash = bool(exp) and {verdict, exp} == {"sat", "unsat"}
        counts[verdict] = counts.get(verdict, 0) + 1
        out.append(dict(onnx=onnx, vnnlib=vnn, verdict=verdict, seconds=round(secs, 2), exact_point=exact,
                        checker=checked, expected=exp, clash=clash))
        print(f"{Path(onnx).name:32s} {Path(vnn).name:55s} {verdict:8s} {secs:6.1f}s"
              f"{'  exact point' if exact else ''}{'  checker: ' + checked if checked else ''}"
              f"{'  EXPECTED ' + exp if clash else ''}", flush=True)
    sats = [r for r in out if r["verdict"] == "sat"]
    print(f"\n{len(out)} instances in {time.monotonic() - t_all:.0f}s: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; sat witnesses accepted by the checker: {sum(r['checker'] == 'ok' for r in sats)}/{len(sats)}"
          + f" ({sum(r['exact_point'] for r in sats)} exact points); disagreements with expected.csv: "
          + str(sum(r["clash"] for r in out)))
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(out[0]))
            w.writeheader()
            w.writerows(out)
    return 1 if any(r["clash"] for r in out) or any(r["checker"] not in ("", "ok") for r in sats) else 0


if __name__ == "__main__":
    sys.exit(main())
