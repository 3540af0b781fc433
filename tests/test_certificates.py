"""Certificates written by the verifier (issue 28; docs/certificates.md): what bnb records is a proof.

Two kinds of checks, both independent of the code that wrote the file:

- the independent checker (``certcheck``, which imports neither torch nor bnb) accepts every certificate of an
  unsat answer, on ACAS Xu and on small networks, with CROWN and alpha-CROWN children;
- the file's content holds against the network itself: node boxes partition their parents, every claim contains
  the pre-activations of points sampled in its node's box (float64 forward pass), every leaf's path refutes every
  polytope, every multiplier is in range. A producer bug that the checker might miss (or share) shows here.

Configurations the format cannot hold must say so and write nothing.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bnb.config import load_config
from bnb.io.onnx_loader import load_onnx
from bnb.pipeline.verify import verify
from tests.conftest import acas, pre_activations, torch_mlp, write_vnnlib

certcheck = pytest.importorskip("certcheck", reason="the checker package certcheck/ is not importable")

pytestmark = pytest.mark.fast


def cfg_of(*sets, config=None):
    return load_config([config] if config else [], ["general.threads=1", *sets])


def load(path):
    z = np.load(path, allow_pickle=False)
    return json.loads(bytes(z["manifest"])), {k: z[k] for k in z.files if k != "manifest"}


def node_boxes(a):
    """Every node's box, from the root boxes (the r-th node of kind 0 is box ``root_box[r]``'s root, box r's
    without that array) and the cuts; every node's box number; every node's root (ordinal)."""
    n_in = a["root_lower"].shape[-1]
    roots = a["root_lower"].reshape(-1, n_in), a["root_upper"].reshape(-1, n_in)
    lo, hi, box, rid = [], [], [], []
    for v in range(len(a["parent"])):
        p = a["parent"][v]
        if a["kind"][v] == 0:
            assert p == -1
            rid.append(len([k for k in a["kind"][:v] if k == 0]))
            box.append(int(a["root_box"][rid[-1]]) if "root_box" in a else rid[-1])
            lo.append(roots[0][box[-1]].copy())
            hi.append(roots[1][box[-1]].copy())
            continue
        assert 0 <= p < v
        box.append(box[p])
        rid.append(rid[p])
        bl, bh = lo[p].copy(), hi[p].copy()
        if a["kind"][v] == 1:
            d = a["index"][v]
            assert lo[p][d] <= a["lo"][v] <= a["hi"][v] <= hi[p][d]
            bl[d], bh[d] = a["lo"][v], a["hi"][v]
        lo.append(bl)
        hi.append(bh)
    return np.array(lo), np.array(hi), np.array(box), np.array(rid)


def check_content(cert, onnx, samples=200, seed=0):
    """The certificate's content against the network: partition, claims, coverage, ranges (see the module doc)."""
    man, a = load(cert)
    net = load_onnx(str(onnx), check=False).network.to(dtype=torch.float64)
    N = len(a["parent"])
    lo, hi, box, rid = node_boxes(a)
    children = {}
    for v in range(N):
        if a["parent"][v] >= 0:
            children.setdefault(int(a["parent"][v]), []).append(v)
    for p, ch in children.items():
        dims = {int(a["index"][v]) for v in ch}
        assert len(dims) == 1 and len(ch) >= 2
        d = dims.pop()
        if man["branching"] == "relu":  # the two phases of one neuron, never split before on the path
            assert len(ch) == 2 and sorted(a["phase"][v] for v in ch) == [-1, 1] and set(a["kind"][ch]) == {2}
            v = p
            while a["parent"][v] >= 0:
                assert a["index"][v] != d
                v = int(a["parent"][v])
            continue
        # input cuts: one dimension, intervals chaining from the parent's ends
        iv = sorted((a["lo"][v], a["hi"][v]) for v in ch)
        assert iv[0][0] == lo[p][d] and iv[-1][1] == hi[p][d]
        assert all(x[1] == y[0] for x, y in zip(iv, iv[1:]))
    gen = np.random.default_rng(seed)
    for q, v in enumerate(a["claim_node"]):
        x = lo[v] + gen.random((samples, lo.shape[1])) * (hi[v] - lo[v])
        x = np.concatenate([x, lo[v][None], hi[v][None]])
        z = torch.cat([t.reshape(len(x), -1) for t in pre_activations(net, torch.tensor(x))], dim=1).numpy()
        state = a["claim_state"][q] if "claim_state" in a else np.zeros(z.shape[1])
        lo_c = np.where(state == 0, a["claim_lo"][q].astype(np.float64), np.where(state > 0, 0, -np.inf))
        hi_c = np.where(state == 0, a["claim_hi"][q].astype(np.float64), np.where(state < 0, 0, np.inf))
        assert (z >= lo_c).all() and (z <= hi_c).all()
    closed = {}
    for v, k in zip(a["close_node"], a["close_poly"]):
        closed.setdefault(int(v), set()).add(int(k))
    for leaf in set(range(N)) - set(children):
        have, v = set(), leaf
        while v >= 0:
            have |= closed.get(v, set())
            v = int(a["parent"][v])
        want = set(range(len(man["polytope_rows"][box[leaf]]))) if "root_answers" not in a else set(
            np.nonzero(a["root_answers"][rid[leaf]])[0].tolist())  # (one tree per polytope: what its root answers)
        assert have == want, (leaf, have, want)
    assert (a["term_lam"] >= 0).all() and np.isin(np.arange(len(a["close_node"])), a["term_close"]).all()
    assert ((a["alpha"] >= 0) & (a["alpha"] <= 1)).all() and (a["beta"] >= 0).all()
    return man, a


