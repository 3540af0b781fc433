"""Planted errors in real certificates: every one must be rejected by the independent checker (issue 28).

    python benchmarks/cert_plants.py RESULTS.csv CERT_DIR --bench SUITE_DIR [--sites 20] [--certs-max 10] [--seed 0]
        [--tight 10 --config SUITE.yaml]

``RESULTS.csv`` and ``CERT_DIR``: a ``bnb run SUITE_DIR/instances.csv ... --out RESULTS.csv --certificates
CERT_DIR``. Each clean certificate is checked first (it must be accepted); then, per class of
``../shared/CERTIFICATES.md`` §5 that the format can express (class n, a multi-neuron constraint's right-hand side
``-p`` lowered by 10 %, only in version-2 certificates: ``mn-crown``), ``--sites`` plants spread over up to
``--certs`` certificates are checked (each must be rejected). A plant is made so that it really invalidates the
proof: a claim is moved past a value the network takes at a sampled point of the node's box, a stability sign is
flipped on a neuron sampled points show unstable, a leaf, subtree or closure is deleted, a cut opens a gap, the
root box shrinks inside the file's box, a constraint's right-hand side is lowered below its largest value over
what the certificate proves it from (class n). Classes whose plant may leave a valid proof (another network, a weight
scaled by 1.01: (j), (k')) are reported apart: there a rejection is expected only on near-tight instances.
``--tight N --config YAML`` adds class (k) proper (:mod:`cert_tight`): N tight instances made on the suite's own
networks, each proven by bnb with ``YAML``, and per certificate up to two weights whose scaling by 1.01 makes the
property false (a point of the box replayed with onnxruntime on the scaled file): each must be rejected.

Prints a table: class, plants, rejected, accepted; exit 1 if any clean certificate is rejected or any plant of the
invalidating classes is accepted.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load(path):
    z = np.load(path, allow_pickle=False)
    return {k: z[k].copy() for k in z.files}


def dump(arrays, path):
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def manifest(a):
    return json.loads(bytes(a["manifest"]))


def node_boxes(a):
    """Every node's box (roots: the r-th node of kind 0 is box ``root_box[r]``'s, box r's without that array)."""
    n_in = a["root_lower"].shape[-1]
    rl, ru = a["root_lower"].reshape(-1, n_in), a["root_upper"].reshape(-1, n_in)
    lo, hi, r = [], [], 0
    for v in range(len(a["parent"])):
        p = a["parent"][v]
        if p < 0:
            b = int(a["root_box"][r]) if "root_box" in a else r
            lo.append(rl[b].astype(np.float64))
            hi.append(ru[b].astype(np.float64))
            r += 1
            continue
        bl, bh = lo[p].copy(), hi[p].copy()
        if a["kind"][v] == 1:
            bl[a["index"][v]], bh[a["index"][v]] = a["lo"][v], a["hi"][v]
        lo.append(bl)
        hi.append(bh)
    return np.array(lo), np.array(hi)


