"""Check every certificate of a suite run with the independent checker, in float and (optionally) exact mode.

    python benchmarks/cert_check.py RESULTS.csv CERT_DIR --bench SUITE_DIR [--exact-nodes N] [--exact-budget S]

``RESULTS.csv`` and ``CERT_DIR``: a ``bnb run SUITE_DIR/instances.csv ... --out RESULTS.csv --certificates
CERT_DIR``. Every ``unsat`` row must have a certificate (or say ``certificate: unsupported (...)``), which the
checker (``certcheck``, BLAS pinned to one thread) must accept; certificates of at most ``--exact-nodes`` nodes are
checked again in exact mode (``--exact``, python-flint's rationals where installed), the smallest first, until
``--exact-budget`` seconds of exact checking have passed (``--exact-from``: only those of at least that many
nodes). Prints one line per certificate and a summary: unsat answers, certificates written / accepted, checking
against solving time, the largest file, exact checks; exit 1 on any rejection, a missing certificate or an exact
answer that differs from the float one.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # (before numpy loads: the checker's products are small)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("certs")
    ap.add_argument("--bench", required=True, help="the suite's folder (where the results' onnx/vnnlib paths start)")
    ap.add_argument("--exact-nodes", type=int, default=0, help="exact mode for certificates of at most this many nodes")
    ap.add_argument("--exact-budget", type=float, default=3600.0, help="seconds of exact checking at most")
    ap.add_argument("--exact-from", type=int, default=0, help="exact mode only for at least this many nodes")
    a = ap.parse_args(argv)
    import certcheck
    bench, bad = Path(a.bench), 0
    rows = [r for r in csv.DictReader(open(a.results)) if r["verdict"] == "unsat"]
    done, solve, check, largest = [], 0.0, 0.0, (0, "", 0)
    for r in rows:
        cert = Path(a.certs) / f"{Path(r['onnx']).stem}__{Path(r['vnnlib']).stem}.npz"
        name = f"{Path(r['onnx']).stem} {Path(r['vnnlib']).stem}"
        if not cert.exists():
            unsupported = "certificate: unsupported" in r["message"]
            bad += not unsupported
            print(f"{name}: {'unsupported' if unsupported else 'MISSING'} ({r['message'][-90:]})")
            continue
        onnx, vnnlib = bench / r["onnx"], bench / r["vnnlib"]
        res = certcheck.check(str(cert), str(onnx), str(vnnlib))
        with np.load(cert, allow_pickle=False) as z:
            version = json.loads(bytes(z["manifest"]))["version"]
        size = cert.stat().st_size
        largest = max(largest, (size, name, res.nodes))
        solve, check = solve + float(r["time"]), check + res.seconds
        bad += res.status != "accepted"
        done.append((res.nodes, name, cert, onnx, vnnlib, res.status))
        print(f"{name}: {res.status} {res.reason} (v{version}, {res.nodes} nodes, {size / 1e6:.2f} MB, checked in "
              f"{res.seconds:.2f} s, solved in {float(r['time']):.2f} s)")
    exact, spent = [], 0.0
    for nodes, name, cert, onnx, vnnlib, status in sorted(done, key=lambda d: d[0]):
        if not a.exact_from <= nodes <= a.exact_nodes or spent > a.exact_budget:
            continue
        t0 = time.monotonic()
        res = certcheck.check(str(cert), str(onnx), str(vnnlib), exact=True)
        spent += time.monotonic() - t0
        exact.append((nodes, res.status))
        bad += res.status != status
        print(f"{name}: exact {res.status} {res.reason} ({nodes} nodes, {time.monotonic() - t0:.1f} s)")
    accepted = sum(d[5] == "accepted" for d in done)
    print(f"unsat {len(rows)}, certificates {len(done)}, accepted {accepted}; checking {check:.1f} s against solving "
          f"{solve:.1f} s ({check / max(solve, 1e-9):.2f}x); largest {largest[0] / 1e6:.2f} MB ({largest[1]}, "
          f"{largest[2]} nodes)")
    if a.exact_nodes:
        eligible = sum(a.exact_from <= d[0] <= a.exact_nodes for d in done)
        print(f"exact: {sum(s == 'accepted' for _, s in exact)} accepted of {len(exact)} checked ({eligible} with "
              f"{a.exact_from}-{a.exact_nodes} nodes; largest checked {max((n for n, _ in exact), default=0)} "
              f"nodes) in {spent:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
