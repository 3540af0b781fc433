"""Branching strategies of the one branch-and-bound loop (:func:`bnb.engine.loop.search`).

The loop is the same for every strategy: pop a batch of open domains (best bound first), drop the ones
that cannot be split any more, **branch** them (the strategy's heuristic chooses what, the strategy splits
and bounds all children in one batched call), drop the verified children, **falsify** (check the
candidate points the bounds give, periodic PGD inside the most promising children) and push the rest.
A strategy owns its kind of domain (a typed batch of :mod:`bnb.engine.domains`) and implements:

- ``root()``: the root domain as a batch of one, or None when the strategy decided the box already
  (``verdict``);
- ``prune(batch)``: the domains that can still be split (the others are counted as undecided), or None;
- ``branch(batch)``: the bounded children, a :class:`Children`;
- ``falsify(children, open_mask)``: a counterexample among the open children, or None.

Input splitting (:mod:`bnb.engine.strategies.input_split`), ReLU splitting (:mod:`bnb.engine.strategies.relu_split`)
and partitioning along activation hyperplanes (:mod:`bnb.engine.strategies.partition`, ReLU splitting layer by
layer) and activation splitting (:mod:`bnb.engine.strategies.activation_split`, a neuron of any activation split
at a point of its interval) are the strategies; another one is a class with these methods, a heuristic kind in
:mod:`heuristics.registry` and a name in :data:`STRATEGIES`.
"""
from __future__ import annotations


def strategy_class(name: str):
    if name == "input":
        from bnb.engine.strategies.input_split import InputSplitting
        return InputSplitting
    if name == "relu":
        from bnb.engine.strategies.relu_split import ReluSplitting
        return ReluSplitting
    if name == "partition":
        from bnb.engine.strategies.partition import PhasePartitioning
        return PhasePartitioning
    if name == "activation":
        from bnb.engine.strategies.activation_split import ActivationSplitting
        return ActivationSplitting
    raise ValueError(f"unknown branching strategy {name!r}")


STRATEGIES = ("input", "relu", "partition", "activation")
