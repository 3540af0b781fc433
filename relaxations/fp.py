"""Rigorous floating-point error bounds: the arithmetic behind every single-neuron proof.

The single-neuron bounds (IBP, CROWN, alpha-/beta-CROWN, forward linear bounds) run in plain torch arithmetic,
float32 by default, rounding to nearest. Every quantity they compute is a sum of products, and the a-priori
bound for a sum of ``n`` rounded products (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1)

    |fl(sum_i a_i b_i) - sum_i a_i b_i|  <=  gamma_n * sum_i |a_i| |b_i|,      gamma_n = n u / (1 - n u)

(``u`` the unit roundoff, 2^-24 in float32) holds for any summation order, blocked or with FMA, as BLAS and
convolution kernels compute. Each bounding step therefore subtracts ``err_coeff(n) * magnitude`` from the value
it produces, where ``magnitude`` is the same sum taken over absolute values (one extra matrix-vector product
with ``|W|``). :func:`err_coeff` doubles ``gamma_{n+4}``: the four extra roundings cover the handful of additions
around each product (centre/radius, bias, the subtraction of the error itself) and the factor two covers the
rounding of the error computation (all its terms are non-negative, so it is off by at most ``gamma_n`` relative).
Products that underflow lose relative accuracy; the absolute term ``n * tiny`` (the smallest normal number,
which also covers flush-to-zero) bounds that. ``docs/soundness.md`` gives the whole argument and what it does
not cover.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u``: half the distance from 1 to the next float (2^-24 for float32, 2^-53 for float64)."""
    return float(torch.finfo(dtype).eps) / 2


def tiny(dtype: torch.dtype) -> float:
    """The smallest normal number: bounds the absolute error of one product that underflows."""
    return float(torch.finfo(dtype).tiny)


def err_coeff(n: int, dtype: torch.dtype, rep: float = 0.0) -> float:
    """Relative error coefficient of a sum of ``n`` products in ``dtype`` (see the module docstring).

    ``rep``: relative error with which the layer's parameters represent the real ones (0 when the cast to
    ``dtype`` was exact, else the unit roundoff); ``|W_real - W| <= 2 rep |W|`` adds ``4 rep`` with the same
    factor two of slack.
    """
    g = (n + 4) * unit_roundoff(dtype)
    if g >= 0.25:
        raise ValueError(f"a sum of {n} terms is too long for a rigorous a-priori bound in {dtype}")
    return 2 * g / (1 - g) + 4 * rep


def _step(x: torch.Tensor, toward: float) -> torch.Tensor:
    """The neighbouring float of ``x`` toward ``toward``; infinities and NaN stay as they are (stepping +inf down
    would give the largest finite float, a number that no computation produced)."""
    xd = x.detach()
    step = torch.where(torch.isfinite(xd), torch.nextafter(xd, torch.full_like(xd, toward)) - xd,
                       torch.zeros_like(xd))
    return x + step  # exact: the sum is the neighbouring float; keeps the gradient of x (nextafter has none)


def down(x: torch.Tensor) -> torch.Tensor:
    """One float below ``x``: at most the exact value of ``x`` when ``x`` came from one rounded operation."""
    return _step(x, -math.inf)


def up(x: torch.Tensor) -> torch.Tensor:
    return _step(x, math.inf)


def finite_or_neg_inf(x: torch.Tensor) -> torch.Tensor:
    """NaN and +-inf become ``-inf``: a lower bound that is not a finite number proves nothing."""
    return torch.where(torch.isfinite(x), x, torch.full_like(x, -math.inf))


def reach(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``max(|lower|, |upper|)``: a bound on ``|x|`` for every ``x`` in the box (elementwise, exact)."""
    return torch.maximum(lower.abs(), upper.abs())


def dot_abs(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_j |A_{b i j}| v_{b j}``: ``A`` ``(N, m, *s)``, ``v`` ``(N, *s)`` (non-negative) -> ``(N, m)``."""
    N, m = A.shape[:2]
    return torch.bmm(A.reshape(N, m, -1).abs(), v.reshape(N, -1, 1)).squeeze(-1)


def ieee_kernels(device) -> None:
    """Make torch's CUDA kernels compute with IEEE products, as the error bounds assume: no TF32 (10-bit
    mantissa) in matrix products or convolutions, and no cuDNN, whose FFT and Winograd convolutions have
    errors that the per-entry bound does not cover. A no-op on the CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.enabled = False


# ------------------------------------------------------------------ float64 values into the working dtype
def _f64(values) -> torch.Tensor:
    """``values`` (numbers, numpy, tensor) as a float64 CPU tensor."""
    if torch.is_tensor(values):
        return values.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def cast_down(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float64 tensor ``x`` as ``dtype``, each entry ``<=`` its value; keeps ``x``'s gradient. A finite value
    beyond ``dtype``'s range becomes its largest finite number (rounding to nearest would give ``+inf``, above
    the value); infinities and NaN stay as they are."""
    x = torch.where(torch.isfinite(x), x.clamp(max=torch.finfo(dtype).max), x)
    t = x.to(dtype)  # rounded to nearest: one step down where it went up
    return torch.where(t.detach().double() > x.detach(), down(t), t)


def to_dtype_down(values, dtype: torch.dtype, device=None) -> torch.Tensor:
    """float64 ``values`` (numpy or tensor) as ``dtype``, each entry ``<=`` its float64 value."""
    t = cast_down(_f64(values), dtype)
    return t.to(device) if device is not None else t


def to_dtype_up(values, dtype: torch.dtype, device=None) -> torch.Tensor:
    return -to_dtype_down(-_f64(values), dtype, device)


def outward_box(lower, upper, dtype: torch.dtype, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A box of ``dtype`` that contains the real box whose ends were parsed (rounded to nearest) into the
    float64 ``lower``/``upper``: each end moved one float64 step outward, then rounded outward to ``dtype``."""
    return to_dtype_down(down(_f64(lower)), dtype, device), to_dtype_up(up(_f64(upper)), dtype, device)


def threshold_up(d, dtype: torch.dtype, device=None) -> torch.Tensor:
    """A right-hand side ``d`` of ``C y <= d``, parsed into float64, rounded up so that proving ``C y > d'``
    proves ``C y > d`` for the decimal value of the file."""
    return to_dtype_up(up(_f64(d)), dtype, device)


CLAIM_SLACK = 1e-9  # relative loosening of a bound a certificate claims (a checker's rounding bound may be larger)


def loosen(x: torch.Tensor, side: int) -> torch.Tensor:
    """A float64 bound moved outward by ``CLAIM_SLACK (1 + |x|)`` and one more step (``side`` +1: an upper bound,
    raised; -1: a lower bound, lowered): still a valid bound, and one that an independent checker, whose own
    rounding bound is a little larger than the verifier's, can still prove. Infinities stay."""
    moved = torch.where(torch.isfinite(x), x + side * CLAIM_SLACK * (1 + x.abs()), x)
    return up(moved) if side > 0 else down(moved)
