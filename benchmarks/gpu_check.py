"""One device call: what a GPU gives bnb (issue 26, item 7), prepared to run whenever a machine with one is lent.

    python benchmarks/gpu_check.py                                  # ~8 min: fits one 10-minute device command
    python benchmarks/gpu_check.py --device cpu --hard-limit 1 --hard-timeout 5 --budget 1   # a cheap CPU check

Part 1, throughput: ``benchmarks/bounds_bench.py`` for IBP, CROWN, alpha-CROWN, beta-CROWN and mn-crown (unsplit
sub-boxes of ACAS Xu 1_1 prop_3 and mnist_fc 256x6 prop_0_0.03; batches 1, 64, 1024, 16384; each combination
skipped when its estimated time exceeds ``--budget``), on the CPU and on CUDA when present, so each GPU figure
has its CPU ratio from the same run. Part 2, the hard set: the 13 mnist_fc instances labelled ``unsat`` that
nothing here proves at 60 s on the CPU (issue 26: 256x4 and 256x6, eps 0.03 and 0.05), through ``bnb run`` with
``configs/mnist_fc.yaml`` on the device (``general.device`` cuda when present, else cpu), ``--hard-timeout``
seconds each, one worker; ``bnb run`` compares the verdicts with ``expected.csv`` (exit 1 if one is wrong).

Prints torch's and the device's description first; everything goes to stdout, so a device command can keep it
(``python benchmarks/gpu_check.py | tee $OUT/gpu_check.txt``).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subsuite import write_subsuite  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "benchmarks" / "mnist_fc"
HARD = (("256x4", ("prop_3_0.03", "prop_9_0.03", "prop_4_0.05", "prop_6_0.05", "prop_8_0.05", "prop_10_0.05")),
        ("256x6", ("prop_0_0.03", "prop_5_0.03", "prop_12_0.03", "prop_13_0.03", "prop_2_0.05", "prop_6_0.05",
                   "prop_10_0.05")))


def hard_set(dest: Path, limit: int | None) -> int:
    """A sub-suite of mnist_fc in ``dest``: the hard instances (the first ``limit`` of them)."""
    wanted = [(f"onnx/mnist-net_{net}.onnx", f"vnnlib/{p}.vnnlib") for net, props in HARD for p in props]
    return write_subsuite(MNIST, dest, wanted[:limit] if limit else wanted)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="the device of part 2 and the only one of part 1 (default: cuda when present, and part 1 "
                         "on both)")
    ap.add_argument("--budget", type=float, default=5.0, help="part 1: seconds allowed for one bounding call")
    ap.add_argument("--methods", default="ibp,crown,alpha,beta,mn-crown", help="part 1: the methods")
    ap.add_argument("--hard-timeout", type=float, default=20.0, help="part 2: seconds per instance")
    ap.add_argument("--hard-limit", type=int, default=None, help="part 2: only the first N instances (0: skip)")
    args = ap.parse_args(argv)
    import torch
    cuda = torch.cuda.is_available()
    device = args.device or ("cuda" if cuda else "cpu")
    gpu = torch.cuda.get_device_name(0) if cuda else "none"
    print(f"torch {torch.__version__}; CUDA available: {cuda}; GPU: {gpu}; part 2 on {device}", flush=True)
    t0 = time.monotonic()
    bench = [sys.executable, str(ROOT / "benchmarks" / "bounds_bench.py"), "--skip-tightness", "--threads", "1",
             "--budget", str(args.budget), "--methods", args.methods]
    if args.device:
        bench += ["--device", args.device]
    status = subprocess.run(bench, cwd=ROOT).returncode
    print(f"\n(part 1: {time.monotonic() - t0:.0f} s)", flush=True)
    if args.hard_limit == 0:
        return status
    if not (MNIST / "expected.csv").is_file():
        print(f"part 2 skipped: benchmark data not found under {MNIST}")
        return status
    t1 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        n = hard_set(Path(tmp) / "hard", args.hard_limit)
        print(f"\n== the hard mnist_fc set: {n} instances, {args.hard_timeout:g} s each, on {device} ==", flush=True)
        run = [sys.executable, "-m", "bnb.cli", "run", str(Path(tmp) / "hard" / "instances.csv"), "--config",
               str(ROOT / "configs" / "mnist_fc.yaml"), "--timeout", str(args.hard_timeout), "--set",
               f"general.device={device}", "--set", "general.threads=1"]
        status |= subprocess.run(run, cwd=ROOT).returncode
    print(f"\n(part 2: {time.monotonic() - t1:.0f} s; total {time.monotonic() - t0:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
