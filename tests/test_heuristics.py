"""Branching heuristics are scoring functions: check what they prefer on hand-made inputs."""
from __future__ import annotations

import torch

from heuristics import candidate_dims, input_scores, lookahead_choice, relu_scores, splittable


def test_input_rules():
    lo = torch.tensor([[0.0, 0.0, 0.0]])
    hi = torch.tensor([[1.0, 3.0, 2.0]])
    A = torch.tensor([[10.0, 0.1, 1.0]])
    assert input_scores("widest", lo, hi, A).argmax().item() == 1
    assert input_scores("smart", lo, hi, A).argmax().item() == 0       # 10 * 1 beats 0.1 * 3 and 1 * 2
    assert candidate_dims("smart", lo, hi, A, 2).tolist() == [[0, 2]]
    assert candidate_dims("mixed", lo, hi, A, 2).tolist() == [[0, 1]]  # smart's best, then the widest
    assert candidate_dims("mixed", lo, hi, torch.tensor([[0.0, 5.0, 0.0]]), 2).tolist() == [[1, 2]]


def test_lookahead_keeps_the_split_that_leaves_least_unverified_margin():
    # (2 children, 3 candidates, 2 domains)
    child = torch.tensor([[[0.5, -1.0], [0.1, 0.2], [-0.3, 0.0]],
                          [[-0.2, 0.3], [0.05, -0.5], [0.9, 0.1]]])
    assert lookahead_choice(child).tolist() == [1, 2]
    # verifying one half beats changing neither half, though its other half is a little worse
    # (the numbers of a stuck ACAS Xu 4_2/prop_2 domain)
    child = torch.tensor([[[-0.0137], [-0.0156]], [[-0.0137], [0.0030]]])
    assert lookahead_choice(child).tolist() == [1]


def test_relu_scores_skip_stable_and_split_neurons():
    l = torch.tensor([[-1.0, 0.5, -2.0, -1.0]])
    u = torch.tensor([[1.0, 2.0, -0.1, 3.0]])
    coef = torch.tensor([[-1.0, -5.0, -5.0, -1.0]])
    splits = [torch.tensor([[0, 0, 0, 1]], dtype=torch.int8)]
    for name in ("babsr", "width"):
        s = relu_scores(name, [(l, u)], [coef], splits)[0]
        assert torch.isfinite(s[0, 0]) and not torch.isfinite(s[0, 1:]).any()  # stable, stable, split


def test_babsr_prefers_the_costly_intercept():
    l = torch.tensor([[-1.0, -1.0, -1.0]])
    u = torch.tensor([[1.0, 1.0, 4.0]])
    coef = torch.tensor([[-1.0, 2.0, -1.0]])  # a positive coefficient pays no upper intercept
    s = relu_scores("babsr", [(l, u)], [coef], None)[0]
    assert s.argmax().item() == 2 and s[0, 1] < s[0, 0]


def test_dimensions_below_resolution_are_never_offered():
    lo = torch.tensor([[0.0, 1.0, 0.0]])
    hi = torch.tensor([[1.0, 1.0 + 1e-7, 1e-9]])  # dim 1: the midpoint rounds to an end in float32
    ok = splittable(lo, hi, torch.tensor([0.0, 0.0, 1e-6]))
    assert ok.tolist() == [[True, False, False]]
    A = torch.tensor([[1.0, 1e9, 1e9]])  # the tiny dimensions score highest by |A| * width
    assert candidate_dims("smart", lo, hi, A, 1).tolist() == [[1]]
    assert candidate_dims("smart", lo, hi, A, 1, ok).tolist() == [[0]]
    assert candidate_dims("mixed", lo, hi, A, 2, ok).tolist() == [[0, 0]]
