"""Branching heuristics as a library: each one maps a batch of open domains (:mod:`heuristics.base`) to what
to split in each, and is found by name in :mod:`heuristics.registry` (built-in or a user's plug-in).

Input splitting: :mod:`heuristics.input_split`; ReLU splitting: :mod:`heuristics.relu_split`; activation splitting:
:mod:`heuristics.activation_split`.
"""
from heuristics.base import ActivationBatch, InputBatch, ReluBatch, lookahead_choice, splittable
from heuristics.registry import UnknownHeuristic, names, register, resolve

__all__ = ["ActivationBatch", "InputBatch", "ReluBatch", "UnknownHeuristic", "lookahead_choice", "names", "register",
           "resolve", "splittable"]
