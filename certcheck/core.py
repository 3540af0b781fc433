"""The checker: certificate container, tree, claims, closures and coverage (docs/certificates.md)."""
import hashlib
import json
import time
import zipfile
from fractions import Fraction
from types import SimpleNamespace

import numpy as np

from . import onnxnet, vnnlib
from .arith import TINY, U, conv, gam, rat, up_float
from .bounds import backsub, bmax, ibp, mix, row_min
from .onnxnet import Unsupported
from .vnnlib import Reject

INTS = {k: d for d, ks in (x.split(":") for x in ("N:parent kind index phase", "Q:claim_node",
        "P:close_node close_poly", "H:hint_claim hint_neuron hint_side hint_alpha hint_gamma",
        "C:con_box con_layer con_oct con_noct con_mu", "T:term_close term_row term_alpha term_beta term_gamma",
        "O:oct_box oct_layer oct_alpha oct_gamma", "R:root_box")) for k in ks.split()}
INTS["claim_state"] = ("Q", "n")
INTS["root_answers"] = ("R", "k")
FLOATS = {"root_lower": ("b", "i"), "root_upper": ("b", "i"), "lo": ("N",), "hi": ("N",), "claim_lo": ("Q", "n"),
          "claim_hi": ("Q", "n"), "term_lam": ("T",), "alpha": ("A", "n"), "beta": ("B", "n"),
          "con_y": ("C", "y"), "con_z": ("C", "n"), "con_p": ("C",), "mu": ("M",), "oct_row": ("O", "n"),
          "oct_beta": ("O",), "gamma": ("G", "C")}
RANGES = (("claim_node", 0, "N"), ("hint_claim", 0, "Q"), ("hint_neuron", 0, "n"), ("hint_alpha", 0, "A"),
          ("hint_gamma", -1, "G"), ("close_node", 0, "N"), ("close_poly", 0, "p"), ("term_close", 0, "P"),
          ("term_row", 0, "r"), ("term_alpha", -1, "A"), ("term_beta", -1, "B"), ("term_gamma", -1, "G"),
          ("con_box", 0, "R"), ("con_layer", 0, "L"), ("oct_box", 0, "R"), ("oct_layer", 0, "L"),
          ("oct_alpha", -1, "A"), ("oct_gamma", -1, "G"))
OPTIONAL = {"alpha", "beta", "claim_state", "term_gamma", "mu", "gamma", "root_answers"} | {
    k for k in list(INTS) + list(FLOATS) if k[:4] in ("con_", "oct_", "hint")}
CHUNK = 1 << 21
C_DT = {False: np.float64, True: object}


def need(cond, msg):
    if not cond:
        raise Reject(msg)


def read_cert(path, n_in, n_total):
    try:
        with np.load(path, allow_pickle=False) as f:
            z = {k: f[k] for k in f.files}
        man = json.loads(bytes(z["manifest"].astype(np.uint8)).decode("utf-8"))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise Reject(f"unreadable certificate: {type(e).__name__}: {e}") from None
    need(isinstance(man, dict), "manifest is not a JSON object")
    dims = {"i": n_in, "n": n_total, "y": n_in + n_total}
    for k in ("root_lower", "root_upper"):  # one box: (n_in,) stands for (1, n_in)
        z[k] = z[k][None] if k in z and z[k].ndim == 1 else z.get(k)
    if "root_box" not in z and z.get("root_lower") is not None:  # one root per box, the b-th box b's
        z["root_box"] = np.arange(len(z["root_lower"]))
    man["root_answers_given"] = "root_answers" in z  # (absent: every root answers for every polytope of its box)
    z.setdefault("root_answers", np.ones((len(z.get("root_box", ())), 0), dtype=np.int8))
    if "claim_state" not in z and "claim_lo" in z:
        z["claim_state"] = np.zeros(z["claim_lo"].shape, dtype=np.int8)
    for k in list(INTS) + list(FLOATS):  # in this order: a missing array's size comes from those before it
        if k not in z:  # optional: no rows, or (term_gamma) -1 for every term
            need(k in OPTIONAL, f"missing array {k}")
            z[k] = np.zeros((0,) + tuple(dims.get(d, 0) for d in FLOATS[k][1:])) if k in FLOATS else np.full(
                dims.get(INTS[k], 0), -1)
        a = z[k]
        shape = (INTS[k] if isinstance(INTS[k], tuple) else (INTS[k],)) if k in INTS else FLOATS[k]
        need(a.dtype.kind in ("iu" if k in INTS else "f") and a.ndim == len(shape), f"array {k}: bad dtype/shape")
        need(k in INTS or a.dtype in (np.float32, np.float64), f"array {k}: dtype {a.dtype}")
        for d, s in zip(shape, a.shape):
            need(dims.setdefault(d, s) == s, f"array {k}: shape {a.shape} does not match")
        need(k in INTS or bool(np.isfinite(a).all()), f"array {k}: NaN or infinity")
        z[k] = a.astype(np.int64) if k in INTS else a.astype(np.float64)
    return man, z, dims


