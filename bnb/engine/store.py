"""Open subdomains stored as batched tensors (no Python list of domain objects).

Every field is a tensor whose first dimension indexes domains, or a list of such tensors (one per ReLU layer;
``None`` where a layer has none); fields are named by the branching strategy (``lower``, ``upper``, ``score``,
``depth``, ``split`` ...); ``score`` and ``depth`` are required. Storage grows by doubling; ``pop`` takes the
``k`` best by ``score`` (lowest first: best-first search) or by ``depth`` (deepest first) and fills the
holes with the tail, so both operations cost O(k) moves plus one O(n) selection.
"""
from __future__ import annotations

import torch


class DomainStore:
    def __init__(self):
        self.buf: dict[str, torch.Tensor] = {}
        self.n = 0

    def __len__(self):
        return self.n

    def nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in self.buf.values())

    @staticmethod
    def _flat(fields: dict) -> dict:
        out = {}
        for name, v in fields.items():
            if isinstance(v, (list, tuple)):
                for i, t in enumerate(v):
                    if t is not None:
                        out[(name, i, len(v))] = t
            else:
                out[name] = v
        return out

    @staticmethod
    def _nest(flat: dict) -> dict:
        out = {}
        for key, t in flat.items():
            if isinstance(key, tuple):
                name, i, n = key
                out.setdefault(name, [None] * n)[i] = t
            else:
                out[key] = t
        return out

    def push(self, fields: dict) -> None:
        fields = self._flat(fields)
        k = next(iter(fields.values())).shape[0]
        if k == 0:
            return
        if not self.buf:
            self.buf = {name: t.new_empty((max(2 * k, 1024), *t.shape[1:])) for name, t in fields.items()}
        cap = next(iter(self.buf.values())).shape[0]
        if self.n + k > cap:
            new_cap = max(2 * cap, self.n + k)
            for name, t in self.buf.items():
                grown = t.new_empty((new_cap, *t.shape[1:]))
                grown[:self.n] = t[:self.n]
                self.buf[name] = grown
        for name, t in fields.items():
            self.buf[name][self.n:self.n + k] = t
        self.n += k

    def pop(self, k: int, by: str = "score") -> dict:
        """Remove and return up to ``k`` domains: lowest ``score`` (``by='score'``) or highest ``depth``."""
        k = min(k, self.n)
        key = self.buf[by][:self.n]
        if by == "score":
            idx = torch.topk(key, k, largest=False).indices
        else:
            idx = torch.topk(key.to(torch.float64) + 1e-9 * torch.arange(self.n, device=key.device), k).indices
        out = {name: t[idx].clone() for name, t in self.buf.items()}
        # fill the holes with tail entries that were not selected
        keep = torch.ones(self.n, dtype=torch.bool, device=key.device)
        keep[idx] = False
        tail_start = self.n - k
        holes = idx[idx < tail_start]
        movers = torch.nonzero(keep[tail_start:]).flatten() + tail_start
        for name, t in self.buf.items():
            t[holes] = t[movers]
        self.n -= k
        return self._nest(out)

    def min_score(self) -> float:
        return float(self.buf["score"][:self.n].min()) if self.n else float("inf")