def accepted(cert, onnx, vnnlib, **kw):
    res = certcheck.check(str(cert), str(onnx), str(vnnlib), **kw)
    assert res.status == "accepted", res.reason
    return res


@pytest.mark.parametrize("net_name, prop", [("1_1", "prop_1"), ("2_2", "prop_1"), ("4_1", "prop_4"),
                                           pytest.param("1_1", "prop_6", marks=pytest.mark.slow)])  # two boxes, ~10 s
def test_acas_certificates_hold_and_are_accepted(tmp_path, net_name, prop):
    onnx, vnnlib = acas(net_name, prop)
    cert = tmp_path / "c.npz"
    res = verify(str(onnx), str(vnnlib), cfg_of(config="configs/acasxu.yaml"), certificate=str(cert))
    assert res.verdict.value == "unsat"
    assert res.stats["certificate"] == str(cert)
    man, a = check_content(cert, onnx)
    assert man["relu_sizes"] == [50] * 6 and man["branching"] == "input"
    assert len(man["polytope_rows"]) == (2 if prop == "prop_6" else 1) == (a["kind"] == 0).sum()
    accepted(cert, onnx, vnnlib)


def small_instance(tmp_path, tiny_net, seed, n_in=3, widths=(8, 8), slack=0.3):
    """A random network and a property that holds by ``slack`` of the output range: "Y_0 <= t" with ``t`` below
    the sampled minimum of Y_0."""
    module = torch_mlp([n_in, *widths, 2], seed)
    onnx = tiny_net(module, (n_in,), name=f"n{seed}")
    lo, hi = -np.ones(n_in), np.ones(n_in)
    x = torch.tensor(np.random.default_rng(seed).uniform(lo, hi, (20000, n_in)), dtype=torch.float32)
    with torch.no_grad():
        y = module(x)[:, 0]
    t = float(y.min() - slack * (y.max() - y.min()))
    vnnlib = write_vnnlib(tmp_path / f"p{seed}.vnnlib", lo, hi, 2, f"(<= Y_0 {t!r})")
    return onnx, vnnlib


@pytest.mark.parametrize("method", ["crown", "alpha"])
def test_small_networks_input_splitting(tmp_path, tiny_net, method):
    branched = 0
    for seed in range(4):
        onnx, vnnlib = small_instance(tmp_path, tiny_net, seed)
        cert = tmp_path / f"c{seed}.npz"
        cfg = cfg_of("bab.branching=input", "bounds.method=crown", f"bab.input_method={method}",
                     "general.proof_only=true")
        res = verify(str(onnx), str(vnnlib), cfg, certificate=str(cert))
        assert res.verdict.value == "unsat", res.message
        man, a = check_content(cert, onnx)
        branched += len(a["parent"]) > 1
        if method == "alpha" and len(a["parent"]) > 1:
            assert (a["term_alpha"][a["close_node"][a["term_close"]] > 0] >= 0).all()  # children carry slopes
        accepted(cert, onnx, vnnlib)
    assert branched >= 2  # the tree is not just a root


