"""Everything that turns a batch of subdomains into bounds.

Layers (one module per operator family in :mod:`relaxations.layers`) expose the same small set of
methods: ``forward``, ``interval`` (interval propagation) and ``backward`` (linear back-substitution).
Activations (``relaxations.layers.activation``) provide their own linear relaxation and its optimisable
parameters. Bounding methods (IBP, CROWN, alpha/beta-CROWN, LP, MILP) are built on top of them; what is fixed for
a run reaches them as one :class:`relaxations.options.BoundOptions` (this package never reads a configuration).
"""
