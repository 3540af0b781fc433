"""``bnb study``: every instance of a suite under every branching heuristic, with otherwise identical settings.

Writes into ``DIR``:

- ``runs/<heuristic>.csv``: one results file of ``bnb run`` per heuristic (appended as rows arrive, so
  ``resume`` continues a killed study without redoing or losing a row);
- ``results.csv``: one row per instance and heuristic (verdict, time, branches, domains bounded, max queue);
- ``summary.md``: per heuristic the solved and wrong counts, median and total time, and the median
  branches on the instances every heuristic solved;
- ``cactus.png`` (instances solved against time, one line per heuristic) and ``branches_<h>.png`` (log-log
  scatter of branches per instance, each heuristic against the baseline, the first one by default).

A heuristic is named as in the configuration (``babsr``, ``my_module:rule``, ``file.py:rule``),
optionally prefixed by its strategy, ``input=NAME`` / ``relu=NAME`` / ``activation=NAME`` (needed for a plug-in,
and for a built-in name that two strategies would have, unless ``bab.branching`` names one of them). The
strategy's ``bab.branching`` is set with it.
"""
from __future__ import annotations

import copy
import csv
import re
import statistics
from pathlib import Path

from bnb.errors import BnbError
from bnb.runs.suite import read_instances, run_suite

KINDS = ("input", "relu", "activation")  # the strategies whose heuristics a study compares
RESULT_FIELDS = ["heuristic", "onnx", "vnnlib", "verdict", "time", "expected", "wrong", "branches", "domains",
                 "max_queue"]


def parse_heuristics(text: str, branching: str = "auto") -> list[tuple[str, str, str]]:
    """``"h1,h2"`` -> ``[(label, kind, name)]``; ``kind`` is ``input``, ``relu`` or ``activation`` (a name that
    several strategies have is the configured ``branching``'s, else needs its prefix)."""
    from heuristics import names
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        kind, _, name = item.partition("=") if re.match(r"^(input|relu|activation)=", item) else ("", "", item)
        if not kind:
            kinds = [k for k in KINDS if name in names(k)]
            if len(kinds) > 1 and branching in kinds:
                kinds = [branching]
            if len(kinds) == 1:
                kind = kinds[0]
            elif branching in KINDS and ":" in name:
                kind = branching
            else:
                known = ", ".join(sorted(set().union(*(names(k) for k in KINDS))))
                raise BnbError(f"heuristic {name!r}: not a built-in one of exactly one strategy ({known}); name it "
                               "as input=NAME, relu=NAME or activation=NAME (a plug-in: NAME = module:function)",
                               "--heuristics")
        out.append((item, kind, name))
    if not out:
        raise BnbError("no heuristic given", "--heuristics")
    if len({label for label, _, _ in out}) != len(out):
        raise BnbError("a heuristic is named twice", "--heuristics")
    return out


def _file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def run_study(instances: Path, heuristics: str, cfg, out: Path, echo, timeout=None, limit=None, select=None,
              workers=1, grace=10.0, memory_mb=None, resume=False, ray_address=None, baseline=None,
              progress=True, hook=None, every=1):
    """Run the study; returns the rows of ``results.csv`` (dicts). ``every``: only every k-th instance
    (after ``select``, before ``limit``): a sample across a suite ordered by property."""
    from bnb.engine.context import check_heuristics
    items = parse_heuristics(heuristics, cfg.bab.branching)
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs").mkdir(exist_ok=True)
    rows = _select(read_instances(instances), select, every, limit)
    bar = _progress_bar(len(rows) * len(items), progress)
    say = bar.write if bar is not None else echo
    results = []
    try:
        for label, kind, name in items:
            c = copy.deepcopy(cfg)
            c.bab.branching = kind
            setattr(c.bab, f"{kind}_heuristic", name)
            check_heuristics(c)  # a bad name is bad input before anything runs
            run_file = out / "runs" / f"{_file_label(label)}.csv"
            say(f"heuristic {label}: {run_file}")

            def on_row(rec, label=label):
                if bar is not None:
                    bar.set_postfix_str(f"{label}: {Path(rec['vnnlib']).stem} {rec['verdict']}", refresh=False)
                    bar.update(1)

            quiet = (lambda m: None) if bar is not None else echo
            res = run_suite(instances, c, run_file, quiet, timeout, workers=workers, grace=grace, memory_mb=memory_mb,
                            resume=resume, hook=hook, on_row=on_row, ray_address=ray_address,
                            keep=lambda rs: _select(rs, select, every, limit))
            results += [{"heuristic": label, **{k: r.get(k, "") for k in RESULT_FIELDS[1:]}} for r in res]
            write_results(out / "results.csv", results)
    finally:
        if bar is not None:
            bar.close()
    labels = [label for label, _, _ in items]
    write_summary(out, results, labels, baseline or labels[0], instances, cfg, timeout)
    return results