def test_unsupported_configurations_write_nothing(tmp_path, tiny_net):
    onnx, vnnlib = small_instance(tmp_path, tiny_net, 0)
    for sets, reason in [(("bab.branching=partition", "bounds.method=crown"), "partition branching"),
                         (("bab.branching=relu", "bab.clauses=true"), "clauses")]:
        cert = tmp_path / "u.npz"
        res = verify(str(onnx), str(vnnlib), cfg_of("bab.branching=input", *sets), certificate=str(cert))
        if res.verdict.value == "unsat":
            assert res.stats["certificate"].startswith("unsupported") and reason in res.stats["certificate"]
            assert not cert.exists()


def test_small_networks_relu_splitting(tmp_path, tiny_net):
    """alpha-CROWN root (its intermediate bounds re-evaluated once, with hints), beta-CROWN children."""
    branched = hinted = 0
    for seed in range(4):
        onnx, vnnlib = small_instance(tmp_path, tiny_net, seed, n_in=4, widths=(12, 12, 12), slack=0.05)
        cert = tmp_path / f"r{seed}.npz"
        cfg = cfg_of("bab.branching=relu", "bounds.method=alpha", "general.proof_only=true")
        res = verify(str(onnx), str(vnnlib), cfg, certificate=str(cert))
        if res.verdict.value != "unsat":
            continue
        man, a = check_content(cert, onnx)
        assert man["branching"] == "relu" and list(a["claim_node"]) == [0]
        branched += len(a["parent"]) > 1
        hinted += len(a["hint_claim"]) > 0
        accepted(cert, onnx, vnnlib)
    assert branched >= 1 and hinted >= 1


def check_constraints(a, onnx, samples=400, seed=1):
    """Version 2's constraints against the network: at sampled points of the root box every constraint and every
    octahedral bound holds (float64 forward pass, a 1e-6 slack for the working dtype); mu and gamma are >= 0; a
    constraint's octahedral rows are on its layer, its group has at most 3 neurons."""
    net = load_onnx(str(onnx), check=False).network.to(dtype=torch.float64)
    lo, hi = a["root_lower"].reshape(-1), a["root_upper"].reshape(-1)
    x = lo + np.random.default_rng(seed).random((samples, len(lo))) * (hi - lo)
    x = np.concatenate([x, lo[None], hi[None]])
    z = torch.cat([t.reshape(len(x), -1) for t in pre_activations(net, torch.tensor(x))], dim=1).numpy()
    xy = np.concatenate([x, np.maximum(z, 0)], axis=1)
    val = xy @ a["con_y"].astype(np.float64).T + z @ a["con_z"].astype(np.float64).T + a["con_p"]
    assert (val <= 1e-6 * (1 + np.abs(val))).all(), val.max()
    assert (z @ a["oct_row"].T <= a["oct_beta"] + 1e-9).all()
    assert (a["mu"] >= 0).all() and (a["gamma"] >= 0).all() and (a["con_noct"] >= 0).all()
    assert all((a["oct_layer"][o:o + n] == k).all() for o, n, k in zip(a["con_oct"], a["con_noct"], a["con_layer"]))


