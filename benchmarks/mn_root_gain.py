"""Root bound of mn-crown against alpha-CROWN, instance by instance, on a benchmark's instances.csv.

For every (network, property) row: the worst polytope margin ``min_i (lb_i - d_i)`` of the root box with
alpha-CROWN and with mn-crown (alpha-CROWN, then multi-neuron constraints with optimised multipliers: k-neuron
group hulls, Anderson cuts or both, ``--cuts``), their times, the number of constraints, and the share of a negative
alpha margin that mn-crown closes. Prints a markdown table and the median gain; one thread.

    python benchmarks/mn_root_gain.py ../shared/benchmarks/mnist_fc [--every 3] [--iters 50] [--k 2] [--cuts both]
        [--select TEXT] [--limit N] [--tighten] [--alpha-lr 0.3] [--hull-cuts 64]

On sigmoid / tanh / softplus networks mn-crown's constraints are the multi-input hull cuts of
:mod:`relaxations.hull_cuts` (``--hull-cuts`` per layer; ``--cuts`` is ReLU's); the constraints column then reads
the cuts kept of those tried per layer, and their seconds.

``--tighten``: also mn-crown with ``bounds.mn_tighten`` (intermediate bounds re-bounded layer by layer with the
earlier layers' constraints), in the same run: its margin, time, and the unstable neurons per layer before
(alpha-CROWN's bounds) and after.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bnb.engine.rows import Rows  # noqa: E402
from bnb.io.onnx_loader import load_onnx  # noqa: E402
from bnb.io.vnnlib import parse_vnnlib  # noqa: E402
from relaxations.fp import outward_box  # noqa: E402
from relaxations.methods import bound_rows  # noqa: E402
from relaxations.options import BoundOptions, MultiNeuronOptions  # noqa: E402
from relaxations.state import DomainState  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("benchmark", type=Path, help="folder with instances.csv, onnx/ and vnnlib/")
    ap.add_argument("--every", type=int, default=1, help="every k-th row of instances.csv")
    ap.add_argument("--select", default=None, help="only rows whose 'onnx,vnnlib' contains this text")
    ap.add_argument("--limit", type=int, default=None, help="at most this many rows (after --every and --select)")
    ap.add_argument("--iters", type=int, default=50, help="alpha (and mn) iterations")
    ap.add_argument("--k", type=int, default=2, help="neurons per group hull")
    ap.add_argument("--groups", type=int, default=64, help="groups per layer")
    ap.add_argument("--cuts", default="hull", choices=("hull", "anderson", "both"), help="constraint sources")
    ap.add_argument("--time", type=float, default=60.0, help="time budget per constraint source, seconds")
    ap.add_argument("--tighten", action="store_true", help="also mn-crown with the intermediate bounds tightened")
    ap.add_argument("--alpha-lr", type=float, default=BoundOptions().alpha_lr, help="Adam step of the slopes")
    ap.add_argument("--hull-cuts", type=int, default=MultiNeuronOptions().hull_cuts,
                    help="hull cuts per sigmoid / tanh / softplus layer")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows_csv = list(csv.reader(open(args.benchmark / "instances.csv")))[::args.every]
    if args.select:
        rows_csv = [r for r in rows_csv if args.select in f"{r[0]},{r[1]}"]
    rows_csv = rows_csv[:args.limit]
    extra = " tightened margin | tightened s | unstable before | unstable after |" if args.tighten else ""
    print("| network | property | alpha margin | mn-crown margin | gain | closed | alpha s | mn-crown s "
          "| constraints |" + extra)
    print("|---|---|---|---|---|---|---|---|---|" + "---|" * (4 if args.tighten else 0))
    gains, closed, models = [], [], {}
    for onnx, vnnlib, *_ in rows_csv:
        model = models.get(onnx) or models.setdefault(onnx, load_onnx(args.benchmark / onnx))
        net = model.network.to(dtype=torch.float32)
        spec = parse_vnnlib(args.benchmark / vnnlib, net.in_size, net.out_size).specs[0]
        lo, hi = outward_box(spec.lower, spec.upper, net.dtype, net.device)
        rows = Rows(spec.disjuncts, net.out_size, net.dtype, net.device)
        state = DomainState(lo[None], hi[None])
        t0 = time.perf_counter()
        a = bound_rows(net, state, rows.C, "alpha", BoundOptions(alpha_lr=args.alpha_lr), iters=args.iters)
        ta = time.perf_counter() - t0
        t0 = time.perf_counter()
        mn = MultiNeuronOptions(k=args.k, max_groups=args.groups, time_budget=args.time, cuts=args.cuts,
                                hull_cuts=args.hull_cuts)
        m = bound_rows(net, state, rows.C, "mn-crown", BoundOptions(alpha_lr=args.alpha_lr, mn=mn), iters=args.iters)
        tm = time.perf_counter() - t0
        va, vm = float(rows.group_values(a.lb).min()), float(rows.group_values(m.lb).min())
        n_cons = sum(c.count for c in (m.constraints or []) if c is not None)
        gains.append(vm - va)
        share = "" if va >= 0 else f"{min(vm - va, -va) / -va:.0%}"
        if va < 0:
            closed.append(min(vm - va, -va) / -va)
        extra = ""
        if args.tighten:
            t0 = time.perf_counter()
            mt = MultiNeuronOptions(k=args.k, max_groups=args.groups, time_budget=args.time, cuts=args.cuts,
                                    tighten=True, tighten_time=args.time)
            t = bound_rows(net, state, rows.C, "mn-crown", BoundOptions(mn=mt), iters=args.iters)
            tt = time.perf_counter() - t0
            st = t.stats or {}
            extra = (f" {float(rows.group_values(t.lb).min()):.4f} | {tt:.1f} | {st.get('mn_unstable_before', '')} | "
                     f"{st.get('mn_unstable_after', '')} |")
        if m.stats and "hull_cuts_kept" in m.stats:  # sigmoid / tanh / softplus: kept of tried, per layer
            n_cons = f"{m.stats['hull_cuts_kept']} of {m.stats['hull_cuts_tried']} ({m.stats['time_hull_cuts']:.1f} s)"
        print(f"| {Path(onnx).stem} | {Path(vnnlib).stem} | {va:.4f} | {vm:.4f} | {vm - va:+.4f} | {share} | "
              f"{ta:.1f} | {tm:.1f} | {n_cons} |" + extra, flush=True)
    print(f"\n{len(gains)} instances; median gain {statistics.median(gains):+.4f}, "
          f"mean {statistics.mean(gains):+.4f}, min {min(gains):+.4f}, max {max(gains):+.4f}")
    if closed:
        print(f"{len(closed)} with a negative alpha margin: median share closed {statistics.median(closed):.0%}")

if __name__ == "__main__":
    main()