def check_tree(z, n_in, relu, N, nbox):
    """Roots (kind 0, parent -1; the r-th in node order is box ``root_box[r]``'s, every box has one), children
    partitions; -> kids, node boxes, box of each node, root (ordinal) of each node."""
    par, kind, idx, rb = z["parent"], z["kind"], z["index"], z["root_box"]
    root = par == -1
    need(N >= 1 and bool((root == (kind == 0)).all()) and int(root.sum()) == len(rb) and bool(((rb >= 0) & (
        rb < nbox)).all()) and len(set(rb.tolist())) == nbox, "roots (kind 0) do not match root_box and the boxes")
    need(bool((par[~root] >= 0).all() and (par[~root] < np.arange(N)[~root]).all()), "parent[v] must be in [0, v)")
    need(bool((kind[~root] == (2 if relu else 1)).all()), "node kinds do not match the manifest's branching")
    need(bool(((idx[~root] >= 0) & (idx[~root] < (z["n_total"] if relu else n_in))).all()), "split index out of range")
    need(not relu or bool(np.isin(z["phase"][~root], (-1, 1)).all()), "phase must be +1 or -1")
    kids, rid = [[] for _ in range(N)], np.cumsum(root) - 1
    for v in np.nonzero(~root)[0]:
        kids[par[v]].append(v)
        rid[v] = rid[par[v]]
    box = rb[rid]
    blo, bhi = z["root_lower"][box], z["root_upper"][box]
    for p, ks in ((p, ks) for p, ks in enumerate(kids) if ks):
        need(len(set(idx[ks].tolist())) == 1, f"children of node {p} split different {'neurons' if relu else 'dims'}")
        if relu:
            need(len(ks) == 2 and set(z["phase"][ks].tolist()) == {-1, 1}, f"node {p}: not the two phases")
            continue
        d, ks = idx[ks[0]], sorted(ks, key=lambda v: z["lo"][v])
        lo, hi = z["lo"][ks], z["hi"][ks]
        need(len(ks) >= 2 and lo[0] == blo[p, d] and hi[-1] == bhi[p, d] and bool((lo <= hi).all())
             and bool((hi[:-1] == lo[1:]).all()), f"input cuts of node {p} do not partition its interval")
        blo[ks], bhi[ks] = blo[p], bhi[p]
        blo[ks, d], bhi[ks, d] = lo, hi
    return kids, blo, bhi, box, rid


def check(cert_path, onnx_path, vnnlib_path, exact=False, check_hash=True):
    t0 = time.time()
    res = SimpleNamespace(status="rejected", reason="", nodes=0, leaves=0, claims=0, closures=0, seconds=0.0)
    try:
        run(res, cert_path, onnx_path, vnnlib_path, exact, check_hash)
        res.status = "accepted"
    except Unsupported as e:
        res.status, res.reason = "unsupported", str(e)
    except Reject as e:
        res.reason = str(e)
    except Exception as e:  # a checker failure must never look like acceptance
        res.reason = f"internal error: {type(e).__name__}: {e}"
    res.seconds = time.time() - t0
    return res


