"""The networks of THEORY.md, each as affine blocks (:mod:`bnb.theory.networks`) with its formula.

- :func:`barrier`: the universal-barrier counterexample of Mao et al. (parameter ``T``, ``k`` identity
  layers pumped in between); ``>= T`` everywhere, P1's lower bound is off by exactly ``T``;
- :func:`nested_max`: ``max(x_1..x_d)`` as ``m_k = x_k + relu(m_{k-1} - x_k)`` with every input carried
  through every layer as the stable neuron ``relu(x_j - c_j) + c_j`` (``c``: the domain's lower corner);
- :func:`max2_plain`: ``x2 + relu(x1 - x2)`` with ``x2`` passed as ``relu(x2) - relu(-x2)``;
  :func:`max2_symmetric`: ``(x1 + x2)/2 + |x1 - x2|/2``;
- univariate CPWL functions: :func:`abs_sum` (``relu(x) + relu(-x)``), :func:`abs_max`
  (``-x + relu(2x)``, ``-x`` carried as ``relu(-x) - relu(x)``), :func:`abs_deep` (``|x|`` through two
  ReLU layers, ``relu(relu(x) + relu(-x))``), :func:`clip` and :func:`hat`.

``CONSTRUCTIONS`` maps a name to ``(builder, formula, default box)``: the tests check every builder
against its formula, and ``benchmarks/theory_docs.py`` writes them as ONNX.
"""
from __future__ import annotations

import numpy as np

from bnb.theory.networks import from_blocks


def barrier(T: float = 1.0, k: int = 0) -> list:
    """z in [-1, 1] -> (relu(z + 1), relu(z)) -> k identity layers -> ``2T |y0 - 1| + 2T |y1 - 1/2|``."""
    blocks = [(np.array([[1.0], [1.0]]), np.array([1.0, 0.0]))]
    blocks += [(np.eye(2), np.zeros(2)) for _ in range(k)]  # y >= 0: relu(y) = y, stable
    blocks.append((np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]]), np.array([-1.0, 1, -0.5, 0.5])))
    blocks.append((np.full((1, 4), 2.0 * T), np.zeros(1)))
    return blocks


def barrier_formula(T: float = 1.0, k: int = 0):
    return lambda x: 2 * T * np.abs(np.maximum(x[:, :1] + 1, 0) - 1) + 2 * T * np.abs(np.maximum(x[:, :1], 0) - 0.5)


def max_affine(A, c, lower) -> list:
    """``max_k (A_k . x + c_k)`` as the nested max ``m_k = l_k(x) + relu(m_{k-1} - l_k(x))`` with the input
    carried through every layer as ``relu(x - lower) + lower`` (stable on a domain above ``lower``)."""
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    lo = np.asarray(lower, dtype=np.float64).reshape(-1)
    K, d = A.shape
    I = np.eye(d)
    if K == 1:  # affine: one layer of carried inputs
        return [(I, -lo), (A, A @ lo + c)]
    # the state after layer k is (r_k, x - lower); l_k(x) = A_k (x - lower) + A_k lower + c_k
    blocks = [(np.vstack([A[0] - A[1], I]), np.concatenate([[c[0] - c[1]], -lo]))]
    for k in range(2, K):
        row = np.concatenate([[1.0], A[k - 1] - A[k]])  # m_{k-1} - l_{k+1} = r + l_k - l_{k+1}
        W = np.vstack([row, np.hstack([np.zeros((d, 1)), I])])
        blocks.append((W, np.concatenate([[c[k - 1] - c[k] + (A[k - 1] - A[k]) @ lo], np.zeros(d)])))
    blocks.append((np.concatenate([[1.0], A[K - 1]])[None], np.array([c[K - 1] + A[K - 1] @ lo])))
    return blocks


def nested_max(d: int = 2, lower=None) -> list:
    """``max(x_1, ..., x_d)`` with carried inputs (see the module docstring); ``lower``: ``(d,)``
    lower corner of the domain (default 0), where the carried neurons are stable."""
    if d < 2:
        raise ValueError("nested_max needs d >= 2")
    return max_affine(np.eye(d), np.zeros(d), np.zeros(d) if lower is None else lower)


