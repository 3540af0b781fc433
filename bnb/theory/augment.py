"""Strategy (i) of Mao et al.: re-encode a network into an equivalent one on which P1 is exact.

Covered class (the general construction of the paper's Theorem 5.1 could not be obtained from the
sources available while writing this; what is implemented is exactly the two constructions THEORY.md
names, each applied to whatever network computes a function of its class on the given box):

- **univariate** networks (one input, one output, any depth and width): the breakpoints are found exactly
  by enumerating the activation regions of the box (:mod:`bnb.theory.regions`), and the function is
  re-encoded with **one hidden layer**, ``f(a) + s_0 relu(x - a) + sum_k (s_k - s_{k-1}) relu(x - b_k)``.
  Any one-hidden-layer network is P1-exact on a convex input set: its output set is an affine image of
  the hull of the hidden layer's graph;
- **convex or concave** functions of several inputs (one output): the affine pieces are read off the
  activation regions; when the network equals their maximum (convex) or their minimum (concave) on the
  box, it is re-encoded as the nested max ``m_k = l_k(x) + relu(m_{k-1} - l_k(x))`` with the input
  carried through every layer (:func:`bnb.theory.constructions.max_affine`; the concave case negated).
  Anything else (a multivariate function that is neither convex nor concave, several outputs) is refused
  with one line saying so.

The new network is written as float32 ONNX and checked against the original *as both files load*: dense
sampling of both ONNX models with onnxruntime and the exact MILP (:mod:`relaxations.milp`) of the
difference network (:func:`bnb.theory.networks.difference`) over the box.
"""
from __future__ import annotations

import numpy as np
import torch

from bnb.errors import BnbError
from bnb.theory.constructions import max_affine
from bnb.theory.networks import blocks_of, difference, evaluate, from_blocks, save_onnx
from bnb.theory.regions import Regions

COMPARE = ("crown", "lp", "p1")


def affine_pieces(blocks, lower, upper, limit=20_000):
    """``(pieces, regions)``: the distinct affine maps ``(a (n_in,), c)`` of the network on the box's
    activation regions, and the regions as ``[(splits, phases, a, c)]``."""
    reg = Regions(blocks, lower, upper)
    regions = []
    for splits, phases in reg.leaves(limit):
        A, c = reg.output_affine(phases)
        regions.append((splits, phases, A[0], float(c[0])))
    uniq = {}
    for _, _, a, c in regions:
        key = tuple(np.round(np.concatenate([a, [c]]), 9))
        uniq.setdefault(key, (a, c))
    return list(uniq.values()), regions, reg


def univariate_encoding(blocks, lower, upper) -> list:
    """One-hidden-layer blocks of a univariate network on ``[lower, upper]`` (see the module docstring)."""
    a, b = float(lower[0]), float(upper[0])
    _, regions, reg = affine_pieces(blocks, lower, upper)
    ends = {a, b}
    for splits, phases, _, _ in regions:
        lo, hi = reg.extent(splits, phases, [1.0])
        ends.update((lo, hi))
    pts = np.array(sorted(ends))
    pts = pts[(pts >= a) & (pts <= b)]
    pts = pts[np.concatenate([[True], np.diff(pts) > 1e-9 * (1 + b - a)])]
    vals = evaluate(blocks, pts[:, None])[:, 0]
    slopes = np.diff(vals) / np.diff(pts)
    keep = [0] + [k for k in range(1, len(slopes)) if abs(slopes[k] - slopes[k - 1]) > 1e-9 * (1 + abs(slopes[k]))]
    knots = pts[keep]  # a and the breakpoints where the slope changes
    s = slopes[keep]
    W1 = np.ones((len(knots), 1))
    b1 = -knots
    W2 = np.concatenate([[s[0]], np.diff(s)])[None]
    return [(W1, b1), (W2, np.array([vals[0]]))]


