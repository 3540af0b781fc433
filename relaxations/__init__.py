"""Everything that turns a batch of subdomains into bounds.

Layers (one module per operator family in :mod:`relaxations.layers`) expose the same small set of
methods: ``forward``, ``interval`` (interval propagation) and ``backward`` (linear back-substitution).
Bounding methods (IBP, CROWN, alpha/beta-CROWN, LP, MILP) are built on top of them.
"""
