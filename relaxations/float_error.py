"""How far a float32 evaluation of a network can be from the real-arithmetic network, over a box: the a-priori
bound that makes an ``unsat`` hold under float32 semantics too (a VNN-LIB 2.0 query declaring ``float32``).

The real-arithmetic network is what every bound of bnb is about; onnxruntime computes the same operators in
float32, each output entry a sum of products in some order (blocked, with or without FMA) followed by a few
elementwise operations. Layer by layer, with ``x`` the real value and ``x^`` the float32 one at a layer input,
``e >= |x^ - x|`` elementwise and ``r >= |x|`` from rigorous interval bounds of the real network:

- an affine layer ``W x + b`` (:class:`~relaxations.layers.base.Layer`): ``|fl(W^ x^ + b^) - (W x + b)| <=
  |W| e + err_coeff(n, float32, rep) (|W| (r + e) + |b|) + (n + 4) tiny``, the same a-priori bound as the
  rigorous bounds' own rounding (:mod:`relaxations.fp`, Higham 3.1) for the ``n`` products of the layer, where
  ``rep`` (:data:`EVAL_REP` units of float32 roundoff) covers parameters onnxruntime derives from the model's
  constants in float32 (a BatchNormalization scale ``gamma / sqrt(var + eps)``, constant folding, its
  Conv+BatchNormalization fusion): each within a few roundings of the real value;
- an exact layer (reshape, gather: slices, transposes, padding, concatenation parts): ``e`` moved along;
- an activation: its own :meth:`float_error` (ReLU is 1-Lipschitz and exact: ``e``, or 0 where both values are
  provably non-positive).

It is read on the network before simplification (``LoadedModel.chain``: one layer per operator step, so that
the terms onnxruntime rounds, e.g. a normalisation's mean and shift, appear in the magnitudes rather than their
folded difference); the folds themselves are float64 roundings, far inside the ``rep`` allowance. All of it is
computed in float64 with non-negative terms only and raised by float64's own a-priori factor. Not covered:
Winograd or FFT convolutions (errors not of the per-entry form), as for the bounds (``docs/soundness.md``).
"""
from __future__ import annotations

import math

import torch

from relaxations.fp import err_coeff, reach, tiny, unit_roundoff

EVAL_REP = 4  # float32 roundoffs of relative error allowed in the parameters onnxruntime computes from constants
EXACT_LAYERS = ("Reshape", "Gather")  # no rounding in the forward direction


MAX_ROWS = 4096  # the error at a ReLU layer's input is refined by back-substitution up to this many neurons


