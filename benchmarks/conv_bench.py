"""Root bounding time per method on convolutional networks (issue 13, item 2).

    python benchmarks/conv_bench.py [--methods ibp crown alpha] [--iters 20] [--threads 1] [--bench-dir DIR]
        [--skip-oval] [--skip-ts] [--ts-length 640] [--free 16] [--instance ONNX VNNLIB ...] [--repeats 1]

Networks:

- every network of ``oval21`` in the benchmark folder (CIFAR conv nets), on the input box of the first
  instance that uses it, with the property's rows ``C``;
- each ``--instance ONNX VNNLIB`` (paths relative to ``--bench-dir``; any network, e.g. an ACAS Xu or
  mnist_fc chain), on the first input box of the property with its rows ``C``;
- a generated 1-D time-series CNN (exported from torch with ``Conv1d``, read through the graph loader):
  ``Conv1d(2, 8, 5, pad 2) - ReLU - Conv1d(8, 8, 5, stride 2, pad 2) - ReLU - Conv1d(8, 4, 3, pad 1) - ReLU -
  Linear(., 32) - ReLU - Linear(32, 4)``; with ``--ts-length 640`` it has ~10k ReLUs. The input box fixes every
  input except ``--free`` consecutive time steps of width 0.2 (the "most inputs fixed" case of the issue);
  ``C`` is the 3 rows ``y_0 - y_j``.

Each (network, method) is bounded once to warm up and then timed ``--repeats`` times (``time.perf_counter``,
float32, CPU, ``--threads`` torch threads); printed: the median seconds, the ReLU count, the number of unstable
neurons at the root (after CROWN) and the mean and smallest lower bound of the rows.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bnb.io.onnx_loader import load_onnx  # noqa: E402
from bnb.io.vnnlib import parse_vnnlib  # noqa: E402
from relaxations.methods import bound_rows  # noqa: E402
from relaxations.state import DomainState  # noqa: E402


class TimeSeriesCNN(torch.nn.Module):
    def __init__(self, length, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = torch.nn.Sequential(
            torch.nn.Conv1d(2, 8, 5, padding=2), torch.nn.ReLU(),
            torch.nn.Conv1d(8, 8, 5, stride=2, padding=2), torch.nn.ReLU(),
            torch.nn.Conv1d(8, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
            torch.nn.Linear(4 * ((length + 1) // 2), 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        for p in self.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.data = torch.randn(p.shape, generator=g) * (1.0 / fan_in ** 0.5 if p.dim() > 1 else 0.1)

    def forward(self, x):
        return self.body(x)


def time_series_case(length, free, folder):
    from tests.conftest import export_onnx
    path = export_onnx(TimeSeriesCNN(length), (2, length), Path(folder) / f"ts_cnn_{length}.onnx")
    net = load_onnx(path).network
    rng = np.random.default_rng(0)
    x0 = rng.normal(0, 1, net.in_size)
    lo, hi = x0.copy(), x0.copy()
    start = length // 2
    for c in range(2):  # `free` consecutive time steps of both channels
        lo[c * length + start:c * length + start + free] -= 0.1
        hi[c * length + start:c * length + start + free] += 0.1
    C = np.zeros((3, net.out_size))
    C[:, 0] = 1.0
    for j in range(1, 4):
        C[j - 1, j] = -1.0
    return f"ts_cnn_L{length}_free{free}", net, lo, hi, C


def instance_case(bench: Path, onnx_rel: str, vnn_rel: str, name: str | None = None):
    net = load_onnx(bench / onnx_rel).network
    spec = parse_vnnlib(bench / vnn_rel, net.in_size, net.out_size).specs[0]
    C = np.vstack([np.atleast_2d(d.C) for d in spec.disjuncts])
    name = name or f"{Path(onnx_rel).stem}/{Path(vnn_rel).stem}"
    return name, net, np.asarray(spec.lower, float), np.asarray(spec.upper, float), C


def oval_cases(bench: Path):
    rows = list(csv.reader(open(bench / "instances.csv")))
    seen = set()
    for onnx_rel, vnn_rel, _ in rows:
        if onnx_rel in seen:
            continue
        seen.add(onnx_rel)
        yield instance_case(bench, onnx_rel, vnn_rel, Path(onnx_rel).stem)


def bound(net, lo, hi, C, method, iters):
    state = DomainState(torch.tensor(lo, dtype=torch.float32)[None], torch.tensor(hi, dtype=torch.float32)[None])
    Ct = torch.tensor(C, dtype=torch.float32)
    t0 = time.perf_counter()
    res = bound_rows(net, state, Ct, method, iters=iters)
    return time.perf_counter() - t0, res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["ibp", "crown", "alpha"])
    ap.add_argument("--iters", type=int, default=20, help="alpha-CROWN steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench-dir", default=str(ROOT.parent / "shared" / "benchmarks"))
    ap.add_argument("--skip-oval", action="store_true")
    ap.add_argument("--skip-ts", action="store_true")
    ap.add_argument("--ts-length", type=int, default=640)
    ap.add_argument("--free", type=int, default=16)
    ap.add_argument("--instance", nargs=2, action="append", default=[], metavar=("ONNX", "VNNLIB"),
                    help="also bound this instance (paths relative to --bench-dir); repeatable")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per (network, method); the median is printed")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        if not a.skip_ts:
            cases.append(time_series_case(a.ts_length, a.free, tmp))
        cases += [instance_case(Path(a.bench_dir), onnx_rel, vnn_rel) for onnx_rel, vnn_rel in a.instance]
        if not a.skip_oval:
            oval = Path(a.bench_dir) / "oval21"
            if oval.is_dir():
                cases += list(oval_cases(oval))
            else:
                print(f"(no {oval}: oval21 skipped)")
        print(f"{'network':<40} {'relus':>7} {'unstable':>8} {'method':>7} {'seconds':>9} {'mean lb':>10} "
              f"{'min lb':>10}")
        for name, net, lo, hi, C in cases:
            net = net.to(dtype=torch.float32)
            relus = sum(net.layers[i].out_size for i in net.relu_indices())
            _, cr = bound(net, lo, hi, C, "crown", a.iters)
            unstable = sum(int(((l < 0) & (u > 0)).sum()) for l, u in cr.pre_bounds)
            for method in a.methods:
                bound(net, lo, hi, C, method, a.iters)  # warm-up
                runs = [bound(net, lo, hi, C, method, a.iters) for _ in range(max(1, a.repeats))]
                secs, res = statistics.median(r[0] for r in runs), runs[-1][1]
                print(f"{name:<40} {relus:>7} {unstable:>8} {method:>7} {secs:>9.3f} {float(res.lb.mean()):>10.4g} "
                      f"{float(res.lb.min()):>10.4g}",
                      flush=True)


if __name__ == "__main__":
    main()
