"""One input box decided: the output rows, the domain store, the search context, the branch-and-bound loop, the root
bound, the attack and the branching strategies (:mod:`bnb.engine.strategies`)."""