def max2_plain() -> list:
    """``x2 + relu(x1 - x2)``, ``x2`` as ``relu(x2) - relu(-x2)`` (no assumption on the domain)."""
    return [(np.array([[1.0, -1.0], [0, 1], [0, -1]]), np.zeros(3)), (np.array([[1.0, 1.0, -1.0]]), np.zeros(1))]


def max2_symmetric() -> list:
    """``(x1 + x2)/2 + |x1 - x2|/2`` with ``relu(+-(x1 + x2))`` and ``relu(+-(x1 - x2))``."""
    W = np.array([[1.0, 1], [-1, -1], [1, -1], [-1, 1]])
    return [(W, np.zeros(4)), (np.array([[0.5, -0.5, 0.5, 0.5]]), np.zeros(1))]


def abs_sum() -> list:
    return [(np.array([[1.0], [-1.0]]), np.zeros(2)), (np.array([[1.0, 1.0]]), np.zeros(1))]


def abs_max() -> list:
    """``max(x, -x) = -x + relu(2x)``, ``-x`` carried as ``relu(-x) - relu(x)``."""
    return [(np.array([[2.0], [-1.0], [1.0]]), np.zeros(3)), (np.array([[1.0, 1.0, -1.0]]), np.zeros(1))]


def abs_deep() -> list:
    """``|x| = relu(relu(x) + relu(-x))``: two ReLU layers (the second one stable)."""
    return [(np.array([[1.0], [-1.0]]), np.zeros(2)), (np.array([[1.0, 1.0]]), np.zeros(1)),
            (np.array([[1.0]]), np.zeros(1))]


def clip(a: float = 0.0, b: float = 1.0) -> list:
    """``min(max(x, a), b) = a + relu(x - a) - relu(x - b)``."""
    return [(np.array([[1.0], [1.0]]), np.array([-a, -b])), (np.array([[1.0, -1.0]]), np.array([a]))]


def hat() -> list:
    """``max(0, 1 - |x|) = relu(x + 1) - 2 relu(x) + relu(x - 1)``."""
    return [(np.array([[1.0], [1.0], [1.0]]), np.array([1.0, 0.0, -1.0])), (np.array([[1.0, -2.0, 1.0]]), np.zeros(1))]


CONSTRUCTIONS = {
    "barrier": (barrier, barrier_formula(), ([-1.0], [1.0])),
    "barrier_pumped": (lambda: barrier(1.0, 2), barrier_formula(), ([-1.0], [1.0])),
    "nested_max3": (lambda: nested_max(3), lambda x: x.max(axis=1, keepdims=True), ([0.0] * 3, [1.0] * 3)),
    "max2_carried": (lambda: nested_max(2), lambda x: x.max(axis=1, keepdims=True), ([0.0] * 2, [1.0] * 2)),
    "max2_plain": (max2_plain, lambda x: x.max(axis=1, keepdims=True), ([0.0] * 2, [1.0] * 2)),
    "max2_symmetric": (max2_symmetric, lambda x: x.max(axis=1, keepdims=True), ([0.0] * 2, [1.0] * 2)),
    "abs_sum": (abs_sum, lambda x: np.abs(x), ([-1.0], [1.0])),
    "abs_max": (abs_max, lambda x: np.abs(x), ([-1.0], [1.0])),
    "abs_deep": (abs_deep, lambda x: np.abs(x), ([-1.0], [1.0])),
    "clip": (clip, lambda x: np.clip(x, 0.0, 1.0), ([-1.0], [2.0])),
    "hat": (hat, lambda x: np.maximum(0.0, 1 - np.abs(x)), ([-2.0], [2.0])),
}


def network(name: str):
    """The :class:`relaxations.network.Network` of a named construction."""
    return from_blocks(CONSTRUCTIONS[name][0]())
