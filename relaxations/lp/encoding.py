"""The network as affine blocks between ReLU layers, plus the per-domain bounds every LP/MILP needs.

``affine_blocks(net)`` composes the dense maps (``relaxations.layers.dense_map``) of consecutive affine layers
(float64):
block 0 maps the input to the pre-activation of ReLU layer 0, block ``i`` maps the output of ReLU layer
``i - 1`` to the pre-activation of ReLU layer ``i``, and the last block maps the last ReLU output to the
network output. Matrices are ``scipy.sparse.csr_matrix`` (convolutions are sparse; dense layers simply
have every entry stored).

``domain_bounds(...)`` turns a box, optional intermediate bounds and optional split phases into flat
numpy bounds of every pre-activation (splits applied: a ``-1`` neuron gets ``u <= 0``, a ``+1`` neuron
``l >= 0``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from relaxations.ibp import ibp
from relaxations.layers import dense_map


@dataclass
class AffineBlock:
    """``out = W @ inp + b`` with ``W``: csr ``(n_out, n_in)``, ``b``: ``(n_out,)`` float64."""
    W: sp.csr_matrix
    b: np.ndarray


def _dense_np(layer):
    # dense_map, not layer.dense(): an ElementwiseAffine has no dense() of its own, and one that no neighbour
    # absorbs (a Pad value, a Gemm's alpha/beta, a Concat with a constant before a ReLU) stays in the network
    W, b = dense_map(layer)
    W = W.detach().cpu().double().numpy() if isinstance(W, torch.Tensor) else np.asarray(W, float)
    b = b.detach().cpu().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, float)
    return sp.csr_matrix(W), b.reshape(-1).astype(np.float64)


def affine_blocks(net, any_activation: bool = False) -> list[AffineBlock]:
    """``len(net.relu_indices()) + 1`` blocks; see the module docstring. ``any_activation``: accept every
    activation (the blocks between consecutive activation layers, whatever they are: the piecewise-linear
    sandwich MILP, :mod:`relaxations.milp_sandwich`, and the hull LPs, :mod:`relaxations.lp.smooth`); by
    default a non-ReLU network is refused."""
    if hasattr(net, "require_relu") and not any_activation:
        net.require_relu("the LP/MILP encoding")
    blocks = []
    W = sp.identity(net.in_size, format="csr", dtype=np.float64)
    b = np.zeros(net.in_size)
    for layer in net.layers:
        if layer.affine:
            Wl, bl = _dense_np(layer)
            W = (Wl @ W).tocsr()
            b = Wl @ b + bl
        else:
            W.eliminate_zeros()
            blocks.append(AffineBlock(W, b))
            W = sp.identity(layer.out_size, format="csr", dtype=np.float64)
            b = np.zeros(layer.out_size)
    W.eliminate_zeros()
    blocks.append(AffineBlock(W, b))
    return blocks


def relu_sizes(net) -> list[int]:
    return [net.layers[i].out_size for i in net.relu_indices()]


def flat_np(t, n=None) -> np.ndarray:
    """``t`` (tensor, array or sequence) as a flat float64 numpy array; ``n``: its required size."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().double().numpy()
    a = np.asarray(t, dtype=np.float64).reshape(-1)
    if n is not None and a.size != n:
        raise ValueError(f"expected {n} values, got {a.size}")
    return a


@dataclass
class DomainBounds:
    """Flat float64 bounds of one domain: input box ``(n_in,)`` and per ReLU layer ``(n_i,)``.

    ``empty`` is True when the split phases contradict the intermediate bounds (no point of the
    domain exists, so every minimum is ``+inf``).
    """
    x_lower: np.ndarray
    x_upper: np.ndarray
    pre: list  # [(l_i, u_i)] with splits applied
    splits: list  # [int8 array (n_i,)]
    empty: bool

    def phases(self, i):
        """int8 ``(n_i,)``: -1 inactive, +1 active (by bounds or split), 0 unstable."""
        l, u = self.pre[i]
        p = np.zeros(l.size, dtype=np.int8)
        p[u <= 0] = -1
        p[l >= 0] = 1
        p[self.splits[i] == -1] = -1
        p[self.splits[i] == 1] = 1
        return p


def domain_bounds(net, lower, upper, pre_bounds=None, splits=None) -> DomainBounds:
    """Bounds of one domain. ``lower``/``upper``: ``(in_size,)`` or ``(1, in_size)`` (tensor or array).

    ``pre_bounds``: list of ``(l, u)`` per ReLU layer, shapes ``(1, *relu_shape)`` or flat (e.g. from
    :func:`relaxations.ibp.ibp`, CROWN or :func:`relaxations.lp.triangle.refined_pre_bounds`); IBP
    when None. ``splits``: list of int8 arrays (-1/0/+1) per ReLU layer or None.
    """
    xl, xu = flat_np(lower, net.in_size), flat_np(upper, net.in_size)
    if np.any(xl > xu):
        raise ValueError("input box has lower > upper")
    sizes = relu_sizes(net)
    if pre_bounds is None:
        t = lambda a: torch.as_tensor(a, dtype=torch.float64).reshape(1, -1)
        _, _, pre_bounds = ibp(net.to(dtype=torch.float64), t(xl), t(xu))
    if len(pre_bounds) != len(sizes):
        raise ValueError(f"expected {len(sizes)} intermediate bounds, got {len(pre_bounds)}")
    if splits is None:
        splits = [None] * len(sizes)
    pre, spl, empty = [], [], False
    for (l, u), s, n in zip(pre_bounds, splits, sizes):
        l, u = flat_np(l, n).copy(), flat_np(u, n).copy()
        s = np.zeros(n, dtype=np.int8) if s is None else flat_np(s, n).astype(np.int8)
        u[s == -1] = np.minimum(u[s == -1], 0.0)
        l[s == 1] = np.maximum(l[s == 1], 0.0)
        if np.any(l > u):
            empty = True
        pre.append((l, u))
        spl.append(s)
    return DomainBounds(xl, xu, pre, spl, empty)


def layer_offsets(n_in: int, sizes) -> tuple[list[int], list[int], int]:
    """``(z_off, y_off, end)``: where each activation layer's pre-activation ``z_i`` and output ``y_i`` start in
    the LPs' flat variable vector ``[x; z_0; y_0; z_1; y_1; ...]`` (``n_in`` inputs, layer sizes ``sizes``), and
    where the last one ends."""
    off, z_off, y_off = n_in, [], []
    for n in sizes:
        z_off.append(off)
        y_off.append(off + n)
        off += 2 * n
    return z_off, y_off, off