def mn_crown_certificates(tmp_path, tiny_net, seeds, slack, want, tighten=False):
    """mn-crown root (group hulls, with or without ``tighten``: bounds.mn_tighten), ReLU splitting with the
    constraints in the children (odd seeds) or beta-CROWN children: every unsat answer writes a certificate
    (version 2 where the root kept constraints), whose constraints and claims hold on samples and which the checker
    accepts. Returns how many carry a positive gamma (in a closure or, tightened, in a claim's hint)."""
    used = written = 0
    for seed in seeds:
        onnx, vnnlib = small_instance(tmp_path, tiny_net, seed, n_in=4, widths=(12, 12, 12), slack=slack)
        cert = tmp_path / f"m{seed}.npz"
        cfg = cfg_of("bab.branching=relu", "bounds.method=mn-crown", f"bounds.mn_tighten={str(tighten).lower()}",
                     "general.proof_only=true", f"bab.mn_children_gain={0 if seed % 2 else 10}")
        res = verify(str(onnx), str(vnnlib), cfg, certificate=str(cert))
        if res.verdict.value != "unsat":
            continue
        assert res.stats["certificate"] == str(cert), res.stats["certificate"]
        man, a = check_content(cert, onnx)
        written += 1
        if man["version"] == 2:
            check_constraints(a, onnx)
            hinted = a["hint_gamma"][a["hint_gamma"] >= 0]
            assert tighten or not len(hinted)
            used += bool((a["gamma"][hinted] > 0).any() if tighten else (a["gamma"] > 0).any())
        accepted(cert, onnx, vnnlib)
    assert written >= want, written
    return used


def test_small_network_mn_crown(tmp_path, tiny_net):
    """One network whose proof needs splits: constraints in the children, gamma in the closures."""
    assert mn_crown_certificates(tmp_path, tiny_net, [1], 0.02, 1) == 1


@pytest.mark.slow
def test_small_networks_mn_crown(tmp_path, tiny_net):
    """Six networks (~15 s), both kinds of children."""
    assert mn_crown_certificates(tmp_path, tiny_net, range(6), 0.05, 3) >= 1


@pytest.mark.parametrize("seeds, slack, want", [pytest.param(range(6), 0.05, 3, marks=pytest.mark.slow),
                                                 ([1], 0.02, 1)])
def test_small_networks_mn_tighten(tmp_path, tiny_net, seeds, slack, want):
    """bounds.mn_tighten: the root's tightened intermediate bounds are claims whose hints take the earlier layers'
    constraints with gamma; the files are accepted and the claims hold on samples."""
    assert mn_crown_certificates(tmp_path, tiny_net, seeds, slack, want, tighten=True) >= 1


@pytest.mark.parametrize("prop, dtype", [("prop_0_0.03", "float32"), ("prop_2_0.03", "float32"),
                                         ("prop_0_0.03", "float64")])
def test_mnist_relu_certificates(tmp_path, prop, dtype):
    """alpha root, beta children; in float64 the root's claims are loosened by 1e-9 relative (without, the checker's
    own rounding bound left one claim 5e-12 out of reach)."""
    from tests.conftest import require_bench
    folder = require_bench("mnist_fc")
    onnx, vnnlib = folder / "onnx" / "mnist-net_256x2.onnx", folder / "vnnlib" / f"{prop}.vnnlib"
    cert = tmp_path / "m.npz"
    cfg = cfg_of("bounds.method=alpha", "bounds.mn_tighten=false", "bab.mn_children_gain=0",
                 f"general.dtype={dtype}", config="configs/mnist_fc.yaml")
    res = verify(str(onnx), str(vnnlib), cfg, certificate=str(cert))
    assert res.verdict.value == "unsat" and res.stats["certificate"] == str(cert)
    check_content(cert, onnx)
    accepted(cert, onnx, vnnlib)


@pytest.mark.slow
@pytest.mark.parametrize("prop", ["prop_0_0.03", "prop_5_0.03"])
def test_mnist_mn_crown_certificates(tmp_path, prop):
    """configs/mnist_fc.yaml without mn_tighten (~10 s each): group hulls at the root, children as
    bab.mn_children_gain says; a version-2 certificate whose constraints hold on samples, accepted."""
    from tests.conftest import require_bench
    folder = require_bench("mnist_fc")
    onnx, vnnlib = folder / "onnx" / "mnist-net_256x2.onnx", folder / "vnnlib" / f"{prop}.vnnlib"
    cert = tmp_path / "m.npz"
    cfg = cfg_of("bounds.mn_tighten=false", config="configs/mnist_fc.yaml")
    res = verify(str(onnx), str(vnnlib), cfg, certificate=str(cert))
    assert res.verdict.value == "unsat" and res.stats["certificate"] == str(cert), res.stats.get("certificate")
    man, a = check_content(cert, onnx)
    closing = a["term_gamma"][a["term_gamma"] >= 0]
    assert man["version"] == 2 and len(a["con_p"]) > 0 and (a["gamma"][closing] > 0).any()
    check_constraints(a, onnx)
    accepted(cert, onnx, vnnlib)


