"""``bnb hull-table``: the figures of SSHAPED.md section 1, regenerated (issue 27 item 7).

- The table: ``min w2 . f(W1 x + b1)`` over ``x`` in ``[-1, 1]^2`` (three hidden neurons, no output bias) for
  three networks, by IBP, CROWN with bnb's default ('adaptive') lines and with the tangent/chord lines of
  SSHAPED.md section 2, the LP of one-dimensional hulls (``hull1d``), the LP with multi-input hull cuts
  (``hull``) and the exact value (a 401 x 401 grid, then L-BFGS-B from the five best grid points).
- The figure: ``y = f(x1 + x2)`` on ``[-2, 2]^2`` at the vertex ``(2, -2)``: the multi-input hull's upper
  envelope against the one-dimensional hull's (the best a single line or neuron-wise relaxation can do), and
  with ``--plot`` the three upper envelopes (function, 1-D hull, multi-input hull) along the anti-diagonal
  ``x1 = -x2``, where ``x1 + x2 = 0`` and the gap is widest.
"""
from __future__ import annotations

import numpy as np
import torch

from relaxations import sshaped_hull as hull
from relaxations import transcendental as tr
from relaxations.crown import crown
from relaxations.ibp import ibp
from relaxations.layers.linear import Linear
from relaxations.layers.sshaped import SmoothActivation
from relaxations.lp.smooth import smooth_lp_bounds
from relaxations.network import Network
from relaxations.state import DomainState

F64 = torch.float64
# (activation, W1 rows, b1, w2), as printed in SSHAPED.md section 1
ROWS = (
    ("sigmoid", [[3.06, -3.83], [0.63, -0.85], [-0.68, -0.32]], [-1.01, -0.12, -0.43], [3.32, 0.23, -0.35]),
    ("tanh", [[0.29, 1.67], [-0.31, -1.39], [0.88, 0.87]], [-0.11, -0.39, 0.11], [-2.49, 0.69, 0.49]),
    ("tanh", [[-2.46, 0.09], [-1.45, 1.14], [-3.05, -1.37]], [0.35, 0.58, -1.08], [-0.50, 0.33, -0.61]),
)
# the values SSHAPED.md prints (IBP, CROWN default lines, 1-D hull LP, hull LP, exact)
PRINTED = ((-0.1837, -1.9323, -0.1338, -0.1290, -0.1290), (-3.4935, -3.7995, -2.8045, -2.7011, -2.6978),
           (-1.4238, -1.7118, -1.1325, -0.9978, -0.9769))
COLUMNS = ("ibp", "crown", "crown_tangent", "hull1d", "hull", "exact")


def network(kind, W1, b1, w2) -> Network:
    return Network([Linear(torch.tensor(W1, dtype=F64), torch.tensor(b1, dtype=F64)),
                    SmoothActivation((len(b1),), kind),
                    Linear(torch.tensor([w2], dtype=F64), torch.zeros(1, dtype=F64))], (len(W1[0]),))


def exact_min(kind, W1, b1, w2, grid=401) -> float:
    """The minimum over ``[-1, 1]^2`` (not a certificate): a dense grid, then local polishing."""
    from scipy.optimize import minimize
    W1, b1, w2 = np.asarray(W1), np.asarray(b1), np.asarray(w2)
    fn = lambda z: tr.value(kind, torch.as_tensor(z)).numpy()  # noqa: E731
    g = np.linspace(-1, 1, grid)
    X = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    vals = fn(X @ W1.T + b1) @ w2
    best = float(vals.min())
    for x0 in X[np.argsort(vals)[:5]]:
        r = minimize(lambda x: float(fn(W1 @ x + b1) @ w2), x0, bounds=[(-1, 1)] * 2, method="L-BFGS-B")
        best = min(best, float(r.fun))
    return best


