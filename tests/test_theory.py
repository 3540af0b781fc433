"""bnb/theory (docs/theory.md): every construction against its formula, the THEORY.md exactness claims
(to 1e-6), the counterexample's P1 gap (= T), partitioning and augmentation against the MILP, and the
relaxation-error bracket."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bnb.cli.main import main
from bnb.errors import BnbError
from bnb.io.onnx_loader import load_onnx
from bnb.theory import constructions as K
from bnb.theory.augment import augment, equivalence
from bnb.theory.exact import exact_bounds as milp_bounds
from bnb.theory.networks import difference, evaluate, from_blocks, parallel, save_onnx
from bnb.theory.partition import partition
from bnb.theory.precision import method_bounds, precision, sub_boxes, table
from bnb.theory.regions import Regions
from bnb.theory.relaxation_error import error_bounds, random_blocks, relaxed

TOL = 1e-6


def _points(lo, hi, n=2000, seed=0):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return lo + (hi - lo) * np.random.default_rng(seed).random((n, lo.size))


@pytest.mark.parametrize("name", sorted(K.CONSTRUCTIONS))
def test_construction_matches_formula(name, tmp_path):
    build, formula, (lo, hi) = K.CONSTRUCTIONS[name]
    blocks = build()
    x = _points(lo, hi)
    assert np.abs(evaluate(blocks, x) - formula(x)).max() <= 1e-12
    net = from_blocks(blocks)
    assert np.abs(net(torch.tensor(x)).numpy() - formula(x)).max() <= 1e-12
    model = load_onnx(save_onnx(blocks, tmp_path / f"{name}.onnx"))  # the ONNX file, through onnxruntime
    x32 = x.astype(np.float32)
    assert np.abs(model.run_onnx(x32) - formula(x32.astype(np.float64))).max() <= 1e-5


def test_max_affine_and_its_corner_cases():
    rng = np.random.default_rng(3)
    A, c, lo = rng.normal(size=(4, 3)), rng.normal(size=4), -np.ones(3)
    x = _points(lo, -lo)
    for k in (1, 2, 4):
        assert np.abs(evaluate(K.max_affine(A[:k], c[:k], lo), x)[:, 0] - (x @ A[:k].T + c[:k]).max(1)).max() < 1e-12


def _p1(net, lo, hi):
    return method_bounds(net, lo, hi, "p1")


@pytest.mark.parametrize("T,k", [(1.0, 0), (2.5, 0), (10.0, 0), (3.0, 2)])
def test_barrier_p1_gap_is_T(T, k):
    net = from_blocks(K.barrier(T, k))
    lb, ub = _p1(net, [-1.0], [1.0])
    elb, eub = milp_bounds(net, np.array([-1.0]), np.array([1.0]))
    assert abs(elb[0] - T) <= TOL * T            # the network is >= T, attained on [0, 1/2]
    assert abs((elb[0] - lb[0]) - T) <= TOL * T  # P1's lower bound is the phantom point's 0
    assert abs(ub[0] - eub[0]) <= TOL * (1 + eub[0])
    lp_lb, _ = method_bounds(net, [-1.0], [1.0], "lp")
    assert lp_lb[0] <= lb[0] + TOL                # the triangle LP is no tighter than P1


def test_barrier_exact_after_one_split():
    T = 4.0
    res = partition(from_blocks(K.barrier(T)), [-1.0], [1.0], "p1")
    assert res["pieces"] == 2 and res["splits"] == 1 and res["exact"]
    assert abs(res["lower"][0] - T) <= TOL * T and abs(res["upper"][0] - 3 * T) <= TOL * T


@pytest.mark.parametrize("d", [2, 3])
def test_nested_max_p1_exact_triangle_not(d):
    net = from_blocks(K.nested_max(d))
    for lo, hi in sub_boxes(np.zeros(d), np.ones(d), 4, seed=d):
        lb, ub = _p1(net, lo, hi)
        assert abs(lb[0] - lo.max()) <= TOL and abs(ub[0] - hi.max()) <= TOL
    _, ub = method_bounds(net, np.zeros(d), np.ones(d), "lp")
    assert ub[0] >= 1 + 0.25  # Delta is not exact on the unit box (Baader et al.)


@pytest.mark.parametrize("name", ["abs_sum", "abs_max", "clip", "hat", "max2_plain", "max2_symmetric"])
def test_one_hidden_layer_is_p1_exact(name):
    build, _, (lo, hi) = K.CONSTRUCTIONS[name]
    net = from_blocks(build())
    for blo, bhi in sub_boxes(lo, hi, 3, seed=1):
        lb, ub = _p1(net, blo, bhi)
        elb, eub = milp_bounds(net, blo, bhi)
        assert np.all(np.abs(lb - elb) <= TOL) and np.all(np.abs(ub - eub) <= TOL)


def test_random_one_hidden_layer_is_p1_exact():
    for seed in range(3):
        blocks = random_blocks(2, 5, 1, seed=seed)
        net = from_blocks(blocks)
        lo, hi = -np.ones(2), np.ones(2)
        lb, ub = _p1(net, lo, hi)
        elb, eub = milp_bounds(net, lo, hi)
        assert np.all(np.abs(lb - elb) <= TOL * (1 + np.abs(elb)))
        assert np.all(np.abs(ub - eub) <= TOL * (1 + np.abs(eub)))


def test_precision_table_ranks_the_relaxations():
    res = precision(from_blocks(K.nested_max(2)), np.zeros(2), np.ones(2), samples=4, methods=("ibp", "lp", "p1"))
    m = res["methods"]
    assert m["p1"]["precise_fraction"] == 1.0 and m["p1"]["max_gap"] <= TOL
    assert abs(m["lp"]["box_gap"] - 0.5) <= TOL and m["ibp"]["box_gap"] >= m["lp"]["box_gap"]
    assert not any(r["unsound"] for r in m.values())


def test_activation_pattern_count_against_sampling():
    for seed in range(2):
        blocks = random_blocks(2, 4, 2, seed=seed)
        lo, hi = -np.ones(2), np.ones(2)
        count = Regions(blocks, lo, hi).patterns()
        h, pats = _points(lo, hi, 20000, seed), []
        for W, b in blocks[:-1]:
            z = h @ W.T + b
            pats.append(z > 0)
            h = np.maximum(z, 0)
        sampled = len({r.tobytes() for r in np.hstack(pats)})
        assert sampled <= count <= sampled + 3
    assert Regions(K.nested_max(3), np.zeros(3), np.ones(3)).patterns() == 4


@pytest.mark.parametrize("d", [2, 3])
def test_partition_pieces_single_neuron_vs_p1(d):
    net = from_blocks(K.nested_max(d))
    p1 = partition(net, np.zeros(d), np.ones(d), "p1")
    lp = partition(net, np.zeros(d), np.ones(d), "lp")
    assert p1["pieces"] == 1 and lp["pieces"] == 2 ** (d - 1) == lp["activation_patterns"]
    for r in (p1, lp):
        assert r["exact"] and abs(r["upper"][0] - 1) <= TOL and abs(r["lower"][0]) <= TOL


def test_partition_bounds_match_milp_on_a_random_network():
    blocks = random_blocks(2, 3, 2, n_out=2, seed=5)
    net = from_blocks(blocks)
    lo, hi = -np.ones(2), np.ones(2)
    elb, eub = milp_bounds(net, lo, hi)
    res = partition(net, lo, hi, "lp")
    assert res["exact"] and res["pieces"] <= res["activation_patterns"]
    assert np.all(np.abs(np.array(res["lower"]) - elb) <= TOL * (1 + np.abs(elb)))
    assert np.all(np.abs(np.array(res["upper"]) - eub) <= TOL * (1 + np.abs(eub)))


def test_augment_univariate_deep_network(tmp_path):
    torch.manual_seed(1)
    seq = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 1))
    from relaxations.network import Network
    src = save_onnx(Network.from_torch(seq, (1,)), tmp_path / "u.onnx")
    res = augment(load_onnx(src), np.array([-2.0]), np.array([2.0]), tmp_path / "u_new.onnx")
    assert res["kind"] == "univariate" and res["layers_after"] == 1 and res["equivalent"]
    p1, ex = res["after"]["p1"], res["after"]["exact"]
    assert abs(p1[0] - ex[0]) <= TOL and abs(p1[1] - ex[1]) <= TOL
    assert abs(ex[0] - res["before"]["exact"][0]) <= 1e-5  # same function (float32 weights)


def test_augment_barrier_and_convex(tmp_path):
    res = augment(load_onnx(save_onnx(K.barrier(2.0), tmp_path / "b.onnx")), np.array([-1.0]), np.array([1.0]),
                  tmp_path / "b_new.onnx")
    assert res["equivalent"] and abs(res["before"]["p1"][0]) <= TOL   # off by T before
    assert abs(res["after"]["p1"][0] - 2.0) <= TOL                      # exact after
    res = augment(load_onnx(save_onnx(K.max2_symmetric(), tmp_path / "m.onnx")), np.zeros(2), np.ones(2),
                  tmp_path / "m_new.onnx")
    assert res["kind"] == "convex" and res["equivalent"] and abs(res["after"]["p1"][1] - 1) <= TOL
    neg = [(W, b) for W, b in K.nested_max(2)]
    neg[-1] = (-neg[-1][0], -neg[-1][1])  # -max: concave
    res = augment(load_onnx(save_onnx(neg, tmp_path / "c.onnx")), np.zeros(2), np.ones(2), tmp_path / "c_new.onnx")
    assert res["kind"] == "concave" and res["equivalent"] and abs(res["after"]["p1"][0] + 1) <= TOL


def test_augment_refuses_and_equivalence_detects(tmp_path):
    saddle = [(np.array([[1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]), np.zeros(3)), (np.array([[1.0, 1.0, -1.0]]),
                                                                                np.zeros(1))]
    with pytest.raises(BnbError, match="not convex or concave"):
        augment(load_onnx(save_onnx(saddle, tmp_path / "s.onnx")), -np.ones(2), np.ones(2), tmp_path / "s_new.onnx")
    a = load_onnx(save_onnx(K.abs_sum(), tmp_path / "a.onnx"))
    b = load_onnx(save_onnx(K.hat(), tmp_path / "h.onnx"))
    r = equivalence(a, b, np.array([-1.0]), np.array([1.0]), samples=500)
    assert not r["equivalent"] and abs(r["max_diff_milp"] - 1.0) <= TOL  # |x| - hat(x): 1 at 0 and +-1


def test_difference_and_parallel_networks():
    a, b = random_blocks(2, 3, 1, seed=1), random_blocks(2, 4, 3, seed=2)
    x = _points(-np.ones(2), np.ones(2), 500)
    for box in (None, (-np.ones(2), np.ones(2))):
        assert np.abs(evaluate(parallel(a, b, box), x) - np.hstack([evaluate(a, x), evaluate(b, x)])).max() < 1e-12
        assert np.abs(evaluate(difference(a, b, box), x) - (evaluate(a, x) - evaluate(b, x))).max() < 1e-12


def test_relaxation_error_bracket():
    blocks = random_blocks(2, 5, 2, seed=4)
    c, r = np.zeros(2), 0.3
    g = relaxed(blocks, c - r, c + r)
    assert len(g) == 1  # the full relaxation is affine
    crown = error_bounds(blocks, c, r)
    exact = error_bounds(blocks, c, r, bound="milp")
    assert 0 < crown["lower"] <= exact["upper"] + TOL and exact["upper"] <= crown["upper"] + TOL
    assert error_bounds(blocks, c, r, relax=[])["upper"] == 0.0
    # every neuron stable on a tiny ball: the relaxation is the network
    x0 = np.array([0.37, -0.21])
    tiny = error_bounds(blocks, x0, 1e-7, bound="milp")
    assert tiny["unstable"] == 0 and tiny["upper"] <= 1e-9


def test_cli_theory_commands(tmp_path):
    run = CliRunner()
    net = save_onnx(K.barrier(1.0), tmp_path / "b.onnx")
    spec = tmp_path / "b.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (>= X_0 -1))\n(assert (<= X_0 1))\n"
                    "(assert (<= Y_0 0.5))\n")
    r = run.invoke(main, ["recover", "partition", str(net), str(spec), "--method", "p1", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert {"pieces", "activation_patterns", "lower", "upper"} <= set(out) and out["pieces"] == 2
    assert out["activation_patterns"] == 3 and abs(out["lower"][0] - 1) <= TOL
    r = run.invoke(main, ["precision", str(net), "--box=-1:1", "--samples", "2", "--methods", "ibp,p1", "--json"])
    assert r.exit_code == 0 and abs(json.loads(r.output)["methods"]["p1"]["box_gap"] - 1) <= TOL
    r = run.invoke(main, ["recover", "augment", str(net), "--out", str(tmp_path / "n.onnx"), "--box=-1:1", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["equivalent"]
    r = run.invoke(main, ["relaxation-error", "--depths", "1", "--radii", "0.1", "--seeds", "1", "--json",
                          "--plot", str(tmp_path / "e.png")])
    assert r.exit_code == 0 and (tmp_path / "e.png").stat().st_size > 1000
    row = json.loads(r.output)["rows"][0]
    assert 0 <= row["lower"] <= row["upper"]


@pytest.mark.parametrize("args,msg", [(["precision", "{net}"], "--box"),
                                      (["precision", "{net}", "--box=0:1,0:1"], "2 intervals"),
                                      (["precision", "{net}", "--box=1:0"], "LO <= HI"),
                                      (["recover", "partition", "{net}", "{net}", "--method", "nope"],
                                       "unknown method"),
                                      (["relaxation-error", "--radii", "x"], "--radii")])
def test_cli_theory_bad_input(tmp_path, args, msg):
    net = save_onnx(K.barrier(1.0), tmp_path / "b.onnx")
    r = CliRunner().invoke(main, [a.format(net=net) for a in args])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------ smooth activations (issue 27, item 7)
def _smooth_onnx(tmp_path, op, n_out=1, seed=1):
    blocks = random_blocks(2, 3, 2, n_out=n_out, seed=seed)
    return blocks, save_onnx(blocks, tmp_path / f"{op}.onnx", op)


def _smooth_eval(blocks, f, x):
    h = x
    for k, (W, b) in enumerate(blocks):
        h = h @ W.T + b
        if k < len(blocks) - 1:
            h = f(h)
    return h


def test_precision_on_a_sigmoid_network(tmp_path):
    """``bnb precision`` on a sigmoid ONNX: the ranges' brackets contain every independently sampled output (a
    sandwich lower bound above a sampled value, or an attained value that is not, fails), CROWN and IBP bound the
    sampled values, each gap's bracket is ordered and the LP method is skipped with its note."""
    blocks, path = _smooth_onnx(tmp_path, "Sigmoid")
    r = CliRunner().invoke(main, ["precision", str(path), "--box=-1:1", "--samples", "0", "--methods",
                                  "ibp,crown,lp", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    y = _smooth_eval(blocks, lambda h: 1 / (1 + np.exp(-h)), _points(-np.ones(2), np.ones(2), 20000, seed=7))
    b = {k: np.array(v) for k, v in out["bracket"].items()}
    assert np.all(b["min_lo"] <= y.min(0)) and np.all(y.max(0) <= b["max_hi"])
    assert np.all(b["min_lo"] <= b["min_hi"]) and np.all(b["max_lo"] <= b["max_hi"])
    assert np.all(b["min_hi"] - b["min_lo"] < 1e-2 * (b["max_hi"] - b["min_lo"]))  # a narrow bracket
    assert out["skipped"] == ["lp"] and set(out["methods"]) == {"ibp", "crown"}
    for m, res in out["methods"].items():
        lo_gap, hi_gap = res["box_gap"]
        assert -TOL <= lo_gap <= hi_gap and not res["unsound"], m
        lb, ub = method_bounds(load_onnx(path).network.to(dtype=torch.float64), -np.ones(2), np.ones(2), m)
        assert np.all(lb <= y.min(0)) and np.all(ub >= y.max(0))
    text = table(out)
    assert "skipped (ReLU-only): lp" in text and "sandwich MILP" in text


def test_relaxation_error_on_a_tanh_network(tmp_path):
    """The chord relaxation of a tanh network: the difference network is ``f - g`` (against this test's own numpy
    ``f`` and ``g``, chords over IBP intervals), the bracket holds every sampled ``|f - g|`` and is ordered, with
    CROWN's and the sandwich MILP's upper bounds."""
    from bnb.theory.relaxation_error import chord_relaxed, smooth_difference
    from relaxations.milp_sandwich import Act
    blocks, path = _smooth_onnx(tmp_path, "Tanh")
    acts = [Act("tanh")] * 2
    c, rad = np.zeros(2), 0.5
    x = _points(c - rad, c + rad, 5000, seed=3)
    # independent g: IBP intervals, the chord of tanh on each, every layer relaxed
    lo, hi, h = c - rad, c + rad, x
    for k, (W, b) in enumerate(blocks):
        mid, r = W @ ((lo + hi) / 2) + b, np.abs(W) @ ((hi - lo) / 2)
        h = h @ W.T + b
        if k < len(blocks) - 1:
            l, u = mid - r, mid + r
            s = (np.tanh(u) - np.tanh(l)) / (u - l)
            h = np.tanh(l) + s * (h - l)
            lo, hi = np.tanh(l), np.tanh(u)
    gx = h
    fx = _smooth_eval(blocks, np.tanh, x)
    diff = smooth_difference(blocks, acts, *chord_relaxed(blocks, acts, c - rad, c + rad))
    with torch.no_grad():
        d = diff(torch.tensor(x)).numpy()
    assert np.abs(d - (fx - gx)).max() < 1e-12
    for bound in ("crown", "milp"):
        e = error_bounds(blocks, c, rad, bound=bound, acts=acts)
        assert np.abs(fx - gx).max() <= e["lower"] + 1e-12 and e["lower"] <= e["upper"], (bound, e)
    assert e["upper"] - e["lower"] < 0.2 * e["upper"]  # the sandwich's bracket is narrow
    assert error_bounds(blocks, c, rad, relax=[], acts=acts)["upper"] == 0.0
    r = CliRunner().invoke(main, ["relaxation-error", str(path), "--radii", "0.5", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)["rows"][0]
    assert np.abs(fx - gx).max() <= row["lower"] + 1e-6 and row["lower"] <= row["upper"]


@pytest.mark.parametrize("args", [["recover", "partition", "{net}", "{net}"],
                                  ["recover", "augment", "{net}", "--out", "{out}", "--box=-1:1"]])
def test_recover_refuses_smooth_networks(tmp_path, args):
    _, path = _smooth_onnx(tmp_path, "Sigmoid")
    r = CliRunner().invoke(main, [a.format(net=path, out=tmp_path / "o.onnx") for a in args])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "ReLU networks only" in lines[0] and "sigmoid" in lines[0]
    assert "Traceback" not in r.output
