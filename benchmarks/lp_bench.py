"""LP-method figures on real VNN-COMP networks (root domain): build/solve times per solver and the bound
improvement over IBP (and CROWN when :mod:`relaxations.crown` is present).

    python benchmarks/lp_bench.py [--rows 2] [--bench-dir ../shared/benchmarks]

Only lower bounds of the property rows ``C y`` are computed (one LP per row and method). The expensive
methods are limited so that the default run stays under ~5 minutes on a 2-core CPU; the limits are
printed with each figure.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bnb.io.onnx_loader import load_onnx
from bnb.io.vnnlib import parse_vnnlib
from relaxations.ibp import ibp
from relaxations.lp.anderson import anderson_bounds
from relaxations.lp.kneuron import kneuron_bounds
from relaxations.lp.layer_hull import P1TooLarge, p1_bounds
from relaxations.lp.model import NetworkLP
from relaxations.lp.triangle import refine_model


def load(bench, onnx, vnnlib):
    net = load_onnx(str(bench / onnx)).network
    spec = parse_vnnlib(str(bench / vnnlib), net.in_size, net.out_size).specs[0]
    C = np.vstack([np.atleast_2d(d.C) for d in spec.disjuncts])
    return net, np.asarray(spec.lower, float), np.asarray(spec.upper, float), C


def ibp_lb(net, lo, hi, C):
    l, u, _ = ibp(net.to(dtype=torch.float64), torch.tensor(lo).reshape(1, -1), torch.tensor(hi).reshape(1, -1))
    l, u = l.numpy()[0], u.numpy()[0]
    return np.maximum(C, 0) @ l + np.minimum(C, 0) @ u


def crown_lb(net, lo, hi, C, want_pre=False):
    try:
        from relaxations.crown import crown
        from relaxations.state import DomainState
    except ImportError:
        return None
    try:
        n64 = net.to(dtype=torch.float64)
        st = DomainState(torch.tensor(lo).reshape(1, -1), torch.tensor(hi).reshape(1, -1))
        res = crown(n64, st, torch.tensor(C))
        return (res.lb.reshape(-1).numpy(), res.pre_bounds) if want_pre else res.lb.reshape(-1).numpy()
    except Exception as exc:  # the CROWN module is someone else's work in progress
        print(f"    (CROWN unavailable: {exc})")
        return None


def lbs_triangle(model, C):
    out, times = [], []
    for row in C:
        c, c0 = model.output_objective(row)
        t = time.perf_counter()
        out.append(model.minimize(c, c0)[0])
        times.append(time.perf_counter() - t)
    return np.array(out), times


def line(name, lb, ref, extra=""):
    gi = lb - ref["ibp"]
    s = f"    {name:<34} lb={np.array2string(lb, precision=4)}  +IBP {gi.mean():9.4f}"
    if ref.get("crown") is not None:
        s += f"  +CROWN {(lb - ref['crown']).mean():9.4f}"
    print(s + ("  " + extra if extra else ""), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-dir", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks"))
    ap.add_argument("--rows", type=int, default=2, help="property rows bounded per instance")
    args = ap.parse_args()
    bench = Path(args.bench_dir)
    instances = [
        ("acasxu 1_1 prop_2", "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/vnnlib/prop_2.vnnlib", "full"),
        ("mnist 256x2 eps .03", "mnist_fc/onnx/mnist-net_256x2.onnx", "mnist_fc/vnnlib/prop_0_0.03.vnnlib", "mid"),
        ("mnist 256x4 eps .03", "mnist_fc/onnx/mnist-net_256x4.onnx", "mnist_fc/vnnlib/prop_0_0.03.vnnlib", "lp"),
        ("mnist 256x6 eps .03", "mnist_fc/onnx/mnist-net_256x6.onnx", "mnist_fc/vnnlib/prop_0_0.03.vnnlib", "lp"),
    ]
    t_all = time.perf_counter()
    for name, onnx, vnn, level in instances:
        net, lo, hi, C = load(bench, onnx, vnn)
        C = C[:args.rows]
        print(f"== {name}: {net.describe()}; {C.shape[0]} rows", flush=True)
        ref = {"ibp": ibp_lb(net, lo, hi, C)}
        ref["crown"] = crown_lb(net, lo, hi, C)
        line("IBP", ref["ibp"], ref)
        if ref["crown"] is not None:
            line("CROWN", ref["crown"], ref)
        for solver in ("HIGHS", "CLARABEL", "SCS"):
            t = time.perf_counter()
            model = NetworkLP(net, solver)
            dom = model.set_box(lo, hi)
            c, c0 = model.output_objective(C[0])
            model._problem(model.n_layers)  # compile (cvxpy canonicalisation, done once per network)
            build = time.perf_counter() - t
            lb, times = lbs_triangle(model, C)
            uns = [int((dom.phases(i) == 0).sum()) for i in range(model.n_layers)]
            line(f"triangle LP [{solver}]", lb, ref,
                 f"build {build:.2f}s, first LP {times[0]:.2f}s, next LPs {np.mean(times[1:] or times):.2f}s/LP;"
                 f" unstable {uns}")
        got = crown_lb(net, lo, hi, C, want_pre=True)
        if got is not None:
            t = time.perf_counter()
            model = NetworkLP(net, "HIGHS")
            model.set_box(lo, hi, pre_bounds=got[1])
            lb, _ = lbs_triangle(model, C)
            line("triangle LP, CROWN pre-bounds [HIGHS]", lb, ref, f"{time.perf_counter() - t:.1f}s")
        if level in ("full", "mid"):
            model = NetworkLP(net, "HIGHS")
            dom = model.set_box(lo, hi)
            if level == "full":
                t = time.perf_counter()
                n0 = len(model.solve_times)
                refine_model(model, dom)
                n_ref = len(model.solve_times) - n0
                lb, _ = lbs_triangle(model, C)
                line("triangle LP + LP refine [HIGHS]", lb, ref,
                     f"{time.perf_counter() - t:.1f}s ({n_ref} refinement LPs)")
            for k, oct_, groups in ((3, "lp" if level == "full" else "box", 2 if level == "full" else 20),):
                t = time.perf_counter()
                lb = kneuron_bounds(net, lo, hi, C=C, k=k, octahedron=oct_, max_groups=groups, model=model)[0]
                line(f"k-neuron k={k} oct={oct_} [HIGHS]", lb, ref,
                     f"{time.perf_counter() - t:.1f}s ({groups} groups/layer, {model.n_cuts()} facets)")
            t = time.perf_counter()
            lb = anderson_bounds(net, lo, hi, C=C, max_rounds=4, model=model)[0]
            line("Anderson cuts [HIGHS]", lb, ref,
                 f"{time.perf_counter() - t:.1f}s (<= 4 rounds, min and max, {model.n_cuts()} cuts)")
            try:
                p1_bounds(net, lo, hi, C=C, model=model)
            except P1TooLarge as exc:
                print(f"    P1 (layer hull)                    refused: {exc}")
        print(f"   [elapsed {time.perf_counter() - t_all:.0f}s]", flush=True)


if __name__ == "__main__":
    main()
