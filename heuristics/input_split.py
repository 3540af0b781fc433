"""Scores for input-dimension branching (bisection of the input box).

- ``widest``: the width of the dimension.
- look-ahead (``bab.input_lookahead = k > 1``): the engine bounds both halves for the ``k`` best-scored
  dimensions and :func:`lookahead_choice` keeps the split whose children are left with the least
  unverified margin.
- ``mixed``: candidates for look-ahead are the best ``smart`` and the best ``widest`` dimension (then
  further ``smart`` ones), so look-ahead picks per domain whichever rule splits better.
- ``smart``: the looseness a dimension contributes to the current linear lower bound,
  ``|A_input[:, row, d]| * width_d`` for the row that decides the domain (the gradient-based choice of
  input-splitting verifiers).
"""
from __future__ import annotations

import torch

INPUT_HEURISTICS = ("widest", "smart", "mixed")


def input_scores(name: str, lower: torch.Tensor, upper: torch.Tensor, A_row: torch.Tensor | None) -> torch.Tensor:
    """``lower``/``upper``: ``(N, n_in)``; ``A_row``: ``(N, n_in)`` coefficients of the deciding row."""
    width = upper - lower
    if name == "mixed":
        name = "smart"
    if name == "widest" or A_row is None:
        return width
    if name == "smart":
        # ties (e.g. zero coefficients everywhere) fall back to the widest dimension
        return A_row.abs() * width + 1e-9 * width
    raise ValueError(f"unknown input heuristic {name!r}; choose from {', '.join(INPUT_HEURISTICS)}")


def lookahead_choice(child_scores: torch.Tensor) -> torch.Tensor:
    """``child_scores``: ``(2, k, N)`` domain scores (> 0: verified) of the left/right child of each of ``k``
    candidate splits; returns ``(N,)`` the candidate that leaves the least unverified margin in its two
    children, ``max sum_children min(score, 0)`` (ties: the first).

    Summing rather than taking the worse child matters: a split that verifies one half outright but leaves
    the other half as bad as the parent beats one that changes neither half, which the worse-child rule
    cannot tell apart (and then keeps bisecting dimensions that are already tiny; ACAS Xu 4_2/prop_2).
    """
    return child_scores.clamp(max=0).sum(dim=0).argmax(dim=0)


def splittable(lower: torch.Tensor, upper: torch.Tensor, min_width: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``(N, n_in)``: dimensions whose bisection makes two proper, smaller boxes in the tensors' precision
    and that are wider than ``min_width`` (e.g. a millionth of the root box). Bisecting below float
    resolution returns the parent itself, which look-ahead can then prefer forever (ACAS Xu 3_3/prop_2)."""
    mid = (lower + upper) / 2
    return (mid > lower) & (mid < upper) & (upper - lower > min_width)


def candidate_dims(name: str, lower, upper, A_row, k: int, ok: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, k)`` candidate dimensions to bisect, best first (``k`` > 1 only matters with look-ahead).

    ``ok`` ``(N, n_in)``: the dimensions that may be split (:func:`splittable`); a domain with fewer than
    ``k`` gets repeats of its best one."""
    k = max(1, min(k, lower.shape[1]))
    scores = input_scores(name, lower, upper, A_row)
    width = upper - lower
    if ok is not None:
        scores = scores.masked_fill(~ok, -float("inf"))
        width = width.masked_fill(~ok, -float("inf"))
    dims = torch.topk(scores, k, dim=1).indices
    if name == "mixed" and k > 1:
        widest = width.argmax(dim=1)
        dims[:, 1] = torch.where(widest == dims[:, 0], dims[:, 1], widest)
    if ok is not None:  # never offer an unsplittable dimension: fall back to the best one
        bad = ~torch.gather(ok, 1, dims)
        dims = torch.where(bad, dims[:, :1], dims)
    return dims