@pytest.mark.parametrize("net, prop", [("256x2", "prop_0_0.03"), ("256x4", "prop_13_0.03")])
def test_mnist_tightened_certificate(tmp_path, net, prop):
    """configs/mnist_fc.yaml as it is (mn-crown root with bounds.mn_tighten, ~9 s each): the tightened intermediate
    bounds are claims proven with the constraints of earlier layers; the file is accepted, and without the hints'
    gammas (or with a gamma on a constraint of the claim's own layer) it is rejected. 256x4 prop_13_0.03: a neuron
    of layer 3 that alpha-CROWN had proven inactive on the earlier layers' old bounds, which its proof no longer
    gives on the tightened ones (every layer after the first is re-bounded on the claims before it)."""
    from tests.conftest import require_bench
    folder = require_bench("mnist_fc")
    onnx, vnnlib = folder / "onnx" / f"mnist-net_{net}.onnx", folder / "vnnlib" / f"{prop}.vnnlib"
    cert = tmp_path / "m.npz"
    res = verify(str(onnx), str(vnnlib), cfg_of(config="configs/mnist_fc.yaml"), certificate=str(cert))
    assert res.verdict.value == "unsat" and res.stats["certificate"] == str(cert), res.stats.get("certificate")
    man, a = check_content(cert, onnx)
    assert man["version"] == 2
    check_constraints(a, onnx)
    accepted(cert, onnx, vnnlib)
    hinted = np.flatnonzero(a["hint_gamma"] >= 0)
    assert len(hinted) and (a["gamma"][a["hint_gamma"][hinted]] > 0).any()
    layer = np.searchsorted(np.cumsum(man["relu_sizes"]), a["hint_neuron"][hinted], "right")
    same = np.flatnonzero(a["con_layer"] == layer.max())
    for why, plant in (("claim not implied", lambda b: b["hint_gamma"].fill(-1)),
                       ("later layer",
                        lambda b: b["gamma"].__setitem__((b["hint_gamma"][hinted[layer.argmax()]], same[0]), 1e-3))):
        b = {k: v.copy() for k, v in np.load(cert).items()}
        plant(b)
        np.savez(tmp_path / "p.npz", **b)
        bad = certcheck.check(str(tmp_path / "p.npz"), str(onnx), str(vnnlib))
        assert bad.status == "rejected" and why in bad.reason, bad.reason


def test_sat_writes_no_certificate(tmp_path, tiny_net):
    module = torch_mlp([2, 4, 1], 0)
    onnx = tiny_net(module, (2,))
    vnnlib = write_vnnlib(tmp_path / "s.vnnlib", [-1, -1], [1, 1], 1, "(<= Y_0 1000.0)")
    cert = tmp_path / "s.npz"
    res = verify(str(onnx), str(vnnlib), cfg_of(), certificate=str(cert))
    assert res.verdict.value == "sat" and not cert.exists() and "certificate" not in res.stats


