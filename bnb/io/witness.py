"""Replaying candidate counterexamples on the original ONNX model (onnxruntime).

A candidate becomes a :class:`~bnb.results.Counterexample` in one of two ways:

- **a float32 point of the box** (the usual case): its float32 input lies inside the box exactly (bounds
  compared as parsed from the file) and the ONNX output satisfies every constraint ``C y <= d`` of one of the
  box's polytopes, with no tolerance in the candidate's favour;
- **the exact point, when the box holds no float32 point** (real semantics only: a VNN-LIB 1.0 file or a query
  declaring ``real``; a decimal fixed input such as ``0.1`` has no float32 equal): the point ``x*`` (the file's
  values for fixed inputs, the candidate's for the free ones, float64) is shown to violate by a rigorous
  bound of the converted network, outward rounded, over the small box between ``x*`` and its nearest float32
  point ``x32``: the polytope holds strictly on all of it, so the real-arithmetic network violates at ``x*``
  by more than the rounding of the inputs moves it. ``x32`` is then replayed on the ONNX model, and the witness
  counts only if its output violates within :data:`WITNESS_ATOL` (the competition checker's tolerance). The
  results file holds ``x*`` (float64, round-trip digits) and the ONNX output at ``x32``.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from bnb.io.spec import Property
from bnb.results import Counterexample
from relaxations.fp import outward_box, threshold_up
from relaxations.methods import bound_rows
from relaxations.options import DEFAULTS
from relaxations.state import DomainState
from relaxations.verdict import proven

# VNN-COMP's counterexample checker accepts an output that violates the property within 1e-4 (its
# COUNTEREXAMPLE_ATOL); an exact-point witness's float32 replay must meet that, and nothing looser
WITNESS_ATOL = 1e-4
# exact points proven per replay call at most (each proof is one CROWN bound over a tiny box)
_EXACT_PROOFS = 4


def snap_to_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray):
    """The float32 point closest to ``x`` inside ``[lower, upper]``, or None if the box holds none."""
    x32 = np.clip(np.asarray(x, np.float64), lower, upper).astype(np.float32)
    x32 = np.where(x32.astype(np.float64) > upper, np.nextafter(x32, np.float32(-np.inf)), x32)
    x32 = np.where(x32.astype(np.float64) < lower, np.nextafter(x32, np.float32(np.inf)), x32)
    inside = (x32.astype(np.float64) >= lower) & (x32.astype(np.float64) <= upper)
    return x32 if np.all(inside) else None


def replay(model, prop: Property, xs: np.ndarray, boxes) -> Counterexample | None:
    """Check candidates ``xs`` ``(K, n_in)`` lying in boxes ``boxes`` ``(K,)``; the first valid one wins.
    Candidates in boxes that hold no float32 point go to :func:`replay_exact` (real semantics only)."""
    snapped, where, exact, exact_boxes = [], [], [], []
    for x, b in zip(xs, boxes):
        spec = prop.specs[int(b)]
        s = snap_to_box(x, spec.lower, spec.upper)
        if s is not None:
            snapped.append(s)
            where.append(int(b))
        elif not prop.float32:
            exact.append(np.clip(np.asarray(x, np.float64), spec.lower, spec.upper))
            exact_boxes.append(int(b))
    if snapped:
        X = np.stack(snapped)
        Y = model.run_onnx(X)
        for x, y, b in zip(X, Y, where):
            for k, poly in enumerate(prop.specs[b].disjuncts):
                m = float(poly.margin(y[None])[0])
                if m <= 0.0 and np.all(np.isfinite(y)):
                    return Counterexample(x=x.astype(np.float64), y=y, box=b, disjunct=k, margin=m)
    if exact:
        return replay_exact(model, prop, np.stack(exact), exact_boxes)
    return None


def replay_exact(model, prop: Property, xs: np.ndarray, boxes) -> Counterexample | None:
    """Exact points ``xs`` ``(K, n_in)`` float64 inside boxes ``boxes`` that hold no float32 point: replay the
    nearest float32 points on the ONNX model, and prove the violation of the best candidates in real arithmetic
    (module docstring). A counterexample with ``x = x*``, ``x32`` and ``real_margin`` set, or None."""
    x32 = xs.astype(np.float32)  # round to nearest, as a checker reading x* into float32 does
    Y = model.run_onnx(x32)
    hits = []  # (onnx margin, candidate, disjunct)
    for i, (y, b) in enumerate(zip(Y, boxes)):
        if not np.all(np.isfinite(y)):
            continue
        for k, poly in enumerate(prop.specs[b].disjuncts):
            m = float(poly.margin(y[None])[0])
            if m <= WITNESS_ATOL:
                hits.append((m, i, k))
    for m, i, k in sorted(hits)[:_EXACT_PROOFS]:
        b = boxes[i]
        real = real_violation(model.network, xs[i], x32[i].astype(np.float64), prop.specs[b].disjuncts[k])
        if real is not None:
            return Counterexample(x=xs[i].copy(), y=Y[i], box=b, disjunct=k, margin=m, x32=x32[i].copy(),
                                  real_margin=real)
    return None


def real_violation(net, x_star: np.ndarray, x32: np.ndarray, poly) -> float | None:
    """A rigorous upper bound (< 0) of ``max_i (C y - d)_i`` for the real-arithmetic network ``net`` over the box
    between ``x_star`` and ``x32`` (each end moved outward one float64 step), or None when the bound does not
    show the polytope ``C y <= d`` holding strictly on the whole box (``d`` the file's decimal value)."""
    if len(poly.d) == 0:
        return -float("inf")
    net = net.to(dtype=torch.float64)
    lo, hi = outward_box(np.minimum(x_star, x32), np.maximum(x_star, x32), torch.float64)
    C = torch.as_tensor(-np.asarray(poly.C, np.float64))  # lower bounds of -C y
    opts = dataclasses.replace(DEFAULTS, rigorous=True)
    with torch.no_grad():
        res = bound_rows(net, DomainState(lo[None], hi[None]), C, "crown", opts)
    # C y < d  <=>  -C y > -d; -d's decimal value is at most threshold_up(-d)
    t = threshold_up(-np.asarray(poly.d, np.float64), torch.float64)
    lb = res.lb[0]
    if not bool(proven(lb - t).all()):
        return None
    return float((t - lb).max())  # an upper bound of max_i (C y - d)_i, up to this subtraction's rounding
