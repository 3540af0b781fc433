"""Tight instances for planted class (k) of ``../shared/CERTIFICATES.md`` §5: a weight scaled by 1.01 where that
really makes the property false (used by ``benchmarks/cert_plants.py --tight N``).

On a suite's real networks: a small box inside one of the suite's property boxes, one output ``Y_i``, the largest
value ``Y_i(x*)`` found (gradient ascent; then bnb's own counterexamples), and the property "``Y_i >= t`` somewhere
in the box" with ``t`` above it by half of what the two weights that raise ``Y_i(x*)`` most add when scaled by 1.01.
bnb proves it unsat and writes a certificate (the checker must accept it); then each of those weights makes the
network reach ``t`` at ``x*`` by a clear margin, replayed with onnxruntime (float32) on the scaled ONNX file. A
checker that accepts the certificate on such a network accepts a false property: every one must be rejected.
Whether the plant invalidates rests on the onnxruntime replay only.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

MARGIN = 1e-5   # the scaled network exceeds t at x* by at least this much, relative to 1 + |t| (float32 error is ~1e-7)
FACTOR = 1.01


class Replay:
    """onnxruntime on an ONNX file whose weight initializers are fed as inputs: the network with any one weight
    changed, at one point, without writing a file per candidate."""

    def __init__(self, onnx_path):
        import onnx
        import onnxruntime as ort
        from onnx import numpy_helper
        m = onnx.load(str(onnx_path))
        inits = {t.name for t in m.graph.initializer}
        real = next(i for i in m.graph.input if i.name not in inits)
        self.input = real.name
        self.shape = [d.dim_value or 1 for d in real.type.tensor_type.shape.dim]
        self.weights = {t.name: numpy_helper.to_array(t).copy() for t in m.graph.initializer
                        if len(t.dims) == 2 and min(t.dims) > 1}
        keep = [t for t in m.graph.initializer if t.name not in self.weights]
        listed = {i.name for i in m.graph.input}  # older files list their initializers as inputs too
        for name, w in self.weights.items():
            if name not in listed:
                m.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                        list(w.shape)))
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def __call__(self, x, changed=None):
        """The outputs at ``x`` (float32), with ``changed`` = ``(name, flat index, factor)`` applied."""
        feed = dict(self.weights)
        if changed is not None:
            name, k, f = changed
            w = feed[name].copy()
            w.reshape(-1)[k] = np.float32(w.reshape(-1)[k] * f)
            feed[name] = w
        feed[self.input] = np.asarray(x, np.float32).reshape(self.shape)
        return self.sess.run(None, feed)[0].reshape(-1).astype(np.float64)


def scaled_copy(onnx_path, name, k, out, factor=FACTOR):
    """The ONNX file with weight ``name[k]`` (flat index) times ``factor`` (rounded to float32)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(onnx_path))
    init = next(t for t in m.graph.initializer if t.name == name)
    w = numpy_helper.to_array(init).copy()
    w.reshape(-1)[k] = np.float32(w.reshape(-1)[k] * factor)
    init.CopyFrom(numpy_helper.from_array(w, name))
    onnx.save(m, str(out))
    return out


def suite_boxes(results, bench):
    """``[(onnx path, lower, upper)]``: each distinct network of a results CSV with one of its property boxes."""
    from bnb.io.vnnlib import parse_vnnlib
    seen, out = set(), []
    for r in csv.DictReader(open(results)):
        if r["onnx"] in seen:
            continue
        seen.add(r["onnx"])
        spec = parse_vnnlib(str(Path(bench) / r["vnnlib"])).specs[0]
        out.append((Path(bench) / r["onnx"], np.asarray(spec.lower, float), np.asarray(spec.upper, float)))
    return out


