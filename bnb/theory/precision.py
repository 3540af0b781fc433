"""``bnb precision``: how far each relaxation's output bounds are from the exact range (MILP).

On the given box and on ``samples`` random sub-boxes of it, every method of :data:`METHODS` bounds every
output; the *gap* of a box is ``max_j max(exact_lb_j - lb_j, ub_j - exact_ub_j)`` (0 when the relaxation is
precise). A method is *precise* on a box when its gap is at most ``tol * (1 + |range|)``. The LP methods'
bounds are dual certificates and the single-neuron ones carry their rounding error bound, so a gap is never
negative beyond that tolerance (a negative gap is reported as ``unsound`` and would be a bug).
"""
from __future__ import annotations

import numpy as np
import torch

from bnb.theory.exact import exact_bounds
from relaxations.lp.layer_hull import P1TooLarge
from relaxations.methods import output_bounds

METHODS = ("ibp", "dp0", "dp1", "crown", "alpha", "lp", "mn", "p1", "anderson")
LABELS = {"ibp": "IBP", "dp0": "DeepPoly-0", "dp1": "DeepPoly-1", "crown": "CROWN", "alpha": "alpha-CROWN",
          "lp": "triangle LP", "mn": "k-neuron (k=3)", "p1": "P1 (layer hull)", "anderson": "Anderson"}


def method_bounds(net, lower, upper, method):
    """``(lb, ub)`` numpy ``(n_out,)`` of one method on one box; None when P1 refuses the network."""
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))[None]  # noqa: E731
    try:
        lb, ub = output_bounds(net, t(lower), t(upper), method)
    except P1TooLarge:
        return None
    return lb[0].double().numpy(), ub[0].double().numpy()


def sub_boxes(lower, upper, n, seed=0):
    """The box itself, then ``n`` random sub-boxes (each side between two uniform points)."""
    rng = np.random.default_rng(seed)
    lower, upper = np.asarray(lower, float), np.asarray(upper, float)
    boxes = [(lower, upper)]
    for _ in range(n):
        a, b = (lower + (upper - lower) * rng.random((2, lower.size)))
        boxes.append((np.minimum(a, b), np.maximum(a, b)))
    return boxes


def box_gap(bounds, exact):
    lb, ub = bounds
    elb, eub = exact
    return float(np.max(np.maximum(elb - lb, ub - eub)))


def precision(net, lower, upper, samples=20, methods=METHODS, tol=1e-6, seed=0) -> dict:
    """``{"boxes": n, "methods": {m: {"box_gap", "max_gap", "mean_gap", "precise_fraction", "unsound"}}}``;
    gaps None for a method that refuses the network (P1 on too many unstable neurons)."""
    net = net.to(dtype=torch.float64)
    boxes = sub_boxes(lower, upper, samples, seed)
    exact = [exact_bounds(net, lo, hi) for lo, hi in boxes]
    out = {}
    for m in methods:
        gaps = []
        for (lo, hi), ex in zip(boxes, exact):
            b = method_bounds(net, lo, hi, m)
            if b is None:
                gaps = None
                break
            gaps.append(box_gap(b, ex))
        if gaps is None:
            out[m] = {"box_gap": None, "max_gap": None, "mean_gap": None, "precise_fraction": None, "unsound": False}
            continue
        g = np.array(gaps)
        scale = np.array([tol * (1 + float(np.max(ex[1] - ex[0]))) for ex in exact])
        out[m] = {"box_gap": float(g[0]), "max_gap": float(g.max()), "mean_gap": float(g.mean()),
                  "precise_fraction": float(np.mean(g <= scale)), "unsound": bool(np.any(g < -scale))}
    return {"boxes": len(boxes), "exact_box": {"lower": exact[0][0].tolist(), "upper": exact[0][1].tolist()},
            "methods": out}


def table(result) -> str:
    """The result of :func:`precision` as a markdown table."""
    rows = ["| relaxation | gap on the box | max gap | mean gap | precise on |",
            "|---|---:|---:|---:|---:|"]
    f = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
    for m, r in result["methods"].items():
        frac = "n/a" if r["precise_fraction"] is None else f"{100 * r['precise_fraction']:.0f}%"
        flag = " (UNSOUND)" if r["unsound"] else ""
        rows.append(f"| {LABELS.get(m, m)} | {f(r['box_gap'])} | {f(r['max_gap'])} | {f(r['mean_gap'])} | "
                    f"{frac} of {result['boxes']}{flag} |")
    return "\n".join(rows)