def table_row(kind, W1, b1, w2) -> dict:
    net = network(kind, W1, b1, w2)
    lo, hi = -torch.ones(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64)
    st, C = DomainState(lo, hi), torch.eye(1, dtype=F64)
    out = {"activation": kind, "W1": W1, "b1": b1, "w2": w2}
    out["ibp"] = float(ibp(net, lo, hi)[0][0, 0])
    out["crown"] = float(crown(net, st, C, "adaptive").lb[0, 0])   # bnb's default lines, no IBP floor
    out["crown_tangent"] = float(crown(net, st, C, "tangent").lb[0, 0])  # SSHAPED.md section 2's lines
    pre = [(l.reshape(-1).numpy(), u.reshape(-1).numpy()) for l, u in crown(net, st, C).pre_bounds]
    for method in ("hull1d", "hull"):
        out[method] = float(smooth_lp_bounds(net, method, lo[0].numpy(), hi[0].numpy(), pre, [[1.0]],
                                             want_upper=False)[0][0])
    out["exact"] = exact_min(kind, W1, b1, w2)
    return out


def vertex_figure(kind) -> dict:
    """``f(x1 + x2)`` on ``[-2, 2]^2`` at ``(2, -2)``: the multi-input hull's cut value and the 1-D hull's."""
    w, L, U, x = np.ones(2), -2 * np.ones(2), 2 * np.ones(2), np.array([2.0, -2.0])
    beta, alpha = hull.upper_cut(kind, w, 0.0, L, U, x)
    k, b = hull.hull1d_lines(kind, [-4.0], [4.0], [0.0], "upper")
    return {"activation": kind, "f": float(tr.value(kind, torch.tensor(0.0, dtype=F64))),
            "hull": float(alpha + beta @ x), "hull1d": float(k[0] * 0.0 + b[0])}


def anti_diagonal(kind, points=81):
    """``(x1, f, 1-D hull, multi-input hull)`` upper envelopes along ``x2 = -x1`` of ``[-2, 2]^2``."""
    xs = np.linspace(-2, 2, points)
    a, c = np.array([4.0, 4.0]), -4.0
    env = [hull.concave_envelope(kind, a, c, np.array([(x + 2) / 4, (2 - x) / 4]))[0] for x in xs]
    k, b = hull.hull1d_lines(kind, np.full(points, -4.0), np.full(points, 4.0), np.zeros(points), "upper")
    f0 = float(tr.value(kind, torch.tensor(0.0, dtype=F64)))
    return xs, np.full(points, f0), k * 0 + b, np.asarray(env)


def hull_table(plot=None) -> tuple[dict, str]:
    rows = [table_row(*r) for r in ROWS]
    figs = [vertex_figure(k) for k in ("sigmoid", "tanh")]
    lines = ["min of w2 . f(W1 x + b1) over x in [-1, 1]^2 (SSHAPED.md section 1)",
             "| f | IBP | CROWN (adaptive) | CROWN (tangent) | 1-D hull LP | hull LP | exact |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['activation']} | " + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + " |")
    lines.append("")
    lines.append("y = f(x1 + x2) on [-2, 2]^2 at the vertex (2, -2): upper envelopes")
    for fg in figs:
        lines.append(f"  {fg['activation']}: f = {fg['f']:.4f}, multi-input hull {fg['hull']:.4f}, "
                     f"1-D hull {fg['hull1d']:.4f}")
    res = {"table": rows, "vertex": figs}
    if plot:
        _plot(plot)
        res["plot"] = plot
        lines.append(f"plot: {plot}")
    return res, "\n".join(lines)


def _plot(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, kind in zip(axes, ("sigmoid", "tanh")):
        xs, f, h1, hm = anti_diagonal(kind)
        ax.plot(xs, h1, label="1-D hull (best single line)")
        ax.plot(xs, hm, label="multi-input hull")
        ax.plot(xs, f, "k--", label=f"{kind}(x1 + x2) = {kind}(0)")
        ax.set_xlabel("x1 (x2 = -x1)")
        ax.set_title(f"upper envelopes of {kind}(x1 + x2) on [-2, 2]^2")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
