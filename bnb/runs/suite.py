"""``bnb run``: a VNN-COMP ``instances.csv`` suite, with progress, incremental results and a summary.

Rows are ``onnx,vnnlib,timeout`` relative to the CSV's folder. When an ``expected.csv`` lies beside it,
every verdict is compared: ``sat`` against an expected ``unsat`` (or the reverse) is *wrong*.

Each instance runs in a worker process (:mod:`bnb.runs.worker`), so that nothing one instance does (a
timeout, a crash, running out of memory) changes another's answer. The results CSV is appended one
complete row (one line) at a time, flushed and fsynced; ``resume`` continues a killed suite from it.
"""
from __future__ import annotations

import csv
import io
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bnb.errors import BnbError
from bnb.results import Verdict, write_atomic

FIELDS = ["onnx", "vnnlib", "verdict", "time", "expected", "wrong", "branches", "domains", "max_queue", "message"]


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


def _clean(text) -> str:
    """One line: a row of the results CSV never spans lines (so a truncated last line is detectable)."""
    return " ".join(str(text).split())


def _typed(rec: dict) -> dict:
    out = dict(rec)
    out["time"] = float(out["time"])
    out["wrong"] = int(out["wrong"])
    for k in ("branches", "domains", "max_queue"):
        try:
            out[k] = int(float(out[k]))
        except ValueError:
            out[k] = 0
    return out


def read_results(path: Path) -> list[dict]:
    """The complete rows of a results CSV written by :class:`ResultsFile` (typed as :func:`run_suite`'s).

    A row is complete when its line ends with a newline, has every field and a known verdict; anything
    else (a suite killed in the middle of a write) is dropped, so that instance is run again.
    """
    return _read(path)[0]


