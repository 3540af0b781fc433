"""The result vocabulary, result objects and VNN-COMP results files."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np


class Verdict(str, Enum):
    SAT = "sat"          # the property is violated; a replayed counterexample is attached
    UNSAT = "unsat"      # the property holds; proven
    TIMEOUT = "timeout"  # the time limit was reached before a verdict
    UNKNOWN = "unknown"  # the search ended (or the method is incomplete) without a verdict
    ERROR = "error"      # bad input or an internal error; never a verdict on the property

    def __str__(self):
        return self.value


# Exit codes of `bnb verify`, documented in its --help.
EXIT_CODES = {Verdict.UNSAT: 0, Verdict.SAT: 10, Verdict.UNKNOWN: 20, Verdict.TIMEOUT: 30, Verdict.ERROR: 1}
EXIT_BAD_INPUT = 2


@dataclass
class Counterexample:
    """An input ``x`` (float32 values, flat) and the output ``y`` the ONNX model computes for it.

    When the box holds no float32 point (``x32`` set; :mod:`bnb.io.witness`), ``x`` is the exact point (float64)
    at which the real-arithmetic network is proven to violate (``real_margin``: a rigorous upper bound of
    ``max_i (C y - d)_i`` there, < 0), and ``y`` and ``margin`` are those of its nearest float32 point ``x32``
    on the ONNX model (``margin`` at most the checker's tolerance)."""

    x: np.ndarray
    y: np.ndarray
    box: int = 0       # which input box of the property it lies in
    disjunct: int = 0  # which output polytope it reaches
    margin: float = 0.0  # max_i (C y - d)_i on the ONNX output, <= 0 (<= the tolerance for an exact point)
    x32: np.ndarray | None = None  # the float32 point replayed, when x is not one
    real_margin: float | None = None  # proven bound of the margin at x in real arithmetic (exact points)

    def describe(self) -> str:
        """What the witness rests on, for the result's message."""
        if self.x32 is None:
            return f"ONNX margin {self.margin:.4g}"
        moved = float(np.max(np.abs(self.x - self.x32.astype(np.float64))))
        return (f"the box holds no float32 point: violation proven at the exact point in real arithmetic "
                f"(margin <= {self.real_margin:.4g}); its nearest float32 point (at most {moved:.3g} away) "
                f"replayed on the ONNX model: margin {self.margin:.4g}")


@dataclass
class Result:
    verdict: Verdict
    time: float = 0.0
    counterexample: Counterexample | None = None
    message: str = ""
    stats: dict = field(default_factory=dict)

    def summary(self, name: str = "") -> str:
        extra = f" ({self.message})" if self.message else ""
        head = f"{name}: " if name else ""
        return f"{head}{self.verdict.value} in {self.time:.2f}s{extra}"

    def to_vnncomp(self) -> str:
        """The text of a VNN-COMP results file: the verdict, and for ``sat`` the witness."""
        if self.verdict is not Verdict.SAT or self.counterexample is None:
            return f"{self.verdict.value}\n"
        ce = self.counterexample
        entries = [f"(X_{i} {float(v)!r})" for i, v in enumerate(ce.x)]
        entries += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(ce.y)]
        return "sat\n(" + "\n ".join(entries) + ")\n"


def write_atomic(path, data: str | bytes) -> None:
    """Write ``data`` (text, or bytes written as they are) to ``path`` through a temporary file and a rename:
    never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
