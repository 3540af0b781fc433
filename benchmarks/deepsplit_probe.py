"""Does a rule's choice pay in bnb's children? A ReLU heuristic plug-in that, at the first branching, takes the ten
best neurons of the root domain by ``babsr`` and by ``deepsplit``, bounds both children of each with the parent's
parameters (the engine's look-ahead callback: no optimisation, intermediate bounds inherited) and prints their
layers and ``sum over the two children of min(score, 0)`` (twice the root's score: the split gained nothing);
then it branches as ``babsr``. Use::

    bnb verify NET.onnx PROP.vnnlib --config configs/mnist_fc.yaml \\
        --set bab.relu_heuristic=benchmarks/deepsplit_probe.py:probe -v
"""
from __future__ import annotations

import torch

from heuristics.relu_split import babsr_scores, deepsplit_scores

_done: list = []


def _top(batch, scores, k=10):
    flat = torch.cat([torch.where(f, s, torch.full_like(s, -float("inf"))) for f, s in zip(batch.free(), scores)],
                     dim=1)
    return torch.topk(flat[:1], min(k, flat.shape[1]), dim=1).indices


def probe(batch):
    if not _done and batch.evaluate is not None:
        _done.append(True)
        ends = torch.tensor([l.shape[1] for l, _ in batch.pre_bounds]).cumsum(0)
        for name, rule in (("babsr", babsr_scores), ("deepsplit", deepsplit_scores)):
            top = _top(batch, rule(batch))
            kids = batch.evaluate(top.expand(batch.n, -1))[:, :, 0]  # (2, k): the first domain's children
            layers = [int((p >= ends).sum()) for p in top[0].tolist()]
            gains = [round(float(x), 4) for x in kids.clamp(max=0).sum(dim=0)]
            print(f"probe {name}: layers {layers}; children's sum of min(score, 0) {gains}", flush=True)
    return babsr_scores(batch)
