"""The open domains of one search, kept as batched tensors by the fields of their typed batch
(:mod:`bnb.engine.domains`).

Storage grows by doubling; ``pop`` takes the ``k`` best by ``score`` (lowest first: best-first search) or by
``depth`` (deepest first) and fills the holes with the tail, so both operations cost O(k) moves plus one O(n)
selection. The first batch pushed fixes the kind of domain and which fields (and per-layer entries) are set.
"""
from __future__ import annotations

from dataclasses import fields

import torch

from bnb.engine.domains import DomainBatch


class DomainStore:
    def __init__(self):
        self.buf: dict = {}        # (field, layer or None) -> storage tensor (capacity, ...)
        self.kind = None           # the DomainBatch subclass stored
        self.layout: dict = {}     # field -> None (unset), "tensor", or the per-layer list's length
        self.n = 0

    def __len__(self):
        return self.n

    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in self.buf.values())

    def _flat(self, batch: DomainBatch) -> dict:
        out = {}
        for f in fields(batch):
            v = getattr(batch, f.name)
            if isinstance(v, list):
                out.update({(f.name, i): t for i, t in enumerate(v) if t is not None})
            elif v is not None:
                out[(f.name, None)] = v
        return out

    def _learn(self, batch: DomainBatch) -> None:
        self.kind = type(batch)
        for f in fields(batch):
            v = getattr(batch, f.name)
            self.layout[f.name] = len(v) if isinstance(v, list) else (None if v is None else "tensor")

    def push(self, batch: DomainBatch | None) -> None:
        if batch is None or len(batch) == 0:
            return
        if self.kind is None:
            self._learn(batch)
        elif type(batch) is not self.kind:
            raise TypeError(f"a store of {self.kind.__name__} cannot take {type(batch).__name__}")
        flat = self._flat(batch)
        k = len(batch)
        if not self.buf:
            self.buf = {key: t.new_empty((max(2 * k, 1024), *t.shape[1:])) for key, t in flat.items()}
        if set(flat) != set(self.buf):
            raise ValueError("pushed domains carry other fields than the ones stored")
        cap = next(iter(self.buf.values())).shape[0]
        if self.n + k > cap:
            new_cap = max(2 * cap, self.n + k)
            for key, t in self.buf.items():
                grown = t.new_empty((new_cap, *t.shape[1:]))
                grown[:self.n] = t[:self.n]
                self.buf[key] = grown
        for key, t in flat.items():
            self.buf[key][self.n:self.n + k] = t
        self.n += k

    def _batch(self, taken: dict) -> DomainBatch:
        values = {}
        for name, shape in self.layout.items():
            if shape is None:
                values[name] = None
            elif shape == "tensor":
                values[name] = taken[(name, None)]
            else:
                values[name] = [taken.get((name, i)) for i in range(shape)]
        return self.kind(**values)

    def pop(self, k: int, by: str = "score") -> DomainBatch:
        """Remove and return up to ``k`` domains: lowest ``score`` (``by='score'``) or highest ``depth``."""
        k = min(k, self.n)
        key = self.buf[(by, None)][:self.n]
        if by == "score":
            idx = torch.topk(key, k, largest=False).indices
        else:
            idx = torch.topk(key.to(torch.float64) + 1e-9 * torch.arange(self.n, device=key.device), k).indices
        taken = {name: t[idx].clone() for name, t in self.buf.items()}
        # fill the holes with tail entries that were not selected
        keep = torch.ones(self.n, dtype=torch.bool, device=key.device)
        keep[idx] = False
        tail_start = self.n - k
        holes = idx[idx < tail_start]
        movers = torch.nonzero(keep[tail_start:]).flatten() + tail_start
        for t in self.buf.values():
            t[holes] = t[movers]
        self.n -= k
        return self._batch(taken)

    def scores(self) -> torch.Tensor:
        """``(n,)`` the scores of the stored domains."""
        return self.buf[("score", None)][:self.n] if self.n else torch.empty(0)

    def depths(self) -> torch.Tensor:
        """``(n,)`` the depths of the stored domains."""
        return self.buf[("depth", None)][:self.n] if self.n else torch.empty(0)

    def min_score(self) -> float:
        return float(self.scores().min()) if self.n else float("inf")
