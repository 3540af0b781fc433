"""``bnb precision``: how far each relaxation's output bounds are from the exact range (MILP).

On the given box and on ``samples`` random sub-boxes of it, every method of :data:`METHODS` bounds every
output; the *gap* of a box is ``max_j max(exact_lb_j - lb_j, ub_j - exact_ub_j)`` (0 when the relaxation is
precise). A method is *precise* on a box when its gap is at most ``tol * (1 + |range|)``. The LP methods'
bounds are dual certificates and the single-neuron ones carry their rounding error bound, so a gap is never
negative beyond that tolerance (a negative gap is reported as ``unsound`` and would be a bug).

Networks with smooth activations (sigmoid, tanh, softplus; LeakyReLU goes the same way): no MILP gives the exact
range, so each end is bracketed (:func:`bnb.theory.exact.smooth_bracket`): ``min_lo <= min <= min_hi`` with
``min_lo`` from the piecewise-linear sandwich MILP and ``min_hi`` a value attained at a point of the box, and the
same for the maximum. A method's gap is then bracketed too: ``gap_lo = max_j max(min_lo_j - lb_j, ub_j - max_hi_j)
<= gap <= gap_hi = max_j max(min_hi_j - lb_j, ub_j - max_lo_j)``; the gap columns report ``gap_lo..gap_hi``,
*precise* means ``gap_hi`` within the tolerance (certainly precise), and ``unsound`` means a bound beyond an
attained value (``lb_j > min_hi_j`` or ``ub_j < max_lo_j``, beyond the tolerance: certainly wrong). Only the
methods of :data:`SMOOTH_METHODS` apply (the ReLU LP methods encode ReLU): others are skipped with a note,
as the hull LPs (``hull1d``, ``hull``) are on ReLU networks.
"""
from __future__ import annotations

import numpy as np
import torch

from bnb.theory.exact import exact_bounds, smooth_bracket
from relaxations.lp.layer_hull import P1TooLarge
from relaxations.methods import output_bounds

METHODS = ("ibp", "dp0", "dp1", "crown", "alpha", "lp", "mn", "p1", "anderson")
# the methods that bound networks with smooth activations (the LPs with one-dimensional and multi-input hull cuts)
SMOOTH_METHODS = ("ibp", "dp0", "dp1", "crown", "alpha", "hull1d", "hull")
LABELS = {"ibp": "IBP", "dp0": "DeepPoly-0", "dp1": "DeepPoly-1", "crown": "CROWN", "alpha": "alpha-CROWN",
          "lp": "triangle LP", "mn": "k-neuron (k=3)", "p1": "P1 (layer hull)", "anderson": "Anderson",
          "hull1d": "1-D hull LP", "hull": "multi-input hull LP"}


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
    gaps None for a method that refuses the network (P1 on too many unstable neurons). On a network with smooth
    activations (module docstring) each gap is a pair ``[gap_lo, gap_hi]``, ``"bracket"`` holds the ranges'
    brackets on the box and ``"skipped"`` the methods that do not apply."""
    net = net.to(dtype=torch.float64)
    boxes = sub_boxes(lower, upper, samples, seed)
    if not net.relu_only:
        return _smooth_precision(net, boxes, methods, tol)
    exact = [exact_bounds(net, lo, hi) for lo, hi in boxes]
    out = {}
    for m in (m for m in methods if m in METHODS):
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
            "methods": out, "skipped": [m for m in methods if m not in METHODS]}


def _smooth_precision(net, boxes, methods, tol):
    brackets = [smooth_bracket(net, lo, hi) for lo, hi in boxes]
    out = {}
    for m in (m for m in methods if m in SMOOTH_METHODS):
        g_lo, g_hi, wrong, scale = [], [], [], []
        for (lo, hi), br in zip(boxes, brackets):
            lb, ub = method_bounds(net, lo, hi, m)
            g_lo.append(box_gap((lb, ub), (br["min_lo"], br["max_hi"])))
            g_hi.append(box_gap((lb, ub), (br["min_hi"], br["max_lo"])))
            scale.append(tol * (1 + float(np.max(br["max_hi"] - br["min_lo"]))))
            wrong.append(bool(np.any(lb > br["min_hi"] + scale[-1]) or np.any(ub < br["max_lo"] - scale[-1])))
        g_lo, g_hi, scale = np.array(g_lo), np.array(g_hi), np.array(scale)
        out[m] = {"box_gap": [float(g_lo[0]), float(g_hi[0])], "max_gap": [float(g_lo.max()), float(g_hi.max())],
                  "mean_gap": [float(g_lo.mean()), float(g_hi.mean())],
                  "precise_fraction": float(np.mean(g_hi <= scale)), "unsound": bool(np.any(wrong))}
    b0 = {k: v.tolist() for k, v in brackets[0].items()}
    return {"boxes": len(boxes), "bracket": b0, "methods": out,
            "skipped": [m for m in methods if m not in SMOOTH_METHODS]}


def table(result) -> str:
    """The result of :func:`precision` as a markdown table (a smooth network's gaps as ``lo..hi`` brackets)."""
    rows = ["| relaxation | gap on the box | max gap | mean gap | precise on |",
            "|---|---:|---:|---:|---:|"]

    def f(v):
        if v is None:
            return "n/a"
        return f"{v[0]:.4g}..{v[1]:.4g}" if isinstance(v, list) else f"{v:.4g}"
    for m, r in result["methods"].items():
        frac = "n/a" if r["precise_fraction"] is None else f"{100 * r['precise_fraction']:.0f}%"
        flag = " (UNSOUND)" if r["unsound"] else ""
        rows.append(f"| {LABELS.get(m, m)} | {f(r['box_gap'])} | {f(r['max_gap'])} | {f(r['mean_gap'])} | "
                    f"{frac} of {result['boxes']}{flag} |")
    if "bracket" in result:
        b = result["bracket"]
        rows.append("")
        rows += [f"Y_{j}: min in [{b['min_lo'][j]:.6g}, {b['min_hi'][j]:.6g}], max in [{b['max_lo'][j]:.6g}, "
                 f"{b['max_hi'][j]:.6g}] (sandwich MILP .. attained)" for j in range(len(b["min_lo"]))]
        rows.append("smooth activations: no exact MILP; each gap is bracketed lo..hi by the ranges' brackets")
    if result.get("skipped"):
        what = "ReLU-only" if "bracket" in result else "sigmoid/tanh/softplus only"
        rows.append(f"skipped ({what}): {', '.join(result['skipped'])}")
    return "\n".join(rows)
