"""Input splitting: which input dimension of each box to split (into ``batch.parts`` equal parts).

Scoring rules (``(N, n_in)``, the best dimension wins; with ``lookahead = k > 1`` the engine's callback
bounds the children of the ``k`` best and :func:`lookahead_choice` keeps the best split):

- ``widest``: the width of the dimension.
- ``smart``: the looseness a dimension contributes to the current linear lower bound,
  ``|A[d]| * width_d`` for the worst polytope's bound (gradient-based choice of input-splitting verifiers).
- ``sb`` (alpha-beta-CROWN's smart branching): per open polytope ``|A_k[d]| * width_d / 2`` (what halving
  the dimension can gain on that bound) plus ``sb_margin`` times the polytope's (negative) refutation
  value, maximised over the polytopes; with ``sb_margin = 0`` and one polytope it agrees with ``smart``.
- ``smear`` (ReluVal): ``max |dy/dx_d| * width_d`` with the gradient bounded by interval arithmetic over
  the box (each unstable ReLU's derivative in ``[0, 1]``), for the rows of the worst polytope.

Choosers that always look ahead:

- ``mixed``: candidates are the best ``smart`` and the best ``widest`` dimension (then further ``smart``
  ones), so look-ahead picks per domain whichever rule splits better.
- ``brute-force``: bound the children of every splittable dimension with the cheap method, keep the best.
"""
from __future__ import annotations

import torch

from heuristics.base import InputBatch, lookahead_choice

KIND = "input"  # the strategy these heuristics serve (heuristics.registry reads KIND and HEURISTICS)


def _masked(batch: InputBatch, scores: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~batch.ok, -float("inf"))


def _fallback(batch: InputBatch, dims: torch.Tensor) -> torch.Tensor:
    """Never offer an unsplittable dimension: replace it by the widest splittable one."""
    widest = _masked(batch, batch.width).argmax(dim=1, keepdim=True).expand_as(dims)
    return torch.where(torch.gather(batch.ok, 1, dims), dims, widest)


