"""How loose the float32 evaluation-error bound is: ``relaxations.float_error.evaluation_error`` over a property's
box against the largest difference seen between onnxruntime and the float64 network at random float32 points.

    python benchmarks/float32_error.py [--bench ../shared/benchmarks] [--collins DIR] [--points 256]

Prints one line per network and box: the largest output, the bound E (max over outputs), the largest observed
error, the ratio and the time of the bound. Figures in docs/soundness.md ("Float32 semantics").
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bnb.io.onnx_loader import load_onnx
from bnb.io.vnnlib import parse_vnnlib
from relaxations.float_error import evaluation_error
from relaxations.fp import outward_box

ROOT = Path(__file__).resolve().parent.parent


def cases(bench: Path, collins: Path | None):
    """(name, onnx, vnnlib, shrink about the box's centre)"""
    acas = (bench / "acasxu/onnx/ACASXU_run2a_2_1_batch_2000.onnx", bench / "acasxu/vnnlib/prop_2.vnnlib")
    yield "ACAS Xu 2_1, prop_2 box shrunk to 2 %", *acas, 0.02
    yield "ACAS Xu 2_1, prop_2 whole box", *acas, 1.0
    yield ("mnist 256x2, prop_0 eps 0.03", bench / "mnist_fc/onnx/mnist-net_256x2.onnx",
           bench / "mnist_fc/vnnlib/prop_0_0.03.vnnlib", 1.0)
    yield ("oval21 cifar_base, img4549", bench / "oval21/onnx/cifar_base_kw.onnx",
           bench / "oval21/vnnlib/cifar_base_kw-img4549-eps0.00392156862745098.vnnlib", 1.0)
    if collins is not None:
        yield ("collins full_window_40, robustness_2perturbations_delta5",
               collins / "onnx/NN_rul_full_window_40.onnx",
               collins / "vnnlib/robustness_2perturbations_delta5_epsilon10_w40.vnnlib", 1.0)


def measure(onnx_path, vnnlib_path, shrink: float, points: int):
    m = load_onnx(onnx_path)
    spec = parse_vnnlib(vnnlib_path, m.network.in_size, m.network.out_size).specs[0]
    c, r = (spec.lower + spec.upper) / 2, (spec.upper - spec.lower) / 2 * shrink
    lower, upper = np.maximum(spec.lower, c - r), np.minimum(spec.upper, c + r)
    lo, hi = outward_box(lower, upper, torch.float64)
    t = time.perf_counter()
    E = evaluation_error(m.chain, lo, hi).numpy()
    t = time.perf_counter() - t
    x = np.random.default_rng(0).uniform(lower, upper, (points, len(lower))).astype(np.float32)
    x = np.clip(x.astype(np.float64), lower, upper).astype(np.float32)
    with torch.no_grad():
        y = m.chain.to(dtype=torch.float64)(torch.as_tensor(x.astype(np.float64))).numpy()
    seen = np.abs(y - m.run_onnx(x)).max()
    return np.abs(y).max(), E.max(), seen, t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", type=Path, default=ROOT.parent / "shared" / "benchmarks")
    ap.add_argument("--collins", type=Path, default=None, help="a collins_rul_cnn folder (VNN-COMP 2022)")
    ap.add_argument("--points", type=int, default=256)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{'network, box':60s} {'|y| max':>8s} {'E':>9s} {'observed':>9s} {'E/obs':>8s} {'time':>7s}")
    for name, onnx_path, vnnlib_path, shrink in cases(a.bench, a.collins):
        y, E, seen, t = measure(onnx_path, vnnlib_path, shrink, a.points)
        print(f"{name:60s} {y:8.3g} {E:9.2g} {seen:9.2g} {E / max(seen, 1e-300):8.2g} {t:6.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
