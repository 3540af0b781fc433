"""Per-network comparison of ``bnb run --out`` result files of the same suite under different settings.

    python benchmarks/suite_compare.py base=runs/mnist_base.csv mn=runs/mnist_mn.csv

For every network (the ``onnx`` column) and every labelled file: instances, solved (sat + unsat), wrong, median
and total wall time over all instances (timeouts counted at their time), median time of the solved ones,
and branches per solved instance (median and mean). Prints a markdown table; then, per pair of files, the
instances one solves and the other does not.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from bnb.runs.suite import read_results


def summary(rows):
    solved = [r for r in rows if r["verdict"] in ("sat", "unsat")]
    times = [r["time"] for r in rows]
    br = [r["branches"] for r in solved]
    med = lambda v: statistics.median(v) if v else float("nan")  # noqa: E731
    return {"n": len(rows), "solved": len(solved), "sat": sum(r["verdict"] == "sat" for r in solved),
            "wrong": sum(r["wrong"] for r in rows),
            "median_s": med(times), "total_s": sum(times), "solved_median_s": med([r["time"] for r in solved]),
            "br_median": med(br), "br_mean": statistics.fmean(br) if br else float("nan")}


def main(argv):
    if not argv or any("=" not in a for a in argv):
        sys.exit("usage: suite_compare.py LABEL=results.csv [LABEL=results.csv ...]")
    runs = {a.split("=", 1)[0]: read_results(Path(a.split("=", 1)[1])) for a in argv}
    nets = sorted({Path(r["onnx"]).stem for rows in runs.values() for r in rows})
    print("| network | setting | instances | solved (sat) | wrong | median s | total s | median s solved "
          "| branches per solved: median / mean |")
    print("|---|---|---|---|---|---|---|---|---|")
    for net in nets + ["all"]:
        for label, rows in runs.items():
            sel = [r for r in rows if net == "all" or Path(r["onnx"]).stem == net]
            s = summary(sel)
            print(f"| {net} | {label} | {s['n']} | {s['solved']} ({s['sat']}) | {s['wrong']} | {s['median_s']:.1f} "
                  f"| {s['total_s']:.0f} | {s['solved_median_s']:.1f} | {s['br_median']:.0f} / {s['br_mean']:.0f} |")
    labels = list(runs)
    key = lambda r: (r["onnx"], r["vnnlib"])  # noqa: E731
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            va = {key(r): r for r in runs[a]}
            vb = {key(r): r for r in runs[b]}
            ok = lambda r: r is not None and r["verdict"] in ("sat", "unsat")  # noqa: E731
            only_a = [k for k in va if ok(va[k]) and not ok(vb.get(k))]
            only_b = [k for k in vb if ok(vb[k]) and not ok(va.get(k))]
            fmt = lambda ks: ", ".join(f"{Path(o).stem}/{Path(v).stem}" for o, v in ks) or "none"  # noqa: E731
            print(f"\nsolved by {a} only: {fmt(only_a)}\nsolved by {b} only: {fmt(only_b)}")


if __name__ == "__main__":
    main(sys.argv[1:])