def top_candidates(batch: InputBatch, scores: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, k)`` the ``k`` best-scored splittable dimensions, best first (repeats of the best where fewer)."""
    k = max(1, min(k, scores.shape[1]))
    dims = torch.topk(_masked(batch, scores), k, dim=1).indices
    bad = ~torch.gather(batch.ok, 1, dims)
    return _fallback(batch, torch.where(bad, dims[:, :1], dims))


def pick(batch: InputBatch, cands: torch.Tensor) -> torch.Tensor:
    """``(N,)``: of the candidates ``(N, k)``, the one whose children the callback scores best."""
    if cands.shape[1] == 1 or batch.evaluate is None:
        return cands[:, 0]
    choice = lookahead_choice(batch.evaluate(cands))
    return cands[torch.arange(batch.n, device=cands.device), choice]


def choose_by_scores(batch: InputBatch, scores: torch.Tensor) -> torch.Tensor:
    """A scoring rule as a chooser: the best dimension, or look-ahead among the ``batch.lookahead`` best."""
    return pick(batch, top_candidates(batch, scores, batch.lookahead))


# ----------------------------------------------------------------------------- scoring rules
def widest_scores(batch: InputBatch) -> torch.Tensor:
    return batch.width


def smart_scores(batch: InputBatch) -> torch.Tensor:
    A = batch.A_row
    if A is None:
        return batch.width
    return A.abs() * batch.width + 1e-9 * batch.width  # ties (e.g. zero coefficients) go to the widest


def sb_scores(batch: InputBatch) -> torch.Tensor:
    if batch.A is None:
        return batch.width
    gain = batch.A.abs() * batch.width[:, None] / 2                   # (N, K, n_in)
    margin = batch.values.clamp(max=0)[..., None] * batch.sb_margin   # (N, K, 1): <= 0
    s = gain + margin
    s = s.masked_fill((batch.values > 0)[..., None], -float("inf"))  # refuted polytopes need nothing
    s = s.amax(dim=1)
    return torch.where(torch.isfinite(s), s, torch.zeros_like(s)) + 1e-9 * batch.width


def gradient_interval(net, C: torch.Tensor, pre_bounds: list):
    """Bounds ``(g_lo, g_hi)`` ``(N, R, n_in)`` of the gradient of ``C y`` with respect to the input over
    every point whose pre-activations lie in ``pre_bounds``: backwards through the network, each ReLU's
    derivative is 1 (active), 0 (inactive) or anywhere in ``[0, 1]`` (unstable). A heuristic, not a bound
    anything is proven with (plain float arithmetic)."""
    relus = net.activation_indices() if hasattr(net, "activation_indices") else net.relu_indices()
    lo = hi = C
    j = len(relus) - 1
    for idx in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[idx]
        if not layer.affine:  # a ReLU: scale by its derivative's range
            l, u = pre_bounds[j]
            j -= 1
            shape = lo.shape
            lo, hi = lo.reshape(shape[0], shape[1], -1), hi.reshape(shape[0], shape[1], -1)
            act, unst = (l >= 0)[:, None], ((l < 0) & (u > 0))[:, None]
            lo = torch.where(act, lo, torch.where(unst, lo.clamp(max=0), torch.zeros_like(lo))).reshape(shape)
            hi = torch.where(act, hi, torch.where(unst, hi.clamp(min=0), torch.zeros_like(hi))).reshape(shape)
            continue
        N, R = lo.shape[:2]
        c, r = (lo + hi) / 2, (hi - lo) / 2
        c_in = layer.backward(c.reshape(N, R, *layer.out_shape))[0]
        r_in = _abs_backward(layer, r.reshape(N * R, *layer.out_shape)).reshape(c_in.shape)
        lo, hi = c_in - r_in, c_in + r_in
    return lo.reshape(lo.shape[0], lo.shape[1], -1), hi.reshape(hi.shape[0], hi.shape[1], -1)


def _abs_backward(layer, r):
    """``|W|^T r`` for an affine layer, as the gradient of ``<r, |W| x>`` (any affine layer offers ``|W| x``)."""
    with torch.enable_grad():
        x = torch.zeros((r.shape[0], *layer.in_shape), dtype=r.dtype, device=r.device, requires_grad=True)
        (layer.abs_linear(x) * r).sum().backward()
    return x.grad


def smear_scores(batch: InputBatch) -> torch.Tensor:
    if batch.net is None or batch.C is None or batch.pre_bounds is None:
        return smart_scores(batch)
    try:
        g_lo, g_hi = gradient_interval(batch.net, batch.C, batch.pre_bounds)
    except Exception:  # a network this backward pass does not know (e.g. graph stages): the smart rule
        return smart_scores(batch)
    g = torch.maximum(g_lo.abs(), g_hi.abs()).amax(dim=1)  # (N, n_in), the worst row
    return g * batch.width + 1e-9 * batch.width


SCORES = {"widest": widest_scores, "smart": smart_scores, "sb": sb_scores, "smear": smear_scores}


def _by_scores(scores):
    """The chooser ``fn(batch) -> (N,)`` of the scoring rule ``scores`` (:func:`choose_by_scores`)."""
    def chooser(batch: InputBatch) -> torch.Tensor:
        return choose_by_scores(batch, scores(batch))
    chooser.__name__ = chooser.__qualname__ = scores.__name__.removesuffix("_scores")
    return chooser


def mixed(batch: InputBatch) -> torch.Tensor:
    k = max(2, batch.lookahead)
    cands = top_candidates(batch, smart_scores(batch), k)
    if cands.shape[1] < 2:  # one input dimension
        return cands[:, 0]
    widest = _masked(batch, batch.width).argmax(dim=1)
    cands[:, 1] = torch.where(widest == cands[:, 0], cands[:, 1], widest)
    return pick(batch, cands)


def brute_force(batch: InputBatch) -> torch.Tensor:
    n_in = batch.lower.shape[1]
    cands = torch.arange(n_in, device=batch.lower.device).expand(batch.n, n_in)
    return pick(batch, _fallback(batch, cands.clone()))


# the built-in input heuristics by name: fn(batch) -> (N,) the input dimension to split per box
HEURISTICS = {**{name: _by_scores(fn) for name, fn in SCORES.items()}, "mixed": mixed, "brute-force": brute_force}
