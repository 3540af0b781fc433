"""Replaying candidate counterexamples on the original ONNX model (onnxruntime).

A candidate becomes a :class:`~bnb.results.Counterexample` only if its float32 input lies inside the
box exactly (bounds compared as parsed from the file) and the ONNX output satisfies every constraint
``C y <= d`` of one of the box's polytopes, with no tolerance in the candidate's favour.
"""
from __future__ import annotations

import numpy as np

from bnb.io.spec import Property
from bnb.results import Counterexample


def snap_to_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """The float32 point closest to ``x`` inside ``[lower, upper]``, or None if the box holds none."""
    x32 = np.clip(np.asarray(x, np.float64), lower, upper).astype(np.float32)
    x32 = np.where(x32.astype(np.float64) > upper, np.nextafter(x32, np.float32(-np.inf)), x32)
    x32 = np.where(x32.astype(np.float64) < lower, np.nextafter(x32, np.float32(np.inf)), x32)
    inside = (x32.astype(np.float64) >= lower) & (x32.astype(np.float64) <= upper)
    return x32 if np.all(inside) else None


def replay(model, prop: Property, xs: np.ndarray, boxes: np.ndarray) -> Counterexample | None:
    """Check candidates ``xs`` ``(K, n_in)`` lying in boxes ``boxes`` ``(K,)``; the first valid one wins."""
    snapped, where = [], []
    for x, b in zip(xs, boxes):
        spec = prop.specs[int(b)]
        s = snap_to_box(x, spec.lower, spec.upper)
        if s is not None:
            snapped.append(s)
            where.append(int(b))
    if not snapped:
        return None
    X = np.stack(snapped)
    Y = model.run_onnx(X)
    for x, y, b in zip(X, Y, where):
        for k, poly in enumerate(prop.specs[b].disjuncts):
            m = float(poly.margin(y[None])[0])
            if m <= 0.0 and np.all(np.isfinite(y)):
                return Counterexample(x=x.astype(np.float64), y=y, box=b, disjunct=k, margin=m)
    return None