def _read(path: Path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        return [], True
    lines = text.split("\n")
    complete = lines[:-1]  # the last element is "" after a final newline, else a truncated row
    clean = lines[-1] == ""
    if not complete or complete[0].split(",") != FIELDS:
        if text.strip():
            raise BnbError(f"not a results file of 'bnb run' (header {','.join(FIELDS)} expected)", path)
        return [], False
    verdicts = {v.value for v in Verdict}
    rows = []
    for line in complete[1:]:
        recs = list(csv.reader([line]))
        if len(recs) != 1 or len(recs[0]) != len(FIELDS) or recs[0][2] not in verdicts:
            clean = False
            continue
        try:
            rows.append(_typed(dict(zip(FIELDS, recs[0]))))
        except ValueError:
            clean = False
    return rows, clean


class ResultsFile:
    """The suite CSV: a header, then one complete row per instance, each flushed and fsynced.

    ``resume``: keep the complete rows of an existing file (a truncated or malformed last row is dropped,
    the file rewritten atomically without it) and append after them; otherwise start a new file.
    """

    def __init__(self, path: Path, resume: bool = False):
        self.path = path
        self.previous: list[dict] = []
        if resume and path.exists():
            self.previous, clean = _read(path)
            if not clean:
                write_atomic(path, self._format_header() + "".join(self._format(r) for r in self.previous))
            self.fh = path.open("a", newline="")
        else:
            self.fh = path.open("w", newline="")
            self.fh.write(self._format_header())
            self._sync()

    @staticmethod
    def _format_header() -> str:
        return ",".join(FIELDS) + "\n"

    @staticmethod
    def _format(rec: dict) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow([_clean(rec.get(k, "")) for k in FIELDS])
        return buf.getvalue()

    def _sync(self):
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def append(self, rec: dict):
        self.fh.write(self._format(rec))  # one write of one complete line
        self._sync()

    def close(self):
        self.fh.close()


def run_suite(instances: Path, cfg, out: Path | None, echo, timeout=None, limit=None, select=None,
              workers: int = 1, grace: float = 10.0, memory_mb: float | None = None, resume: bool = False,
              hook=None, on_row=None, ray_address: str | None = None, keep=None, certificates: Path | None = None):
    """Run every instance; returns the list of result dicts (also appended to ``out`` as they finish).

    ``workers``: instances run at a time, each in its own worker process (:mod:`bnb.runs.worker`), which the
    parent kills and replaces when it overruns its timeout by ``grace`` seconds (row ``timeout``) or dies
    (row ``error``, the signal or exit code named); ``memory_mb`` caps each worker's address space.
    ``workers=0`` runs in this process (no isolation: a crash ends the suite; for debugging).
    ``resume``: keep the rows already in ``out`` (matched on onnx and vnnlib) and run only the others.
    ``hook``: tests only, a picklable ``hook(task)`` run before each instance (in the worker).
    ``keep(rows)``: instead of ``select``/``limit``, the instances to run, chosen from all of the file's.
    ``on_row(rec)``: called with each new row as it is recorded (e.g. a progress bar).
    ``ray_address``: spread the instances over the Ray cluster there (:mod:`bnb.runs.ray_pool`): ``workers``
    instances at a time, each in a worker process of its own on some node, with the same limits.
    ``certificates``: a folder where each unsat answer's proof is written (``<onnx stem>__<vnnlib stem>.npz``;
    the row's message names the file, or says why none could be written).
    """
    from bnb.runs.worker import Task, WorkerPool, run_task
    folder = instances.parent
    rows = read_instances(instances)
    if keep is not None:
        rows = keep(rows)
    if select:
        rows = [r for r in rows if select in f"{r.onnx},{r.vnnlib}"]
    if limit:
        rows = rows[:limit]
    expected = read_expected(folder)
    results = []
    sink = ResultsFile(out, resume) if out is not None else None
    if sink is not None and sink.previous:
        wanted = {(r.onnx, r.vnnlib) for r in rows}
        results = [r for r in sink.previous if (r["onnx"], r["vnnlib"]) in wanted]
        done = {(r["onnx"], r["vnnlib"]) for r in sink.previous}
        skipped = len(rows)
        rows = [r for r in rows if (r.onnx, r.vnnlib) not in done]
        echo(f"resuming {out}: {skipped - len(rows)} instance(s) already done, {len(rows)} to run")
    total = len(rows)
    t_suite = time.monotonic()
    if certificates is not None:
        certificates.mkdir(parents=True, exist_ok=True)

    def certificate(row):
        if certificates is None:
            return None
        return str(certificates / f"{Path(row.onnx).stem}__{Path(row.vnnlib).stem}.npz")

    tasks = [Task(k, str(folder / row.onnx), str(folder / row.vnnlib), timeout or row.timeout, cfg, hook,
                  certificate(row)) for k, row in enumerate(rows)]

    def record(task, res, elapsed, n_done):
        row = rows[task.key]
        exp = expected.get((row.onnx, row.vnnlib))
        verdict, stats = res["verdict"], res["stats"]
        rec = {"onnx": row.onnx, "vnnlib": row.vnnlib, "verdict": verdict, "time": round(elapsed, 3),
               "expected": exp or "", "wrong": int(is_wrong(verdict, exp)),
               "branches": stats.get("branches", 0), "domains": stats.get("domains_bounded", 0),
               "max_queue": stats.get("max_queue", 0), "message": _clean(res["message"])}
        results.append(rec)
        if sink is not None:
            sink.append(rec)
        if on_row is not None:
            on_row(rec)
        flag = "  WRONG" if rec["wrong"] else ""
        echo(f"[{n_done}/{total}] {Path(row.onnx).stem} {Path(row.vnnlib).stem}: {verdict} in {elapsed:.2f}s"
             f"{f' (expected {exp})' if exp else ''}{flag}  [total {time.monotonic() - t_suite:.0f}s]")

    try:
        if workers <= 0 and not ray_address:
            for n_done, task in enumerate(tasks, start=1):
                t0 = time.monotonic()
                res = run_task(task)
                record(task, res, time.monotonic() - t0, n_done)
        elif tasks:
            if ray_address:
                from bnb.runs.ray_pool import RayPool
                pool_cm = RayPool(ray_address, workers, cfg, memory_mb, grace, echo)
            else:
                pool_cm = WorkerPool(workers, cfg, memory_mb, grace, echo)
            with pool_cm as pool:
                for n_done, (task, res, wall) in enumerate(pool.run(tasks), start=1):
                    record(task, res, wall, n_done)
                if pool.warmups:
                    echo(f"worker warm-up: {pool.warmups[0]:.2f}s for the first worker (starting the fork "
                         f"server and importing torch)"
                         + (f", median {statistics.median(pool.warmups[1:]):.3f}s for the {len(pool.warmups) - 1} "
                            f"later one(s)" if len(pool.warmups) > 1 else "")
                         + f"; {pool.replaced} replaced")
    finally:
        if sink is not None:
            sink.close()
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
