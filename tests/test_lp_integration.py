"""LP methods behind `bnb bounds`, and the LP hooks of branch and bound (relaxations/lp/bab_hooks.py)."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from bnb.cli.main import main
from bnb.config import load_config
from bnb.io.onnx_loader import load_onnx
from bnb.io.vnnlib import parse_vnnlib
from bnb.pipeline.verify import verify
from bnb.timing import Deadline
from relaxations.lp.bab_hooks import lp_tighten, refine_root_bounds
from relaxations.methods import LP_METHODS, METHODS, SMOOTH_LP_METHODS, bound_rows
from relaxations.milp import milp_bounds
from relaxations.options import BoundOptions
from relaxations.state import DomainState

from conftest import acas, expected_label, pre_activations, random_points, torch_mlp, write_vnnlib
from proof_only_runs import NOT_PROVEN, exact_min, margins

TOL = 1e-5


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _bounds(net, spec, method):
    r = _cli("bounds", net, spec, "--method", method, "--json", "--set", "general.threads=1")
    assert r.exit_code == 0, (method, r.output)
    d = json.loads(r.output.strip().splitlines()[-1])
    return np.array(d["lower"]), np.array(d["upper"])


def _ort_outputs(onnx_path, xs):
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    return np.concatenate([sess.run(None, {name: x.reshape(shape)})[0].reshape(1, -1) for x in xs])


@pytest.fixture
def tiny(tmp_path, tiny_net):
    net = tiny_net(torch_mlp([2, 4, 2], 0), (2,), name="tiny")
    spec = write_vnnlib(tmp_path / "tiny.vnnlib", [-1, -0.5], [1, 0.5], 2, "(<= Y_0 -100.0)")
    return net, spec


def test_registry_lists_lp_methods():
    assert set(LP_METHODS) <= set(METHODS)
    assert METHODS[:6] == ("ibp", "crown", "dp0", "dp1", "alpha", "beta")
    r = _cli("bounds", "--help")
    assert "anderson" in r.output and "milp" in r.output


def test_bounds_every_method_tiny(tiny):
    net, spec = tiny
    ys = _ort_outputs(net, random_points([-1, -0.5], [1, 0.5], 200, seed=1))
    res = {m: _bounds(net, spec, m) for m in METHODS if m not in SMOOTH_LP_METHODS}  # (those: sigmoid/tanh nets)
    for m, (lo, hi) in res.items():
        assert lo.shape == (2,) and hi.shape == (2,)
        assert np.all(ys >= lo - TOL) and np.all(ys <= hi + TOL), m
    # the MILP is exact: every relaxation contains it, the exact hull methods agree with it here
    mlo, mhi = res["milp"]
    for m in ("ibp", "crown", "lp", "mn", "p1", "anderson"):
        lo, hi = res[m]
        assert np.all(lo <= mlo + 1e-6) and np.all(hi >= mhi - 1e-6), m
    assert np.all(res["lp"][0] >= res["ibp"][0] - TOL)
    # one hidden layer: P1 (the layer's convex hull) is exact for a linear objective, so two independent
    # formulations must agree; and the MILP's range is attained, up to a dense grid's resolution
    np.testing.assert_allclose(res["p1"][0], mlo, atol=1e-6)
    np.testing.assert_allclose(res["p1"][1], mhi, atol=1e-6)
    g0, g1 = np.meshgrid(np.linspace(-1, 1, 401), np.linspace(-0.5, 0.5, 201))
    with torch.no_grad():
        yg = torch_mlp([2, 4, 2], 0).double()(torch.tensor(np.stack([g0.ravel(), g1.ravel()], 1))).numpy()
    assert np.all(yg.min(0) >= mlo - 1e-5) and np.all(yg.max(0) <= mhi + 1e-5)
    assert np.all(yg.min(0) - mlo < 1e-3) and np.all(mhi - yg.max(0) < 1e-3)


@pytest.mark.slow  # ~10 s
def test_bounds_acas_lp_anderson():
    net, spec = acas("1_1", "prop_3")
    prop = parse_vnnlib(str(spec), 5, 5)
    lo_in, hi_in = prop.specs[0].lower, prop.specs[0].upper
    ys = _ort_outputs(net, random_points(lo_in, hi_in, 300, seed=2))
    ibp_lo, ibp_hi = _bounds(net, spec, "ibp")
    for m in ("lp", "anderson"):
        lo, hi = _bounds(net, spec, m)
        assert np.all(ys >= lo - TOL) and np.all(ys <= hi + TOL), m
        assert np.all(lo >= ibp_lo) and np.all(hi <= ibp_hi), m
        assert np.all(hi - lo < ibp_hi - ibp_lo), m


def test_bounds_p1_too_large_is_bad_input():
    net, spec = acas("1_1", "prop_3")
    r = _cli("bounds", net, spec, "--method", "p1")
    assert r.exit_code == 2
    msg = [line for line in r.output.splitlines() if line.strip()]
    assert len(msg) == 1 and "p1" in msg[0] and "unstable" in msg[0]


def _acas_root(name, prop):
    onnx, spec = acas(name, prop)
    net = load_onnx(str(onnx)).network.to(dtype=torch.float32)
    s = parse_vnnlib(str(spec), net.in_size, net.out_size).specs[0]
    lo = torch.tensor(s.lower, dtype=net.dtype)
    hi = torch.tensor(s.upper, dtype=net.dtype)
    C = torch.eye(net.out_size, dtype=net.dtype)
    return net, lo, hi, bound_rows(net, DomainState(lo[None], hi[None]), C, "crown").pre_bounds


def test_refine_root_bounds_never_looser_and_tightens():
    net, lo, hi, pre = _acas_root("1_1", "prop_3")
    out = refine_root_bounds(net, lo, hi, pre, BoundOptions(lp_refine_time=4), Deadline(60))
    assert len(out) == len(pre)
    width_in = width_out = 0.0
    for (l0, u0), (l1, u1) in zip(pre, out):
        assert l1.shape == l0.shape and l1.dtype == l0.dtype and l1.device == l0.device
        assert bool((l1 >= l0).all()) and bool((u1 <= u0).all()) and bool((l1 <= u1).all())
        width_in += float((u0 - l0).sum())
        width_out += float((u1 - l1).sum())
    assert width_out < width_in - 1e-3
    # sound: every sampled point's pre-activations lie inside the refined bounds
    xs = torch.tensor(random_points(lo.numpy(), hi.numpy(), 200, seed=3))
    hs = pre_activations(net, xs)
    assert len(hs) == len(out)
    for h, (l1, u1) in zip(hs, out):
        assert bool((h >= l1 - 1e-4).all()) and bool((h <= u1 + 1e-4).all())


def test_refine_root_bounds_respects_an_expired_deadline():
    net, lo, hi, pre = _acas_root("1_1", "prop_3")
    out = refine_root_bounds(net, lo, hi, pre, BoundOptions(), Deadline(1e-9))
    for (l0, u0), (l1, u1) in zip(pre, out):
        assert torch.equal(l0, l1) and torch.equal(u0, u1)


def _split_state(net, N, seed):
    """N random split domains of ``net`` on [-1, 1]^n_in, with CROWN intermediate bounds."""
    g = torch.Generator().manual_seed(seed)
    n_in = net.in_size
    sizes = [net.layers[i].out_size for i in net.relu_indices()]
    splits = [torch.randint(-1, 2, (N, n), generator=g).to(torch.int8) for n in sizes]
    for s in splits:  # keep most neurons free
        s[torch.rand(s.shape, generator=g) < 0.7] = 0
    lo = -torch.ones(N, n_in, dtype=net.dtype)
    hi = torch.ones(N, n_in, dtype=net.dtype)
    C = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], dtype=net.dtype)
    st = DomainState(lo, hi, splits)
    pre = bound_rows(net, st, C, "crown").pre_bounds
    return DomainState(lo, hi, splits, pre), C


def test_lp_tighten_sound_and_not_below_beta():
    net = load_onnx_from_torch(torch_mlp([3, 6, 6, 3], 4))
    state, C = _split_state(net, 8, seed=5)
    opts = BoundOptions()
    beta = bound_rows(net, DomainState(state.lower, state.upper, state.splits), C, "beta", iters=10).lb
    out = lp_tighten(net, state, C, beta, opts, Deadline(None))
    assert out.shape == beta.shape and out.dtype == beta.dtype
    assert bool((out >= beta).all())  # the returned bound itself never drops below the one passed in
    free = lp_tighten(net, state, C, torch.full_like(beta, -float("inf")), opts, Deadline(None))
    finite = 0
    for k in range(state.size):
        mlo, _ = milp_bounds(net, state.lower[k].numpy(), state.upper[k].numpy(), C=C.numpy(),
                             splits=[s[k].numpy() for s in state.splits])
        assert np.all(free[k].numpy() <= mlo + 1e-6), (k, free[k], mlo)  # sound against the exact MILP
        assert np.all(out[k].numpy() <= mlo + 1e-6), (k, out[k], mlo)
        finite += int(bool(torch.isfinite(free[k]).all()))
    assert finite == state.size  # the LP gives finite bounds on every (non-empty) domain


def test_lp_tighten_skips_verified_and_stops_at_deadline():
    net = load_onnx_from_torch(torch_mlp([3, 6, 6, 3], 4))
    state, C = _split_state(net, 4, seed=6)
    opts = BoundOptions()
    lb = torch.full((4, 2), -10.0, dtype=net.dtype)
    lb[0] = float("inf")  # empty: left alone
    lb[1] = 1.0  # verified against d = 0.5: left alone when d is given
    out = lp_tighten(net, state, C, lb, opts, Deadline(None), d=torch.full((2,), 0.5, dtype=net.dtype))
    assert torch.equal(out[:2], lb[:2]) and bool((out[2:] > lb[2:]).all())
    late = lp_tighten(net, state, C, lb, opts, Deadline(1e-9))
    assert torch.equal(late, lb)


def load_onnx_from_torch(module):
    from relaxations.network import Network
    return Network.from_torch(module.double(), (module[0].in_features,))


# ------------------------------------------------------------------------------ verify end to end
def test_verify_acas_lp_refine_unsat():
    net, spec = acas("2_5", "prop_3")
    assert expected_label("acasxu", net.name, spec.name) == "unsat"
    r = _cli("verify", net, spec, "--timeout", 60, "--set", "bounds.lp_refine=true",
             "--set", "general.threads=1")
    assert r.exit_code == 0, r.output
    assert ": unsat in " in r.output


@pytest.fixture
def tiny_margin(tmp_path, tiny_net):
    """A 2-16-16-1 network and the exact minimum of ``-y`` on [-1, 1]^2 (``opt = -max y``, with its witness;
    tests/proof_only_runs.py). With ``bab.branching=relu``, beta-CROWN alone ends undecided just above the
    maximum; the LP proves it."""
    module = torch_mlp([2, 16, 16, 1], 3)
    path = tiny_net(module, (2,), name="deep")
    net = load_onnx(str(path)).network
    return path, exact_min(net, -np.ones(2), np.ones(2), c=[-1.0])


@pytest.mark.parametrize("sets", [["bounds.lp_refine=true", "bounds.lp_refine_time=5"],
                                  ["bab.relu_method=lp", "bab.branching=relu"]])
def test_verify_tiny_with_lp(tmp_path, tiny_margin, sets):
    """In proof-only mode: unsat ``max(1e-3 |max|, 1e-3)`` above the exact maximum, never unsat that far or
    ``1e-6`` below the witness's value (violated: unknown or timeout only); with falsification on, sat 1e-3
    below."""
    path, o = tiny_margin
    top, reached = -o.opt, -o.witness
    rel, tiny = margins(o.opt)
    cfg_sets = ["general.threads=1"] + sets
    safe = write_vnnlib(tmp_path / "safe.vnnlib", [-1, -1], [1, 1], 1, f"(>= Y_0 {top + rel!r})")
    cfg = load_config([], cfg_sets + ["general.proof_only=true"])
    cfg.general.timeout = 60
    r = verify(str(path), str(safe), cfg)
    assert r.verdict.value == "unsat", r
    if "bab.relu_method=lp" in sets:
        assert r.stats.get("branches", 0) > 0 and "time_lp" in r.stats
    else:
        assert "time_lp_refine" in r.stats
    cfg.general.timeout = 0.5  # a violated property ends in proof-only mode by the deadline or undecided
    for m in (rel, tiny):
        violated = write_vnnlib(tmp_path / "violated.vnnlib", [-1, -1], [1, 1], 1, f"(>= Y_0 {reached - m!r})")
        r = verify(str(path), str(violated), cfg)
        assert r.verdict.value in NOT_PROVEN, (m, o, r)
    unsafe = write_vnnlib(tmp_path / "unsafe.vnnlib", [-1, -1], [1, 1], 1, f"(>= Y_0 {top - 1e-3!r})")
    cfg = load_config([], cfg_sets)
    cfg.general.timeout = 60
    r = verify(str(path), str(unsafe), cfg)
    assert r.verdict.value == "sat", r


def test_bounds_json_on_stdout_is_only_json_with_highs(tiny):
    """HiGHS prints a banner on file descriptor 1 when first created; a real process's stdout must still be
    exactly one JSON object (CliRunner cannot see descriptor-level output, so run a subprocess)."""
    import subprocess
    import sys
    net, spec = tiny
    for method in ("lp", "milp"):
        proc = subprocess.run([sys.executable, "-m", "bnb.cli", "bounds", str(net), str(spec), "--method", method,
                               "--json", "--set", "general.threads=1"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        assert len(data["lower"]) == 2 and "HiGHS" not in proc.stdout