def test_a_root_proof_is_recorded_at_the_root(tmp_path, tiny_net):
    """The screen's CROWN bound refutes the property before the attack; with a certificate the root bound refutes it
    again on the record, so the file is a one-node proof."""
    onnx, vnnlib = small_instance(tmp_path, tiny_net, 0, slack=3.0)
    cert = tmp_path / "r.npz"
    res = verify(str(onnx), str(vnnlib), cfg_of("bounds.method=crown"), certificate=str(cert))
    assert res.verdict.value == "unsat" and res.stats["certificate"] == str(cert)
    assert res.stats["screen_refuted"] == 1
    man, a = check_content(cert, onnx)
    assert len(a["parent"]) == 1 and list(a["close_node"]) == [0]
    accepted(cert, onnx, vnnlib)
    # `bnb check` runs the checker in a process of its own; a certificate of another property is rejected
    import subprocess
    import sys
    run = lambda spec: subprocess.run([sys.executable, "-m", "bnb.cli", "check", str(cert), str(onnx), str(spec)],  # noqa: E731
                                      capture_output=True, text=True, timeout=120)
    out = run(vnnlib)
    assert (out.returncode, out.stdout.strip()) == (0, "accepted"), out.stderr
    other = tmp_path / "other.vnnlib"
    other.write_text(vnnlib.read_text().replace("(<= Y_0", "(<= Y_1"))
    out = run(other)
    assert out.returncode == 1 and out.stdout.startswith("rejected:"), out.stdout


def two_polytopes(tmp_path, tiny_net, seed, slack):
    """A random 4-12-12-12-3 network and two unreachable polytopes: ``Y_0 <= t_0`` (``t_0`` below Y_0's sampled
    minimum by ``slack`` of its range) or ``Y_1 >= t_1`` (above Y_1's sampled maximum likewise)."""
    module = torch_mlp([4, 12, 12, 12, 3], seed)
    onnx = tiny_net(module, (4,), name=f"t{seed}")
    lo, hi = -np.ones(4), np.ones(4)
    x = torch.tensor(np.random.default_rng(seed).uniform(lo, hi, (20000, 4)), dtype=torch.float32)
    with torch.no_grad():
        y = module(x)
    r0, r1 = float(y[:, 0].max() - y[:, 0].min()), float(y[:, 1].max() - y[:, 1].min())
    t0, t1 = float(y[:, 0].min() - slack * r0), float(y[:, 1].max() + slack * r1)
    vnnlib = write_vnnlib(tmp_path / f"t{seed}.vnnlib", lo, hi, 3, f"(or (and (<= Y_0 {t0!r})) (and (>= Y_1 {t1!r})))")
    return onnx, vnnlib


@pytest.mark.parametrize("method", ["alpha", "mn-crown"])
def test_one_tree_per_polytope(tmp_path, tiny_net, method):
    """``bab.polytopes: each``: a root per polytope tree (``root_box``, ``root_answers``); the file's content
    holds (every leaf closes what its root answers for) and the checker accepts it. Planted: without the answers
    (every root must then close both polytopes), a later root also answering for the other polytope, or a
    polytope answered by no root: rejected."""
    several = version2 = 0
    for seed in range(6):
        onnx, vnnlib = two_polytopes(tmp_path, tiny_net, seed, 0.1)
        cert = tmp_path / f"e{seed}.npz"
        cfg = cfg_of("bab.branching=relu", f"bounds.method={method}", "bab.polytopes=each", "general.proof_only=true")
        res = verify(str(onnx), str(vnnlib), cfg, certificate=str(cert))
        if res.verdict.value != "unsat":
            continue
        assert res.stats["certificate"] == str(cert), res.stats["certificate"]
        man, a = check_content(cert, onnx)
        accepted(cert, onnx, vnnlib)
        if "root_answers" not in a:
            continue  # (a polytope refuted at the root: one tree, one root)
        several += 1
        version2 += man["version"] == 2  # (mn-crown: the root's constraints, taken by every tree's gammas)
        assert list(a["root_box"]) == [0, 0] and a["root_answers"].sum(1).tolist() == [1, 1]
        z = dict(np.load(cert, allow_pickle=False))
        for name, change in (("no answers", lambda b: [b.pop("root_answers"), b.pop("root_box")]),
                             ("both", lambda b: b["root_answers"].__setitem__((1, slice(None)), 1)),
                             ("none", lambda b: b["root_answers"].__setitem__((0, slice(None)), 0))):
            b = {k: v.copy() for k, v in z.items()}
            change(b)
            bad = tmp_path / f"bad_{seed}.npz"
            np.savez_compressed(bad, **b)
            res = certcheck.check(str(bad), str(onnx), str(vnnlib))
            assert res.status == "rejected", (name, res.status, res.reason)
    assert several >= 2 and (method == "alpha" or version2 >= 1), (several, version2)
