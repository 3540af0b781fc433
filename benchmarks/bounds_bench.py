"""Bounding throughput and tightness of the single-neuron relaxations (IBP, CROWN, alpha-CROWN).

    python benchmarks/bounds_bench.py [--quick] [--device cpu|cuda] [--threads N] [--bench-dir DIR]
        [--methods ibp,crown,alpha,beta,mn-crown] [--skip-tightness]

Part 1 (throughput): subdomains bounded per second (lower bounds of the property rows ``C y``, float32)
for ACAS Xu 1_1 (random sub-boxes of prop_3's box, C = prop_3's 4 rows) and mnist_fc 256x6 (random
sub-boxes of prop_0_0.03's box, C = the 9 rows of the robustness property), at batch sizes 1, 64, 1024 and
16384, on the CPU and on the GPU when one is available (or only on ``--device``). Each (method, batch)
is warmed up once (the same batch when that is cheap; otherwise the smaller batches already run serve as
warm-up), then timed ``--repeats`` times with ``time.perf_counter`` (fewer when one call is long); the
median is reported. A combination is skipped, with the reason printed, when its estimated time (per-domain
time of the previous batch size x batch) exceeds the per-combination budget or its estimated memory
exceeds ``--mem-gb``.

Part 2 (tightness): the gap ``MILP min - method lb`` per property row, averaged over a few tiny boxes
(5 sub-boxes of ACAS prop_3's box; 3 eps=0.002 boxes around prop_0's mnist image for the 256x2 network),
with the exact MILP optimum (:func:`relaxations.milp.milp_bounds`, HiGHS) as ground truth. Bounds here
are computed in float64 so that the gap is not polluted by float32 rounding.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bnb.io.onnx_loader import load_onnx
from bnb.io.vnnlib import parse_vnnlib
from relaxations.methods import bound_rows
from relaxations.state import DomainState

METHODS = ("ibp", "crown", "alpha")
BATCHES = (1, 64, 1024, 16384)


def load(bench: Path, onnx: str, vnnlib: str):
    net = load_onnx(str(bench / onnx)).network
    spec = parse_vnnlib(str(bench / vnnlib), net.in_size, net.out_size).specs[0]
    C = np.vstack([np.atleast_2d(d.C) for d in spec.disjuncts])
    return net, np.asarray(spec.lower, float), np.asarray(spec.upper, float), C


def row_label(c) -> str:
    terms = []
    for j, v in enumerate(c):
        if v == 0:
            continue
        s = "+" if v > 0 else "-"
        mag = "" if abs(v) == 1 else f"{abs(v):g}*"
        terms.append(f"{s}{mag}y{j}")
    out = "".join(terms)
    return out[1:] if out.startswith("+") else out


def sub_boxes(lo, hi, n, rng, frac=None):
    """``n`` random sub-boxes of ``[lo, hi]``: two uniform points per dim (sorted), or, with ``frac``,
    boxes of width ``frac * (hi - lo)`` at a uniform position."""
    lo, hi = np.asarray(lo), np.asarray(hi)
    if frac is None:
        a, b = rng.random((n, lo.size)), rng.random((n, lo.size))
        s, t = np.minimum(a, b), np.maximum(a, b)
    else:
        s = rng.random((n, lo.size)) * (1 - frac)
        t = s + frac
    w = hi - lo
    return lo + s * w, lo + t * w


def alpha_floats_per_domain(net, m):
    """Rough count of the float32s alpha-CROWN keeps per domain: the slopes (final rows and 2 n_j rows per
    intermediate layer j, over every earlier ReLU layer), their gradients and Adam moments, and the
    back-substitution matrices autograd keeps."""
    sizes = [int(np.prod(net.layers[i].in_shape)) for i in net.relu_indices()]
    width = max(sizes + [net.in_size])
    slopes = m * sum(sizes) + sum(2 * sizes[j] * sum(sizes[:j]) for j in range(1, len(sizes)))
    saved = sum(2 * sizes[j] * width * (j + 1) for j in range(len(sizes))) + m * width * len(sizes)
    return 4 * slopes + 3 * saved


def crown_floats_per_domain(net, m):
    sizes = [int(np.prod(net.layers[i].in_shape)) for i in net.relu_indices()]
    width = max(sizes + [net.in_size])
    return 4 * (2 * max(sizes + [m]) * width) + sum(sizes) * 4


def est_bytes(net, method, m, B):
    if method == "ibp":
        per = 4 * sum(int(np.prod(l.in_shape)) for l in net.layers) + 4 * m * net.out_size
    elif method == "crown":
        per = crown_floats_per_domain(net, m)
    else:
        per = alpha_floats_per_domain(net, m)
    return 4 * per * B


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(name, net, lo, hi, C, device, args, rng):
    n32 = net.to(device=device, dtype=torch.float32)
    Ct = torch.tensor(C, dtype=torch.float32, device=device)
    m = C.shape[0]
    per_domain = {}  # method -> seconds/domain measured at the last batch size that ran
    table = {}
    print(f"\n== {name} on {device} ({m} rows of C, alpha-CROWN: {args.alpha_iters} iterations) ==")
    for method in args.methods:
        for B in args.batches:
            est_mem = est_bytes(net, method, m, B)
            if est_mem > args.mem_gb * 2**30:
                why = f"estimated memory {est_mem / 2**30:.1f} GiB > --mem-gb {args.mem_gb:g}"
                print(f"  {method:6s} B={B:6d}: skipped ({why})")
                table[(method, B)] = None
                continue
            est_t = per_domain.get(method, 0.0) * B
            if est_t > args.budget:
                why = f"estimated {est_t:.0f} s per call > budget {args.budget:g} s"
                print(f"  {method:6s} B={B:6d}: skipped ({why})")
                table[(method, B)] = None
                continue
            blo, bhi = sub_boxes(lo, hi, B, rng)
            st = DomainState(torch.tensor(blo, dtype=torch.float32, device=device),
                             torch.tensor(bhi, dtype=torch.float32, device=device))

            def call(st=st, Ct=Ct, method=method):
                sync(device)
                t0 = time.perf_counter()
                bound_rows(n32, st, Ct, method, iters=args.alpha_iters)
                sync(device)
                return time.perf_counter() - t0

            warm = "same batch"
            if method not in per_domain or est_t < args.budget / 4:
                first = call()  # warm-up (also the time estimate when nothing smaller ran)
            else:
                first, warm = est_t, "smaller batches"
            reps = max(1, min(args.repeats, int(args.budget / max(first, 1e-9))))
            times = [call() for _ in range(reps)]
            t = statistics.median(times)
            per_domain[method] = t / B
            table[(method, B)] = B / t
            print(f"  {method:6s} B={B:6d}: {B / t:12.1f} domains/s  (median of {reps}, {t * 1e3:9.2f} ms/call,"
                  f" warm-up: {warm})")
    return table


def print_tables(name, device, table, batches):
    print(f"\n-- {name}, {device}: domains/s --")
    hdr = "| method | " + " | ".join(f"B={B}" for B in batches) + " |"
    print(hdr)
    print("|" + "---|" * (len(batches) + 1))
    methods = list(dict.fromkeys(method for method, _ in table))
    for method in methods:
        cells = [("skipped" if table.get((method, B)) is None else f"{table[(method, B)]:.1f}") for B in batches]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print(f"\n-- {name}, {device}: throughput ratios --")
    print("| ratio | " + " | ".join(f"B={B}" for B in batches) + " |")
    print("|" + "---|" * (len(batches) + 1))
    for a, b in (("crown", "ibp"), ("alpha", "ibp"), ("alpha", "crown")):
        cells = []
        for B in batches:
            x, y = table.get((a, B)), table.get((b, B))
            cells.append("-" if x is None or y is None else f"{x / y:.3g}")
        print(f"| {a}/{b} | " + " | ".join(cells) + " |")
    # batching gain: domains/s at the largest batch that ran vs B=1
    print()
    for method in methods:
        ran = [B for B in batches if table.get((method, B)) is not None]
        if len(ran) > 1 and table.get((method, ran[0])):
            print(f"  {method}: batching gain B={ran[-1]} vs B={ran[0]}: "
                  f"{table[(method, ran[-1])] / table[(method, ran[0])]:.1f}x")


def tightness(name, net, boxes, C, args):
    from relaxations.milp import milp_bounds

    n64 = net.to(dtype=torch.float64)
    Ct = torch.tensor(C, dtype=torch.float64)
    gaps = {mth: [] for mth in METHODS}
    milp_t = []
    for blo, bhi in boxes:
        t0 = time.perf_counter()
        mn, _ = milp_bounds(n64, blo, bhi, C)
        milp_t.append(time.perf_counter() - t0)
        st = DomainState(torch.tensor(blo).reshape(1, -1), torch.tensor(bhi).reshape(1, -1))
        for mth in METHODS:
            lb = bound_rows(n64, st, Ct, mth, iters=args.alpha_iters).lb.detach().numpy()[0]
            gaps[mth].append(mn - lb)
    print(f"\n-- tightness on {name}: {len(boxes)} boxes, gap = MILP min - lb, averaged over the boxes "
          f"(MILP: {statistics.median(milp_t):.2f} s median per box, min and max of every row) --")
    labels = [row_label(c) for c in C]
    print("| row | " + " | ".join(METHODS) + " |")
    print("|" + "---|" * (len(METHODS) + 1))
    for r, lab in enumerate(labels):
        print(f"| {lab} | " + " | ".join(f"{np.mean([g[r] for g in gaps[m]]):.4g}" for m in METHODS) + " |")
    print("| mean | " + " | ".join(f"{np.mean(gaps[m]):.4g}" for m in METHODS) + " |")
    neg = min(float(np.min(gaps[m])) for m in METHODS)
    if neg < -1e-6:
        print(f"  WARNING: a lower bound above the MILP minimum by {-neg:.3g} (unsound or MILP tolerance)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="batches 1 and 64 only, smaller budgets")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="only this device (default: CPU, then CUDA when available)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads (default 1: on the shared 2-core machine, 2 OpenMP threads made "
                         "small ops up to ~100x slower, see docs/performance.md); 0 keeps torch's default")
    ap.add_argument("--bench-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"))
    ap.add_argument("--alpha-iters", type=int, default=10)
    ap.add_argument("--batches", default=None, help="throughput part: comma-separated batch sizes (default "
                    "1,64,1024,16384; --quick: 1,64)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="throughput part: comma-separated methods among ibp, crown, alpha, beta, mn-crown (beta and "
                         "mn-crown bound unsplit sub-boxes: their optimisation and constraints, no splits)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=None, help="seconds allowed for one call (default 20; quick 5)")
    ap.add_argument("--mem-gb", type=float, default=8.0, help="skip combinations estimated above this")
    ap.add_argument("--skip-tightness", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.batches = tuple(int(b) for b in args.batches.split(",")) if args.batches else \
        (1, 64) if args.quick else BATCHES
    args.methods = tuple(m.strip() for m in args.methods.split(","))
    unknown = set(args.methods) - {"ibp", "crown", "alpha", "beta", "mn-crown"}
    if unknown:
        ap.error(f"unknown method(s) {', '.join(sorted(unknown))}")
    if args.budget is None:
        args.budget = 5.0 if args.quick else 20.0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    bench = Path(args.bench_dir)
    rng = np.random.default_rng(args.seed)
    devices = [torch.device(args.device)] if args.device else \
        [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, devices: {[str(d) for d in devices]}, "
          f"batches {args.batches}, budget {args.budget:g} s/call, mem cap {args.mem_gb:g} GiB, "
          f"alpha-CROWN {args.alpha_iters} iterations (lr 0.1)")
    t_start = time.perf_counter()

    acas = load(bench, "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/vnnlib/prop_3.vnnlib")
    mnist = load(bench, "mnist_fc/onnx/mnist-net_256x6.onnx", "mnist_fc/vnnlib/prop_0_0.03.vnnlib")
    results = []
    for device in devices:
        for name, (net, lo, hi, C) in (("ACAS Xu 1_1, prop_3", acas), ("mnist_fc 256x6, prop_0_0.03", mnist)):
            results.append((name, device, throughput(name, net, lo, hi, C, device, args, rng)))
    print("\n======== summary (markdown) ========")
    for name, device, table in results:
        print_tables(name, device, table, args.batches)
    print(f"\n(throughput part: {time.perf_counter() - t_start:.0f} s)")

    if not args.skip_tightness:
        net, lo, hi, C = acas
        blo, bhi = sub_boxes(lo, hi, 2 if args.quick else 5, rng, frac=0.05)
        tightness("ACAS Xu 1_1, prop_3 (sub-boxes of 5% width per input)", net, list(zip(blo, bhi)), C, args)
        m2, lo, hi, C = load(bench, "mnist_fc/onnx/mnist-net_256x2.onnx", "mnist_fc/vnnlib/prop_0_0.03.vnnlib")
        eps, r = 0.03, 0.002
        img = np.where(lo > 0, lo + eps, hi - eps)  # the box is [x - eps, x + eps] clipped to [0, 1]
        centres = [img] + [np.clip(img + rng.uniform(-0.02, 0.02, img.shape), lo, hi)
                           for _ in range(1 if args.quick else 2)]
        boxes = [(np.maximum(c - r, lo), np.minimum(c + r, hi)) for c in centres]
        tightness("mnist_fc 256x2, eps=0.002 boxes inside prop_0_0.03 (image, shifted images)", m2, boxes, C, args)
    print(f"\n(total: {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