def sampled_pre(onnx, lo, hi, rng, n=256):
    """Pre-activations ``(n, n_total)`` of the network (onnxruntime on the ONNX file's float32 graph, every Relu
    input made an output) at points sampled in the box."""
    import onnx as ox
    import onnxruntime as ort
    model = ox.load(str(onnx))
    relu_in = [nd.input[0] for nd in model.graph.node if nd.op_type == "Relu"]
    for name in relu_in:
        model.graph.output.append(ox.helper.make_tensor_value_info(name, ox.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    x = lo + rng.random((n, lo.shape[0])) * (hi - lo)
    outs = []
    for xi in x.astype(np.float32):
        res = sess.run(relu_in, {inp.name: xi.reshape(shape)})
        outs.append(np.concatenate([r.reshape(-1) for r in res]))
    return np.array(outs, dtype=np.float64)


def delete_nodes(a, gone):
    """The certificate without the nodes ``gone`` (a set closed under descendants), every index renumbered."""
    N = len(a["parent"])
    keep = np.array([v not in gone for v in range(N)])
    new = np.cumsum(keep) - 1
    out = dict(a)
    for k in ("parent", "kind", "index", "lo", "hi", "phase"):
        out[k] = a[k][keep]
    out["parent"] = np.where(out["parent"] >= 0, new[np.maximum(out["parent"], 0)], -1).astype(np.int32)
    cq = keep[a["claim_node"]]
    old_q = np.nonzero(cq)[0]
    qmap = np.full(len(cq), -1)
    qmap[old_q] = np.arange(len(old_q))
    for k in ("claim_lo", "claim_hi", "claim_state"):
        if k in a:
            out[k] = a[k][cq]
    out["claim_node"] = new[a["claim_node"][cq]].astype(np.int32)
    hk = cq[a["hint_claim"]] if len(a["hint_claim"]) else np.zeros(0, bool)
    for k in ("hint_claim", "hint_neuron", "hint_side", "hint_alpha"):
        out[k] = a[k][hk]
    out["hint_claim"] = qmap[out["hint_claim"]].astype(np.int32)
    return drop_closures(out, ~keep[a["close_node"]], renumber=new)


def drop_closures(a, drop, renumber=None):
    """Without the closures ``drop`` (bool over ``close_*``) and their terms."""
    out = dict(a)
    keep = ~drop
    cmap = np.cumsum(keep) - 1
    out["close_node"], out["close_poly"] = a["close_node"][keep], a["close_poly"][keep]
    if renumber is not None:
        out["close_node"] = renumber[out["close_node"]].astype(np.int32)
    tk = keep[a["term_close"]]
    for k in ("term_close", "term_row", "term_lam", "term_alpha", "term_beta", "term_gamma"):
        if k in a:
            out[k] = a[k][tk]
    out["term_close"] = cmap[out["term_close"]].astype(np.int32)
    return out


def children_of(a):
    ch = {}
    for v, p in enumerate(a["parent"]):
        if p >= 0:
            ch.setdefault(int(p), []).append(v)
    return ch


def subtree(a, v):
    ch, out, stack = children_of(a), set(), [v]
    while stack:
        u = stack.pop()
        out.add(u)
        stack += ch.get(u, [])
    return out


# -- the classes: each returns a planted copy, or None where the certificate offers no site ----------------------
def plant_alpha(a, rng, inst):
    if not len(a["alpha"]):
        return None
    b = dict(a, alpha=a["alpha"].copy())
    i, j = rng.integers(len(b["alpha"])), rng.integers(b["alpha"].shape[1])
    b["alpha"][i, j] = rng.choice([1.5, -0.1])
    return b


def plant_negative(a, rng, inst):
    names = [k for k in ("beta", "term_lam") if a[k].size]
    k = names[rng.integers(len(names))]
    b = dict(a)
    b[k] = a[k].copy()
    flat = b[k].reshape(-1)
    nz = np.nonzero(flat > 0)[0]
    flat[nz[rng.integers(len(nz))] if len(nz) else rng.integers(flat.size)] = -0.5
    return b


def plant_claim(a, rng, inst, flip=False):
    """A claim past a sampled value (``flip``: a stability sign on a neuron the samples show unstable)."""
    lo, hi = node_boxes(a)
    for _ in range(20):
        q = rng.integers(len(a["claim_node"]))
        v = a["claim_node"][q]
        z = sampled_pre(inst["onnx"], lo[v], hi[v], rng, 64)
        state = a["claim_state"][q] if "claim_state" in a else np.zeros(z.shape[1], np.int8)
        b = {k: (x.copy() if k.startswith("claim") else x) for k, x in a.items()}
        if flip:
            cand = np.nonzero((state == 0) & (z.min(0) < 0) & (z.max(0) > 0))[0]
            if not len(cand):
                continue
            j = cand[rng.integers(len(cand))]
            b["claim_state"][q, j] = rng.choice([-1, 1])
            return b
        cand = np.nonzero(state == 0)[0]
        if not len(cand):
            continue
        j = cand[rng.integers(len(cand))]
        if rng.random() < 0.5:  # a lower claim above the smallest sampled value
            b["claim_lo"][q, j] = np.nextafter(np.float32(z[:, j].min()), np.float32(np.inf))
        else:
            b["claim_hi"][q, j] = np.nextafter(np.float32(z[:, j].max()), np.float32(-np.inf))
        return b
    return None


def plant_delete(a, rng, inst):
    ch = children_of(a)
    if not ch:
        return None
    parents = list(ch)
    p = parents[rng.integers(len(parents))]
    v = ch[p][rng.integers(len(ch[p]))]
    return delete_nodes(a, subtree(a, v))


def pick(a, kind, rng):
    """A random node of ``kind``, or None when there is none."""
    nodes = np.nonzero(a["kind"] == kind)[0]
    return nodes[rng.integers(len(nodes))] if len(nodes) else None


def plant_cut(a, rng, inst):
    v = pick(a, 1, rng)
    if v is None:
        return None
    b = dict(a, lo=a["lo"].copy(), hi=a["hi"].copy())
    if rng.random() < 0.5:
        b["lo"][v] = np.nextafter(b["lo"][v], np.inf)      # a gap below this child
    else:
        b["hi"][v] = b["hi"][v] + abs(b["hi"][v] - b["lo"][v]) + 1.0  # beyond the parent's interval
    return b


def plant_relu_children(a, rng, inst):
    v = pick(a, 2, rng)
    if v is None:
        return None
    b = dict(a, index=a["index"].copy(), phase=a["phase"].copy())
    if rng.random() < 0.5:
        b["phase"][v] = -b["phase"][v]                     # both children in one phase
    else:
        b["index"][v] = (b["index"][v] + 1) % sum(manifest(a)["relu_sizes"])
    return b


def plant_closure(a, rng, inst):
    if not len(a["close_node"]):
        return None
    drop = np.zeros(len(a["close_node"]), bool)
    drop[rng.integers(len(drop))] = True
    return drop_closures(a, drop)


def plant_root(a, rng, inst):
    """One root bound moved to the nearest float64 strictly inside the file's decimal bound."""
    from fractions import Fraction

    from certcheck import vnnlib
    man = manifest(a)
    boxes = vnnlib.load(inst["vnnlib"], man["n_in"], man["n_out"])
    b = dict(a, root_lower=a["root_lower"].copy().reshape(len(boxes), -1),
             root_upper=a["root_upper"].copy().reshape(len(boxes), -1))
    k, j = rng.integers(len(boxes)), rng.integers(man["n_in"])
    if rng.random() < 0.5:
        q = boxes[k][0][j]
        x = float(q)
        b["root_lower"][k, j] = x if Fraction(x) > q else np.nextafter(x, np.inf)
    else:
        q = boxes[k][1][j]
        x = float(q)
        b["root_upper"][k, j] = x if Fraction(x) < q else np.nextafter(x, -np.inf)
    return b


def plant_nan(a, rng, inst):
    names = [k for k, x in a.items() if x.dtype.kind == "f" and x.size]
    k = names[rng.integers(len(names))]
    b = dict(a)
    b[k] = a[k].copy()
    b[k].reshape(-1)[rng.integers(b[k].size)] = rng.choice([np.nan, np.inf, -np.inf])
    return b


def plant_constraint(a, rng, inst):
    """(n): a group-hull constraint's ``p`` raised by 10 % of ``|p|`` (its right-hand side lowered), only where the
    planted constraint then fails on what its certificate proves it from: on some orthant of its group, over the
    root's claimed bounds and its octahedral rows, its largest value (an LP, scipy's HiGHS) is above 0."""
    from scipy.optimize import linprog
    if "con_p" not in a or not (a["con_noct"] > 0).any():
        return None
    n_in, sizes = a["root_lower"].shape[-1], manifest(a)["relu_sizes"]
    off = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    roots = np.flatnonzero(a["kind"] == 0)
    cand = np.flatnonzero(a["con_noct"] > 0)
    for _ in range(20):
        c = cand[rng.integers(len(cand))]
        k, o0, no = int(a["con_layer"][c]), int(a["con_oct"][c]), int(a["con_noct"][c])
        q = int(np.flatnonzero(a["claim_node"] == roots[a["con_box"][c]])[0])
        y, z = a["con_y"][c, n_in + off[k]:n_in + off[k + 1]], a["con_z"][c, off[k]:off[k + 1]]
        grp = np.flatnonzero((y != 0) | (z != 0))
        if "claim_state" in a and (a["claim_state"][q, off[k] + grp] != 0).any():
            continue
        l, u = a["claim_lo"][q, off[k] + grp].astype(np.float64), a["claim_hi"][q, off[k] + grp].astype(np.float64)
        D, beta = a["oct_row"][o0:o0 + no][:, off[k] + grp], a["oct_beta"][o0:o0 + no]
        p = float(a["con_p"][c]) + 0.1 * abs(float(a["con_p"][c]))
        for s in range(1 << len(grp)):
            on = ((s >> np.arange(len(grp))) & 1).astype(bool)
            zl, zu = np.where(on, np.maximum(l, 0), l), np.where(on, u, np.minimum(u, 0))
            if (zl > zu).any():
                continue
            cs = z[grp].astype(np.float64) + np.where(on, y[grp], 0)
            res = linprog(-cs, A_ub=D, b_ub=beta, bounds=list(zip(zl, zu)), method="highs")
            if res.status == 0 and -res.fun + p > 1e-6 * (1 + abs(p)):
                b = dict(a, con_p=a["con_p"].copy())
                b["con_p"][c] = p
                return b
    return None


def plant_infeasible(a, rng, inst):
    """(l): a leaf made "infeasible" by its claim (some neuron claimed with ``l > u``) and its closures dropped, so
    that only the false infeasibility covers it. Input-split leaves only: their domain is a box, never empty (a
    ReLU-split leaf may truly be empty)."""
    if manifest(a)["branching"] != "input":
        return None
    ch = children_of(a)
    leaves = np.array([v for v in range(len(a["parent"])) if v not in ch and v in set(a["claim_node"].tolist())])
    if not len(leaves):
        return None
    v = leaves[rng.integers(len(leaves))]
    q = int(np.flatnonzero(a["claim_node"] == v)[0])
    b = {k: (x.copy() if k.startswith("claim") else x) for k, x in a.items()}
    j = rng.integers(b["claim_lo"].shape[1])
    if "claim_state" in b:
        b["claim_state"][q, j] = 0
    b["claim_lo"][q, j] = b["claim_hi"][q, j] + 1.0
    return drop_closures(b, a["close_node"] == v)


INVALIDATING = {"a alpha out of [0, 1]": plant_alpha, "b negative beta / lambda": plant_negative,
                "c claim past a sampled value": plant_claim,
                "d stability sign flipped": lambda a, rng, inst: plant_claim(a, rng, inst, flip=True),
                "e leaf or subtree deleted": plant_delete, "f cut gap / outside": plant_cut,
                "g ReLU children inconsistent": plant_relu_children, "h closure dropped": plant_closure,
                "i root box just inside the file's": plant_root, "l wrong infeasible leaf": plant_infeasible,
                "m NaN / inf": plant_nan,
                "n constraint's right-hand side -10 %": plant_constraint}


def raw_plants(path, rng):
    """(o): a truncated file and a flipped byte."""
    data = Path(path).read_bytes()
    cut = data[:rng.integers(1, len(data))]
    flip = bytearray(data)
    i = rng.integers(len(flip))
    flip[i] ^= 0xFF
    return [cut, bytes(flip)]


def scaled_weight(onnx, out, rng, factor=1.01):
    """(k'): a copy of the ONNX file with one weight of its largest initializer scaled."""
    import onnx as ox

    from benchmarks.cert_tight import scaled_copy
    size = lambda t: int(np.prod(t.dims)) if t.dims else 1  # noqa: E731
    init = max(ox.load(str(onnx)).graph.initializer, key=size)
    return scaled_copy(onnx, init.name, int(rng.integers(size(init))), out, factor)


def tight_plants(a, rng, tmp, table, certcheck) -> int:
    """Class (k) on at least ``a.tight`` tight instances (:mod:`cert_tight`) and ``a.sites`` plants (the suite's
    networks in random turns, a new box each time, at most max(40, 4 x networks) tries); counts into ``table``;
    returns the failures."""
    from benchmarks import cert_tight
    from bnb.config import load_config
    from bnb.pipeline.verify import verify
    cfg = load_config(a.config, ["general.threads=1"])
    nets = cert_tight.suite_boxes(a.results, a.bench)
    bad = made = planted = 0
    for n, (onnx, lo, hi) in enumerate(nets[i] for i in rng.permutation(max(4 * len(nets), 40)) % len(nets)):
        if made >= a.tight and planted >= a.sites:
            break
        folder = tmp / f"tight{n}"
        folder.mkdir()
        inst = cert_tight.tight_instance(onnx, lo, hi, rng, folder)
        cert = folder / "tight.npz"
        for _ in range(4):  # t below the true maximum: bnb's counterexample is a better x*, try again from it
            if inst is None:
                break
            r = verify(str(onnx), str(inst["vnnlib"]), cfg, timeout=a.tight_timeout, certificate=str(cert))
            if r.verdict.value != "sat" or r.counterexample is None:
                break
            inst = cert_tight.tight_instance(onnx, inst["lo"], inst["hi"], rng, folder, out=inst["out"],
                                             x_best=np.asarray(r.counterexample.x, float).reshape(-1))
        if inst is None:
            table[("k tight: outputs constant, or no weight moves them (skipped)", "unsupported")] += 1
            continue
        if r.verdict.value != "unsat" or not cert.exists():
            table[(f"k tight: {r.verdict.value}, no certificate (skipped)", "unsupported")] += 1
            continue
        res = certcheck.check(str(cert), str(onnx), str(inst["vnnlib"]))
        table[("k tight: clean certificate", res.status)] += 1
        if res.status != "accepted":
            bad += 1
            print(f"CLEAN TIGHT REJECTED {onnx.name}: {res.reason}")
            continue
        sites = cert_tight.falsifying_weights(inst)
        made += bool(sites)
        planted += len(sites)
        for j, (name, k, y) in enumerate(sites):
            scaled = cert_tight.scaled_copy(onnx, name, k, folder / f"scaled{j}.onnx")
            res = certcheck.check(str(cert), str(scaled), str(inst["vnnlib"]), check_hash=False)
            table[("k a weight x 1.01, property false", res.status)] += 1
            print(f"  (k) {onnx.name} Y_{inst['out']} t={inst['t']:.9g} (Y(x*) {inst['y']:.9g}): {name}[{k}] "
                  f"x1.01 reaches {y:.9g}: {res.status}")
            if res.status == "accepted":
                bad += 1
                print(f"PLANT ACCEPTED (k tight) {onnx.name} {name}[{k}]")
    return bad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("certs")
    ap.add_argument("--bench", required=True, help="the suite's folder (where the results' onnx/vnnlib paths start)")
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--certs-max", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tight", type=int, default=0, help="class (k) on this many tight instances (needs --config)")
    ap.add_argument("--config", action="append", default=None,
                    help="the YAML bnb proves the tight instances with (the suite's default config; repeatable)")
    ap.add_argument("--tight-timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    if a.tight and not a.config:
        ap.error("--tight needs --config")
    import certcheck
    rng = np.random.default_rng(a.seed)
    bench = Path(a.bench)
    insts = []
    for r in csv.DictReader(open(a.results)):
        cert = Path(a.certs) / f"{Path(r['onnx']).stem}__{Path(r['vnnlib']).stem}.npz"
        if r["verdict"] == "unsat" and cert.exists():
            insts.append(dict(cert=cert, onnx=bench / r["onnx"], vnnlib=bench / r["vnnlib"],
                              size=cert.stat().st_size))
    # the smallest proofs that branched (planting and checking stay quick), then the smallest one-node proofs (no tree
    # to break: the classes that need one find nothing to plant there)
    insts = sorted(insts, key=lambda i: (len(load(i["cert"])["parent"]) == 1, i["size"]))
    chosen = insts[:a.certs_max]
    tmp = Path(tempfile.mkdtemp(prefix="plants_"))
    table, bad = Counter(), 0

    def check(cert, inst, **kw):
        return certcheck.check(str(cert), str(inst["onnx"]), str(inst["vnnlib"]), **kw)

    try:
        for inst in chosen:
            res = check(inst["cert"], inst)
            table[("clean", res.status)] += 1
            if res.status != "accepted":
                bad += 1
                print(f"CLEAN REJECTED {inst['cert'].name}: {res.reason}")
        arrays = [load(i["cert"]) for i in chosen]
        for name, plant in INVALIDATING.items():
            made = tries = 0
            while made < a.sites and tries < 10 * a.sites:
                tries += 1
                k = rng.integers(len(chosen))
                b = plant(arrays[k], rng, chosen[k])
                if b is None:
                    continue
                made += 1
                path = tmp / f"p{made}.npz"
                dump(b, path)
                res = check(path, chosen[k])
                table[(name, res.status)] += 1
                if res.status == "accepted":
                    bad += 1
                    print(f"PLANT ACCEPTED ({name}) in {chosen[k]['cert'].name}")
        for k, inst in enumerate(chosen):
            for j, blob in enumerate(raw_plants(inst["cert"], rng)):
                path = tmp / f"raw{k}_{j}.npz"
                path.write_bytes(blob)
                res = check(path, inst)
                name = "o truncated / flipped byte"
                if res.status == "accepted":
                    # a flipped byte in the zip's metadata (a time stamp) may leave the content intact
                    try:
                        same = all(np.array_equal(x, load(inst["cert"])[n]) for n, x in load(path).items())
                    except Exception:  # noqa: BLE001
                        same = False
                    if same:
                        name = "o' flipped byte, same arrays"
                    else:
                        bad += 1
                        print(f"RAW PLANT ACCEPTED in {inst['cert'].name}")
                table[(name, res.status)] += 1
        for k, inst in enumerate(chosen):  # (j) another network, (k) one weight scaled: reported apart
            others = sorted({str(i["onnx"]) for i in insts if i["onnx"] != inst["onnx"]})
            for other in (rng.choice(others, min(2, len(others)), replace=False) if others else []):
                res = certcheck.check(str(inst["cert"]), other, str(inst["vnnlib"]), check_hash=False)
                table[("j another network (hash off)", res.status)] += 1
            out = scaled_weight(inst["onnx"], tmp / f"w{k}.onnx", rng)
            res = certcheck.check(str(inst["cert"]), str(out), str(inst["vnnlib"]), check_hash=False)
            table[("k' a random weight x 1.01 (hash off)", res.status)] += 1
        if a.tight:
            bad += tight_plants(a, rng, tmp, table, certcheck)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = sorted({n for n, _ in table})
    print(f"{len(chosen)} certificates ({', '.join(i['cert'].name for i in chosen)})")
    w = max(map(len, names + ["class"]))
    print(f"{'class':<{w}} {'checked':>8} {'rejected':>9} {'accepted':>9} {'unsupported':>12}")
    for n in names:
        tot = sum(v for (m, _), v in table.items() if m == n)
        print(f"{n:<{w}} {tot:>8} {table[(n, 'rejected')]:>9} {table[(n, 'accepted')]:>9} "
              f"{table[(n, 'unsupported')]:>12}")
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
