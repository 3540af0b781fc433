"""``bnb relaxation-error``: the distance between a network and its (full or partial) linear relaxation
(Papamichail et al.), against depth and input radius.

Over the input ball ``B = {x : |x - x0|_inf <= rho}`` every ReLU layer in ``relax`` (all by default: the
*full* relaxation) has its unstable neurons replaced by their upper chord ``u (z - l) / (u - l)`` with IBP
bounds ``l, u`` over ``B`` (stable neurons by their phase), giving the network ``g``; the other layers keep
their ReLU (the lattice of partial relaxations, from nothing relaxed, ``g = f``, to everything relaxed,
``g`` affine). The error ``max_{x in B} |f(x) - g(x)|_inf`` is bracketed by

- a lower bound: the best of uniform samples and of projected gradient ascent from the best of them
  (points of ``B``, evaluated exactly, so it is attained);
- an upper bound: bounds of the difference network ``f - g`` (:func:`bnb.theory.networks.difference`) over
  ``B`` by ``bound``: ``crown`` or ``alpha`` (rigorous, :func:`relaxations.methods.output_bounds`; loose,
  since the two copies are relaxed independently) or ``milp`` (the exact maximum, up to the MIP
  solver's tolerances: an oracle, not a certificate; small networks only). Nothing relaxed: 0.
"""
from __future__ import annotations

import numpy as np
import torch

from bnb.theory.networks import blocks_of, difference, from_blocks


def ibp_pre(blocks, lower, upper):
    """Pre-activation bounds ``[(l, u)]`` of every ReLU layer (float64 IBP)."""
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    out = []
    for W, b in blocks[:-1]:
        c, r = (lo + hi) / 2, (hi - lo) / 2
        l, u = W @ c + b - np.abs(W) @ r, W @ c + b + np.abs(W) @ r
        out.append((l, u))
        lo, hi = np.maximum(l, 0), np.maximum(u, 0)
    return out


def relaxed(blocks, lower, upper, relax=None) -> list:
    """Blocks of ``g``: the layers in ``relax`` (indices of ReLU layers; all when None) replaced by their
    chords (see the module docstring) and folded into the next affine block."""
    pre = ibp_pre(blocks, lower, upper)
    relax = set(range(len(pre))) if relax is None else set(relax)
    out = [(blocks[0][0].copy(), blocks[0][1].copy())]
    for i, (l, u) in enumerate(pre):
        W, b = blocks[i + 1]
        if i in relax:
            s = np.where(u <= 0, 0.0, np.where(l >= 0, 1.0, u / np.where(u > l, u - l, 1.0)))
            t = np.where((l < 0) & (u > 0), -s * l, 0.0)
            A, c = out[-1]
            out[-1] = (W @ (s[:, None] * A), W @ (s * c + t) + b)
        else:
            out.append((W.copy(), b.copy()))
    return out


def _pgd(diff_net, lower, upper, starts, steps=50):
    """Gradient ascent of every ``+-(f - g)_j`` from ``starts``; the best value found."""
    lo, hi = torch.tensor(lower), torch.tensor(upper)
    best = 0.0
    n_out = diff_net.out_size
    for j in range(n_out):
        for sign in (1.0, -1.0):
            x = starts.clone().requires_grad_(True)
            step = (hi - lo) / 20
            for _ in range(steps):
                v = sign * diff_net(x)[:, j]
                g, = torch.autograd.grad(v.sum(), x)
                with torch.no_grad():
                    x += step * g.sign()
                    x.copy_(torch.maximum(torch.minimum(x, hi), lo))
                step = step * 0.93
            with torch.no_grad():
                best = max(best, float((sign * diff_net(x)[:, j]).max()))
    return best


BOUNDS = ("crown", "alpha", "milp")


