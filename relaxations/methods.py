"""The registry of bounding methods, by the names used in configs and on the command line."""
from __future__ import annotations

import torch

from relaxations.ibp import ibp

METHODS = ("ibp",)


def output_bounds(net, lower: torch.Tensor, upper: torch.Tensor, method: str, cfg=None):
    """Elementwise bounds ``(N, out_size)`` of the outputs over boxes ``(N, in_size)``."""
    if method == "ibp":
        lb, ub, _ = ibp(net, lower, upper)
        return lb, ub
    raise ValueError(f"unknown bounding method {method!r}; choose from {', '.join(METHODS)}")