def run(res, cert_path, onnx_path, vnnlib_path, ex, check_hash):
    n_in, ops = onnxnet.load(onnx_path)
    net = SimpleNamespace(segs=onnxnet.segments(ops, n_in, ex))
    sizes = [s[0].shape[0] for s in net.segs[:-1]]
    n_out, n_total = net.segs[-1][0].shape[0], sum(sizes)
    net.off = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    net.absW = [np.abs(s[0]).astype(np.float64) for s in net.segs]
    boxes = vnnlib.load(vnnlib_path, n_in, n_out)
    polys = [p for b in boxes for p in b[2]]  # every box's polytopes, one global number each
    boff = np.cumsum([0] + [len(b[2]) for b in boxes])
    man, z, dims = read_cert(cert_path, n_in, n_total)
    z["n_total"] = n_total
    rows = man.get("polytope_rows")
    want = {"format": "bnb-certificate", "version": 1 + (len(z["con_p"]) > 0), "n_in": n_in, "n_out": n_out,
            "relu_sizes": sizes,
            "polytope_rows": rows if rows == [[len(p) for p in b[2]] for b in boxes] else
            [len(p) for p in boxes[0][2]] if len(boxes) == 1 else None,
            "branching": man.get("branching") in ("input", "relu") and man["branching"]}
    if check_hash:
        for key, p in (("onnx_sha256", onnx_path), ("vnnlib_sha256", vnnlib_path)):
            with open(p, "rb") as f:
                want[key] = hashlib.sha256(f.read()).hexdigest()
    bad = [k for k in want if man.get(k) != want[k]]
    need(not bad, f"manifest: {bad} do not match the files")
    need(len(z["root_lower"]) == len(boxes) and all(
        all(Fraction(a) <= b for a, b in zip(rl, plo)) and all(Fraction(a) >= b for a, b in zip(ru, phi))
        for rl, ru, (plo, phi, _) in zip(z["root_lower"].tolist(), z["root_upper"].tolist(), boxes)),
        "root boxes do not contain the VNN-LIB boxes")
    res.nodes, res.claims, _, res.closures = N, Q, H, P = tuple(dims.get(k, 0) for k in "NQHP")
    relu = man["branching"] == "relu"
    kids, BLO, BHI, box, rid = check_tree(z, n_in, relu, N, len(boxes))
    need(bool(np.isin(z["claim_state"], (-1, 0, 1)).all()), "claim_state must be -1, 0 or +1")
    leaves = np.array([not k for k in kids])
    res.leaves = int(leaves.sum())
    dims.update(p=len(polys), r=1 << 62, n=n_total, L=len(sizes))
    for k, lo, dim in RANGES:
        need(bool(((z[k] >= lo) & (z[k] < dims.get(dim, 0))).all()), f"{k} out of range")
    K = boff[box + 1] - boff[box]  # polytopes of each node's box; close_poly numbers them per box
    need(bool((z["close_poly"] < K[z["close_node"]]).all()), "close_poly out of range")
    z["close_poly"] = z["close_poly"] + boff[box[z["close_node"]]]
    nrows = np.array([len(p) for p in polys] + [0])
    need(bool((z["term_row"] < nrows[z["close_poly"][z["term_close"]]]).all()), "term_row out of range")
    need(len(set(z["claim_node"].tolist())) == Q, "a node has two claims")
    hkey = (z["hint_claim"] * n_total + z["hint_neuron"]) * 2 + (z["hint_side"] > 0)
    need(len(set(hkey.tolist())) == H, "duplicate hint")
    need(P == 0 or bool((np.bincount(z["term_close"], minlength=P) >= 1).all()), "a closure without terms")
    for ok, msg in ((np.isin(z["hint_side"], (-1, 1)), "bad hint_side"), (z["term_lam"] >= 0, "negative lambda"),
                    ((z["alpha"] >= 0) & (z["alpha"] <= 1), "alpha outside [0, 1]"), (z["beta"] >= 0, "negative beta"),
                    (z["gamma"] >= 0, "negative gamma"), (z["mu"] >= 0, "negative mu")):
        need(bool(np.all(ok)), msg)
    claim_of = np.full(N, -1)
    claim_of[z["claim_node"]] = np.arange(Q)
    need(bool((claim_of[z["parent"] == -1] >= 0).all()), "a root has no claim")
    # property rows: C (rows, n_out), d rounded up (float) or exact
    poff = np.concatenate([[0], np.cumsum(nrows[:-1])]).astype(int)
    rows = [row for p in polys for row in p] or [({}, Fraction(0))]
    need(all(0 <= j < n_out for c, _ in rows for j in c), "vnnlib: an output index out of range")
    C = np.array([[(rat if ex else float)(c.get(j, 0)) for j in range(n_out)] for c, _ in rows], dtype=C_DT[ex])
    d = np.array([rat(dv) if ex else up_float(dv) for _, dv in rows], dtype=C_DT[ex])
    # a gamma only on constraints proven before its row: of the node's box (terms; a constraint is proven at a root
    # of its box, con_box, and holds on the whole box); of that box and earlier layers (octahedral rows, hints)
    gu = np.concatenate([z["term_gamma"], z["oct_gamma"], z["hint_gamma"]])
    gb = np.concatenate([box[z["close_node"][z["term_close"]]], z["root_box"][z["oct_box"]],
                         box[z["claim_node"][z["hint_claim"]]]])
    gl, u = np.concatenate([np.full(len(z["term_gamma"]), dims["L"]), z["oct_layer"], np.searchsorted(
        net.off, z["hint_neuron"], "right") - 1])[:, None], gu >= 0
    need(not (z["gamma"][gu[u]] * ((z["root_box"][z["con_box"]] != gb[u][:, None]) | (z["con_layer"] >= gl[u]))).any(),
         "gamma on a constraint of another box or of a later layer")
    net.alpha, net.beta, net.gamma, net.cy, net.cz, net.cp, net.mu, net.orow, net.obeta = (conv(z[k], ex) for k in (
        "alpha", "beta", "gamma", "con_y", "con_z", "con_p", "mu", "oct_row", "oct_beta"))
    clo, chi = conv(z["claim_lo"], ex), conv(z["claim_hi"], ex)
    BLO, BHI = conv(BLO, ex), conv(BHI, ex)
    hints = (np.append(hkey[np.argsort(hkey)], 1 << 62), *(np.append(z[k][np.argsort(hkey)], -1) for k in (
        "hint_alpha", "hint_gamma")))
    ans = answered(z, man["root_answers_given"], boff, len(polys))
    need(bool(ans.any(0).all()), "a polytope that no root answers for")
    own = ans[rid]  # (N, polytopes): what each node's tree must close
    walk(net, z, ex, kids, leaves, claim_of, clo, chi, BLO, BHI, hints, C, d, poff, ~own, relu)


