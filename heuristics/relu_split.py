"""ReLU splitting: which unstable neuron of each domain to fix active / inactive.

Notation: an unstable neuron has pre-activation bounds ``l < 0 < u``, upper-relaxation slope
``s = u / (u - l)`` and intercept ``-l u / (u - l)``; ``lam`` is the deciding row's coefficient on the
neuron's output in the last bound (with multi-neuron constraints, before their terms: see ``babsr``); ``b`` the
bias of the affine layer that feeds it.

Scoring rules (per layer ``(N, n_i)``, ``-inf`` for neurons that cannot be split; the best wins, or, with
``lookahead = k > 1``, the engine's callback bounds both children of the ``k`` best and the split that
leaves the least unverified margin is kept):

- ``babsr`` (Bunel et al. 2020, without its bias term): splitting removes the upper-relaxation intercept
  that the bound pays with weight ``min(lam, 0)``: ``|min(lam, 0)| * (-l u / (u - l)) + 1e-4 |lam|`` (the
  second term breaks ties).
  With multi-neuron constraints taken with multipliers ``gamma``, the bound's own weight on the neuron's
  triangle is ``lam + gamma Pz`` (``lam``: the coefficient before the constraints' terms); a constraint can
  relieve the triangle of a neuron that still matters, as splitting it also frees the constraints it is in. The
  intercept gain is then counted at both weights, ``lam`` and ``lam + gamma Pz`` (summed; without constraints
  the two are one and the ranking is the plain rule's). Measured on mnist_fc (docs/performance.md, "Branching
  with the constraints"): either weight alone loses instances the sum proves.
- ``babsr-gamma``: ``babsr`` on ``lam + gamma Pz`` alone (the rule before the sum; ``babsr`` without
  constraints).
- ``babsr-bias``: BaBSR with its bias term: the intercept gain plus the smaller change of the bias's
  contribution ``lam s b`` over the two children (``lam b (1 - s)`` active, ``-lam s b`` inactive), in
  absolute value.
- ``intercept``: the intercept gain alone, ``|min(lam, 0)| * (-l u / (u - l))``.
- ``width``: the interval width ``u - l`` (the classic "largest interval" rule).
- ``random``: uniform random scores from the run's seeded generator (a baseline).
- ``acs`` (active constraint score, MN-BaB): with multi-neuron constraints ``Pz y + Px z + p <= 0`` taken
  with multipliers ``gamma``, ``sum_c gamma_c (|Pz_cj| + |Px_cj|)``; ``babsr`` breaks ties (and decides
  alone where no constraint is active).
- ``deepsplit`` (after DeepSplit, Henriksen & Lomuscio 2021: a split also tightens the relaxations of the
  neurons after it): ``babsr``'s direct term plus an indirect one, ``e_j h_j`` with ``e_j`` the neuron's
  relaxation error (its upper intercept) and ``h_j`` what a unit of error at its output costs the bound through
  the later layers' free unstable neurons: error at ``a_j`` widens each later pre-activation ``z_m`` by
  ``|C_mj| e_j`` (``C``: the linear map through the layers between, bounded entrywise by the product of the
  links' absolute values and the layers' relaxation slopes), which grows ``m``'s intercept by
  ``rho_m = (l_m^2 + u_m^2) / (2 (u_m - l_m)^2)`` per unit of width (the mean of its two partial derivatives),
  and each unit of ``m``'s intercept costs ``|min(lam_m, 0)| + h_m`` in turn. One backward sweep over the
  dense links (``batch.links``); a link the engine could not give counts nothing (then it is ``babsr``). The
  indirect term is scaled by ``batch.indirect_weight`` (``bab.deepsplit_weight``).
- ``phase``: partitioning along activation hyperplanes: the most balanced (``min(-l, u)``) free neuron of the
  first layer that still has one; later layers ``-inf`` (the heuristic of ``bab.branching: partition``).

Choosers that always look ahead (``topk`` candidates per score):

- ``fsb`` (filtered smart branching): the ``topk`` best neurons of every layer by ``babsr-bias`` and by
  ``intercept``, all children bounded in one batched pass with the parent's parameters; the best is split.
- ``kfsb``: the same with the ``topk`` best of the whole network per score (alpha-beta-CROWN's default).
"""
from __future__ import annotations

import torch

from heuristics.base import ReluBatch, lookahead_choice

