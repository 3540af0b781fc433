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

Networks with other activations (sigmoid, tanh, softplus, LeakyReLU; ``acts``, one
:class:`relaxations.milp_sandwich.Act` per activation layer): the relaxation of a layer replaces every neuron by
its *chord* over its IBP interval ``[l, u]`` (the line through ``(l, f(l))`` and ``(u, f(u))``; the constant
``f(l)`` on a zero-width interval): for a ReLU this is the ReLU case above (chord of an unstable neuron, the phase
of a stable one), for an S-shaped function the upper line of a convex part and the lower line of a concave part
(SSHAPED.md §2), the line of least maximal vertical distance among those through the ends. ``g`` keeps the depth of
``f`` (a relaxed layer is the identity, its chord folded into the next block) and ``f - g`` is one network with
masked activations (:func:`smooth_difference`); the upper bound ``milp`` is then the piecewise-linear sandwich
MILP (:mod:`relaxations.milp_sandwich`, valid up to the MIP solver's tolerances: an oracle too). ``unstable``
counts the neurons whose interval contains 0 in its interior.
"""
from __future__ import annotations

import numpy as np
import torch

from bnb.theory.networks import blocks_of, difference, from_blocks


def ibp_pre(blocks, lower, upper, acts=None):
    """Pre-activation bounds ``[(l, u)]`` of every activation layer (float64 IBP; ``acts`` None: ReLU)."""
    from relaxations.milp_sandwich import act_interval
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    out = []
    for i, (W, b) in enumerate(blocks[:-1]):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        l, u = W @ c + b - np.abs(W) @ r, W @ c + b + np.abs(W) @ r
        out.append((l, u))
        lo, hi = (np.maximum(l, 0), np.maximum(u, 0)) if acts is None else act_interval(acts[i], l, u)
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


def chord_relaxed(blocks, acts, lower, upper, relax=None):
    """``(g_blocks, g_acts)`` of the same depth as ``f``: the layers in ``relax`` (all when None) replaced by their
    chords (module docstring) folded into the next block, their activation made the identity (mask all False)."""
    from relaxations.milp_sandwich import Act, act_value
    pre = ibp_pre(blocks, lower, upper, acts)
    relax = set(range(len(pre))) if relax is None else set(relax)
    g = [(W.copy(), b.copy()) for W, b in blocks]
    g_acts = list(acts)
    for i, (l, u) in enumerate(pre):
        if i not in relax:
            continue
        fl, fu = act_value(acts[i], l), act_value(acts[i], u)
        wide = u > l
        s = np.where(wide, (fu - fl) / np.where(wide, u - l, 1.0), 0.0)
        t = fl - s * l
        W, b = g[i + 1]
        g[i + 1] = (W * s[None, :], W @ t + b)
        g_acts[i] = Act(acts[i].kind, acts[i].alpha, np.zeros(l.size, bool))
    return g, g_acts


def smooth_difference(blocks, acts, g_blocks, g_acts):
    """The :class:`relaxations.network.Network` of ``f(x) - g(x)`` for two networks of the same depth and
    activation kinds: both side by side (block-diagonal weights, the activations' masks concatenated; a ReLU
    layer as a LeakyReLU of slope 0, which takes a mask), the outputs subtracted."""
    import torch

    from relaxations.layers import LeakyReLU, Linear, SmoothActivation
    from relaxations.network import Network
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    layers = []
    for i, ((Wf, bf), (Wg, bg)) in enumerate(zip(blocks[:-1], g_blocks[:-1])):
        if i == 0:
            W = np.vstack([Wf, Wg])
        else:
            W = np.block([[Wf, np.zeros((Wf.shape[0], Wg.shape[1]))], [np.zeros((Wg.shape[0], Wf.shape[1])), Wg]])
        layers.append(Linear(t(W), t(np.concatenate([bf, bg]))))
        n = W.shape[0]
        on = lambda a, k: np.ones(k, bool) if a.mask is None else np.asarray(a.mask, bool)  # noqa: E731
        mask = np.concatenate([on(acts[i], Wf.shape[0]), on(g_acts[i], Wg.shape[0])])
        a = acts[i]
        layers.append(SmoothActivation((n,), a.kind, mask) if a.kind not in ("relu", "leaky_relu")
                      else LeakyReLU((n,), a.alpha if a.kind == "leaky_relu" else 0.0, mask))
    (Wf, bf), (Wg, bg) = blocks[-1], g_blocks[-1]
    layers.append(Linear(t(np.hstack([Wf, -Wg])), t(bf - bg)))
    return Network(layers, (blocks[0][0].shape[1],))


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


def error_bounds(blocks, center, radius, relax=None, samples=2000, seed=0, bound="crown", acts=None) -> dict:
    """``{"lower", "upper", "unstable"}``: the bracket of ``max_B |f - g|_inf`` and the number of unstable
    neurons of ``f`` over the ball (IBP). ``acts``: None for a ReLU network, else its activations (module
    docstring)."""
    from bnb.theory.exact import exact_bounds
    from relaxations.methods import output_bounds
    center = np.asarray(center, float)
    lower, upper = center - radius, center + radius
    unstable = sum(int(np.sum((l < 0) & (u > 0))) for l, u in ibp_pre(blocks, lower, upper, acts))
    if relax is not None and len(relax) == 0:
        return {"lower": 0.0, "upper": 0.0, "unstable": unstable}  # g = f
    if acts is None:
        g = relaxed(blocks, lower, upper, relax)
        net = from_blocks(difference(blocks, g, (lower, upper)))
    else:
        net = smooth_difference(blocks, acts, *chord_relaxed(blocks, acts, lower, upper, relax))
    rng = np.random.default_rng(seed)
    x = torch.tensor(lower + (upper - lower) * rng.random((samples, center.size)))
    with torch.no_grad():
        d = net(x)
    lo_val = float(d.abs().max())
    top = torch.argsort(d.abs().max(dim=1).values, descending=True)[:16]
    lo_val = max(lo_val, _pgd(net, lower, upper, x[top]))
    if bound == "milp" and acts is not None:
        from relaxations.milp_sandwich import sandwich_bounds
        lb, ub = sandwich_bounds(net, lower, upper)
        up_val = float(np.max(np.maximum(ub, -lb)))
    elif bound == "milp":
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


def depth_sweep(depths, radii, n_in=2, width=8, seeds=3, relax=None, bound="crown", activation="relu") -> list:
    """Rows ``{"depth", "radius", "seed", "lower", "upper", "unstable"}`` over random networks (centre 0) with
    ``activation`` (``relu``, ``sigmoid``, ``tanh``, ``softplus``) after every hidden layer."""
    from relaxations.milp_sandwich import Act
    rows = []
    for depth in depths:
        acts = None if activation == "relu" else [Act(activation)] * depth
        for s in range(seeds):
            blocks = random_blocks(n_in, width, depth, seed=1000 * depth + s)
            for r in radii:
                e = error_bounds(blocks, np.zeros(n_in), r, relax, seed=s, bound=bound, acts=acts)
                rows.append({"depth": depth, "radius": r, "seed": s, **e})
    return rows


def lattice(blocks, center, radius, bound="crown", acts=None) -> list:
    """``[{"relaxed": [layers], "lower", "upper"}]`` for every subset of the ReLU layers (<= 6 layers)."""
    import itertools
    L = len(blocks) - 1
    if L > 6:
        raise ValueError("the lattice of partial relaxations is enumerated for at most 6 ReLU layers")
    out = []
    for k in range(L + 1):
        for S in itertools.combinations(range(L), k):
            e = error_bounds(blocks, center, radius, S, bound=bound, acts=acts)
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


def radius_sweep(blocks, center, radii, relax=None, bound="crown", acts=None) -> list:
    """Rows ``{"depth", "radius", "lower", "upper", "unstable"}`` of one network over several radii."""
    return [{"depth": len(blocks) - 1, "radius": r, "seed": 0,
             **error_bounds(blocks, center, r, relax, bound=bound, acts=acts)} for r in radii]


def network_blocks(net) -> list:
    """The affine blocks of any network (its activations: :func:`network_acts`)."""
    return blocks_of(net.to(dtype=torch.float64), any_activation=True)


def network_acts(net):
    """None for a ReLU network, else its activations (:func:`relaxations.milp_sandwich.network_activations`)."""
    from relaxations.milp_sandwich import network_activations
    return None if net.relu_only else network_activations(net)