def answered(z, given, boff, n_polys):
    """``(R, polytopes)``: the polytopes root ``r``'s tree answers for: those of its box that ``root_answers[r]``
    marks (1), or all of them where the array is absent (``given`` False). Entries beyond the box's polytopes, or
    other than 0 and 1: reject."""
    rb, ans, g = z["root_box"], z["root_answers"], np.arange(n_polys)
    if not given:
        return (g >= boff[rb][:, None]) & (g < boff[rb + 1][:, None])
    K, k = boff[rb + 1] - boff[rb], np.arange(ans.shape[1])
    need(bool(np.isin(ans, (0, 1)).all() and (ans[k >= K[:, None]] == 0).all()), "root_answers: not 0 / 1, or "
         "beyond the box's polytopes")
    out = np.zeros((len(rb), n_polys), dtype=bool)
    r, k = np.nonzero(ans)
    out[r, boff[rb[r]] + k] = True
    return out


def walk(net, z, ex, kids, leaves, claim_of, clo, chi, BLO, BHI, hints, C, d, poff, closed_by, relu):
    """Level by level: effective bounds, claims, closures, coverage. ``closed_by`` (N, polytopes): True on the
    polytopes the node's tree need not close (other boxes', and those its root does not answer for)."""
    N, L, n_total = len(kids), len(net.segs) - 1, net.off[-1]
    depth = np.zeros(N, dtype=int)
    for v in np.nonzero(z["parent"] >= 0)[0]:
        depth[v] = depth[z["parent"][v]] + 1
    loc, prev, pl = np.zeros(N, dtype=int), None, None
    for lev in range(depth.max() + 1):
        V = np.nonzero(depth == lev)[0]
        loc[V], ar = np.arange(len(V)), np.arange(len(V))
        B = {"blo": BLO[V], "bhi": BHI[V]}
        if prev is None:  # the roots: their claims are checked below (every root has one)
            sgn, dead = np.zeros((len(V), n_total), dtype=np.int8), np.zeros(len(V), dtype=bool)
            B["lo"] = [np.zeros((len(V), net.off[k + 1] - net.off[k]), dtype=clo.dtype) for k in range(L)]
            B["hi"] = [np.zeros((len(V), net.off[k + 1] - net.off[k]), dtype=clo.dtype) for k in range(L)]
        else:
            pl = loc[z["parent"][V]]
            sgn, dead = prev["sgn"][pl].copy(), prev["dead"][pl].copy()
            if relu:
                j, ph, old = z["index"][V], z["phase"][V], sgn[ar, z["index"][V]]
                sgn[ar, j] = np.where((old != 0) & (old != ph), 2, ph)
            B["lo"], B["hi"] = [a[pl].copy() for a in prev["lo"]], [a[pl].copy() for a in prev["hi"]]
        B["sgn"] = sgn
        for k in range(L):
            clamp(B, net, k, ar)
        Cn = np.nonzero((claim_of[V] >= 0) & ~dead)[0]
        for k in range(L if len(Cn) else 0):
            q, sl = claim_of[V[Cn]], slice(net.off[k], net.off[k + 1])
            B["lo"][k][Cn], B["hi"][k][Cn] = verify_layer(net, ex, B, prev, pl, Cn, q, k, clo[q, sl], chi[q, sl],
                                                          z["claim_state"][q, sl], hints, V)
            clamp(B, net, k, Cn)
            check_cons(net, z, ex, B, k) if prev is None else None  # (a later layer's claims may use them)
        for k in range(L):
            dead |= (B["lo"][k] > B["hi"][k]).any(1)
        close_level(net, z, ex, B, V, loc, dead, C, d, poff, closed_by)
        if lev:
            closed_by[V] |= closed_by[z["parent"][V]]
        closed_by[V[dead]] = True
        fail(np.nonzero(leaves[V] & ~closed_by[V].all(1))[0],
             "leaf {} is neither closed for every polytope nor infeasible", V)
        prev = dict(B, dead=dead)


