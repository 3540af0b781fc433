"""Soundness and precision of IBP, CROWN/DeepPoly, alpha- and beta-CROWN (batched)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from relaxations.crown import crown
from relaxations.ibp import ibp
from relaxations.methods import SINGLE_NEURON_METHODS, bound_rows
from relaxations.milp import milp_bounds
from relaxations.network import Network
from relaxations.optimize import optimized
from relaxations.options import BoundOptions
from relaxations.state import DomainState

from conftest import pre_activations, random_conv, random_fc

pytestmark = pytest.mark.fast

D = torch.float64




def _boxes(n_in, N, seed, width=1.0):
    g = torch.Generator().manual_seed(seed)
    c = torch.rand(N, n_in, generator=g, dtype=D) * 2 - 1
    w = torch.rand(N, n_in, generator=g, dtype=D) * width
    return c - w, c + w


def _samples(lo, hi, k, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(lo.shape[0], k, lo.shape[1], generator=g, dtype=D)
    return lo[:, None] + (hi - lo)[:, None] * u


NETS = [("fc-2x8", lambda: random_fc([3, 8, 8, 2], 0)), ("fc-4x16", lambda: random_fc([4, 16, 16, 16, 16, 3], 1)),
        ("fc-1x32", lambda: random_fc([2, 32, 1], 2)), ("conv", lambda: random_conv(3, 6, 4, 6, 3))]


@pytest.mark.parametrize("name,make", NETS)
@pytest.mark.parametrize("method", SINGLE_NEURON_METHODS)
def test_sampled_outputs_inside_bounds(name, make, method):
    net = make()
    lo, hi = _boxes(net.in_size, 5, seed=7)
    C = torch.eye(net.out_size, dtype=D)
    r = bound_rows(net, DomainState(lo, hi), C, method, iters=15, want_upper=True)
    x = _samples(lo, hi, 3000, 1)
    y = net(x.reshape(-1, net.in_size)).reshape(5, 3000, -1)
    assert torch.all(y.min(1).values >= r.lb - 1e-9), (name, method)
    assert torch.all(y.max(1).values <= r.ub + 1e-9), (name, method)
    # intermediate bounds contain the sampled pre-activations too
    zs = pre_activations(net, x)
    assert len(zs) == len(r.pre_bounds)
    for j, (z, (l, u)) in enumerate(zip(zs, r.pre_bounds)):
        z = z.reshape(5, 3000, -1)
        assert torch.all(z >= l[:, None] - 1e-9) and torch.all(z <= u[:, None] + 1e-9), (name, method, j)


def _split_batch(net, lo, hi, seed):
    """Random split phases on unstable first-layer neurons, with CROWN intermediate bounds."""
    r0 = crown(net, DomainState(lo, hi), torch.eye(net.out_size, dtype=D))
    g = torch.Generator().manual_seed(seed)
    splits = [torch.zeros_like(l, dtype=torch.int8) for l, _ in r0.pre_bounds]
    l, u = r0.pre_bounds[0]
    unstable = (l < 0) & (u > 0)
    choice = torch.randint(-1, 2, l.shape, generator=g).to(torch.int8)
    splits[0] = torch.where(unstable, choice, torch.zeros_like(choice))
    return splits, r0.pre_bounds


def _consistent(net, x, splits):
    """Mask of sampled points whose first-layer pre-activations respect the split phases."""
    z = x
    for layer in net.layers:
        if not layer.affine:
            break
        z = layer.forward(z)
    z = z.reshape(x.shape[0], -1)
    s = splits[0]
    return torch.all((s == 0) | ((s > 0) & (z >= 0)) | ((s < 0) & (z <= 0)), dim=1)


def test_beta_with_splits_is_sound_and_tighter_than_alpha():
    net = random_fc([3, 12, 12, 1], 5)
    N = 8
    lo, hi = _boxes(3, N, seed=11)
    splits, pre = _split_batch(net, lo, hi, seed=2)
    C = torch.eye(1, dtype=D)
    state = DomainState(lo, hi, splits, pre)
    a = optimized(net, state, C, iters=60, use_beta=False)
    b = optimized(net, state, C, iters=60, use_beta=True)
    assert torch.all(b.lb >= a.lb - 1e-9)
    assert torch.any(b.lb > a.lb + 1e-4)  # the split constraints matter somewhere
    x = _samples(lo, hi, 20000, 3)
    sampled = 0
    for k in range(N):
        ok = _consistent(net, x[k], [s[k:k + 1] for s in splits])
        if ok.any():
            assert float(net(x[k][ok]).min()) >= float(b.lb[k, 0]) - 1e-9
            sampled += 1
        # the exact minimum over the split domain (the MILP with the same phases; +inf when empty)
        exact, _ = milp_bounds(net, lo[k].numpy(), hi[k].numpy(), splits=[s[k].numpy() for s in splits])
        assert float(b.lb[k, 0]) <= exact[0] + 1e-6, (k, float(b.lb[k, 0]), exact[0])
    assert sampled >= N // 2  # the sampling check above was not vacuous


def _split_region_empty(net, lo, hi, split0):
    """Whether no input of the box satisfies the first-layer split phases (an LP feasibility check)."""
    from scipy.optimize import linprog
    W, b = net.layers[0].weight.numpy(), net.layers[0].bias.numpy()
    s = split0.numpy()
    A = np.concatenate([-W[s > 0], W[s < 0]])
    rhs = np.concatenate([b[s > 0], -b[s < 0]])
    if len(A) == 0:
        return False
    res = linprog(np.zeros(W.shape[1]), A_ub=A, b_ub=rhs, bounds=list(zip(lo.numpy(), hi.numpy())))
    return res.status == 2


def test_beta_crown_matches_triangle_lp_with_splits():
    """With fixed intermediate bounds, optimised alpha/beta reach the triangle LP optimum (its dual)."""
    from relaxations.lp.triangle import lp_bounds
    net = random_fc([2, 6, 6, 1], 9)
    lo, hi = _boxes(2, 4, seed=5)
    splits, pre = _split_batch(net, lo, hi, seed=4)
    C = torch.eye(1, dtype=D)
    b = optimized(net, DomainState(lo, hi, splits, pre), C, BoundOptions(alpha_lr=0.2, beta_lr=0.2), iters=400,
                  use_beta=True)
    for k in range(4):
        lp_lb, _ = lp_bounds(net, lo[k].numpy(), hi[k].numpy(), C=C.numpy(),
                             pre_bounds=[(l[k:k + 1].numpy(), u[k:k + 1].numpy()) for l, u in pre],
                             splits=[s[k].numpy() for s in splits])
        if _split_region_empty(net, lo[k], hi[k], splits[0][k]):
            assert float(b.lb[k, 0]) > 0  # beta-CROWN proves the empty domain (any bound is valid)
            continue
        assert float(b.lb[k, 0]) <= lp_lb[0] + 1e-6            # never above the LP optimum (soundness)
        assert float(b.lb[k, 0]) >= lp_lb[0] - 1e-3 * (1 + abs(lp_lb[0]))  # and reaches it


def test_ordering_ibp_crown_alpha_milp():
    net = random_fc([3, 10, 10, 2], 12)
    lo, hi = _boxes(3, 3, seed=8, width=0.5)
    C = torch.eye(2, dtype=D)
    state = DomainState(lo, hi)
    crown_lb = crown(net, state, C).lb
    alpha_lb = optimized(net, state, C, iters=40).lb
    ibp_lb = ibp(net, lo, hi)[0]
    assert torch.all(alpha_lb >= crown_lb - 1e-9) and torch.any(alpha_lb > crown_lb + 1e-4)
    # not a theorem in general, but true on this network (by ~0.03-0.07): a regression check on precision
    assert torch.all(crown_lb > ibp_lb)
    for k in range(3):
        exact, _ = milp_bounds(net, lo[k].numpy(), hi[k].numpy(), C=C.numpy())
        for name, lb in (("ibp", ibp_lb), ("crown", crown_lb), ("alpha", alpha_lb)):
            assert np.all(lb[k].numpy() <= exact + 1e-6), (name, k, lb[k], exact)  # sound against the MILP


def test_crown_tighter_than_ibp_on_acas(bench):
    from bnb.io.onnx_loader import load_onnx
    from bnb.io.vnnlib import parse_vnnlib
    model = load_onnx(bench / "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx")
    spec = parse_vnnlib(bench / "acasxu/vnnlib/prop_3.vnnlib").specs[0]
    net = model.network
    lo, hi = torch.tensor(spec.lower)[None], torch.tensor(spec.upper)[None]
    C = torch.eye(5, dtype=D)
    r_ibp = bound_rows(net, DomainState(lo, hi), C, "ibp", want_upper=True)
    r_crown = bound_rows(net, DomainState(lo, hi), C, "crown", want_upper=True)
    r_alpha = bound_rows(net, DomainState(lo, hi), C, "alpha", iters=20, want_upper=True)
    assert torch.all(r_crown.ub - r_crown.lb <= r_ibp.ub - r_ibp.lb)
    assert torch.all(r_alpha.lb >= r_crown.lb - 1e-9) and torch.all(r_alpha.ub <= r_crown.ub + 1e-9)
    x = _samples(lo, hi, 5000, 0)[0]
    y = net(x)
    for name, r in (("ibp", r_ibp), ("crown", r_crown), ("alpha", r_alpha)):
        assert torch.all(y >= r.lb - 1e-9) and torch.all(y <= r.ub + 1e-9), name


def _abs_net():
    """y = relu(x) + relu(-x) = |x|."""
    w1 = torch.tensor([[1.0], [-1.0]], dtype=D)
    w2 = torch.tensor([[1.0, 1.0]], dtype=D)
    from relaxations.layers import Linear, ReLU
    return Network([Linear(w1, torch.zeros(2, dtype=D)), ReLU((2,)), Linear(w2, torch.zeros(1, dtype=D))], (1,))


@pytest.mark.parametrize("method", ["dp0", "dp1"])
def test_abs_is_exact_with_fixed_slopes(method):
    net = _abs_net()
    lo, hi = torch.tensor([[-2.0]], dtype=D), torch.tensor([[2.0]], dtype=D)
    r = bound_rows(net, DomainState(lo, hi), torch.eye(1, dtype=D), method, want_upper=True)
    assert abs(float(r.lb) - 0.0) <= 1e-6 and abs(float(r.ub) - 2.0) <= 1e-6


@pytest.mark.parametrize("method", SINGLE_NEURON_METHODS)
@pytest.mark.parametrize("box", [(0.5, 3.0), (-3.0, -0.5), (0.0, 1.0), (-1.0, 0.0)])
def test_single_relu_on_stable_box_is_exact(method, box):
    from relaxations.layers import Linear, ReLU
    net = Network([Linear(torch.eye(1, dtype=D), torch.zeros(1, dtype=D)), ReLU((1,))], (1,))
    lo, hi = torch.tensor([[box[0]]], dtype=D), torch.tensor([[box[1]]], dtype=D)
    r = bound_rows(net, DomainState(lo, hi), torch.eye(1, dtype=D), method, want_upper=True)
    assert float(r.lb) <= max(box[0], 0.0) and float(r.ub) >= max(box[1], 0.0)  # sound
    assert abs(float(r.ub) - max(box[1], 0.0)) <= 1e-6
    if method == "dp1" and box == (-1.0, 0.0):
        # the rigorous rounding bound leaves u = 1e-15 > 0: the neuron counts as unstable, and DeepPoly-1's
        # slope 1 gives the sound but loose lower bound -1 (adaptive slopes pick 0 here)
        assert abs(float(r.lb) + 1.0) <= 1e-6
    else:
        assert abs(float(r.lb) - max(box[0], 0.0)) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    net = random_fc([3, 8, 8, 2], 0).to(dtype=dtype)
    lo, hi = (t.to(dtype) for t in _boxes(3, 4, seed=1))
    C = torch.eye(2, dtype=dtype)
    for method in ("crown", "alpha"):
        r = bound_rows(net, DomainState(lo, hi), C, method, iters=10)
        assert r.lb.dtype == dtype
        x = _samples(lo.double(), hi.double(), 2000, 0).to(dtype)
        y = net(x.reshape(-1, 3)).reshape(4, 2000, 2)
        assert torch.all(y.min(1).values >= r.lb - 1e-5)


def test_warm_start_carries_the_optimised_slopes():
    net = random_fc([3, 10, 10, 2], 4)
    lo, hi = _boxes(3, 2, seed=3)
    C = torch.eye(2, dtype=D)
    cold = crown(net, DomainState(lo, hi), C).lb
    first = optimized(net, DomainState(lo, hi), C, iters=30)
    again = optimized(net, DomainState(lo, hi, alphas=first.alphas), C, iters=0)
    assert torch.all(first.lb >= cold - 1e-9)
    assert torch.all(again.lb >= cold - 1e-9) and torch.any(again.lb > cold + 1e-6)


@pytest.mark.parametrize("onnx,vnnlib,methods", [
    ("mnist_fc/onnx/mnist-net_256x2.onnx", "mnist_fc/vnnlib/prop_0_0.03.vnnlib", ("ibp", "crown", "alpha")),
    ("oval21/onnx/cifar_base_kw.onnx", "oval21/vnnlib/cifar_base_kw-img4549-eps0.00392156862745098.vnnlib",
     ("ibp", "crown")),
])
def test_benchmark_networks_sampled_outputs_inside_bounds(bench, onnx, vnnlib, methods):
    from bnb.io.onnx_loader import load_onnx
    from bnb.io.vnnlib import parse_vnnlib
    net = load_onnx(bench / onnx).network.to(dtype=torch.float32)
    spec = parse_vnnlib(bench / vnnlib).specs[0]
    lo = torch.tensor(spec.lower, dtype=torch.float32)[None]
    hi = torch.tensor(spec.upper, dtype=torch.float32)[None]
    C = torch.eye(net.out_size)
    x = _samples(lo.double(), hi.double(), 500, 0)[0].float()
    corners = torch.where(torch.rand(200, lo.shape[1]) < 0.5, lo, hi)  # vertices stress the bounds most
    y = net(torch.cat([x, corners]))
    for method in methods:
        r = bound_rows(net, DomainState(lo, hi), C, method, iters=5, want_upper=True)
        assert torch.all(y >= r.lb - 1e-4), method
        assert torch.all(y <= r.ub + 1e-4), method


def test_optimisation_stops_when_settled():
    """With every row settled after the first bound, alpha-CROWN takes no step: the result is the
    zero-iteration bound, and ``settled`` is asked once."""
    net = random_fc([3, 10, 10, 2], 12)
    lo, hi = _boxes(3, 3, seed=8, width=0.5)
    C = torch.eye(2, dtype=D)
    calls = []

    def all_settled(lb, infeasible):
        calls.append(1)
        return torch.ones_like(lb, dtype=torch.bool)

    stopped = optimized(net, DomainState(lo, hi), C, iters=40, settled=all_settled)
    assert len(calls) == 1
    assert torch.equal(stopped.lb, optimized(net, DomainState(lo, hi), C, iters=0).lb)
    assert torch.all(optimized(net, DomainState(lo, hi), C, iters=40).lb >= stopped.lb)


def test_settled_domains_leave_the_batch_without_changing_the_others():
    """beta-CROWN children (fixed intermediate bounds): when half the domains are settled at once, the
    others are optimised on a smaller batch and reach the same bounds as in the full batch; every bound
    still contains the sampled outputs."""
    net = random_fc([2, 6, 6, 2], 9)
    lo, hi = _boxes(2, 8, seed=5)
    splits, pre = _split_batch(net, lo, hi, seed=4)
    C = torch.eye(2, dtype=D)
    done = torch.arange(8) % 2 == 0

    def half(lb, infeasible):
        return done[:, None].expand_as(lb)

    state = DomainState(lo, hi, splits, pre)
    fast = BoundOptions(alpha_lr=0.2, beta_lr=0.2)
    full = optimized(net, state, C, fast, iters=30)
    part = optimized(net, state, C, fast, iters=30, settled=half)
    assert torch.allclose(part.lb[~done], full.lb[~done], rtol=0, atol=1e-9)
    assert torch.equal(part.lb[done], optimized(net, state, C, iters=0).lb[done])
    x = _samples(lo, hi, 2000, 3)
    for k in range(8):
        ok = _consistent(net, x[k], [s[k:k + 1] for s in splits])
        if ok.any():
            assert torch.all(net(x[k][ok]).min(0).values >= part.lb[k] - 1e-9)
