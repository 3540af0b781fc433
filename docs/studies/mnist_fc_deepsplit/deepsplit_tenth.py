"""``deepsplit`` with its indirect term at a tenth of its weight (``bab.deepsplit_weight: 0.1``), as a plug-in so
that one ``bnb study`` compares both weights under the same load."""
from heuristics.relu_split import deepsplit_scores


def deepsplit_tenth(batch):
    batch.indirect_weight = 0.1
    return deepsplit_scores(batch)
