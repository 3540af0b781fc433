"""``bnb run``: a VNN-COMP ``instances.csv`` suite, with progress, incremental results and a summary.

Rows are ``onnx,vnnlib,timeout`` relative to the CSV's folder. When an ``expected.csv`` lies beside it,
every verdict is compared: ``sat`` against an expected ``unsat`` (or the reverse) is *wrong*.
"""
from __future__ import annotations

import csv
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bnb.errors import BnbError
from bnb.results import Verdict

FIELDS = ["onnx", "vnnlib", "verdict", "time", "expected", "wrong", "branches", "domains", "message"]


@dataclass
class Row:
    onnx: str
    vnnlib: str
    timeout: float


def read_instances(path: Path) -> list[Row]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BnbError("no such file", path) from None
    rows = []
    for i, rec in enumerate(csv.reader(text.splitlines()), start=1):
        if not rec or not "".join(rec).strip():
            continue
        if len(rec) < 2:
            raise BnbError("expected 'onnx,vnnlib,timeout'", path, i)
        try:
            timeout = float(rec[2]) if len(rec) > 2 and rec[2].strip() else 300.0
        except ValueError:
            raise BnbError(f"timeout {rec[2]!r} is not a number", path, i) from None
        rows.append(Row(rec[0].strip(), rec[1].strip(), timeout))
    return rows


def read_expected(folder: Path) -> dict:
    path = folder / "expected.csv"
    if not path.exists():
        return {}
    with path.open() as f:
        return {(r["onnx"], r["vnnlib"]): r["expected"] for r in csv.DictReader(f)}


def is_wrong(verdict: str, expected: str | None) -> bool:
    return (verdict, expected) in (("sat", "unsat"), ("unsat", "sat"))


def run_suite(instances: Path, cfg, out: Path | None, echo, timeout=None, limit=None, select=None):
    """Run every instance; returns the list of result dicts (also written to ``out`` as they finish)."""
    from bnb.verify import verify
    folder = instances.parent
    rows = read_instances(instances)
    if select:
        rows = [r for r in rows if select in f"{r.onnx},{r.vnnlib}"]
    if limit:
        rows = rows[:limit]
    expected = read_expected(folder)
    results = []
    writer = None
    fh = None
    if out is not None:
        fh = out.open("w", newline="")
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        fh.flush()
    t_suite = time.monotonic()
    try:
        for k, row in enumerate(rows, start=1):
            exp = expected.get((row.onnx, row.vnnlib))
            t0 = time.monotonic()
            try:
                res = verify(folder / row.onnx, folder / row.vnnlib, cfg, timeout=timeout or row.timeout)
                verdict, msg, stats = res.verdict.value, res.message, res.stats
            except BnbError as e:
                verdict, msg, stats = Verdict.ERROR.value, str(e), {}
            elapsed = time.monotonic() - t0
            rec = {"onnx": row.onnx, "vnnlib": row.vnnlib, "verdict": verdict, "time": round(elapsed, 3),
                   "expected": exp or "", "wrong": int(is_wrong(verdict, exp)),
                   "branches": stats.get("branches", 0), "domains": stats.get("domains_bounded", 0),
                   "message": msg}
            results.append(rec)
            if writer:
                writer.writerow(rec)
                fh.flush()
            flag = "  WRONG" if rec["wrong"] else ""
            echo(f"[{k}/{len(rows)}] {Path(row.onnx).stem} {Path(row.vnnlib).stem}: {verdict} in {elapsed:.2f}s"
                 f"{f' (expected {exp})' if exp else ''}{flag}  [total {time.monotonic() - t_suite:.0f}s]")
    finally:
        if fh:
            fh.close()
    return results


def summary_table(results) -> str:
    counts = {v.value: 0 for v in Verdict}
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    times = [r["time"] for r in results]
    solved = [r["time"] for r in results if r["verdict"] in ("sat", "unsat") and not r["wrong"]]
    wrong = sum(r["wrong"] for r in results)
    head = ["instances", "solved", "sat", "unsat", "timeout", "unknown", "error", "wrong", "total s",
            "median s", "solved total s"]
    vals = [len(results), len(solved), counts["sat"], counts["unsat"], counts["timeout"], counts["unknown"],
            counts["error"], wrong, f"{sum(times):.1f}", f"{statistics.median(times):.2f}" if times else "-",
            f"{sum(solved):.1f}"]
    widths = [max(len(h), len(str(v))) for h, v in zip(head, vals)]
    line = lambda cells: "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", line(vals)])
