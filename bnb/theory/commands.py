"""The logic behind the theory commands of ``bnb`` (``precision``, ``recover partition``, ``recover augment``,
``relaxation-error``): loading the inputs, calling :mod:`bnb.theory`, rendering text. Each function returns
``(result dict, text)``; :mod:`bnb.cli.main` prints one of them. Bad input raises :class:`bnb.errors.BnbError`."""
from __future__ import annotations

import numpy as np

from bnb.errors import BnbError


def _load(path):
    from bnb.errors import ModelError
    from bnb.io.onnx_loader import load_onnx
    model = load_onnx(path)
    if not model.network.relu_only:  # (the theory constructions encode ReLU exactly: issue 27, item 7)
        raise ModelError("the theory commands support ReLU networks only", path)
    return model


def _floats(text, what):
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise BnbError(f"{what} {text!r}: expected numbers separated by commas") from None


def _box(model, box):
    from bnb.theory.networks import parse_box
    if not box:
        raise BnbError("the input domain is missing: give --box=LO:HI,... (one LO:HI per input, or one for all)",
                       model.path)
    lo, hi = parse_box(box, model.network.in_size)
    model.check(lo, hi)
    return lo, hi


def precision_cmd(network, box, samples, methods):
    from bnb.theory.precision import METHODS, precision, table
    ms = tuple(m.strip() for m in methods.split(",")) if methods else METHODS
    bad = [m for m in ms if m not in METHODS]
    if bad:
        raise BnbError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    model = _load(network)
    lo, hi = _box(model, box)
    res = precision(model.network, lo, hi, samples, ms)
    return res, table(res)


def partition_cmd(network, spec, method, max_pieces, count_patterns=True):
    from bnb.io.vnnlib import parse_vnnlib
    from bnb.theory.partition import PARTITION_METHODS, partition
    if method not in PARTITION_METHODS:
        raise BnbError(f"unknown method '{method}'; choose from {', '.join(PARTITION_METHODS)}")
    model = _load(network)
    prop = parse_vnnlib(spec, model.network.in_size, model.network.out_size)
    if len(prop.specs) != 1:
        raise BnbError(f"partition needs one input box, the property has {len(prop.specs)}", spec)
    s = prop.specs[0]
    model.check(s.lower, s.upper)
    try:
        res = partition(model.network, s.lower, s.upper, method, max_pieces=max_pieces,
                        count_patterns=count_patterns)
    except ValueError as e:  # P1 refusing a layer, and the like
        raise BnbError(f"method {method}: {e}", network) from None
    pats = res["activation_patterns"]
    lines = [f"{method}: {res['pieces']} piece(s) ({res['splits']} split(s)), the network has "
             f"{'(not counted)' if pats is None else pats} activation pattern(s) on the box; "
             f"{'exact on every piece' if res['exact'] else 'NOT exact on every piece'}"]
    for j, (l, u, el, eu) in enumerate(zip(res["lower"], res["upper"], res["exact_lower"], res["exact_upper"])):
        lines.append(f"  Y_{j}: [{l: .6g}, {u: .6g}]   exact [{el: .6g}, {eu: .6g}]")
    return res, "\n".join(lines)


def augment_cmd(network, out, box):
    from bnb.theory.augment import augment
    model = _load(network)
    lo, hi = _box(model, box)
    res = augment(model, lo, hi, out)
    fmt = lambda b: "refused" if b is None else f"[{b[0]: .6g}, {b[1]: .6g}]"  # noqa: E731
    lines = [f"{res['kind']}: {res['layers_before']} ReLU layer(s), {res['neurons_before']} neuron(s) -> "
             f"{res['layers_after']} layer(s), {res['neurons_after']} neuron(s); written to {out}",
             f"equivalence: max |old - new| {res['max_diff_sampled']:.3g} sampled (onnxruntime), "
             f"{res['max_diff_milp']:.3g} by MILP: {'equivalent' if res['equivalent'] else 'NOT EQUIVALENT'}",
             "bounds          before                    after"]
    for m in res["before"]:
        lines.append(f"  {m:<8} {fmt(res['before'][m]):<26} {fmt(res['after'][m])}")
    return res, "\n".join(lines)


def relaxation_error_cmd(network, center, radii, depths, width, inputs, seeds, relax, lattice_flag, bound, plot):
    from bnb.theory import relaxation_error as re
    if bound not in re.BOUNDS:
        raise BnbError(f"unknown --bound '{bound}'; choose from {', '.join(re.BOUNDS)}")
    rs = _floats(radii, "--radii")
    if not rs or any(r <= 0 for r in rs):
        raise BnbError("--radii needs positive numbers")
    layers = None if relax is None else [int(v) for v in _floats(relax, "--relax")]
    if network:
        model = _load(network)
        blocks = re.network_blocks(model.network)
        c = np.zeros(model.network.in_size) if center is None else np.array(_floats(center, "--center"))
        if c.size != model.network.in_size:
            raise BnbError(f"--center gives {c.size} values, the network has {model.network.in_size} inputs")
        if layers is not None and any(not 0 <= i < len(blocks) - 1 for i in layers):
            raise BnbError(f"--relax: the network has ReLU layers 0..{len(blocks) - 2}")
        model.check(c - max(rs), c + max(rs))
        if lattice_flag:
            rows = re.lattice(blocks, c, rs[0], bound)
            text = "\n".join(["| relaxed layers | lower | upper |", "|---|---:|---:|"]
                             + [f"| {r['relaxed'] or 'none'} | {r['lower']:.4g} | {r['upper']:.4g} |" for r in rows])
            return {"radius": rs[0], "lattice": rows}, text
        rows = re.radius_sweep(blocks, c, rs, layers, bound)
    else:
        ds = [int(v) for v in _floats(depths, "--depths")]
        if not ds or any(d < 1 for d in ds):
            raise BnbError("--depths needs positive integers")
        rows = re.depth_sweep(ds, rs, inputs, width, seeds, layers, bound)
    if plot:
        re.plot(rows, plot)
    text = "\n".join(["| depth | radius | seed | unstable | lower (attained) | upper |",
                      "|---:|---:|---:|---:|---:|---:|"]
                     + [f"| {r['depth']} | {r['radius']:g} | {r['seed']} | {r['unstable']} | {r['lower']:.4g} | "
                        f"{r['upper']:.4g} |" for r in rows])
    return {"rows": rows}, text


def hull_table_cmd(plot):
    from bnb.theory.hull_table import hull_table
    return hull_table(plot)
