"""Interval bound propagation (IBP): boxes pushed layer by layer through ``Layer.interval``."""
from __future__ import annotations

import torch


def ibp(net, lower: torch.Tensor, upper: torch.Tensor):
    """Bounds of every layer output over the boxes ``[lower, upper]`` (``(N, in_size)`` each).

    Returns ``(lb, ub, pre_relu)``: output bounds ``(N, out_size)`` and, for every ReLU layer, the
    bounds of its input ``[(l, u)]`` with shapes ``(N, *relu_shape)``.
    """
    l = lower.reshape(lower.shape[0], *net.in_shape)
    u = upper.reshape(upper.shape[0], *net.in_shape)
    pre_relu = []
    for layer in net.layers:
        if not layer.affine:
            pre_relu.append((l, u))
        l, u = layer.interval(l, u)
    return l.reshape(l.shape[0], -1), u.reshape(u.shape[0], -1), pre_relu
