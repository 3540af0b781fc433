"""Plain fully connected ReLU networks as lists of affine blocks: building, composing, writing ONNX.

A network here is ``blocks = [(W_0, b_0), ..., (W_L, b_L)]`` (numpy float64) with a ReLU after every block
but the last: ``y = W_L relu(... relu(W_0 x + b_0) ...) + b_L``. :func:`from_blocks` makes the verifier's
:class:`relaxations.network.Network` of it and :func:`blocks_of` reads any network back in this form (via
:func:`relaxations.lp.encoding.affine_blocks`, so convolutions and elementwise maps are folded).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from relaxations.layers import Linear, ReLU
from relaxations.network import Network


def from_blocks(blocks) -> Network:
    """The :class:`Network` ``Linear, ReLU, ..., Linear`` (float64) of ``blocks``."""
    layers = []
    for k, (W, b) in enumerate(blocks):
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if k and layers[-1].out_size != W.shape[1]:
            raise ValueError(f"block {k} takes {W.shape[1]} inputs, gets {layers[-1].out_size}")
        layers.append(Linear(torch.tensor(W), torch.tensor(b)))
        if k < len(blocks) - 1:
            layers.append(ReLU((W.shape[0],)))
    return Network(layers, (layers[0].in_size,))


def blocks_of(net: Network, any_activation: bool = False) -> list:
    """``[(W, b)]`` dense float64 numpy blocks of any ReLU network (see the module docstring); ``any_activation``:
    of any network, the blocks between its activation layers whatever they are (a non-ReLU network's activations
    are read separately: :func:`bnb.theory.relaxation_error.network_acts`)."""
    from relaxations.lp.encoding import affine_blocks
    return [(blk.W.toarray(), blk.b.copy()) for blk in affine_blocks(net, any_activation)]


def evaluate(blocks, x: np.ndarray) -> np.ndarray:
    """``(N, n_in) -> (N, n_out)`` in float64 numpy."""
    h = np.asarray(x, dtype=np.float64)
    for k, (W, b) in enumerate(blocks):
        h = h @ W.T + b
        if k < len(blocks) - 1:
            h = np.maximum(h, 0.0)
    return h


def identity_blocks(n: int) -> tuple:
    """A ReLU layer that carries ``n`` values of any sign: ``v = relu(v) - relu(-v)``; ``(into, out_of)``
    matrices ``(2n, n)`` and ``(n, 2n)``."""
    I = np.eye(n)
    return np.vstack([I, -I]), np.hstack([I, -I])


def output_lower(blocks, lower, upper) -> np.ndarray:
    """A lower bound (IBP, lowered by a margin covering its float64 rounding) of every output over the box."""
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    for k, (W, b) in enumerate(blocks):
        c, r = (lo + hi) / 2, (hi - lo) / 2
        mid, rad = W @ c + b, np.abs(W) @ r
        lo, hi = mid - rad, mid + rad
        if k < len(blocks) - 1:
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    return lo - 1e-9 * (1 + np.abs(lo))


def pad_depth(blocks, depth: int, lower=None) -> list:
    """The same function with ``depth`` ReLU layers (``len(blocks) - 1 <= depth``), the output carried
    through the extra layers: as ``relu(v - l) + l`` (one stable neuron) when ``lower`` (``l``, a lower
    bound of the output on the domain) is given, else as ``relu(v) - relu(-v)`` (exact anywhere)."""
    blocks = [(W.copy(), b.copy()) for W, b in blocks]
    while len(blocks) - 1 < depth:
        W, b = blocks[-1]
        n = W.shape[0]
        if lower is None:
            into, out = identity_blocks(n)
            blocks[-1] = (into @ W, into @ b)
            blocks.append((out, np.zeros(n)))
        else:
            l = np.asarray(lower, float)
            blocks[-1] = (W, b - l)
            blocks.append((np.eye(n), l.copy()))
    return blocks


def parallel(a, b, box=None) -> list:
    """One network computing ``(a(x), b(x))`` (outputs stacked); the shallower one is padded
    (:func:`pad_depth`; with stable carried neurons when the domain ``box = (lower, upper)`` is given)."""
    depth = max(len(a), len(b)) - 1
    la = None if box is None or len(a) - 1 == depth else output_lower(a, *box)
    lb = None if box is None or len(b) - 1 == depth else output_lower(b, *box)
    a, b = pad_depth(a, depth, la), pad_depth(b, depth, lb)
    out = []
    for k, ((Wa, ba), (Wb, bb)) in enumerate(zip(a, b)):
        if k == 0:
            W = np.vstack([Wa, Wb])
        else:
            W = np.block([[Wa, np.zeros((Wa.shape[0], Wb.shape[1]))], [np.zeros((Wb.shape[0], Wa.shape[1])), Wb]])
        out.append((W, np.concatenate([ba, bb])))
    return out


def difference(a, b, box=None) -> list:
    """Blocks of ``a(x) - b(x)`` (same input and output sizes); ``box`` as in :func:`parallel`."""
    p = parallel(a, b, box)
    W, c = p[-1]
    n = a[-1][0].shape[0]
    S = np.hstack([np.eye(n), -np.eye(n)])
    p[-1] = (S @ W, S @ c)
    return p


def save_onnx(net_or_blocks, path, activation: str = "Relu") -> Path:
    """Write the network as a float32 ONNX model (Gemm and ``activation`` nodes — ``Relu``, or e.g. ``Sigmoid``,
    ``Tanh``, ``Softplus`` for blocks meant with that activation —, opset 13, input ``(1, n_in)``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    blocks = net_or_blocks if isinstance(net_or_blocks, list) else blocks_of(net_or_blocks)
    nodes, inits, cur = [], [], "input"
    for k, (W, b) in enumerate(blocks):
        inits += [numpy_helper.from_array(np.asarray(W, np.float32), f"W{k}"),
                  numpy_helper.from_array(np.asarray(b, np.float32).reshape(-1), f"b{k}")]
        nodes.append(helper.make_node("Gemm", [cur, f"W{k}", f"b{k}"], [f"g{k}"], transB=1))
        cur = f"g{k}"
        if k < len(blocks) - 1:
            nodes.append(helper.make_node(activation, [cur], [f"r{k}"]))
            cur = f"r{k}"
    nodes.append(helper.make_node("Identity", [cur], ["output"]))
    n_in, n_out = blocks[0][0].shape[1], blocks[-1][0].shape[0]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, n_in])
    graph = helper.make_graph(nodes, "bnb_theory", [inp],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def parse_box(text: str, n_in: int | None = None):
    """``"LO:HI,LO:HI,..."`` (one pair per input, or one pair for every input) -> ``(lower, upper)`` arrays."""
    from bnb.errors import BnbError
    try:
        pairs = [tuple(float(v) for v in part.split(":")) for part in text.split(",")]
    except ValueError:
        raise BnbError(f"--box {text!r}: expected LO:HI pairs separated by commas") from None
    if any(len(p) != 2 for p in pairs):
        raise BnbError(f"--box {text!r}: expected LO:HI pairs separated by commas")
    if n_in is not None and len(pairs) == 1:
        pairs = pairs * n_in
    if n_in is not None and len(pairs) != n_in:
        raise BnbError(f"--box gives {len(pairs)} intervals, the network has {n_in} inputs")
    lo, hi = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if np.any(~np.isfinite(lo)) or np.any(~np.isfinite(hi)) or np.any(lo > hi):
        raise BnbError(f"--box {text!r}: every interval needs finite LO <= HI")
    return lo, hi