def error_bounds(blocks, center, radius, relax=None, samples=2000, seed=0, bound="crown") -> dict:
    """``{"lower", "upper", "unstable"}``: the bracket of ``max_B |f - g|_inf`` and the number of unstable
    neurons of ``f`` over the ball (IBP)."""
    from bnb.theory.exact import exact_bounds
    from relaxations.methods import output_bounds
    center = np.asarray(center, float)
    lower, upper = center - radius, center + radius
    unstable = sum(int(np.sum((l < 0) & (u > 0))) for l, u in ibp_pre(blocks, lower, upper))
    if relax is not None and len(relax) == 0:
        return {"lower": 0.0, "upper": 0.0, "unstable": unstable}  # g = f
    g = relaxed(blocks, lower, upper, relax)
    diff = difference(blocks, g, (lower, upper))
    net = from_blocks(diff)
    rng = np.random.default_rng(seed)
    x = torch.tensor(lower + (upper - lower) * rng.random((samples, center.size)))
    with torch.no_grad():
        d = net(x)
    lo_val = float(d.abs().max())
    top = torch.argsort(d.abs().max(dim=1).values, descending=True)[:16]
    lo_val = max(lo_val, _pgd(net, lower, upper, x[top]))
    if bound == "milp":
        lb, ub = exact_bounds(net, lower, upper)
        up_val = float(np.max(np.maximum(ub, -lb)))
    else:
        t = lambda a: torch.tensor(a)[None]  # noqa: E731
        lb, ub = output_bounds(net, t(lower), t(upper), bound)
        up_val = float(torch.maximum(ub[0], -lb[0]).max())
    return {"lower": lo_val, "upper": max(up_val, lo_val), "unstable": unstable}


def random_blocks(n_in, width, depth, n_out=1, seed=0) -> list:
    """A random ReLU network with ``depth`` hidden layers of ``width`` (He-scaled Gaussian weights,
    small Gaussian biases)."""
    rng = np.random.default_rng(seed)
    sizes = [n_in] + [width] * depth + [n_out]
    return [(rng.normal(0, np.sqrt(2.0 / a), (b, a)), rng.normal(0, 0.1, b)) for a, b in zip(sizes[:-1], sizes[1:])]


def depth_sweep(depths, radii, n_in=2, width=8, seeds=3, relax=None, bound="crown") -> list:
    """Rows ``{"depth", "radius", "seed", "lower", "upper", "unstable"}`` over random networks (centre 0)."""
    rows = []
    for depth in depths:
        for s in range(seeds):
            blocks = random_blocks(n_in, width, depth, seed=1000 * depth + s)
            for r in radii:
                e = error_bounds(blocks, np.zeros(n_in), r, relax, seed=s, bound=bound)
                rows.append({"depth": depth, "radius": r, "seed": s, **e})
    return rows


def lattice(blocks, center, radius, bound="crown") -> list:
    """``[{"relaxed": [layers], "lower", "upper"}]`` for every subset of the ReLU layers (<= 6 layers)."""
    import itertools
    L = len(blocks) - 1
    if L > 6:
        raise ValueError("the lattice of partial relaxations is enumerated for at most 6 ReLU layers")
    out = []
    for k in range(L + 1):
        for S in itertools.combinations(range(L), k):
            e = error_bounds(blocks, center, radius, S, bound=bound)
            out.append({"relaxed": list(S), "lower": e["lower"], "upper": e["upper"]})
    return out


def plot(rows, path, title="full relaxation error"):
    """Two panels: error against depth (one line per radius) and against radius (one line per depth);
    medians over seeds, lower bounds solid and upper bounds dashed; log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    depths = sorted({r["depth"] for r in rows})
    radii = sorted({r["radius"] for r in rows})
    med = lambda d, r, k: float(np.median([x[k] for x in rows if x["depth"] == d and x["radius"] == r]))  # noqa: E731
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for r in radii:
        line, = ax[0].plot(depths, [med(d, r, "lower") for d in depths], "o-", label=f"radius {r:g}")
        ax[0].plot(depths, [med(d, r, "upper") for d in depths], "--", color=line.get_color())
    for d in depths:
        line, = ax[1].plot(radii, [med(d, r, "lower") for r in radii], "o-", label=f"depth {d}")
        ax[1].plot(radii, [med(d, r, "upper") for r in radii], "--", color=line.get_color())
    ax[0].set(xlabel="depth (ReLU layers)", ylabel="max |f - g| over the ball", yscale="log", title=title)
    ax[1].set(xlabel="radius", ylabel="max |f - g| over the ball", xscale="log", yscale="log",
              title="solid: attained (lower), dashed: upper bound")
    ax[1].set_xticks(radii, [f"{r:g}" for r in radii])
    ax[1].minorticks_off()
    ax[0].legend(fontsize=8)
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def radius_sweep(blocks, center, radii, relax=None, bound="crown") -> list:
    """Rows ``{"depth", "radius", "lower", "upper", "unstable"}`` of one network over several radii."""
    return [{"depth": len(blocks) - 1, "radius": r, "seed": 0, **error_bounds(blocks, center, r, relax, bound=bound)}
            for r in radii]


def network_blocks(net) -> list:
    return blocks_of(net.to(dtype=torch.float64))