KIND = "relu"  # the strategy these heuristics serve (heuristics.registry reads KIND and HEURISTICS)
NEG = -float("inf")


def _intercept(l, u):
    return -l * u / (u - l).clamp(min=1e-12)


def _masked(batch: ReluBatch, scores: list) -> list:
    return [torch.where(f, s, torch.full_like(s, NEG)) for f, s in zip(batch.free(), scores)]


def flat_choice(flat: torch.Tensor) -> torch.Tensor:
    """``(N,)`` the best flat position, ``-1`` where no neuron may be split."""
    best, pos = flat.max(dim=1)
    return torch.where(torch.isfinite(best), pos, torch.full_like(pos, -1))


def pick(batch: ReluBatch, cands: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """``(N,)``: of the candidates ``(N, k)`` (``-1``: none, replaced by ``fallback``), the one whose two
    children the callback scores best."""
    cands = torch.where(cands >= 0, cands, fallback[:, None])
    if cands.shape[1] == 1 or batch.evaluate is None:
        return cands[:, 0]
    choice = lookahead_choice(batch.evaluate(cands))
    return cands[torch.arange(batch.n, device=cands.device), choice]


def _top(flat: torch.Tensor, k: int) -> torch.Tensor:
    k = max(1, min(k, flat.shape[1]))
    top = torch.topk(flat, k, dim=1)
    return torch.where(torch.isfinite(top.values), top.indices, torch.full_like(top.indices, -1))


def choose_by_scores(batch: ReluBatch, scores: list) -> torch.Tensor:
    """A scoring rule as a chooser: the best neuron, or look-ahead among the ``batch.lookahead`` best."""
    flat = torch.cat(_masked(batch, scores), dim=1)
    pos = flat_choice(flat)
    if batch.lookahead <= 1:
        return pos
    return pick(batch, _top(flat, batch.lookahead), pos)


# ----------------------------------------------------------------------------- scoring rules
def _babsr(batch: ReluBatch, coeffs: list) -> list:
    return [lam.clamp(max=0).abs() * _intercept(l, u) + 1e-4 * lam.abs()
            for (l, u), lam in zip(batch.pre_bounds, coeffs)]


def babsr_scores(batch: ReluBatch) -> list:
    out = _babsr(batch, batch.coeffs)
    if batch.gammas is None or batch.constraints is None:
        return out
    return [a + b for a, b in zip(out, _babsr(batch, bound_coeffs(batch)))]


def bound_coeffs(batch: ReluBatch) -> list:
    """Per layer ``(N, n_i)`` the deciding row's coefficient on the ReLU's output after the terms of the layer's
    multi-neuron constraints, ``lam + gamma Pz`` (``batch.coeffs`` is ``lam``, before them)."""
    if batch.gammas is None or batch.constraints is None:
        return batch.coeffs
    return [lam if g is None or c is None else lam + g @ c.Pz.to(lam)
            for lam, g, c in zip(batch.coeffs, batch.gammas, batch.constraints)]


def babsr_gamma_scores(batch: ReluBatch) -> list:
    return _babsr(batch, bound_coeffs(batch))


def intercept_scores(batch: ReluBatch) -> list:
    return [lam.clamp(max=0).abs() * _intercept(l, u) for (l, u), lam in zip(batch.pre_bounds, batch.coeffs)]


def babsr_bias_scores(batch: ReluBatch) -> list:
    out = []
    for i, ((l, u), lam) in enumerate(zip(batch.pre_bounds, batch.coeffs)):
        gain = lam.clamp(max=0).abs() * _intercept(l, u)
        b = None if batch.biases is None else batch.biases[i]
        if b is not None:
            s = u / (u - l).clamp(min=1e-12)
            lb = lam * b
            gain = gain + torch.minimum(lb * (1 - s), -lb * s)
        out.append(gain.abs() + 1e-4 * lam.abs())
    return out


def width_scores(batch: ReluBatch) -> list:
    return [u - l for l, u in batch.pre_bounds]


def random_scores(batch: ReluBatch) -> list:
    gen = batch.generator
    return [torch.rand(l.shape, generator=gen, dtype=torch.float64).to(l) for l, _ in batch.pre_bounds]


def acs_scores(batch: ReluBatch) -> list:
    out = babsr_scores(batch)
    if batch.gammas is None or batch.constraints is None:
        return out
    for i, s in enumerate(out):
        g, c = batch.gammas[i], batch.constraints[i]
        if g is not None and c is not None:
            out[i] = g @ (c.Pz.abs() + c.Px.abs()) + 1e-3 * s
    return out


def phase_scores(batch: ReluBatch) -> list:
    """Partitioning by activation hyperplanes (:mod:`bnb.engine.strategies.partition`): only the first layer that still
    has free unstable neurons, most balanced first (``min(-l, u)``); every other layer ``-inf``. Splitting
    layers in order keeps a domain a convex polytope of the input (the box and the hyperplanes of its fixed
    phases)."""
    free = batch.free()
    has = torch.stack([f.any(dim=1) for f in free], dim=1)  # (N, L)
    first = torch.where(has.any(dim=1), has.int().argmax(dim=1), torch.full_like(has[:, 0], -1, dtype=torch.long))
    return [torch.where((first == i)[:, None], torch.minimum(-l, u), torch.full_like(l, NEG))
            for i, (l, u) in enumerate(batch.pre_bounds)]


def deepsplit_scores(batch: ReluBatch) -> list:
    direct = babsr_scores(batch)
    links = batch.links
    if links is None:
        return direct
    free = batch.free()
    n_layers = len(batch.pre_bounds)
    errors, gains, slopes = [], [], []
    for i, ((l, u), f) in enumerate(zip(batch.pre_bounds, free)):
        width = (u - l).clamp(min=1e-12)
        errors.append(torch.where(f, _intercept(l, u), torch.zeros_like(l)))
        gains.append(torch.where(f, (l * l + u * u) / (2 * width * width), torch.zeros_like(l)))
        s = batch.splits[i]
        active = (l >= 0) if s is None else (l >= 0) | (s > 0)
        inactive = (u <= 0) if s is None else (u <= 0) | (s < 0)
        slopes.append(torch.where(active, torch.ones_like(l), torch.where(
            inactive, torch.zeros_like(l), (u / width).clamp(0, 1))))
    out = [None] * n_layers
    later = None  # (N, n_{i+1}): cost of a unit of width of layer i+1's pre-activations, the layers after it included
    for i in reversed(range(n_layers)):
        h = torch.zeros_like(errors[i])
        if later is not None and i + 1 < len(links) and links[i + 1] is not None:
            h = later @ links[i + 1].abs().to(later)
        cost = batch.coeffs[i].clamp(max=0).abs() + h  # of a unit of error at layer i's outputs
        out[i] = direct[i] + batch.indirect_weight * errors[i] * h
        later = gains[i] * cost + slopes[i] * h
    return out


SCORES = {"babsr": babsr_scores, "babsr-gamma": babsr_gamma_scores, "babsr-bias": babsr_bias_scores,
          "intercept": intercept_scores,
          "width": width_scores, "random": random_scores, "acs": acs_scores, "phase": phase_scores,
          "deepsplit": deepsplit_scores}


def _by_scores(scores):
    """The chooser ``fn(batch) -> (N,)`` of the scoring rule ``scores`` (:func:`choose_by_scores`)."""
    def chooser(batch: ReluBatch) -> torch.Tensor:
        return choose_by_scores(batch, scores(batch))
    chooser.__name__ = chooser.__qualname__ = scores.__name__.removesuffix("_scores")
    return chooser


def _filtered(batch: ReluBatch, per_layer: bool) -> torch.Tensor:
    k = max(1, batch.topk)
    cands, fallback = [], None
    for rule in (babsr_bias_scores, intercept_scores):
        layers = _masked(batch, rule(batch))
        flat = torch.cat(layers, dim=1)
        if fallback is None:
            fallback = flat_choice(flat)
        if per_layer:
            offset = 0
            for s in layers:
                top = _top(s, k)
                cands.append(torch.where(top >= 0, top + offset, top))
                offset += s.shape[1]
        else:
            cands.append(_top(flat, k))
    return pick(batch, torch.cat(cands, dim=1), fallback)


def fsb(batch: ReluBatch) -> torch.Tensor:
    return _filtered(batch, per_layer=True)


def kfsb(batch: ReluBatch) -> torch.Tensor:
    return _filtered(batch, per_layer=False)


# the built-in ReLU heuristics by name: fn(batch) -> (N,) the flat neuron position to split per domain (-1: none)
HEURISTICS = {**{name: _by_scores(fn) for name, fn in SCORES.items()}, "fsb": fsb, "kfsb": kfsb}
