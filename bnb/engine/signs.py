"""Sign refinement of near-stable neurons at the root (issue 26 item 2).

Single-neuron bounds leave many neurons of the first layers barely unstable (an interval that crosses 0 by a few
percent of its width) although they keep one sign on the whole box. For such a neuron ``z_j`` of ReLU layer
``i >= 1``, closest to stable first:

1. skip it when sampled points of the box show both signs (it really is unstable);
2. ask an exact MILP of the network cut before layer ``i`` for a sign (:mod:`relaxations.lp.sign_hint`): only a
   **hint**, it rests on a solver's tolerances;
3. **prove** the hinted sign with the verifier's own rigorous bounds: branch and bound (ReLU splitting, with every
   falsification off) on the prefix network with the one output row ``s z_j`` and the property "``s z_j <= 0``",
   whose ``unsat`` proves ``s z_j > 0`` everywhere on the box;
4. only then fix the bound: ``l_j = 0`` (``s = +1``, active) or ``u_j = 0`` (``s = -1``, inactive).

A wrong hint costs time only: the proof then fails (or runs out of its time) and the bounds stay.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from bnb.engine.context import Stats
from bnb.io.spec import Polytope
from bnb.timing import Deadline, VerificationTimeout
from relaxations.network import Network

SAMPLES = 1024    # random points of the box that rule out neurons showing both signs
NEAR_RATIO = 0.25  # near-stable: the interval crosses 0 by at most this share of its width
HINT_SECONDS = 2.0  # the MILP's time limit per neuron
PROOF_SECONDS = 2.0  # the proof's per neuron (a wrong hint's proof runs until then)


def near_stable(l: torch.Tensor, u: torch.Tensor, ratio: float, limit: int) -> list[int]:
    """Unstable neurons of one layer (``l``/``u`` ``(n,)``) whose interval crosses 0 by at most ``ratio`` of its
    width, ``min(-l, u) / (u - l)``, closest to stable first; at most ``limit``."""
    unstable = torch.nonzero((l < 0) & (u > 0)).flatten()
    if unstable.numel() == 0:
        return []
    r = torch.minimum(-l[unstable], u[unstable]) / (u[unstable] - l[unstable])
    keep = r <= ratio
    unstable, r = unstable[keep], r[keep]
    return [int(j) for j in unstable[torch.argsort(r)][:limit]]


def prove_sign(run_bab, prefix: Network, lower, upper, j: int, sign: int, opts, ref_bounds, seconds: float) -> bool:
    """True when branch and bound on ``prefix`` (its output: the target layer's pre-activations) proves
    ``sign * z_j > 0`` on the box ``lower``/``upper`` ``(n_in,)`` within ``seconds``, every falsification off;
    ``ref_bounds``: per ReLU layer of the prefix, bounds known to hold on the box. ``run_bab``:
    :func:`bnb.engine.root.run_bab` (passed in: the root step calls this module)."""
    n = prefix.out_size
    C = np.zeros((1, n))
    C[0, j] = float(sign)
    poly = Polytope(C, np.zeros(1))  # the property's bad set: sign * z_j <= 0
    run_opts = replace(opts, loop=replace(opts.loop, proof_only=True),
                       root=replace(opts.root, method="alpha", enabled=True, branching="relu", lp_refine=False,
                                    sign_refine=False),
                       relu=replace(opts.relu, relu_method="beta", retighten_depth=0))
    try:
        verdict, _ = run_bab(prefix, lower, upper, [poly], run_opts, Deadline(seconds), lambda xs: None, Stats(),
                             ref_bounds=ref_bounds)
    except VerificationTimeout:
        return False
    return verdict == "unsat"


def refine_signs(run_bab, net, lower, upper, pre_bounds, opts, stats: Stats, deadline: Deadline,
                 log=lambda m: None):
    """The root's intermediate bounds ``pre_bounds`` (per ReLU layer ``(l, u)`` ``(1, n_i)``) with near-stable
    neurons of layers ``1 .. opts.root.sign_layers`` fixed where their sign is proven (see the module docstring),
    within ``opts.root.sign_time`` seconds, the proofs by ``run_bab`` (:func:`prove_sign`). Returns
    ``(bounds, fixed)``: new bound tensors (the given ones where nothing changed) and how many neurons were
    fixed. ``lower``/``upper``: ``(n_in,)``."""
    from relaxations.lp import sign_hint as hints  # scipy and HiGHS: only when used
    ro = opts.root
    end = time.monotonic() + min(ro.sign_time, max(0.0, deadline.remaining()))
    relus = net.relu_indices()
    pre = [(l.clone(), u.clone()) for l, u in pre_bounds]
    fixed = 0
    gen = torch.Generator(device="cpu").manual_seed(opts.seed)
    for i in range(1, min(ro.sign_layers + 1, len(relus))):
        if time.monotonic() >= end:
            break
        l, u = pre[i][0][0], pre[i][1][0]
        cands = near_stable(l, u, NEAR_RATIO, ro.sign_max)
        stats.add("sign_candidates", len(cands))
        if not cands:
            continue
        prefix = Network(net.layers[:relus[i]], net.in_shape)
        span = (upper - lower).cpu()
        xs = lower.cpu() + span * torch.rand(SAMPLES, lower.numel(), generator=gen, dtype=span.dtype)
        with torch.no_grad():
            z = prefix(xs.to(lower.device)).cpu()
        milp = None
        for j in cands:
            left = end - time.monotonic()
            if left <= 0:
                break
            if bool((z[:, j] > 0).any()) and bool((z[:, j] < 0).any()):
                stats.add("sign_both_sampled", 1)
                continue
            sign = 1 if float(-l[j]) < float(u[j]) else -1
            if milp is None:
                milp = hints.prefix_milp(prefix, lower, upper, pre[:i])
            hint, seconds = hints.sign_hint(milp, j, sign, min(HINT_SECONDS, left))
            stats.add("time_sign_hints", seconds)
            if hint not in (hints.HINT_ACTIVE, hints.HINT_INACTIVE):
                continue
            stats.add("sign_hinted", 1)
            sign = 1 if hint == hints.HINT_ACTIVE else -1  # the hinted sign is what must be proven
            left = end - time.monotonic()
            t0 = time.monotonic()
            ok = left > 0 and prove_sign(run_bab, prefix, lower, upper, j, sign, opts, pre[:i],
                                        min(PROOF_SECONDS, left))
            stats.timed("time_sign_proofs", t0)
            if not ok:
                continue
            if sign > 0:
                pre[i][0][0, j] = 0.0   # proven: z_j > 0 on the box
            else:
                pre[i][1][0, j] = 0.0   # proven: z_j < 0 on the box
            fixed += 1
    stats.add("sign_fixed", fixed)
    if fixed:
        log(f"sign refinement: {fixed} near-stable neuron(s) proven stable")
    return (pre if fixed else pre_bounds), fixed