def _select(rows, select, every, limit):
    if select:
        rows = [r for r in rows if select in f"{r.onnx},{r.vnnlib}"]
    rows = rows[::max(1, int(every))]
    return rows[:limit] if limit else rows


def _progress_bar(total, enabled):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run", dynamic_ncols=True)


def write_results(path: Path, results):
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, RESULT_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(results)


def read_study(path: Path) -> list[dict]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["time"], r["wrong"] = float(r["time"]), int(r["wrong"])
        for k in ("branches", "domains", "max_queue"):
            r[k] = int(float(r[k] or 0))
    return rows


def _solved(r) -> bool:
    return r["verdict"] in ("sat", "unsat") and not r["wrong"]


def summarize(results, labels) -> list[dict]:
    """Per heuristic: instances, solved, wrong, timeouts, median/total time, median branches on the
    instances every heuristic solved (``common``)."""
    by = {h: {(r["onnx"], r["vnnlib"]): r for r in results if r["heuristic"] == h} for h in labels}
    keys = set.intersection(*(set(v) for v in by.values())) if by else set()
    common = [k for k in keys if all(_solved(by[h][k]) for h in labels)]
    out = []
    for h in labels:
        rs = list(by[h].values())
        times = [r["time"] for r in rs]
        br = [by[h][k]["branches"] for k in common]
        out.append({"heuristic": h, "instances": len(rs), "solved": sum(map(_solved, rs)),
                    "wrong": sum(r["wrong"] for r in rs),
                    "timeout": sum(r["verdict"] == "timeout" for r in rs),
                    "median_s": statistics.median(times) if times else float("nan"), "total_s": sum(times),
                    "median_branches_common": statistics.median(br) if br else float("nan"), "common": len(common)})
    return out


def write_summary(out: Path, results, labels, baseline, instances, cfg, timeout):
    rows = summarize(results, labels)
    n_common = rows[0]["common"] if rows else 0
    lines = [f"# Study: {instances}", "",
             f"Heuristics: {', '.join(labels)}; instance timeout: {timeout if timeout else 'as in the instances file'}"
             f"; children bounded with `{cfg.bab.input_method}` (input) / `{cfg.bab.relu_method}` (ReLU) / "
             f"`{cfg.bab.activation_method}` (activation); "
             f"batch size {cfg.bab.batch_size}.", "",
             "| heuristic | instances | solved | wrong | timeout | median s | total s | "
             f"median branches ({n_common} solved by all) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        mb = r["median_branches_common"]
        lines.append(f"| {r['heuristic']} | {r['instances']} | {r['solved']} | {r['wrong']} | {r['timeout']} | "
                     f"{r['median_s']:.2f} | {r['total_s']:.1f} | {'-' if mb != mb else f'{mb:g}'} |")
    plots = plot_study(out, results, labels, baseline)
    if plots:
        lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def plot_study(out: Path, results, labels, baseline) -> list[Path]:
    """The cactus plot and the branch scatters; [] when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for h in labels:
        times = sorted(r["time"] for r in results if r["heuristic"] == h and _solved(r))
        ax.step(times, range(1, len(times) + 1), where="post", label=f"{h} ({len(times)})")
    ax.set_xlabel("time limit per instance (s)")
    ax.set_ylabel("instances solved")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out / "cactus.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    base = {(r["onnx"], r["vnnlib"]): r for r in results if r["heuristic"] == baseline}
    for h in labels:
        if h == baseline:
            continue
        pairs = [(base[k]["branches"] + 1, r["branches"] + 1, _solved(base[k]) and _solved(r))
                 for r in results if r["heuristic"] == h and (k := (r["onnx"], r["vnnlib"])) in base]
        if not pairs:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for solved, style in ((True, dict(c="tab:blue", label="both solved")),
                              (False, dict(c="tab:red", marker="x", label="a timeout"))):
            xs = [p[0] for p in pairs if p[2] == solved]
            ys = [p[1] for p in pairs if p[2] == solved]
            if xs:
                ax.scatter(xs, ys, s=14, **style)
        top = max(max(p[0] for p in pairs), max(p[1] for p in pairs)) * 2
        ax.plot([1, top], [1, top], "k--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"branches + 1, {baseline}")
        ax.set_ylabel(f"branches + 1, {h}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(out / f"branches_{_file_label(h)}.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
