"""Cost of the rigorous rounding bound on one batch of beta-CROWN children (mnist_fc 256x4, prop_0_0.03).

Builds ``N`` children of the root (5% of the unstable neurons of every layer split at random, the root's
intermediate bounds kept), bounds them with beta-CROWN (``--iters`` steps) with and without
``rigorous`` (``bounds.fp_sound``), alternating, and prints the minimum of ``--repeats`` runs of each and their
ratio. One thread.

    python benchmarks/rigor_bench.py [--n 100] [--iters 10] [--repeats 5]
"""
from __future__ import annotations

import argparse
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
from relaxations.options import BoundOptions  # noqa: E402
from relaxations.state import DomainState  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "mnist_fc"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="children in the batch")
    ap.add_argument("--iters", type=int, default=10, help="beta-CROWN steps")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net = load_onnx(BENCH / "onnx" / "mnist-net_256x4.onnx").network.to(dtype=torch.float32)
    spec = parse_vnnlib(BENCH / "vnnlib" / "prop_0_0.03.vnnlib", net.in_size, net.out_size).specs[0]
    lo, hi = outward_box(spec.lower, spec.upper, net.dtype, net.device)
    rows = Rows(spec.disjuncts, net.out_size, net.dtype, net.device)
    root = bound_rows(net, DomainState(lo[None], hi[None]), rows.C, "alpha", iters=5)
    g = torch.Generator().manual_seed(0)
    N, splits, pre = args.n, [], []
    for l, u in root.pre_bounds:
        s = torch.zeros(N, l.shape[1], dtype=torch.int8)
        pick = (torch.rand(N, l.shape[1], generator=g) < 0.05) & ((l < 0) & (u > 0)).expand(N, -1)
        s[pick] = torch.where(torch.rand(int(pick.sum()), generator=g) < 0.5, 1, -1).to(torch.int8)
        splits.append(s)
        pre.append((l.expand(N, -1).clone(), u.expand(N, -1).clone()))
    state = DomainState(lo.expand(N, -1), hi.expand(N, -1), splits, pre)
    best = {True: float("inf"), False: float("inf")}
    for _ in range(args.repeats):
        for rigorous in (True, False):
            t0 = time.perf_counter()
            bound_rows(net, state, rows.C, "beta", BoundOptions(rigorous=rigorous), iters=args.iters)
            best[rigorous] = min(best[rigorous], time.perf_counter() - t0)
    print(f"{N} children, {args.iters} beta steps: rigorous {best[True]:.3f} s, plain {best[False]:.3f} s, "
          f"ratio {best[True] / best[False]:.3f}")


if __name__ == "__main__":
    main()