def clampv(lo, hi, sg):
    """The path's splits: phase +1 sets l = max(l, 0), phase -1 u = min(u, 0) (sg 2: both phases)."""
    return np.where(sg >= 1, np.maximum(lo, 0), lo), np.where((sg == -1) | (sg == 2), np.minimum(hi, 0), hi)


def clamp(B, net, k, idx):
    sg = B["sgn"][idx, net.off[k]:net.off[k + 1]]
    B["lo"][k][idx], B["hi"][k][idx] = clampv(B["lo"][k][idx], B["hi"][k][idx], sg)


def fail(bad, fmt, *cols):
    if len(bad):
        raise Reject(fmt.format(*(c[bad[0]] for c in cols)))


def chunks(net, K, A, nd, ra, rb, B, ex, reduce, rg=None):
    """backsub over chunks of nodes; reduce(G, const, err, nodes) -> per-row results, concatenated."""
    step = max(1, CHUNK // (A.shape[1] * max(s[0].shape[0] for s in net.segs)))
    rg = np.full(ra.shape, -1) if rg is None else rg
    out = [reduce(*backsub(net, K, A[i:i + step], nd[i:i + step], ra[i:i + step], rb[i:i + step], rg[i:i + step],
                           B, ex),
                  nd[i:i + step]) for i in range(0, A.shape[0], step)]
    return [np.concatenate(x) for x in zip(*out)]


def verify_layer(net, ex, B, prev, pl, Cn, q, k, cl, ch, st, hints, V):
    """Claims of ReLU layer k at the claimed nodes Cn (claim rows q): each implied by the parent's bound, the
    interval step, the path's split or the back-substitution row +-e_j (default slopes, and the hint's alpha and
    gamma where one names it). A sign-only claim (state st +1: l >= 0, -1: u <= 0) takes the proven bounds.
    -> (lo, hi)."""
    n_total, n = net.off[-1], net.off[k + 1] - net.off[k]
    ylo, yhi = (B["blo"][Cn], B["bhi"][Cn]) if k == 0 else (np.maximum(B["lo"][k - 1][Cn], 0),
                                                            np.maximum(B["hi"][k - 1][Cn], 0))
    blo, bhi = ibp(net.segs[k], ylo, yhi, ex)
    if prev is not None:
        blo, bhi = np.maximum(blo, prev["lo"][k][pl[Cn]]), np.minimum(bhi, prev["hi"][k][pl[Cn]])
    blo, bhi = clampv(blo, bhi, B["sgn"][Cn, net.off[k]:net.off[k + 1]])
    zero = conv(np.zeros(cl.shape), ex)
    cl, ch = np.where(st > 0, zero, np.where(st < 0, blo, cl)), np.where(st < 0, zero, np.where(st > 0, bhi, ch))
    sel = ((cl > blo) | (ch < bhi)).any(1)
    if sel.any():
        S, j = Cn[sel], np.tile(np.arange(n), 2)
        key = (q[sel][:, None] * n_total + net.off[k] + j) * 2 + (np.arange(2 * n) < n)
        pos = np.searchsorted(hints[0], key)  # the keys end with a sentinel above any key
        ra, rg = (np.where(hints[0][pos] == key, h[pos], -1) for h in hints[1:])
        A = np.broadcast_to(conv(np.vstack([np.eye(n), -np.eye(n)]), ex), (len(S), 2 * n, n))
        no = np.full(key.shape, -1)
        for r, g in ([(no, no), (ra, rg)] if (ra >= 0).any() else [(no, no)]):
            lb, = chunks(net, k + 1, A, S, r, no, B, ex, lambda G, c0, e, nd: (row_min(G, c0, e, nd, B, ex),), g)
            blo[sel], bhi[sel] = np.maximum(blo[sel], lb[:, :n]), np.minimum(bhi[sel], -lb[:, n:])
    for side, c, pr in ((1, cl, blo), (-1, ch, bhi)):
        fail(np.flatnonzero(~(side * c <= side * pr)), "claim not implied: node {}, neuron {}, "
             f"{'lower' if side > 0 else 'upper'} bound {{}} (proven {{}})", np.repeat(V[Cn], n),
             np.tile(net.off[k] + np.arange(n), len(Cn)), c.ravel(), pr.ravel())
    return np.where(st == 0, cl, np.maximum(cl, blo)), np.where(st == 0, ch, np.minimum(ch, bhi))


def close_level(net, z, ex, B, V, loc, dead, C, d, poff, closed_by):
    """Closures at the level's nodes: the lambda-mix of their rows' lower bounds is > 0 over the node's box."""
    cs = np.nonzero(np.isin(z["close_node"], V))[0]
    closed_by[z["close_node"][cs], z["close_poly"][cs]] = True
    live = cs[~dead[loc[z["close_node"][cs]]]]
    t = np.nonzero(np.isin(z["term_close"], live))[0]
    if not len(t):
        return
    t = t[np.argsort(z["term_close"][t], kind="stable")]
    tc = z["term_close"][t]
    grow, rn = poff[z["close_poly"][tc]] + z["term_row"][t], loc[z["close_node"][tc]]
    # terms grouped by node, padded with zero rows: (nodes, slots, n_out)
    nodes, inv = np.unique(rn, return_inverse=True)
    order = np.argsort(inv, kind="stable")
    slot = np.empty(len(t), dtype=int)
    slot[order] = np.arange(len(t)) - np.searchsorted(inv[order], inv[order])
    A = np.zeros((len(nodes), slot.max() + 1, C.shape[1]), dtype=C.dtype)
    ra, rb, rg = np.full(A.shape[:2], -1), np.full(A.shape[:2], -1), np.full(A.shape[:2], -1)
    A[inv, slot], ra[inv, slot], rb[inv, slot], rg[inv, slot] = C[grow], z["term_alpha"][t], z["term_beta"][t], \
        z["term_gamma"][t]
    G, const, err = chunks(net, len(net.segs), A, nodes, ra, rb, B, ex, lambda G, c0, e, nd: (G, c0, e), rg)
    G, const, err = G[inv, slot], const[inv, slot] - d[grow], err[inv, slot]
    if not ex:
        err = err + 2 * U * np.abs(const)
    starts = np.nonzero(np.r_[True, np.diff(tc) != 0])[0]
    Gm, cm, em, Ge = mix(G, const, err, conv(z["term_lam"][t], ex), starts, ex)
    rc = rn[starts]
    if Ge is not None:
        em = em + (Ge * np.maximum(np.abs(B["blo"][rc]), np.abs(B["bhi"][rc]))).sum(1)
    val = row_min(Gm[:, None], cm[:, None], em if ex else em[:, None], rc, B, ex)[:, 0]
    fail(np.nonzero(~(val > 0))[0], "closure {} (node {}, polytope {}) does not hold: lower bound {}",
         tc[starts], V[rc], z["close_poly"][tc[starts]], val)


def check_cons(net, z, ex, B, k):
    """Version 2 at the roots (their claims of layers <= k verified), layer k: every octahedral row's beta is implied
    by its back-substitution row (slopes alpha[oct_alpha] or the default) or by the box of the claims; every
    constraint holds on every orthant of its group, with mu on its octahedral rows (or, without such rows, with z
    replaced by W h + b)."""
    n_in, off, ob, og = B["blo"].shape[1], net.off, z["oct_box"], z["oct_gamma"]
    O, sl = np.nonzero(z["oct_layer"] == k)[0], slice(off[k], off[k + 1])
    if len(O):
        lb, = chunks(net, k + 1, -net.orow[O, sl][:, None], ob[O], z["oct_alpha"][O, None], 0 * O[:, None] - 1,
                     B, ex, lambda G, c0, e, nd: (row_min(G, c0, e, nd, B, ex),), og[O, None])
        zb = bmax(net.orow[O, sl], B["lo"][k][ob[O]], B["hi"][k][ob[O]], 0 * lb[:, 0], 0, ex)
        need(((net.obeta[O] >= -lb[:, 0]) | (net.obeta[O] >= zb)).all(), f"octahedral bound not implied ({k})")
    for ci in np.nonzero(z["con_layer"] == k)[0]:
        r, o0, no, m0 = (int(z["con_" + key][ci]) for key in ("box", "oct", "noct", "mu"))
        hs = slice(0, n_in) if k == 0 else slice(n_in + off[k - 1], n_in + off[k])
        cy, cz, ch, p = net.cy[ci, n_in + off[k]:n_in + off[k + 1]], net.cz[ci, sl], net.cy[ci, hs], net.cp[ci]
        grp, oo = np.nonzero((cy != 0) | (cz != 0))[0], slice(o0, o0 + no)
        need(len(grp) <= 3 and (z["con_y"][ci] != 0).sum() == (cy != 0).sum() + (ch != 0).sum() and (
            z["con_z"][ci] != 0).sum() == (cz != 0).sum() and o0 + no <= len(ob) and (ob[oo] == r).all() and (
            z["oct_layer"][oo] == k).all() and m0 + (no << len(grp)) <= len(net.mu), f"constraint {ci}: bad rows")
        l, u, D, bet, W, b, Wr, br = B["lo"][k][r], B["hi"][k][r], net.orow[oo, sl], net.obeta[oo], *net.segs[k]
        hlo, hhi = (B["blo"][r], B["bhi"][r]) if k == 0 else (np.maximum(B[s][k - 1][r], 0) for s in ("lo", "hi"))
        zm, hm = np.maximum(np.abs(l), np.abs(u)), np.maximum(np.abs(hlo), np.abs(hhi))
        for s in range(1 << len(grp)):
            sg = np.zeros(len(l), dtype=int)
            sg[grp] = 2 * ((s >> np.arange(len(grp))) & 1) - 1  # bit i of s: the group's i-th neuron active
            zl, zu = clampv(l, u, sg)
            if (zl > zu).any():
                continue  # no point of the root's domain in this orthant
            cs, mu = cz + np.where(sg > 0, cy, 0), net.mu[m0 + s * no:m0 + (s + 1) * no]
            t = cs[grp] * (no == 0)  # without octahedral rows z = W h + b (up to the segment's radius Wr, br)
            rho, eta, kap = cs * (no > 0) - mu @ D, ch + t @ W[grp], p + mu @ bet + t @ b[grp]
            e = 0 if ex else gam(no + 4) * ((abs(cs) + abs(mu) @ abs(D)) @ zm + abs(mu) @ abs(bet) + abs(p) + (
                abs(t) @ net.absW[k][grp] + abs(ch)) @ hm + abs(t) @ abs(b[grp])) + U * abs(cs) @ zm + (no + 4) * \
                TINY * (1 + sum(zm) + sum(hm)) + (0 if Wr is None else abs(t) @ Wr[grp] @ hm) + (
                0 if br is None else abs(t) @ br[grp])
            v = bmax(np.concatenate([rho, eta])[None], np.concatenate([zl, hlo])[None],
                     np.concatenate([zu, hhi])[None], np.array([kap]), e, ex)[0]
            need(v <= 0, f"constraint {ci} does not hold (orthant {s}: max {v})")
