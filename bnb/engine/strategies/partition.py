"""Partitioning (strategy (ii) of Mao et al., :mod:`bnb.theory.partition`): ReLU splitting restricted so that
every domain stays a convex polytope of the input: a domain splits the most balanced unstable neuron of the
first layer that still has one (heuristic ``phase``, :mod:`heuristics.relu_split`), so the domain's input
region is the box cut by the activation hyperplanes of its fixed phases, each an affine function of the input
once the layers before it are fixed.

Bounding, falsification and the verdict are those of ReLU splitting (beta-CROWN with the split constraints,
``bab.relu_method`` tightening): the engine's usual "proven or counterexample" test. ``bab.relu_heuristic``
and ``bab.relu_lookahead`` do not apply; the split order defines the strategy.
"""
from __future__ import annotations

from bnb.engine.context import heuristic
from bnb.engine.strategies.relu_split import ReluSplitting


class PhasePartitioning(ReluSplitting):
    """ReLU splitting in the ``phase`` heuristic's order (see the module docstring)."""

    def __init__(self, ctx, root, refutation, coef):
        super().__init__(ctx, root, refutation, coef)
        self.chooser = heuristic("relu", "phase")