def best_point(net, lo, hi, out, rng, starts=16, steps=60):
    """A point of the box where ``Y_out`` is large: projected gradient ascent (float64) from random starts."""
    import torch
    net = net.to(dtype=torch.float64)
    l, h = torch.from_numpy(lo), torch.from_numpy(hi)
    x = (l + (h - l) * torch.from_numpy(rng.random((starts, lo.size)))).requires_grad_(True)
    step = (h - l) / 10
    for k in range(steps):
        y = net(x)[:, out]
        (g,) = torch.autograd.grad(y.sum(), x)
        with torch.no_grad():
            x += step * torch.sign(g) * (0.5 ** (k // 15))
            x.copy_(torch.maximum(torch.minimum(x, h), l))
    with torch.no_grad():
        y = net(x)[:, out]
    return x[int(torch.argmax(y))].detach().numpy()


def weight_effects(rep, x, out, rng, per_tensor=3000):
    """Per weight tensor, the sampled weight (``per_tensor`` at most) whose scaling by 1.01 raises ``Y_out(x)``
    most: ``[(value reached, name, flat index)]``, highest first."""
    best = []
    for name in sorted(rep.weights):
        size = rep.weights[name].size
        ks = rng.permutation(size)[:per_tensor]
        ys = [rep(x, (name, int(k), FACTOR))[out] for k in ks]
        j = int(np.argmax(ys))
        best.append((float(ys[j]), name, int(ks[j])))
    return sorted(best, reverse=True)


def tight_instance(onnx_path, lower, upper, rng, folder, width=0.2, want=2, x_best=None, out=None):
    """A small box (``width`` of the property box per input; at most 0.02 wide on networks of over 100 inputs:
    images), the output (of all) that the scalings below move most, the best point ``x*`` found for it by gradient
    ascent (or ``x_best``: a counterexample bnb found to an earlier threshold), the ``want`` weights (from
    different tensors) whose scaling raises ``Y_out(x*)`` most, and ``t`` halfway between ``Y_out(x*)`` and the
    least of what they reach. Writes ``tight.vnnlib`` in ``folder``. Returns a dict, or None when the outputs are
    nearly constant on the box or no scaling moves ``Y_out(x*)`` clearly.

    ``t`` need not be above the true maximum: if it is not, bnb answers sat with a better point, and the caller
    tries again from it (:func:`cert_plants.tight_plants`)."""
    import torch

    from benchmarks.fuzz import write_vnnlib
    from bnb.io.onnx_loader import load_onnx
    from relaxations.fp import to_dtype_down, to_dtype_up
    net = load_onnx(str(onnx_path)).network
    rep = Replay(onnx_path)
    if x_best is None:
        span = (upper - lower) * width
        if lower.size > 100:
            span = np.minimum(span, 0.02)
        c = lower + (upper - lower - span) * rng.random(lower.size) + span / 2
        # float32 ends inside the property's box, so that the file's decimals are exact
        lo = to_dtype_up(np.maximum(c - span / 2, lower), torch.float32).double().numpy()
        hi = to_dtype_down(np.minimum(c + span / 2, upper), torch.float32).double().numpy()
    else:
        lo, hi = lower, upper
    outs = [out]
    if out is None:
        ys = np.array([rep(lo + (hi - lo) * rng.random(lo.size)) for _ in range(64)])
        spread = ys.max(0) - ys.min(0)
        if spread.max() <= 1e-4 * (1 + np.abs(ys).max()):
            return None  # every output (nearly) constant on the box
        outs = range(ys.shape[1])  # every output: the one whose weights' scalings move it most is taken
    best = None
    for o in outs:
        x = best_point(net, lo, hi, o, rng) if x_best is None else np.asarray(x_best, float)
        x32 = np.clip(x.astype(np.float32), lo.astype(np.float32), hi.astype(np.float32))
        y = rep(x32)[o]
        sites = weight_effects(rep, x32, o, rng)[:want]
        if best is None or sites[-1][0] - y > best[-1][-1][0] - best[2]:
            best = (o, x32, y, sites)
    out, x32, y, sites = best
    t = y + (sites[-1][0] - y) / 2
    t = float(to_dtype_up(np.array([t]), torch.float32)[0])
    if sites[-1][0] < t + 2 * MARGIN * (1 + abs(t)):
        return None  # no scaling moves Y_out(x*) clearly past a threshold above it
    vnn = Path(folder) / "tight.vnnlib"
    e = np.zeros((1, net.out_size))
    e[0, out] = -1.0  # the unsafe region Y_out >= t as -Y_out <= -t
    write_vnnlib(vnn, [(lo, hi)], [[(e, np.array([-t]))]], net.out_size)
    return dict(onnx=Path(onnx_path), vnnlib=vnn, lo=lo, hi=hi, out=out, t=t, x=x32, y=y, replay=rep,
                sites=[(name, k) for _, name, k in sites])


def falsifying_weights(inst):
    """The instance's weights whose scaling by 1.01 makes ``Y_out`` reach ``t + MARGIN (1 + |t|)`` at ``x*`` on
    onnxruntime (replayed again, by the instance's :class:`Replay`): ``[(name, flat index, value reached)]``."""
    rep = inst["replay"]
    need = inst["t"] + MARGIN * (1 + abs(inst["t"]))
    found = []
    for name, k in inst["sites"]:
        y = rep(inst["x"], (name, k, FACTOR))[inst["out"]]
        if y >= need:
            found.append((name, k, float(y)))
    return found
