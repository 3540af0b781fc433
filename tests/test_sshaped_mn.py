"""Multi-neuron constraints on sigmoid / tanh / softplus layers (issue 27 item 4b): the back-substitution's general
step takes ``gamma . (Pz y + Px z + Ph h + p)`` (``relaxations.crown.backward``), the hull cuts of
:mod:`relaxations.hull_cuts` are built from :mod:`relaxations.sshaped_hull`, and ``mn-crown`` runs on these networks.

Ground truth: sampled and PGD values of the network (every sound lower bound is below them), the exact minima of
the SSHAPED.md §1 table, and an exact (rational, with mpmath enclosures of the activation) evaluation of the
Lagrangian for the rounding bound.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from relaxations.crown import intermediate_bounds
from relaxations.hull_cuts import smooth_layers
from relaxations.ibp import ibp
from relaxations.network import Network
from relaxations.optimize import optimized
from relaxations.state import DomainState

F32, F64 = torch.float32, torch.float64
DTYPES = pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])


def _net(kind, widths, seed):
    torch.manual_seed(seed)
    act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "softplus": torch.nn.Softplus}[kind]
    mods = []
    for a, b in zip(widths[:-1], widths[1:]):
        lin = torch.nn.Linear(a, b)
        with torch.no_grad():
            lin.weight.mul_(2.0)
        mods += [lin, act()]
    return Network.from_torch(torch.nn.Sequential(*mods[:-1]), (widths[0],))


def _truth(net, lo, hi, C, seed=0):
    """Per row of ``C`` the smallest value found by 20,000 samples and PGD from 16 starts (float64)."""
    net64 = net.to(dtype=F64)
    lo, hi, C = lo[0].double(), hi[0].double(), C.double()
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(20000, lo.numel(), generator=g, dtype=F64)
    with torch.no_grad():
        best = (net64(x) @ C.T).min(0).values
    for r in range(C.shape[0]):
        x = (lo + (hi - lo) * torch.rand(16, lo.numel(), generator=g, dtype=F64)).requires_grad_(True)
        for _ in range(60):
            (gr,) = torch.autograd.grad((net64(x) @ C[r]).sum(), x)
            with torch.no_grad():
                x -= 0.05 * (hi - lo) * gr.sign()
                x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        with torch.no_grad():
            best[r] = torch.minimum(best[r], (net64(x) @ C[r]).min())
    return best


def line_cuts(net, lo, hi, pre, dtype, shift=0.0):
    """Valid but simple cuts for the machinery (no hull): every smooth neuron's single-neuron lines on ``pre``
    (``Activation.relaxation``: valid on ``[l, u]``, so on the domain) written over ``h``, ``y_j <= s (w_j . h +
    b_j) + t`` and the lower one, their float64 rounding covered by a wide margin. ``shift > 0`` plants an
    invalid set: every upper cut's intercept lowered by it."""
    out = [None] * len(net.activation_indices())
    for k, d in smooth_layers(net, lo.double(), hi.double(), pre):
        rh = np.maximum(np.abs(d.L), np.abs(d.U))
        signs, betas, alphas = [], [], []
        for j in range(d.W.shape[0]):
            for s, t, sg in ((d.lines[2][j], d.lines[3][j], 1), (d.lines[0][j], d.lines[1][j], -1)):
                beta, alpha = s * d.W[j], s * d.b[j] + t
                slack = 1e-12 * (1 + abs(alpha) + np.abs(beta) @ rh)
                signs.append(sg * (j + 1))
                betas.append(beta)
                alphas.append(alpha + sg * slack - (shift if sg > 0 else 0.0))
        out[k] = d.constraints(signs, betas, alphas, dtype, lo.device)
    return out


def _setup(kind, dtype, seed=0):
    net = _net(kind, [4, 10, 8, 3], seed).to(dtype=dtype)
    lo, hi = -0.8 * torch.ones(1, 4, dtype=dtype), 0.6 * torch.ones(1, 4, dtype=dtype)
    C = torch.cat([torch.eye(3), -torch.eye(3)]).to(dtype)
    with torch.no_grad():
        tight = [(r.l, r.u) for r in intermediate_bounds(net, DomainState(lo, hi))]
    loose = [(l.reshape(1, -1), u.reshape(1, -1)) for l, u in ibp(net, lo, hi)[2]]
    return net, lo, hi, C, tight, loose


@pytest.mark.parametrize("kind, dtype", [pytest.param("sigmoid", F32, marks=pytest.mark.fast),
                                         pytest.param("tanh", F64, marks=pytest.mark.fast),
                                         ("softplus", F32), ("sigmoid", F64), ("tanh", F32), ("softplus", F64)])
def test_constraints_on_smooth_layers_are_sound_and_used(kind, dtype):
    """Bounds on IBP intermediate bounds, with the lines of CROWN's tighter bounds as constraints over ``h``: below
    every sampled / PGD value, some multiplier positive, and clearly above the same bound without them."""
    net, lo, hi, C, tight, loose = _setup(kind, dtype)
    truth = _truth(net, lo, hi, C)
    cons = line_cuts(net, lo, hi, tight, dtype)
    plain = optimized(net, DomainState(lo, hi, pre_bounds=loose), C, iters=30, optimize_intermediate=False)
    res = optimized(net, DomainState(lo, hi, pre_bounds=loose, constraints=cons), C, iters=30,
                    optimize_intermediate=False)
    assert bool((res.lb[0].double() <= truth).all()), (res.lb, truth)
    assert any(bool((g > 0).any()) for g in res.gammas if g is not None)
    assert float((res.lb - plain.lb).mean()) > 0.02, (res.lb, plain.lb)


@pytest.mark.fast
def test_a_planted_invalid_cut_is_seen_by_the_sampled_values():
    """The containment check has teeth: the same cuts with every upper intercept lowered by 0.3 (invalid) give a
    bound above a sampled value."""
    net, lo, hi, C, tight, loose = _setup("sigmoid", F64)
    truth = _truth(net, lo, hi, C)
    cons = line_cuts(net, lo, hi, tight, F64, shift=0.3)
    res = optimized(net, DomainState(lo, hi, pre_bounds=loose, constraints=cons), C, iters=30,
                    optimize_intermediate=False)
    assert bool((res.lb[0] > truth).any()), (res.lb, truth)
