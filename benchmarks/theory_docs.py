"""Regenerate docs/theory.md, its plots (docs/theory/*.png) and the example models (docs/theory/models/).

    PYTHONPATH=. python benchmarks/theory_docs.py            # a few minutes on a 2-core CPU

Every table is the output of a ``bnb`` command (run in-process with click's test runner, ``--json``), and the
command is printed above it, with paths relative to the repository, so that each one can be re-run by hand.
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from bnb.cli.main import main  # noqa: E402
from bnb.theory import constructions as K  # noqa: E402
from bnb.theory.networks import evaluate, save_onnx  # noqa: E402
from bnb.theory.precision import LABELS  # noqa: E402
from bnb.theory.relaxation_error import random_blocks  # noqa: E402

DOCS = ROOT / "docs"
OUT = DOCS / "theory"
MODELS = OUT / "models"
FORMULAS = {"barrier": "2T abs(relu(z+1) - 1) + 2T abs(relu(z) - 1/2), T = 1",
            "barrier_pumped": "the same, 2 identity layers",
            "nested_max3": "max(x1, x2, x3), nested, inputs carried",
            "max2_carried": "x2 + relu(x1 - x2), x2 carried as relu(x2)",
            "max2_plain": "x2 + relu(x1 - x2), x2 as relu(x2) - relu(-x2)",
            "max2_symmetric": "(x1 + x2)/2 + abs(x1 - x2)/2", "abs_sum": "relu(x) + relu(-x)",
            "abs_max": "-x + relu(2x), -x as relu(-x) - relu(x)", "abs_deep": "relu(relu(x) + relu(-x))",
            "clip": "relu(x) - relu(x - 1)", "hat": "relu(x + 1) - 2 relu(x) + relu(x - 1)"}


def rel(p) -> str:
    return str(Path(p).resolve().relative_to(ROOT))


def bnb(*args):
    """Run ``bnb ARGS --json`` in-process; ``(command line, parsed JSON)``."""
    args = [str(a) for a in args]
    t0 = time.perf_counter()
    r = CliRunner().invoke(main, args + ["--json"])
    if r.exit_code != 0:
        raise RuntimeError(f"bnb {' '.join(args)} failed ({r.exit_code}): {r.output}")
    line = "bnb " + " ".join(shlex.quote(a) if not a.startswith("--box=") else a for a in args) + " --json"
    print(f"  {line}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    return line, json.loads(r.output.strip().splitlines()[-1])


def box_arg(lo, hi):
    return "--box=" + ",".join(f"{a:g}:{b:g}" for a, b in zip(lo, hi))


def vnnlib(path, lo, hi, n_out=1):
    lines = [f"(declare-const X_{i} Real)" for i in range(len(lo))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    for i, (a, b) in enumerate(zip(lo, hi)):
        lines += [f"(assert (>= X_{i} {a!r}))", f"(assert (<= X_{i} {b!r}))"]
    lines.append("(assert (<= Y_0 -1000.0))")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def fmt(v, nd=4):
    return "n/a" if v is None else f"{v:.{nd}g}"


def plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as p
    return p


# ------------------------------------------------------------------------------------------------ sections
def constructions(md):
    md.append("## 1. Constructions\n")
    md.append("Built by `bnb/theory/constructions.py` (affine blocks, then `Network` or ONNX via "
              "`bnb/theory/networks.py`); each is checked against its formula in `tests/test_theory.py`. "
              "The ONNX files are in `docs/theory/models/`.\n")
    md.append("| name | function | domain | ReLU layers | neurons |\n|---|---|---|---:|---:|")
    for name, (build, _, (lo, hi)) in K.CONSTRUCTIONS.items():
        blocks = build()
        save_onnx(blocks, MODELS / f"{name}.onnx")
        vnnlib(MODELS / f"{name}.vnnlib", lo, hi)
        md.append(f"| `{name}` | {FORMULAS[name]} | {box_arg(lo, hi)[6:]} | {len(blocks) - 1} | "
                  f"{sum(W.shape[0] for W, _ in blocks[:-1])} |")
    p = plt()
    fig, ax = p.subplots(1, 2, figsize=(10, 3.6))
    for name in ("abs_sum", "clip", "hat"):
        build, _, (lo, hi) = K.CONSTRUCTIONS[name]
        x = np.linspace(lo[0], hi[0], 401)[:, None]
        ax[0].plot(x[:, 0], evaluate(build(), x)[:, 0], label=name)
    ax[0].set(title="univariate CPWL constructions", xlabel="x")
    ax[0].legend()
    z = np.linspace(-1, 1, 401)[:, None]
    ax[1].plot(z[:, 0], evaluate(K.barrier(1.0), z)[:, 0], label="barrier network, T = 1")
    ax[1].axhline(0.0, color="r", ls="--", label="P1 lower bound (phantom point)")
    ax[1].axhline(1.0, color="g", ls=":", label="true minimum T")
    ax[1].set(title="universal barrier: P1 is off by T", xlabel="z")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "constructions.png", dpi=110)
    p.close(fig)
    md.append("\n![constructions](theory/constructions.png)\n")


def precision(md):
    md.append("## 2. Precision of the relaxations (`bnb precision`)\n")
    md.append("Gap between each relaxation's bounds and the exact range (MILP) on the box and on 20 random sub-boxes: "
              "`gap = max_j max(exact_lb - lb, ub - exact_ub)`; *precise* means a gap at most `1e-6 (1 + range)`. "
              "THEORY.md: one hidden layer is P1-exact, the carried nested max is P1-exact while the triangle is "
              "not on `[0,1]^2` (Baader et al.), the barrier defeats every relaxation here by `T` on the full box.\n")
    summary = {}
    for name in ("max2_carried", "max2_plain", "max2_symmetric", "nested_max3", "abs_sum", "abs_deep", "hat",
                 "barrier"):
        lo, hi = K.CONSTRUCTIONS[name][2]
        line, res = bnb("precision", rel(MODELS / f"{name}.onnx"), box_arg(lo, hi), "--samples", 20)
        summary[name] = res
        md.append(f"### `{name}`: {FORMULAS[name]}\n\n```\n{line}\n```\n")
        md.append("| relaxation | gap on the box | max gap | mean gap | precise on |\n|---|---:|---:|---:|---:|")
        for m, r in res["methods"].items():
            frac = "n/a" if r["precise_fraction"] is None else f"{100 * r['precise_fraction']:.0f}% of {res['boxes']}"
            md.append(f"| {LABELS[m]} | {fmt(r['box_gap'])} | {fmt(r['max_gap'])} | {fmt(r['mean_gap'])} | {frac} |")
        md.append("")
    p = plt()
    names = list(summary)
    methods = list(next(iter(summary.values()))["methods"])
    fig, ax = p.subplots(figsize=(11, 4))
    w = 0.8 / len(methods)
    for k, m in enumerate(methods):
        vals = [summary[n]["methods"][m]["precise_fraction"] or 0.0 for n in names]
        ax.bar(np.arange(len(names)) + k * w, [100 * v for v in vals], w, label=LABELS[m])
    ax.set_xticks(np.arange(len(names)) + 0.4, names, rotation=15)
    ax.set(ylabel="% of the 21 boxes on which it is precise", title="precision of each relaxation")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(OUT / "precision.png", dpi=110)
    p.close(fig)
    md.append("![precision](theory/precision.png)\n")


def barrier(md):
    md.append("## 3. The universal convex barrier (Mao et al., Thm 3.3 / 4.2)\n")
    md.append("The network is `>= T` everywhere on `[-1, 1]`, but P1 admits the phantom point `(y0, y1) = (1, 1/2)` "
              "where the valley is 0: P1's lower bound is off by exactly `T`, for every `T`, and pumping `k` "
              "identity layers between the two parts changes nothing for the layer-wise hull.\n")
    md.append("| T | identity layers k | command | P1 lower bound | exact minimum | gap |\n"
              "|---:|---:|---|---:|---:|---:|")
    for T, k in ((1, 0), (2.5, 0), (10, 0), (100, 0), (3, 1), (3, 3)):
        path = MODELS / f"barrier_T{T:g}_k{k}.onnx"
        save_onnx(K.barrier(float(T), k), path)
        line, res = bnb("precision", rel(path), "--box=-1:1", "--samples", 0, "--methods", "p1")
        ex = res["exact_box"]["lower"][0]
        gap = res["methods"]["p1"]["box_gap"]
        md.append(f"| {T:g} | {k} | `{line}` | {ex - gap:.3g} | {ex:.6g} | {gap:.6g} |")
    md.append("")


def partitioning(md):
    md.append("## 4. Strategy (ii): partitioning along ReLU phases (`bnb recover partition`)\n")
    md.append("Pieces are split in layer order on their most balanced unstable neuron (so every piece is a convex "
              "polytope), and a piece is finished once the relaxation's certified bounds meet its exact range "
              "(sampled points or the MILP). `activation_patterns` counts the activation regions of the network "
              "on the box (exact LP enumeration). THEORY.md: the barrier is P1-exact after one split at `z = 0`; "
              "the carried nested max of d inputs needs 1 piece for P1 and all `2^(d-1)` for a single-neuron "
              "relaxation. The loop is the engine's (`bnb.engine.loop.search`), and the same split order is the "
              "branching strategy `bab.branching: partition` of `bnb verify` / `bnb run`, which stops a piece when the "
              "property is proven on it instead of when the relaxation is exact.\n")
    nets = [("barrier", MODELS / "barrier.onnx", MODELS / "barrier.vnnlib")]
    for d in (2, 3, 4):
        path = MODELS / f"nested_max{d}.onnx"
        save_onnx(K.nested_max(d), path)
        nets.append((f"nested_max{d}", path, vnnlib(MODELS / f"nested_max{d}.vnnlib", [0.0] * d, [1.0] * d)))
    path = MODELS / "random_2x3x3x1.onnx"
    save_onnx(random_blocks(2, 3, 2, seed=5), path)
    nets.append(("random 2-3-3-1", path, vnnlib(MODELS / "random_2x3x3x1.vnnlib", [-1.0, -1.0], [1.0, 1.0])))
    md.append("| network | method | pieces | activation patterns | exact | lower | upper | exact range | time (s) |")
    md.append("|---|---|---:|---:|---|---:|---:|---|---:|")
    lines, curve = [], {}
    for name, net, spec in nets:
        for m in ("lp", "anderson", "p1"):
            if m == "anderson" and not name.startswith("nested"):
                continue
            line, r = bnb("recover", "partition", rel(net), rel(spec), "--method", m)
            lines.append(line)
            curve.setdefault(m, {})[name] = r["pieces"]
            curve.setdefault("patterns", {})[name] = r["activation_patterns"]
            exact = "yes" if r["exact"] else "no"
            md.append(f"| {name} | {m} | {r['pieces']} | {r['activation_patterns']} | {exact} | "
                      f"{r['lower'][0]:.6g} | {r['upper'][0]:.6g} | "
                      f"[{r['exact_lower'][0]:.6g}, {r['exact_upper'][0]:.6g}] | {r['time']:.1f} |")
    md.append("\nCommands:\n\n```\n" + "\n".join(lines) + "\n```\n")
    p = plt()
    fig, ax = p.subplots(figsize=(6, 4))
    ds = [2, 3, 4]
    for m, style in (("patterns", "k:"), ("lp", "o-"), ("anderson", "s--"), ("p1", "^-")):
        ax.plot(ds, [curve[m][f"nested_max{d}"] for d in ds], style,
                label="activation patterns" if m == "patterns" else m)
    ax.set(xlabel="d (inputs of the nested max)", ylabel="pieces to reach the exact bound", yscale="log",
           title="partition complexity: single-neuron vs P1")
    ax.set_xticks(ds)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "partition.png", dpi=110)
    p.close(fig)
    md.append("![partition](theory/partition.png)\n")
    md.append("The partitioning runs its own loop (`bnb/theory/partition.py`); its core, `PhasePartition`, has the "
              "shape of a branching strategy (`root`, `bound` a batch of pieces, `done`, `split`), meant to sit in "
              "the engine next to input and ReLU splitting. Its bounds per piece are certified; the exact range per "
              "piece (to decide that a piece is finished) comes from sampling or the MILP oracle, so it is a "
              "measuring instrument, not a verification mode.\n")


def augmentation(md):
    md.append("## 5. Strategy (i): augmentation (`bnb recover augment`)\n")
    md.append("Re-encodes a network into an equivalent one on which P1 is exact: univariate networks with one hidden "
              "layer from their exact breakpoints, convex (concave) functions as the nested max (min) of their affine "
              "pieces with the input carried through every layer. The general construction of the paper's Theorem 5.1 "
              "could not be obtained while this was written; other networks are refused with a message (see "
              "`bnb/theory/augment.py` for the precise class). Equivalence: 20,000 uniform points through both ONNX "
              "files (onnxruntime) and the exact MILP of the difference network.\n")
    import torch

    from relaxations.network import Network
    torch.manual_seed(1)
    seq = torch.nn.Sequential(torch.nn.Linear(1, 6), torch.nn.ReLU(), torch.nn.Linear(6, 6), torch.nn.ReLU(),
                              torch.nn.Linear(6, 1))
    save_onnx(Network.from_torch(seq, (1,)), MODELS / "random_univariate.onnx")
    neg = K.nested_max(2)
    neg[-1] = (-neg[-1][0], -neg[-1][1])
    save_onnx(neg, MODELS / "min2_concave.onnx")
    # barrier(x1) + x2: a convex function of two inputs on which P1 is off by T
    from bnb.theory.networks import parallel
    bar = K.barrier(1.0)
    bar[0] = (np.hstack([bar[0][0], np.zeros((2, 1))]), bar[0][1])
    both = parallel(bar, [(np.array([[0.0, 1.0]]), np.zeros(1))], (np.array([-1.0, 0.0]), np.array([1.0, 1.0])))
    both[-1] = (both[-1][0].sum(axis=0, keepdims=True), both[-1][1].sum(keepdims=True))
    save_onnx(both, MODELS / "barrier_plus_x2.onnx")
    save_onnx(K.barrier(1.0, 2), MODELS / "barrier_pumped.onnx")
    cases = [("barrier", "--box=-1:1"), ("barrier_pumped", "--box=-1:1"), ("barrier_plus_x2", "--box=-1:1,0:1"),
             ("hat", "--box=-2:2"), ("random_univariate", "--box=-2:2"),
             ("max2_symmetric", "--box=0:1"), ("max2_plain", "--box=-1:1"), ("min2_concave", "--box=0:1")]
    md.append("`barrier_plus_x2` is `barrier(x1) + x2` on `[-1,1] x [0,1]` (convex, two inputs: re-encoded as the "
              "nested max of its 3 affine pieces).\n")
    md.append("| network | kind | layers / neurons before -> after | max diff (sampled, MILP) | P1 before | P1 after "
              "| triangle LP after | exact |")
    md.append("|---|---|---|---|---|---|---|---|")
    lines = []
    b = lambda v: "refused" if v is None else f"[{v[0]:.6g}, {v[1]:.6g}]"  # noqa: E731
    for name, box in cases:
        line, r = bnb("recover", "augment", rel(MODELS / f"{name}.onnx"), "--out",
                      rel(MODELS / f"{name}_augmented.onnx"), box)
        lines.append(line)
        md.append(f"| `{name}` | {r['kind']} | {r['layers_before']} / {r['neurons_before']} -> {r['layers_after']} / "
                  f"{r['neurons_after']} | {r['max_diff_sampled']:.2g}, {r['max_diff_milp']:.2g} | "
                  f"{b(r['before']['p1'])} | "
                  f"{b(r['after']['p1'])} | {b(r['after']['lp'])} | {b(r['after']['exact'])} |")
    md.append("\nCommands:\n\n```\n" + "\n".join(lines) + "\n```\n")


def relaxation_error(md):
    md.append("## 6. Error of the full relaxation against depth and radius (Papamichail et al.)\n")
    md.append("Every unstable ReLU replaced by its upper chord (IBP bounds over the ball) gives an affine network `g`; "
              "the table brackets `max over the ball of |f - g|`: *lower* is attained (samples, then gradient ascent), "
              "*upper* is CROWN on the difference network (rigorous, loose: the two copies are relaxed independently). "
              "Random networks: 2 inputs, width 8, He-scaled weights, balls around 0, 8 seeds (medians in the table "
              "and the plot).\n")
    png = OUT / "relaxation_error.png"
    line, r = bnb("relaxation-error", "--depths", "1,2,3,4,6,8", "--radii", "0.02,0.1,0.5", "--width", 8,
                  "--seeds", 8, "--plot", rel(png))
    md.append(f"```\n{line}\n```\n")
    rows = r["rows"]
    md.append("| depth | radius | median unstable | median lower | median upper |\n|---:|---:|---:|---:|---:|")
    for d in sorted({x["depth"] for x in rows}):
        for rad in sorted({x["radius"] for x in rows}):
            sel = [x for x in rows if x["depth"] == d and x["radius"] == rad]
            md.append(f"| {d} | {rad:g} | {np.median([x['unstable'] for x in sel]):.0f} | "
                      f"{np.median([x['lower'] for x in sel]):.4g} | {np.median([x['upper'] for x in sel]):.4g} |")
    md.append(f"\n![relaxation error]({rel(png)[5:]})\n")
    md.append("### The lattice of partial relaxations\n")
    md.append("Relaxing only a subset of the ReLU layers of one network (a random 2-6-6-6-1 network, ball of radius "
              "0.3 around 0); the upper bound here is the exact MILP maximum of the difference (an oracle; small "
              "networks only), so the two columns agree up to the optimisation of the lower bound.\n")
    path = MODELS / "random_2x6x6x6x1.onnx"
    save_onnx(random_blocks(2, 6, 3, seed=3), path)
    line, r = bnb("relaxation-error", rel(path), "--radii", "0.3", "--lattice", "--bound", "milp")
    md.append(f"```\n{line}\n```\n")
    md.append("| relaxed layers | lower (attained) | upper (MILP) |\n|---|---:|---:|")
    for x in r["lattice"]:
        relaxed = ", ".join(map(str, x["relaxed"])) or "none (the network)"
        md.append(f"| {relaxed} | {x['lower']:.4g} | {x['upper']:.4g} |")
    md.append("")


def smooth(md):
    md.append("## 7. Smooth activations: precision and relaxation error (issue 27, item 7)\n")
    md.append("No MILP encodes sigmoid, tanh or softplus, so on these networks the exact range becomes a bracket "
              "(`bnb/theory/exact.py::smooth_bracket`): the *lower* end of the minimum is the piecewise-linear "
              "sandwich MILP (`relaxations/milp_sandwich.py`: 8 pieces per neuron, the interpolation error of each "
              "piece bounded rigorously, valid up to HiGHS's tolerances: an oracle, not a certificate), the *upper* "
              "end a value attained at a point of the box (the sandwich's argmin, 2,000 samples); the maximum the "
              "same way round. A relaxation's gap is then bracketed too, `lo..hi`: `lo` is certain (the true range "
              "is inside the sandwich's), `hi` is what the attained values show (a gap is at most that). *precise* "
              "counts boxes where even `hi` is within 1e-6. The ReLU LP relaxations are skipped with a note; the LPs "
              "with one-dimensional and multi-input hull cuts (section 8) take their place.\n")
    path = MODELS / "sigmoid_2x4x4x2.onnx"
    save_onnx(random_blocks(2, 4, 2, n_out=2, seed=1), path, "Sigmoid")
    line, r = bnb("precision", rel(path), "--box=-1:1", "--samples", 10)
    md.append(f"```\n{line}\n```\n")
    md.append("| relaxation | gap on the box | max gap | mean gap | precise on |\n|---|---:|---:|---:|---:|")
    rng = lambda v: f"{v[0]:.4g}..{v[1]:.4g}"  # noqa: E731
    for m, x in r["methods"].items():
        md.append(f"| {LABELS.get(m, m)} | {rng(x['box_gap'])} | {rng(x['max_gap'])} | {rng(x['mean_gap'])} | "
                  f"{100 * x['precise_fraction']:.0f}% of {r['boxes']} |")
    b = r["bracket"]
    md.append("\nOn the box: " + "; ".join(f"`Y_{j}` min in [{b['min_lo'][j]:.6g}, {b['min_hi'][j]:.6g}], max in "
                                           f"[{b['max_lo'][j]:.6g}, {b['max_hi'][j]:.6g}]"
                                           for j in range(len(b["min_lo"]))) + ".\n")
    md.append("**Relaxation error.** For a smooth layer the relaxation replaces each neuron by its *chord* over its "
              "IBP interval (the line through `(l, f(l))` and `(u, f(u))`, which for a ReLU is exactly section 6's "
              "chord-or-phase); the lower end is attained (samples, then gradient ascent), the upper end bounds the "
              "difference network `f - g` (one network with masked activations) by CROWN or, with `--bound milp`, "
              "by the sandwich MILP. A random 2-6-6-1 tanh network:\n")
    path = MODELS / "tanh_2x6x6x1.onnx"
    save_onnx(random_blocks(2, 6, 2, seed=3), path, "Tanh")
    line, r = bnb("relaxation-error", rel(path), "--radii", "0.1,0.5,1", "--bound", "milp")
    md.append(f"```\n{line}\n```\n")
    md.append("| radius | neurons around 0 | lower (attained) | upper (sandwich MILP) |\n|---:|---:|---:|---:|")
    for x in r["rows"]:
        md.append(f"| {x['radius']:g} | {x['unstable']} | {x['lower']:.4g} | {x['upper']:.4g} |")
    md.append("\nRandom networks take `--activation relu|sigmoid|tanh|softplus`; against depth (2 inputs, width 8, "
              "3 seeds, medians, CROWN's upper bound):\n")
    line, r = bnb("relaxation-error", "--depths", "1,2,4", "--radii", "0.1,0.5", "--seeds", 3, "--activation", "tanh")
    md.append(f"```\n{line}\n```\n")
    md.append("| depth | radius | median lower | median upper |\n|---:|---:|---:|---:|")
    rows = r["rows"]
    for d in sorted({x["depth"] for x in rows}):
        for rad in sorted({x["radius"] for x in rows}):
            sel = [x for x in rows if x["depth"] == d and x["radius"] == rad]
            md.append(f"| {d} | {rad:g} | {np.median([x['lower'] for x in sel]):.4g} | "
                      f"{np.median([x['upper'] for x in sel]):.4g} |")
    md.append("\n`bnb recover partition` and `bnb recover augment` stay ReLU-only (one-line refusal).\n")


def hull(md):
    md.append("## 8. The tight hull of an S-shaped neuron over a box (`bnb hull-table`)\n")
    md.append("THEORY.md result 5 and SSHAPED.md §1: the convex hull of the graph of `y = f(w.x + b)` over a box, `f` "
              "S-shaped (sigmoid, tanh) or convex (softplus), is not the one-dimensional hull of `f` on the range of "
              "`w.x + b`: at a point where the ray from the box's least corner leaves the box below `f`'s tie point, "
              "the concave envelope is the perspective of the same problem on a facet "
              "(`relaxations/sshaped_hull.py::concave_envelope`; the facets of the recursion are the prefixes of `t` "
              "sorted, so one call costs a sort and one vectorised tie-point bisection). For a convex `f` this is the "
              "Lovász (staircase) hull. Its supergradient gives a cut `y <= alpha + beta.x`, checked exactly before "
              "use (`cut_violation`, the continuous-knapsack slice argument of SSHAPED.md §3; `docs/soundness.md`). "
              "The LP methods `hull1d` (one-dimensional hulls of every neuron) and `hull` (plus the multi-input cuts) "
              "bound sigmoid/tanh/softplus chains (`bnb bounds --method hull`); mn-crown takes the same cuts as "
              "constraints inside the batched back-substitution (`docs/performance.md`).\n")
    line, r = bnb("hull-table", "--plot", rel(OUT / "hull.png"))
    md.append(f"```\n{line}\n```\n")
    md.append("min of `w2 . f(W1 x + b1)` over `x` in `[-1, 1]^2` (the three networks of SSHAPED.md §1):\n")
    md.append("| f | IBP | CROWN (adaptive lines) | CROWN (tangent lines) | 1-D hull LP | hull LP | exact |\n"
              "|---|---:|---:|---:|---:|---:|---:|")
    cols = ("ibp", "crown", "crown_tangent", "hull1d", "hull", "exact")
    for row in r["table"]:
        md.append(f"| {row['activation']} | " + " | ".join(f"{row[c]:.4f}" for c in cols) + " |")
    md.append("\n`y = f(x1 + x2)` on `[-2, 2]^2` at the vertex `(2, -2)`, upper envelopes: "
              + "; ".join(f"{v['activation']}: f = {v['f']:.4f}, multi-input hull {v['hull']:.4f}, 1-D hull "
                          f"{v['hull1d']:.4f}" for v in r["vertex"]) + ".\n")
    md.append("(The exact column is a 401 x 401 grid polished by L-BFGS-B, not a certificate; every other column is a "
              "certified lower bound.) SSHAPED.md's column \"CROWN default lines\" equals both bnb's default "
              "`adaptive` lines and the tangent/chord lines of its §2 on these boxes. Both LPs use CROWN's "
              "intermediate bounds (for one hidden layer, the exact interval of each pre-activation). Fixed "
              "single-neuron lines can be far worse than IBP on wide intervals, and the hull LP closes most of the "
              "gap of the 1-D hull LP to the exact minimum (all of it on the sigmoid row). The figure: the upper "
              "envelopes of `f(x1 + x2)` along the anti-diagonal `x2 = -x1`, where `f(x1 + x2) = f(0)`: the 1-D "
              "hull (and so every single-neuron line) stays at its value at `s = 0`, while the multi-input hull "
              "falls to the function at the vertices `(-2, 2)` and `(2, -2)`; between them the ray from the least "
              "corner reaches the tie level and the two hulls agree.\n")
    md.append("![hull](theory/hull.png)\n")


def main_():
    OUT.mkdir(parents=True, exist_ok=True)
    MODELS.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    md = ["# Theory, demonstrated\n",
          "Each result of `THEORY.md` (in `../shared/`, beside the repository; Baader et al.; Mao, Zhang & Vechev, "
          "arXiv 2410.06816; Papamichail "
          "et al.) reproduced by one `bnb` command. Generated by `PYTHONPATH=. python benchmarks/theory_docs.py` "
          "(every table is the `--json` output of the command printed above it; the models are in "
          "`docs/theory/models/`). Bounds of the relaxations are certified (LP methods: dual certificates; "
          "single-neuron methods: with their rounding error bound); exact ranges come from the MILP with tight "
          "tolerances (`bnb/theory/exact.py`), an oracle, not a certificate. Negative boxes need `--box=LO:HI` "
          "with the equals sign.\n"]
    for section in (constructions, precision, barrier, partitioning, augmentation, relaxation_error, smooth,
                    hull):
        print(section.__name__, flush=True)
        section(md)
    md.append("## Not covered\n")
    md.append("- The general construction of Mao et al.'s Theorem 5.1 (augmentation of *any* CPWL function): not "
              "obtained; `bnb recover augment` covers univariate networks and convex or concave functions of several "
              "inputs, one output, and refuses the rest.\n"
              "- Cross-layer windows `P_r`: there is no `P_r` relaxation in `relaxations/lp/`, so the pumped barrier "
              "shows only that P1's gap stays `T` with identity layers in between, not the statement about windows.\n"
              "- Exact ranges and the partition's stopping test use the MILP oracle (tolerances `1e-10`), not a "
              "certificate.\n")
    md.append(f"*Generated in {time.perf_counter() - t0:.0f} s on a shared 2-core CPU.*\n")
    (DOCS / "theory.md").write_text("\n".join(md))


if __name__ == "__main__":
    main_()
