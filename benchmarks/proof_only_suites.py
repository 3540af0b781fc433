"""Every real instance labelled ``sat`` in proof-only mode: none may end ``unsat``.

In proof-only mode (``general.proof_only``, docs/soundness.md) bnb does no falsification, so on a violated
property it can only answer ``unknown``/``timeout``/``error``; an ``unsat`` is an unsound bound. This runs
``bnb run --proof-only`` on the ``sat`` rows of each benchmark's ``expected.csv`` (a temporary folder holding links
to the benchmark's ``onnx/`` and ``vnnlib/`` and the selected rows of ``instances.csv`` and ``expected.csv``) with
the benchmark's configuration, and prints bnb's summary table per benchmark. Exit code 1 if any verdict is wrong
(``bnb run`` compares with the labels).

    python benchmarks/proof_only_suites.py --timeout 10            # all five suites, ~17 min on one core
    python benchmarks/proof_only_suites.py --bench acasxu --timeout 2 --limit 3
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from subsuite import read_instances, write_subsuite  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT.parent / "shared" / "benchmarks"
CONFIGS = {"acasxu": "acasxu", "mnist_fc": "mnist_fc", "mnist_fc_2022": "mnist_fc", "oval21": "oval21",
           "oval21_2022": "oval21"}


def sat_only(bench: Path, dest: Path) -> int:
    """A sub-suite of ``bench`` in ``dest``: its rows labelled ``sat``, in the order of its ``instances.csv``."""
    with open(bench / "expected.csv", newline="") as f:
        sat = {(r["onnx"], r["vnnlib"]) for r in csv.DictReader(f) if r["expected"] == "sat"}
    return write_subsuite(bench, dest, [(r[0], r[1]) for r in read_instances(bench) if (r[0], r[1]) in sat])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", action="append", choices=sorted(CONFIGS), help="benchmarks (default: all)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per instance")
    ap.add_argument("--limit", type=int, default=None, help="only the first N sat instances of each benchmark")
    args = ap.parse_args(argv)
    wrong = False
    with tempfile.TemporaryDirectory(prefix="proof_only_") as tmp:
        for name in args.bench or list(CONFIGS):
            if not (BENCH / name / "expected.csv").is_file():
                print(f"{name}: benchmark data not found under {BENCH}; skipped")
                continue
            n = sat_only(BENCH / name, Path(tmp) / name)
            print(f"== {name}: {n} instances labelled sat, proof-only, {args.timeout:g} s each", flush=True)
            cmd = [sys.executable, "-m", "bnb.cli", "run", str(Path(tmp) / name / "instances.csv"), "--config",
                   str(ROOT / "configs" / f"{CONFIGS[name]}.yaml"), "--proof-only", "--timeout", str(args.timeout),
                   "--set", "general.threads=1"]
            if args.limit:
                cmd += ["--limit", str(args.limit)]
            wrong |= subprocess.run(cmd, cwd=ROOT).returncode != 0
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
