"""LeakyReLU ``y = max(x, a x)`` for a slope ``a`` in ``[0, 1]``, and its linear relaxation.

For pre-activation bounds ``l <= x <= u``: stable (``l >= 0``: ``y = x``; ``u <= 0``: ``y = a x``) lines are exact;
unstable ones get the chord above (``y <= s x + t``, ``s = (u - a l) / (u - l)``) and any line ``y >= c x`` with
``c`` in ``[a, 1]`` below (the parameter alpha-CROWN optimises): ``max(x, a x) >= c x`` for every real ``x``.
So the lines have ReLU's form (no lower intercept, ``up_int >= 0``, slopes ``>= 0``) and go through the same
back-substitution. ``mask`` (numpy bool over the flattened neurons, or None): neurons off it are the identity.
No activation splits.
"""
from __future__ import annotations

import numpy as np
import torch

from relaxations.fp import tiny, unit_roundoff
from relaxations.layers.activation import Activation
from relaxations.layers.relu import ReluRelaxation


class LeakyReLU(Activation):
    """``y = max(x, a x)`` elementwise, ``a`` in ``[0, 1]`` (a float held exactly by float32); per-sample shape
    ``(*s) -> (*s)``."""

    def __init__(self, shape, alpha: float = 0.01, mask=None):
        super().__init__(shape)
        alpha = float(np.float32(alpha))
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"LeakyReLU slope {alpha} outside [0, 1] is not supported (not convex)")
        self.alpha = alpha
        self.mask = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1)

    def _mask(self, like):
        if self.mask is None:
            return None
        return torch.as_tensor(self.mask, device=like.device).reshape(1, *like.shape[1:])

    def forward(self, x):
        y = torch.nn.functional.leaky_relu(x, self.alpha)
        m = self._mask(x)
        return y if m is None else torch.where(m, y, x)

    def interval(self, l, u):
        """``(f(l), f(u))``: ``a l`` rounds; rounded down (up) by one float, ``tiny`` for underflow."""
        a = self.alpha

        def f(x, toward):
            y = torch.where(x >= 0, x, a * x)
            e = unit_roundoff(x.dtype) * y.abs() * 2 + tiny(x.dtype)
            return torch.where(x >= 0, x, y + toward * e)

        lo, hi = f(l, -1), f(u, 1)
        m = self._mask(l)
        if m is not None:
            lo, hi = torch.where(m, lo, l), torch.where(m, hi, u)
        return lo, hi

    def float_error(self, e, l, u):
        raise NotImplementedError("float32 semantics are not supported for LeakyRelu networks yet")

    def relaxation(self, l, u, split=None, lower_slope="adaptive") -> "LeakyReluRelaxation":
        if split is not None and bool((split != 0).any()):
            raise ValueError("activation splits are not supported on LeakyRelu layers")
        mask = None if self.mask is None else torch.as_tensor(self.mask, device=l.device)[None]
        return LeakyReluRelaxation(l, u, self.alpha, mask, lower_slope)

    def __repr__(self):
        return f"LeakyReLU({self.in_shape}, alpha={self.alpha})"


class LeakyReluRelaxation(ReluRelaxation):
    """ReLU-form lines of a LeakyReLU layer (module docstring): ReLU's ``optimisable``, ``lower_slope`` and
    ``initial_alpha`` (over ``unstable`` and ``low_slope``), its own lines, projection and reach."""

    def __init__(self, l, u, a, mask, lower_slope):
        self.infeasible = torch.zeros(l.shape[0], dtype=torch.bool, device=l.device)
        self.split = None
        l, u = torch.minimum(l, u), torch.maximum(l, u)
        self.l, self.u, self.a = l, u, a
        unstable = (l < 0) & (u > 0)
        if mask is not None:
            unstable = unstable & mask
        self.unstable = unstable
        one, aa = torch.ones_like(l), torch.full_like(l, a)
        stable = torch.where(l >= 0, one, aa)
        if mask is not None:
            stable = torch.where(mask, stable, one)
        denom = torch.where(unstable, u - l, one)
        s = torch.where(unstable, ((u - a * l) / denom).clamp(a, 1.0), stable)
        t = torch.maximum(a * l - s * l, u - s * u)
        t = t + 8 * unit_roundoff(l.dtype) * (l.abs() + u.abs()) + tiny(l.dtype)
        self.up_slope = s
        self.up_int = torch.where(unstable, t, torch.zeros_like(l))
        if lower_slope == "zero":
            c = aa
        elif lower_slope == "one":
            c = one
        else:
            c = torch.where(u >= -l, one, aa)
        self.low_slope = torch.where(unstable, c, stable)

    def project_(self, alpha):
        """Any slope in ``[a, 1]`` is a valid lower line through the origin."""
        return alpha.clamp_(self.a, 1.0)

    def out_reach(self):
        """``(N, n)``: ``|f(z)| <= max(|l|, |u|)`` (``|f(z)| <= |z|``)."""
        return self.reach
