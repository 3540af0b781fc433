"""Falsification: batched projected gradient descent on the violation margin.

For an output polytope ``C y <= d`` the margin of a point is ``max_i (C f(x) - d)_i``; the point is a
counterexample iff its margin is ``<= 0``. PGD minimises the margin with signed-gradient steps inside
the input box, from many random starts, for every box and every polytope at once.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from bnb.engine.options import PgdOptions
from bnb.io.spec import Property
from bnb.timing import Deadline

_PAD = 1e30  # right-hand side of padding rows: never the maximum
_EVAL_POINTS = 8192  # sampled points evaluated per forward pass between two reads of the deadline


def stack_polytopes(polys, n_out: int, dtype=torch.float64, device="cpu"):
    """Pad a list of polytopes to ``C: (P, k_max, n_out)``, ``d: (P, k_max)``."""
    kmax = max(1, max(len(p.d) for p in polys))
    C = np.zeros((len(polys), kmax, n_out))
    d = np.full((len(polys), kmax), -_PAD)  # an empty polytope's padding row is always satisfied
    for i, p in enumerate(polys):
        k = len(p.d)
        if k:
            C[i, :k], d[i, :k] = p.C, p.refute_d  # the slack of a float32 query widens the target
            d[i, k:] = _PAD
    return torch.tensor(C, dtype=dtype, device=device), torch.tensor(d, dtype=dtype, device=device)


def margins(y: torch.Tensor, C: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """``y``: ``(B, n_out)``, ``C``: ``(B, k, n_out)``, ``d``: ``(B, k)`` -> ``(B,)``."""
    return (torch.einsum("bkn,bn->bk", C, y) - d).amax(dim=1)


def pgd(net, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor, d: torch.Tensor, steps: int,
        step_size: float, generator: torch.Generator | None = None, deadline: Deadline | None = None,
        x0: torch.Tensor | None = None):
    """Minimise the margin of each of B independent problems.

    ``lower``/``upper``: ``(B, n_in)``; ``C``: ``(B, k, n_out)``; ``d``: ``(B, k)``; ``x0`` optional start.
    Returns the best point ``(B, n_in)`` and its margin ``(B,)`` found over all steps.
    """
    width = upper - lower
    if x0 is None:
        x0 = lower + width * torch.rand(lower.shape, generator=generator, dtype=lower.dtype,
                                        device="cpu").to(lower.device)
    x = x0.clone().requires_grad_(True)
    best_x, best_m = x0.detach().clone(), torch.full(lower.shape[:1], math.inf, dtype=lower.dtype,
                                                     device=lower.device)
    for t in range(steps + 1):
        m = margins(net(x), C, d)
        with torch.no_grad():
            better = m < best_m
            best_m = torch.where(better, m, best_m)
            best_x[better] = x[better]
        if t == steps or (deadline is not None and deadline.expired()):
            break
        (grad,) = torch.autograd.grad(m.sum(), x)
        with torch.no_grad():
            # exponential decay of the step from step_size to step_size / 100
            size = step_size * (1e-3 ** (t / max(1, steps - 1)))
            x -= size * width * grad.sign()
            x.copy_(torch.max(torch.min(x, upper), lower))
    return best_x.detach(), best_m.detach()


def _best_samples(net, lo, hi, C, d, keep: int, samples: int, gen, deadline=None, active=None) -> torch.Tensor:
    """Uniform random sampling in each box; the ``keep`` points of lowest margin of each problem.

    Returns starting points ``(P' * keep, n_in)``, grouped by problem, for the ``P'`` problems of the boolean
    mask ``active`` ``(P,)`` (default: all). The random numbers are drawn for all ``P`` problems, so that each
    problem's samples do not depend on which others are active. The box centre is always a candidate.
    """
    P, n = lo.shape
    samples = max(samples, keep)
    chunk = max(1, 65536 // max(1, samples))
    active = torch.ones(P, dtype=torch.bool) if active is None else active.cpu()
    starts = []
    for s in range(0, P, chunk):
        if deadline is not None:
            deadline.check()
        sel = active[s:s + chunk]
        u = torch.rand((len(sel), samples, n), generator=gen, dtype=lo.dtype)
        # half the samples lie on faces of the box: each coordinate at a bound with probability 1/4
        # (piecewise-linear networks take their extremes on faces; ACAS Xu 1_9/prop_7's only known
        # counterexamples lie 1e-4 from a face, where uniform sampling needs ~1M points to land)
        half = samples // 2
        snap = torch.rand((len(sel), samples - half, n), generator=gen, dtype=lo.dtype) < 0.25
        if not bool(sel.any()):
            continue
        u, snap = u[sel], snap[sel]
        u[:, half:] = torch.where(snap, u[:, half:].round(), u[:, half:])
        u = u.to(lo.device)
        idx_p = s + torch.nonzero(sel).flatten().to(lo.device)
        l, h = lo[idx_p], hi[idx_p]
        x = l[:, None] + (h - l)[:, None] * u
        x[:, 0] = (l + h) / 2
        with torch.no_grad():  # in slices, with the deadline read between them (one slice: < 1 s)
            flat = x.reshape(-1, n)
            ys = []
            for s0 in range(0, flat.shape[0], _EVAL_POINTS):
                if deadline is not None and s0:
                    deadline.check()
                ys.append(net(flat[s0:s0 + _EVAL_POINTS]))
            y = torch.cat(ys).reshape(len(l), samples, -1)
            m = (torch.einsum("pkn,psn->psk", C[idx_p], y) - d[idx_p, None]).amax(dim=2)
        idx = torch.argsort(m, dim=1)[:, :keep]
        starts.append(torch.gather(x, 1, idx[..., None].expand(-1, -1, n)))
    return torch.cat(starts).reshape(-1, n)


def attack_property(net, prop: Property, opts: PgdOptions, validate, deadline: Deadline | None = None, seed: int = 0,
                    refuted=None):
    """PGD over every box and polytope of ``prop``; candidates with margin ``<= 0`` go to ``validate``.

    ``validate(xs (K, n_in) numpy, boxes (K,) numpy)`` returns a counterexample or None. ``refuted``: optional
    booleans, one per (box, polytope) pair in the property's order, for pairs already proven unreachable; only
    the others are attacked, each exactly as it would be among all pairs (the same random samples and starts),
    so the work is proportional to what is left and no counterexample of today's attack is lost.
    Returns ``(counterexample or None, best margin found)``.
    """
    dtype, device = net.dtype, net.device
    polys, box_of = [], []
    for b, spec in enumerate(prop.specs):
        for p in spec.disjuncts:
            polys.append(p)
            box_of.append(b)
    if not polys:
        return None, math.inf
    restarts = max(1, min(opts.restarts, opts.max_batch // len(polys)))
    active = torch.ones(len(polys), dtype=torch.bool) if refuted is None else ~torch.as_tensor(refuted).bool()
    if not bool(active.any()):
        return None, math.inf
    C, d = stack_polytopes(polys, prop.n_outputs, dtype, device)
    lo = torch.tensor(np.stack([prop.specs[b].lower for b in box_of]), dtype=dtype, device=device)
    hi = torch.tensor(np.stack([prop.specs[b].upper for b in box_of]), dtype=dtype, device=device)
    gen = torch.Generator().manual_seed(seed)
    x0 = _best_samples(net, lo, hi, C, d, restarts, opts.samples, gen, deadline, active)
    act = active.to(device)
    rep = lambda t: t[act].repeat_interleave(restarts, dim=0)  # noqa: E731
    lo_r, hi_r, C_r, d_r = rep(lo), rep(hi), rep(C), rep(d)
    box_r = np.repeat(np.array(box_of)[active.numpy()], restarts)
    x, m = pgd(net, lo_r, hi_r, C_r, d_r, opts.steps, opts.step_size, gen, deadline, x0)
    hits = torch.nonzero(m <= 0).flatten()
    if hits.numel():
        order = hits[torch.argsort(m[hits])][:64].cpu().numpy()
        ce = validate(x[order].cpu().double().numpy(), box_r[order])
        if ce is not None:
            return ce, float(m.min())
    return None, float(m.min())