def evaluation_error(net, lower, upper, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(out_size,)`` float64: for every input of the box ``[lower, upper]`` (``(in_size,)`` each, float64) that
    ``dtype`` can hold, an upper bound on ``|f_dtype(x) - f(x)|`` per output, where ``f`` is the real-arithmetic
    network ``net`` and ``f_dtype`` any evaluation of its operators in ``dtype`` (module docstring). ``inf`` where
    the bound overflows.

    Forward, layer by layer: the input bounds of each layer (IBP, intersected at every ReLU with CROWN's
    pre-activation bounds), each affine layer's own rounding ``delta_k`` over the reach of its float input, and
    the error ``e`` at each layer input: ``|W| e + delta`` through affine layers, refined at every ReLU input (and
    at the output) by back-substitution: the error there is ``sum_k J_k delta_k``, where ``J_k`` is the slope from
    layer ``k`` through the mean-value form of every ReLU between (a factor in ``[0, 1]``, exactly 1 or 0 where
    both the real and the float input have a known sign), bounded as an interval matrix (centre and radius), which
    keeps the sign cancellations that the forward ``|W|`` products lose."""
    net.require_relu("float32 semantics (the float32 evaluation error bound)")
    net = net.to(dtype=torch.float64)
    lo = torch.as_tensor(lower, dtype=torch.float64).reshape(1, *net.in_shape)
    hi = torch.as_tensor(upper, dtype=torch.float64).reshape(1, *net.in_shape)
    pre = _pre_activation_bounds(net, lo, hi)
    e = torch.zeros_like(lo)
    rep = EVAL_REP * unit_roundoff(dtype)
    steps = []  # per layer: (bounds of its input, its own rounding delta or None, error of its input)
    relu = 0
    with torch.no_grad():
        for k, layer in enumerate(net.layers):
            delta = None
            if not layer.affine:
                if pre is not None:
                    pl, pu = pre[relu]
                    lo, hi = torch.maximum(lo, pl.reshape(lo.shape)), torch.minimum(hi, pu.reshape(hi.shape))
                relu += 1
                e = torch.minimum(e, _backward(net, steps, k))
                e_next = layer.float_error(e, lo, hi)
            elif type(layer).__name__ in EXACT_LAYERS:
                e_next = layer.abs_linear(e)
            else:
                n = layer.n_forward
                delta = _raised(err_coeff(n, dtype, rep) * layer.magnitude(reach(lo, hi) + e) + (n + 4) * tiny(dtype),
                                n)
                e_next = _raised(layer.abs_linear(e), n) + delta
            steps.append((lo, hi, delta, e))
            lo, hi = layer.interval(lo, hi)
            e = _no_nan(e_next)
        e = torch.minimum(e, _backward(net, steps, len(net.layers)))
    return e.reshape(-1)


def _pre_activation_bounds(net, lo, hi):
    """CROWN's rigorous pre-activation bounds of every ReLU layer over the box (None for a network without)."""
    from relaxations.crown import crown
    from relaxations.state import DomainState
    if not net.relu_indices():
        return None
    C = torch.eye(net.out_size, dtype=torch.float64)
    return crown(net, DomainState(lo.reshape(1, -1), hi.reshape(1, -1)), C).pre_bounds


def _raised(x: torch.Tensor, n: int) -> torch.Tensor:
    """A float64 sum of ``n`` non-negative products ``x``, raised by its own a-priori rounding bound."""
    return x * (1 + err_coeff(n + 2, torch.float64)) + (n + 6) * tiny(torch.float64)


def _no_nan(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isnan(x), torch.full_like(x, float("inf")), x)


def _abs_transposed(layer, R: torch.Tensor) -> torch.Tensor:
    """``|W|^T R`` for rows ``R`` ``(m, *out)`` -> ``(m, *in)``: the transpose of the linear map ``abs_linear``."""
    with torch.enable_grad():
        x = torch.zeros((R.shape[0], *layer.in_shape), dtype=R.dtype, requires_grad=True)
        y = layer.abs_linear(x).reshape(R.shape[0], -1)
        (g,) = torch.autograd.grad(y, x, grad_outputs=R.reshape(R.shape[0], -1), allow_unused=True)
    return torch.zeros_like(x) if g is None else g.detach()


def _backward(net, steps, end: int) -> torch.Tensor:
    """``sum_k |J_k| delta_k`` over the layers before ``end``, at the input of layer ``end`` (the network's output
    for ``end = len(layers)``), shape ``(1, *shape)``; ``inf`` when that layer has more than :data:`MAX_ROWS`
    neurons (the forward error stands there)."""
    shape = net.layers[end].in_shape if end < len(net.layers) else net.out_shape
    m = math.prod(shape)
    if m > MAX_ROWS:
        return torch.full((1, *shape), float("inf"), dtype=torch.float64)
    mid = torch.eye(m, dtype=torch.float64).reshape(m, *shape)  # rows: d (layer-end input) / d (layer output)
    rad = torch.zeros_like(mid)
    total = torch.zeros(m, dtype=torch.float64)
    with torch.no_grad():
        for layer, (lo, hi, delta, e) in zip(reversed(net.layers[:end]), reversed(steps[:end])):
            if delta is not None:
                size = (mid.abs() + rad).reshape(m, -1)
                total = total + _raised(size @ delta.reshape(-1), delta.numel())
            if not layer.affine:  # ReLU: slope 1 where both inputs are >= 0, 0 where both are < 0, else in [0, 1]
                active = (lo >= e).reshape(1, *lo.shape[1:])
                inactive = (hi + e < 0).reshape(1, *hi.shape[1:])
                a_lo, a_hi = mid - rad, mid + rad
                a_lo = torch.where(active, a_lo, torch.where(inactive, 0.0, torch.clamp(a_lo, max=0.0)))
                a_hi = torch.where(active, a_hi, torch.where(inactive, 0.0, torch.clamp(a_hi, min=0.0)))
                mid, rad = (a_lo + a_hi) / 2, (a_hi - a_lo) / 2
                rad = _raised(rad, 1) + mid.abs() * err_coeff(2, torch.float64)  # rounding of the two lines above
                continue
            n = layer.n_backward
            new_mid, _ = layer.backward(mid.reshape(1, m, *layer.out_shape))
            new_mid = new_mid.reshape(m, *layer.in_shape)
            # |W|^T (rad + c |mid|): the radius carried, and the rounding of the centre's product
            rad = _raised(_abs_transposed(layer, rad + err_coeff(n, torch.float64) * mid.abs()), n)
            mid = new_mid
    return _no_nan(total).reshape(1, *shape)
