"""The property object produced from a VNN-LIB file.

Meaning (VNN-COMP convention): a property is a list of :class:`InputSpec`, each an input box with a
disjunction of output polytopes ``C y <= d``. The property is **violated** (the instance is ``sat``)
iff some input ``x`` inside some box drives ``y = f(x)`` into one of that box's polytopes. It
**holds** (``unsat``) iff for every box and every polytope, no input of the box reaches the polytope.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnb.errors import SpecError


@dataclass
class Polytope:
    """``{y : C y <= d}`` with ``C`` of shape ``(k, n_outputs)`` and ``d`` of shape ``(k,)``.

    ``k = 0`` is the whole output space (every input of the box is a counterexample).

    ``slack`` ``(k,)`` (float32 queries only, else None): how far float32 evaluation can move ``C y`` from the
    real-arithmetic network's value over the box; a proof refutes ``C y <= d + slack`` (:attr:`refute_d`) for the
    real network, which refutes ``C y <= d`` for every float32 evaluation. A witness is checked against ``d``.
    """

    C: np.ndarray
    d: np.ndarray
    slack: np.ndarray | None = None

    @property
    def refute_d(self) -> np.ndarray:
        """The right-hand side proofs refute and the search aims at: ``d``, widened by ``slack`` (rounded up)."""
        if self.slack is None:
            return self.d
        return np.nextafter(np.asarray(self.d, np.float64) + self.slack, np.inf)

    def margin(self, y: np.ndarray) -> np.ndarray:
        """``max_i (C y - d)_i`` for outputs ``y`` of shape ``(N, n_outputs)``; ``<= 0`` means inside."""
        if len(self.d) == 0:
            return np.full(len(y), -np.inf)
        return (y @ self.C.T - self.d).max(axis=1)


@dataclass
class InputSpec:
    """An input box ``lower <= x <= upper`` (flat, ``(n_inputs,)``) with a disjunction of polytopes."""

    lower: np.ndarray
    upper: np.ndarray
    disjuncts: list[Polytope] = field(default_factory=list)


@dataclass
class Property:
    specs: list[InputSpec]
    n_inputs: int
    n_outputs: int
    path: str = ""
    # float32 semantics (a VNN-LIB 2.0 query declaring float32): a witness must be a float32 input, and proofs
    # cover the float32 evaluation error of the outputs (the polytopes' ``slack``); otherwise real semantics
    float32: bool = False

    @property
    def n_disjuncts(self) -> int:
        return sum(len(s.disjuncts) for s in self.specs)

    def check_sizes(self, n_inputs: int, n_outputs: int) -> None:
        """Refuse a property whose variables do not fit a network with these input and output sizes."""
        check_sizes(self.n_inputs, self.n_outputs, n_inputs, n_outputs, self.path)

    def describe(self) -> str:
        rows = sum(len(p.d) for s in self.specs for p in s.disjuncts)
        return (f"{len(self.specs)} input box(es), {self.n_disjuncts} output polytope(s), "
                f"{rows} output constraint(s)")


def check_sizes(nx: int, ny: int, n_inputs: int | None, n_outputs: int | None, path) -> None:
    """Refuse ``nx`` inputs and ``ny`` outputs declared by the property file ``path`` for a network with
    ``n_inputs`` and ``n_outputs`` (None: not checked)."""
    if n_inputs is not None and nx != n_inputs:
        raise SpecError(f"declares {nx} inputs but the network has {n_inputs}", path)
    if n_outputs is not None and ny != n_outputs:
        raise SpecError(f"declares {ny} outputs but the network has {n_outputs}", path)
