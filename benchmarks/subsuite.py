"""A sub-suite of a VNN-COMP benchmark folder: the chosen rows only, for ``bnb run``.

Used by ``proof_only_suites.py`` (the rows labelled ``sat``) and ``gpu_check.py`` (the hard mnist_fc set).
"""
from __future__ import annotations

import csv
from pathlib import Path


def read_instances(bench: Path) -> list[list[str]]:
    """The rows (``onnx, vnnlib, timeout``) of ``bench/instances.csv``."""
    with open(bench / "instances.csv", newline="") as f:
        return [r for r in csv.reader(f) if len(r) >= 2]


def write_subsuite(bench: Path, dest: Path, pairs) -> int:
    """Write ``dest/instances.csv`` with the rows of ``bench`` whose ``(onnx, vnnlib)`` is in ``pairs``, in the order
    of ``pairs``, and ``dest/expected.csv`` with their labels; link ``bench``'s ``onnx/`` and ``vnnlib/`` into
    ``dest``. Returns the number of instances."""
    pairs = list(pairs)
    dest.mkdir(parents=True)
    for sub in ("onnx", "vnnlib"):
        (dest / sub).symlink_to(bench / sub)
    keep = set(pairs)
    with open(bench / "expected.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if (r["onnx"], r["vnnlib"]) in keep]
        fields = reader.fieldnames
    with open(dest / "expected.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    inst = {(r[0], r[1]): r for r in read_instances(bench)}
    with open(dest / "instances.csv", "w", newline="") as f:
        csv.writer(f).writerows(inst[p] for p in pairs)
    return len(pairs)