def max_affine_encoding(blocks, lower, upper):
    """``(blocks, kind)`` with kind ``"convex"``/``"concave"``/``"affine"``, or ``(None, reason)``."""
    pieces, _, _ = affine_pieces(blocks, lower, upper)
    A = np.array([p[0] for p in pieces])
    c = np.array([p[1] for p in pieces])
    rng = np.random.default_rng(0)
    x = lower + (upper - lower) * rng.random((4096, lower.size))
    f = evaluate(blocks, x)[:, 0]
    vals = x @ A.T + c
    tol = 1e-7 * (1 + np.abs(f).max())
    if len(pieces) == 1:
        return max_affine(A, c, lower), "affine"
    if np.abs(vals.max(axis=1) - f).max() <= tol:
        return max_affine(A, c, lower), "convex"
    if np.abs(vals.min(axis=1) - f).max() <= tol:
        B = max_affine(-A, -c, lower)
        W, b = B[-1]
        B[-1] = (-W, -b)
        return B, "concave"
    return None, (f"the network is not convex or concave on the box ({len(pieces)} affine pieces); only univariate "
                  "and convex/concave max-affine functions are re-encoded")


def augment(model, lower, upper, out_path, samples=20_000, methods=COMPARE) -> dict:
    """Re-encode the loaded ONNX model ``model`` (:class:`bnb.io.onnx_loader.LoadedModel`) over the box,
    write ``out_path`` and check it; the report of ``bnb recover augment --json``."""
    from bnb.io.onnx_loader import load_onnx
    net = model.network.to(dtype=torch.float64)
    if net.out_size != 1:
        raise BnbError(f"augment handles networks with one output, this one has {net.out_size}", model.path)
    blocks = blocks_of(net)
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    if net.in_size == 1:
        new, kind = univariate_encoding(blocks, lower, upper), "univariate"
    else:
        new, kind = max_affine_encoding(blocks, lower, upper)
        if new is None:
            raise BnbError(f"not re-encoded: {kind}", model.path)
    save_onnx(new, out_path)
    fresh = load_onnx(out_path)
    check = equivalence(model, fresh, lower, upper, samples)
    before = compare_bounds(net, lower, upper, methods)
    after = compare_bounds(fresh.network.to(dtype=torch.float64), lower, upper, methods)
    return {"kind": kind, "out": str(out_path), "neurons_before": sum(W.shape[0] for W, _ in blocks[:-1]),
            "neurons_after": sum(W.shape[0] for W, _ in new[:-1]), "layers_before": len(blocks) - 1,
            "layers_after": len(new) - 1, **check, "before": before, "after": after}


def equivalence(model, fresh, lower, upper, samples=20_000, seed=0) -> dict:
    """Max ``|old - new|`` over ``samples`` uniform points (onnxruntime, both files) and by the MILP of the
    difference of the two loaded networks; ``equivalent`` when both are within ``1e-5 (1 + |f|_max)``."""
    from bnb.theory.exact import exact_bounds
    rng = np.random.default_rng(seed)
    x = (lower + (upper - lower) * rng.random((samples, lower.size))).astype(np.float32)
    x = np.vstack([x, lower.astype(np.float32)[None], upper.astype(np.float32)[None]])
    ya, yb = model.run_onnx(x), fresh.run_onnx(x)
    sampled = float(np.abs(ya - yb).max())
    diff = from_blocks(difference(blocks_of(model.network.to(dtype=torch.float64)),
                                  blocks_of(fresh.network.to(dtype=torch.float64)), (lower, upper)))
    lo, hi = exact_bounds(diff, lower, upper)
    exact = float(max(-lo[0], hi[0]))
    scale = 1e-5 * (1 + float(np.abs(ya).max()))
    return {"max_diff_sampled": sampled, "max_diff_milp": exact, "equivalent": bool(max(sampled, exact) <= scale)}


def compare_bounds(net, lower, upper, methods=COMPARE) -> dict:
    """``{method: [lb, ub] or None}`` of the single output, and ``"exact"`` (MILP)."""
    from bnb.theory.exact import exact_bounds
    from bnb.theory.precision import method_bounds
    out = {}
    for m in methods:
        b = method_bounds(net, lower, upper, m)
        out[m] = None if b is None else [float(b[0][0]), float(b[1][0])]
    lo, hi = exact_bounds(net, lower, upper)
    out["exact"] = [float(lo[0]), float(hi[0])]
    return out
