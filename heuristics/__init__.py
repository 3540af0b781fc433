"""Branching heuristics: scoring functions over explicitly passed bounds and coefficients.

Each heuristic only scores candidates; the engine takes the argmax. Input heuristics score input
dimensions ``(N, n_in)``; ReLU heuristics score neurons, one ``(N, n_i)`` tensor per ReLU layer, with
``-inf`` for neurons that cannot be split (stable or already split).
"""
from heuristics.input_split import INPUT_HEURISTICS, candidate_dims, input_scores, lookahead_choice, splittable
from heuristics.relu_split import RELU_HEURISTICS, relu_scores

__all__ = ["INPUT_HEURISTICS", "RELU_HEURISTICS", "candidate_dims", "input_scores", "lookahead_choice", "relu_scores",
           "splittable"]
