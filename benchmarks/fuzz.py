"""Fuzzing harness: random networks, boxes and output specs, every verdict checked against exact ground truth.

Instance families
-----------------
- networks (``NET_KINDS``): ``dense`` MLPs (1-4 hidden layers, widths 2-20, 1-12 inputs, 1-4 outputs);
  ``sparse`` MLPs (60-90 % zero weights, some neurons made dead or always active through their bias);
  ``conv`` nets (Conv2d + ReLU [+ Linear + ReLU] + Flatten + Linear on 1x4x4 or 2x5x5 inputs); weight
  scales vary over 0.1-10 and a quarter of the networks get large biases (outputs far from 0). Weights are
  rounded to float32 once; ``residual`` and ``concat`` graphs (DAGs: residual ``Add`` onto the input and onto a
  ReLU output, ``Concat`` of hidden tensors with the input, ``Slice`` of the input; 1-6 inputs, widths 2-10), whose
  float64 ground truth is this harness's own chain form (``_dag_blocks``: every tensor carried past a ReLU as the
  pair ``relu(t), relu(-t)``, exact in the MILP). The ONNX file (float32, written with the onnx helper API) and the
  float64
  ground-truth network hold exactly the same values, and each instance checks its ONNX file against the
  float64 network on onnxruntime before it is used.
- input boxes (``BOX_KINDS``): ``box`` (ordinary), ``point`` (lower == upper everywhere), ``zero_some``
  (30-90 % of the inputs of zero width), ``one_free`` (all inputs fixed except one of width 1e-7), ``ulps``
  (every width a few float32 ulps), ``far`` (centres ~1e3-1e5 where float32 rounding is large), ``decimal``
  (1 to all inputs fixed, lower == upper, at short decimals such as ``0.1`` or ``-2.37`` that are not float32
  numbers, the rest ordinary intervals: the box holds no float32 point), ``mixed`` (each input drawn from the
  other kinds, a decimal fixed input among them). Bounds are float32 values except the 1e-7-wide upper bound
  and the decimals (float64, written with ``repr`` so that they read back as the same float64).
- output specs (``SPEC_KINDS``): ``row`` (one ``c.y <= d``), ``poly`` (2-3 rows, a conjunction), ``disj`` (a
  disjunction of 2-3 polytopes), ``multibox`` (two input boxes, each with its own polytope). Rows are random
  Gaussian, one-hot, or differences ``y_i - y_j`` (the VNN-COMP form).
- routes (``ROUTES``): ``v1``, a VNN-LIB 1.0 file read by ``verify`` (real-arithmetic semantics); ``v2f32``, for a
  share ``--v2-float32`` (default 0.25) of the draws whose bounds are all float32 numbers (so never ``decimal``,
  ``one_free`` or a ``mixed`` box with a decimal or 1e-7-wide input), the same property written as a VNN-LIB 2.0
  query whose input and output are declared ``float32`` (float32 semantics: ``sat`` needs a float32 input whose
  onnxruntime output satisfies the constraints, ``unsat`` a proof covering float32 evaluation), read by
  ``bnb.io.vnnlib2.parse_query_text`` and passed to ``verify`` as a Property. Every spec kind goes both ways
  (bnb's 2.0 reader takes disjunctions and several boxes); numbers are written positionally with float64
  round-trip digits.

Ground truth
------------
With ``g(x) = min_k max_i (C_ki f(x) - d0_ki)`` over the polytopes ``k`` (and the boxes), the property is
violated iff ``min_x g(x) <= 0``. For each box and polytope the harness solves the epigraph MILP
``min t  s.t.  t >= C_i y - d0_i``, ``y = f(x)``, ``x`` in the box, with its own big-M encoding
(``milp_epigraph``: float64 network, interval bounds widened outward by 1e-9 relative, scipy's HiGHS). It
keeps two numbers: ``lo`` = HiGHS's dual bound (the proven lower bound of the optimum) and ``hi`` = ``g`` of the
MILP's argmin, clipped into the box and evaluated exactly in float64 (a real point attaining it). An
instance is dropped (``skipped``) when the MILP is not optimal or ``hi - lo > 1e-7 S``. For point boxes
``lo = hi = g(x)`` evaluated in float64. Then every right-hand side is shifted by one constant:
``d = d0 + hi + delta`` (label ``sat``: the point attaining ``hi`` reaches the polytope with margin delta) or
``d = d0 + lo - delta`` (label ``unsat``: every point misses every polytope by at least delta).

Why delta is safe: ``S = 1 + |v| + max_i (|C_i| . M + |d0_i|)`` where ``M`` is the magnitude of the outputs
(``|W|`` propagated through the network from ``max(|lower|, |upper|)``, plus ``|b|``), i.e. a bound on every
term a float32 evaluation sums. ``delta = 1e-3 S`` (``clear``, half the draws), ``1e-5 S`` (``tight``, a quarter)
or ``1e-6 + 1e-10 S`` (``hair``, a quarter; below). A float32 forward
pass (onnxruntime, the attack) errs by at most ~ depth x width x 6e-8 x M <= 5e-6 M on these networks (far less
in practice), so it cannot turn an ``unsat`` label into a replayed counterexample; the MILP's error (HiGHS's
absolute gap 1e-6 on ``lo``, its feasibility and integrality tolerances, which only relax the problem and
lower ``lo``) is bounded by the ``hi - lo <= 1e-7 S`` acceptance check and the 1e-6 gap, both below
``1e-5 S``. So ``unsat`` on a ``sat`` label, or ``sat`` on an ``unsat`` label, is a wrong verdict.

The ``hair`` delta, ``1e-6 + 1e-10 S`` (about 1e-6 absolute: S is below 1e4 on 3 of 4 draws, median ~150; far
boxes reach 1e6-1e8), puts the threshold as close to the optimum as the ground truth allows, on each side for a
different reason:

- ``sat`` label (``d = d0 + hi + delta``): exact under real semantics. ``hi`` is ``g`` at a real point of the box
  (the MILP's argmin clipped into it), evaluated in float64: the real ``g`` there is within ``~ (sum of the
  layers' fan-ins, <= 300 here) x 1.1e-16 x S <= 1e-13 S`` of ``hi`` (the ground-truth blocks hold the network's
  values exactly: compositions with selection matrices only), far below ``1e-10 S``. A fixed decimal input is
  the float64 nearest the decimal the 1.0 file states (``repr``), within 1.1e-16 of it relative: ``g`` moves by
  less than 1e-16 S more. So the real network violates the property by almost ``delta`` and ``unsat`` is wrong
  in every configuration. bnb's outward rounding (box widened, ``d`` rounded up) only makes the question it
  decides easier to violate. Not under float32 semantics: a float32 evaluation errs by up to ~5e-6 M, so a
  ``hair`` draw is never sent the ``v2f32`` way (there delta stays >= 1e-5 S).
- ``unsat`` label (``d = d0 + lo - delta``): rests on HiGHS's dual bound ``lo``, which is only as exact as its
  tolerances (primal and dual feasibility 1e-7, MIP feasibility 1e-6, on rows of size up to S; absolute gap
  1e-6), so the true minimum may lie below ``lo - delta`` and the property be violated: the label would be wrong
  the other way, and a falsifying run could find (or, on onnxruntime's float32 outputs, seem to find) a
  counterexample, a false alarm judged ``wrong``. So such an instance (``Instance.proof_only_pair``) runs only
  in proof-only configurations (``general.proof_only=true`` is added to whatever was drawn or forced), where
  ``sat`` cannot happen; ``unsat`` and ``unknown`` are both accepted and the pair counts only in the statistics
  (per family and delta kind; not among the decidable pairs below). On ``point`` boxes its label is exact
  (``lo = hi`` by float64 evaluation), but it runs the same way.

``decimal`` boxes: the MILP runs over the exact box (lower == upper == the decimal's float64 for fixed inputs),
i.e. the real-arithmetic question a VNN-LIB 1.0 file asks and bnb decides, so the labels hold as above. The box
holds no float32 point, so a ``sat`` can only rest on bnb's exact-point witness (``x`` the exact point, ``x32``
its float32 rounding, a proven ``real_margin``).

``v2f32`` queries (float32 semantics; their bounds are float32 numbers): ``unsat`` label: every real point of the
box misses every polytope by ``delta >= 1e-5 S``, and a float32 evaluation at a float32 point of the box errs by
at most ~5e-6 M (above), so no float32 input's onnxruntime output reaches a polytope: ``sat`` is wrong. ``sat``
label: the real point attaining ``hi`` reaches a polytope by ``delta``; rounding it to the nearest float32 point
(inside the box, the bounds being float32) moves each input by at most 6e-8 of its magnitude, so the outputs by
at most 6e-8 M, and the float32 evaluation adds at most ~5e-6 M: together below ``1e-5 S``, so a float32 input
whose onnxruntime output reaches the polytope exists and ``unsat`` is wrong. The delta labels hold under both
semantics.

Witnesses: every ``sat`` verdict's counterexample is checked (``check_witness``); one that fails makes the
verdict wrong. ``x`` must lie in a box (float64 comparison with the written bounds, so a fixed decimal input
equals the decimal exactly) and reach one of its polytopes on the float64 ground-truth network within ``1e-5
|C| (1 + M)`` (the tolerance ``check_onnx`` allows between the ONNX file and the float64 network). A float32
witness (``x32`` unset, always on ``v2f32``): ``x`` is a float32 number and onnxruntime's output at ``x`` (one
point per run) satisfies the polytope exactly. An exact-point witness (``x32`` set; never on ``v2f32``): ``x32``
is ``x`` rounded to float32, onnxruntime at ``x32`` violates within 1e-4 (VNN-COMP's tolerance), ``real_margin``
is negative and not below the float64 margin at ``x`` (beyond 1e-9 |C| (1 + M)).

Activations (``--act``): the chain networks' activation, ``relu`` by default (everything above), or ``sigmoid``,
``tanh``, ``softplus``, ``leaky_relu`` (slope 0.25), or ``mixed`` (one drawn per instance from its own random
stream, so the ReLU draws are those of a ReLU-only run). A MILP cannot encode these activations, so their ground
truth is :func:`smooth_ground_truth`: ``hi`` is ``g`` at the best point that 2,000 samples and projected gradient
descent find (a real point of the box, evaluated in float64: the ``sat`` label is exact, delta above a value the
network attains), ``lo`` a certified interval branch and bound over the inputs (float64 interval products widened
by 1e-9 relative, the monotone activation at the ends widened by 1e-12; 300 bisections of the worst sub-box), so
the ``unsat`` label holds but may lie far below the true minimum (easier than the MILP's). Both are sharpened by
the piecewise-linear sandwich MILP (:func:`_sandwich_min`: :data:`SANDWICH_PIECES` pieces per neuron, exact for
LeakyReLU; skipped past :data:`SANDWICH_LIMIT` seconds or :data:`SANDWICH_MAX_BINARIES` binaries): ``lo`` is the
larger of the two lower bounds (the sandwich's valid up to HiGHS's tolerances, as the ReLU MILP's: so a ``hair``
unsat pair runs proof-only, as there)
and ``hi`` the smaller of the search's value and ``g`` at the sandwich's argmin (a real point). Each label records
its oracle (``Instance.oracle``: ``interval`` / ``sandwich`` for ``unsat``, ``search`` / ``sandwich`` for ``sat``;
``milp`` for ReLU), counted in the summary's family table. Only chains (a DAG's
ground truth rests on the ReLU pair identity), never the ``v2f32`` route (bnb refuses float32 queries on these
activations), and configurations that refuse them by name (ReLU / partition branching) are
replaced by the nearest that applies (:data:`NON_RELU_SUBSTITUTE`); ``mn-crown`` runs there with the multi-input
hull cuts of :mod:`relaxations.hull_cuts` (no cuts on ``leaky_relu`` layers). ``tests/test_fuzz.py`` runs a mixed draw.

Configurations: per instance ``--configs`` (default 3) are drawn from the grid ``general.proof_only`` (true with
probability 0.65) x ``attack.enabled`` (true 0.4) x ``bounds.method`` (ibp crown dp0 dp1 alpha beta mn-crown) x
``bab.branching`` (input relu partition activation) x ``general.dtype`` (float32 float64) x ``bab.input_method``
(crown alpha) x ``bounds.mn_cuts`` (hull anderson both: where mn-crown's constraints come from) x
``bab.retighten_depth`` (0 3) x ``bab.polytopes`` (joint each) x ``bab.activation_method`` (crown alpha beta) x
``bab.activation_heuristic`` (gap-gain gap interval) x ``bab.activation_retighten_depth`` (0 3) (activation
splitting runs on ReLU networks too: splits at 0),
with small attack settings. ``--proof-only`` puts every configuration in proof-only mode.

Proof-only configurations (``general.proof_only``, docs/soundness.md): no falsification anywhere, so an unsound
bound cannot hide behind a counterexample found first (inside branch and bound, where ``attack.enabled=false``
does not reach). There any ``sat`` is wrong whatever the label (the mode leaked), and so is the error bnb raises
when its engine asks for a replay (``judge``). A ``sat``-labelled pair can only end ``unknown`` / ``timeout``
there, and input splitting runs to the time limit; such pairs, and the ``hair`` unsat ones, get
``--short-timeout`` (default 0.5 s) instead of ``--timeout`` (``Instance.undecidable``). The falsifying
configurations (a third of the draws) still check every ``sat`` witness.

Decidedness: a verifier answering ``unknown`` to everything would never be wrong. A pair is *decidable* when its
delta is ``clear`` (1e-3 S, far from every tolerance) and the configuration can reach its label (a ``sat`` label
needs falsification, so not in proof-only mode); it is *decided* when the verdict is the label (and ``ok``). The
summary prints decided / decidable overall and per network kind, box kind, delta kind, route and mode, and the
skipped draws with their reasons; ``--min-decided FRACTION`` makes the run exit 1 below that share. On
``--n 80 --seed 2024 --configs 3 --timeout 3`` (the test's draw) 92 of 96 decidable pairs were decided;
``tests/test_fuzz.py`` requires 80 %, and at most 10 % of the draws skipped (``MAX_SKIPPED``).

Commands
--------
    python benchmarks/fuzz.py --quick                          # 100 instances, 300 pairs
    python benchmarks/fuzz.py --n 10000 --seed 1 --jobs 2 --configs 1 --proof-only --min-decided 0.8 \
        --out fuzz.csv --keep fuzz_wrong
        # the soundness run: 10,000 instances (5,000 draws x 2 labels), one configuration each, all in
        # proof-only mode; the 5,000 sat-labelled pairs can only end unknown/timeout and get the 0.5 s short
        # timeout, the unsat ones mostly end in 0.05-0.1 s. Measured on --n 200 --seed 5 with the same flags:
        # 200 pairs in 66.5 s on one core of a machine at load 5-7 (56 s inside verify: 43.6 s in the 100
        # sat-labelled pairs, 12.6 s in the unsat ones, 3.3 s MILP), i.e. ~0.27-0.33 s per pair and
        # ~23-28 min for 10,000 pairs with --jobs 2 on 2 idle cores (the short timeouts are wall-clock, so
        # they do not shrink on an idle machine). The full run: 9,980 pairs in 1,300 s with --jobs 2, load 4-7
        # (docs/soundness.md).
    python benchmarks/fuzz.py --n 10000 --seed 1 --jobs 2 --out fuzz.csv --keep fuzz_wrong
        # the mixed grid, 3 configurations per instance (30,000 verify calls, two thirds proof-only)
    python benchmarks/fuzz.py --seed 0 --instance 17 --set bounds.method=crown --set attack.enabled=false
        # reproduce one instance with one configuration (printed for every wrong/error pair)
    python benchmarks/fuzz.py --n 150 --box decimal           # only boxes with non-float32 fixed inputs
    python benchmarks/fuzz.py --n 150 --v2-float32 1           # every eligible draw as a float32 2.0 query

The summary counts verdicts and decided pairs per network, box and delta kind, route and mode (``exact``: sat
verdicts resting on exact-point witnesses, all checked), and the skipped draws.

Exit code 1 when any verdict is wrong or fewer than ``--min-decided`` of the decidable pairs are decided, 0
otherwise (errors are reported but do not change it).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NET_KINDS = ("dense", "sparse", "conv", "residual", "concat")
BOX_KINDS = ("box", "point", "zero_some", "one_free", "ulps", "far", "decimal", "mixed")
SPEC_KINDS = ("row", "poly", "disj", "multibox")
DELTA = {"clear": (1e-3, 0.0), "tight": (1e-5, 0.0), "hair": (1e-10, 1e-6)}  # delta = rel S + abs
DELTA_P = (0.5, 0.25, 0.25)  # how often each delta kind is drawn (clear pairs carry the decidedness count)
MILP_ACCEPT = 1e-7  # hi - lo must be below this times S
WITNESS_TOL = 1e-5  # a sat witness's float64 margin may exceed 0 by this times |C| (1 + M) (as check_onnx)
ONNX_ATOL = 1e-4    # an exact-point witness's float32 point: onnxruntime margin at most this (VNN-COMP's atol)
V2_FLOAT32 = 0.25   # default share of eligible draws (all bounds float32) written as float32 VNN-LIB 2.0 queries
ROUTES = ("v1", "v2f32")
# activations of the chain networks (--act; relu by default, "mixed" draws one per instance); the non-ReLU ones get
# a sampled/PGD upper and an interval branch-and-bound lower ground truth (smooth_ground_truth), not the MILP
ACTIVATIONS = ("relu", "sigmoid", "tanh", "softplus", "leaky_relu")
ONNX_ACT = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus", "leaky_relu": "LeakyRelu"}
LEAKY_ALPHA = 0.25  # a float32 number: the ONNX attribute and the ground truth hold the same slope
GT_SPLITS = 300     # interval branch and bound of the smooth ground truth: sub-boxes bounded per (box, polytope)
SANDWICH_PIECES = 4  # pieces per smooth neuron of the smooth ground truth's sandwich MILP
SANDWICH_LIMIT = 5.0  # seconds per sandwich MILP; past it the interval bound and the search stand alone
SANDWICH_MAX_BINARIES = 100  # larger sandwich MILPs are not tried (they rarely finish within the limit)
ORACLES = ("milp", "interval", "sandwich", "search")  # where a label's value comes from (Instance.oracle)
PROOF_ONLY_P = 0.65  # share of sampled configurations in proof-only mode (general.proof_only: no falsification)
SHORT_TIMEOUT = 0.5  # default time limit of a pair whose only correct answers are unknown/timeout (see run_index)
MAX_SKIPPED = 0.1    # a run with more skipped draws than this share says so (the tests fail on it)
GRID = {
    "general.proof_only": ("true", "false"),
    "attack.enabled": ("true", "false"),
    "bounds.method": ("ibp", "crown", "dp0", "dp1", "alpha", "beta", "mn-crown"),
    "bab.branching": ("input", "relu", "partition", "activation"),
    "general.dtype": ("float32", "float64"),
    "bab.input_method": ("crown", "alpha"),
    "bounds.mn_cuts": ("hull", "anderson", "both"),
    "bab.retighten_depth": ("0", "3"),
    "bounds.mn_tighten": ("false", "true"),
    "bounds.sign_refine": ("false", "true"),
    "bab.clauses": ("false", "true"),
    "bab.polytopes": ("joint", "each"),
    "bab.mn_children_gain": ("0", "0.25", "1"),
    "bab.relu_heuristic": ("babsr", "babsr-gamma", "acs"),
    "bab.activation_method": ("crown", "alpha", "beta"),
    "bab.activation_heuristic": ("gap-gain", "gap", "interval"),
    "bab.activation_retighten_depth": ("0", "3"),
}
FIXED = ("attack.samples=256", "attack.restarts=8", "attack.steps=20", "general.device=cpu",
         "general.threads=1")


# ------------------------------------------------------------------------------------------- networks
@dataclass
class Net:
    """A ReLU network as float64 dense affine blocks (ReLU between consecutive blocks) plus its ONNX form.

    ``layers``: the ONNX-level description, list of ("conv", W, b, stride, pad) / ("relu",) / ("flatten",) /
    ("linear", W, b), all arrays holding float32 values. ``blocks``: [(W, b)] float64 dense maps.
    """
    kind: str
    in_shape: tuple
    layers: list
    blocks: list = field(default_factory=list)
    graph: list | None = None  # DAG kinds: [(op, out, ins, *params)] on named 1-D tensors ("input" first)
    act: str = "relu"          # the activation of every ("relu",) step: one of ACTIVATIONS (chains only)

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return self.blocks[-1][0].shape[0]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Exact-as-float64 outputs ``(N, n_out)`` for flat inputs ``(N, n_in)``."""
        h = np.atleast_2d(np.asarray(x, np.float64))
        for i, (W, b) in enumerate(self.blocks):
            h = h @ W.T + b
            if i < len(self.blocks) - 1:
                h = activate(self.act, h)
        return h


def activate(act: str, h: np.ndarray) -> np.ndarray:
    """The activation ``act`` in float64 (numpy's exp/log1p: within a few 1e-16 relative, far inside every delta)."""
    if act == "relu":
        return np.maximum(h, 0.0)
    if act == "leaky_relu":
        return np.where(h >= 0, h, LEAKY_ALPHA * h)
    if act == "sigmoid":
        e = np.exp(-np.abs(h))
        return np.where(h >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    if act == "tanh":
        return np.tanh(h)
    if act == "softplus":
        return np.maximum(h, 0.0) + np.log1p(np.exp(-np.abs(h)))
    raise ValueError(act)


def _f32(a):
    return np.asarray(a, np.float32).astype(np.float64)


def _conv_dense(W, b, in_shape, stride, pad):
    """The dense (float64) matrix of a 2-D convolution on flat NCHW inputs."""
    import torch
    n = int(np.prod(in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    out = torch.nn.functional.conv2d(eye, torch.from_numpy(W), None, stride=stride, padding=pad)
    out_shape = tuple(out.shape[1:])
    M = out.reshape(n, -1).T.numpy().copy()
    bias = np.repeat(b, out_shape[1] * out_shape[2])
    return M, bias, out_shape


def _make_blocks(layers, in_shape):
    blocks, W, b = [], np.eye(int(np.prod(in_shape))), np.zeros(int(np.prod(in_shape)))
    shape = tuple(in_shape)
    for layer in layers:
        if layer[0] == "linear":
            W, b = layer[1] @ W, layer[1] @ b + layer[2]
            shape = (layer[1].shape[0],)
        elif layer[0] == "conv":
            M, cb, shape = _conv_dense(layer[1], layer[2], shape, layer[3], layer[4])
            W, b = M @ W, M @ b + cb
        elif layer[0] == "relu":
            blocks.append((W, b))
            n = W.shape[0]
            W, b = np.eye(n), np.zeros(n)
        elif layer[0] == "flatten":
            shape = (int(np.prod(shape)),)
    blocks.append((W, b))
    return blocks


def _weights(rng, n_out, n_in, scale, sparse):
    W = rng.normal(0, scale / np.sqrt(n_in), (n_out, n_in))
    if sparse:
        W[rng.random(W.shape) < rng.uniform(0.6, 0.9)] = 0.0
    return W


def _bias(rng, n, scale, big, sparse, W, reach):
    b = rng.normal(0, scale * (rng.uniform(5, 50) if big else 0.3), n)
    if sparse:  # some neurons dead (large negative bias) or always active (large positive bias)
        mag = np.abs(W).sum(axis=1) * reach + 1.0
        pick = rng.random(n)
        b = np.where(pick < 0.15, -3 * mag, np.where(pick > 0.85, 3 * mag, b))
    return b


def random_net(rng, kind=None) -> Net:
    kind = kind or rng.choice(NET_KINDS)
    if kind in ("residual", "concat"):
        return random_dag(rng, str(kind))
    scale = float(10 ** rng.uniform(-1, 1))
    big = rng.random() < 0.25
    sparse = kind == "sparse"
    layers = []
    if kind == "conv":
        in_shape = (1, 4, 4) if rng.random() < 0.5 else (2, 5, 5)
        c_out = int(rng.integers(1, 4))
        k = int(rng.integers(2, 4))
        stride, pad = int(rng.integers(1, 3)), int(rng.integers(0, 2))
        W = _f32(rng.normal(0, scale / np.sqrt(in_shape[0] * k * k), (c_out, in_shape[0], k, k)))
        b = _f32(rng.normal(0, scale * (rng.uniform(5, 50) if big else 0.3), c_out))
        layers += [("conv", W, b, stride, pad), ("relu",), ("flatten",)]
        _, _, shape = _conv_dense(W, b, in_shape, stride, pad)
        width = int(np.prod(shape))
        hidden = [int(rng.integers(2, 11))] if rng.random() < 0.5 else []
    else:
        in_shape = (int(rng.integers(1, 13)),)
        width = in_shape[0]
        hidden = [int(rng.integers(2, 21)) for _ in range(int(rng.integers(1, 5)))]
    n_out = int(rng.integers(1, 5))
    for h in hidden:
        W = _weights(rng, h, width, scale, sparse)
        layers += [("linear", _f32(W), _f32(_bias(rng, h, scale, big, sparse, W, 1.0))), ("relu",)]
        width = h
    W = _weights(rng, n_out, width, scale, sparse)
    layers.append(("linear", _f32(W), _f32(rng.normal(0, scale * (rng.uniform(5, 50) if big else 0.3), n_out))))
    net = Net(str(kind), tuple(in_shape), layers)
    net.blocks = _make_blocks(layers, in_shape)
    return net


def random_dag(rng, kind) -> Net:
    """A small residual or concatenating DAG (see NET_KINDS) with float32 weights; ``blocks`` from
    :func:`_dag_blocks`."""
    scale = float(10 ** rng.uniform(-1, 1))
    big = rng.random() < 0.25
    n = int(rng.integers(1, 7))
    graph, widths = [], {"input": n}

    def linear(out, inp, m):
        W = _f32(_weights(rng, m, widths[inp], scale, False))
        graph.append(("linear", out, [inp], W, _f32(rng.normal(0, scale * (rng.uniform(5, 50) if big else 0.3), m))))
        widths[out] = m

    def relu(out, inp):
        graph.append(("relu", out, [inp]))
        widths[out] = widths[inp]

    w = int(rng.integers(2, 11))
    linear("a", "input", w)
    relu("h", "a")
    if kind == "residual":
        linear("b", "h", n)
        graph.append(("add", "s", ["b", "input"]))      # residual onto the input
        widths["s"] = n
        relu("t", "s")
        linear("c", "t", n)
        relu("cr", "c")
        graph.append(("add", "u", ["cr", "t"]))         # residual onto a ReLU output
        widths["u"] = n
        last = "u"
    else:
        k0 = int(rng.integers(0, n))
        k1 = int(rng.integers(k0 + 1, n + 1))
        graph.append(("slice", "xs", ["input"], k0, k1))
        widths["xs"] = k1 - k0
        linear("g", "xs", int(rng.integers(2, 6)))
        relu("gr", "g")
        graph.append(("concat", "cat", ["h", "gr", "input"]))
        widths["cat"] = widths["h"] + widths["gr"] + n
        linear("m", "cat", int(rng.integers(2, 8)))
        relu("mr", "m")
        last = "mr"
    linear("out", last, int(rng.integers(1, 5)))
    net = Net(kind, (n,), [], graph=graph)
    net.blocks = _dag_blocks(graph, n, "out")
    x = rng.normal(0, 2, (16, n))  # the chain form computes the graph (a harness self-check)
    ref = dag_forward(graph, x)["out"]
    if not np.allclose(net.forward(x), ref, rtol=1e-9, atol=1e-9 * (1 + np.abs(ref).max())):
        raise AssertionError("the DAG's chain form disagrees with the graph")
    return net


def dag_forward(graph, x) -> dict:
    """Every tensor of ``graph`` at the points ``x`` ``(N, n_in)``, float64, evaluated node by node."""
    v = {"input": np.atleast_2d(np.asarray(x, np.float64))}
    for op, out, ins, *p in graph:
        a = [v[i] for i in ins]
        if op == "linear":
            v[out] = a[0] @ p[0].T + p[1]
        elif op == "relu":
            v[out] = np.maximum(a[0], 0.0)
        elif op == "add":
            v[out] = a[0] + a[1]
        elif op == "concat":
            v[out] = np.concatenate(a, axis=1)
        elif op == "slice":
            v[out] = a[0][:, p[0]:p[1]]
    return v


def _dag_blocks(graph, n_in, out):
    """The DAG as dense blocks with a ReLU between consecutive blocks: each tensor is an affine map
    ``(E, e)`` of the last ReLU layer's output; at a ReLU node the next layer holds the node's input and, for
    every other tensor still needed, ``t`` and ``-t``, so that afterwards ``t = relu(t) - relu(-t)``."""
    uses = Counter(i for _, _, ins, *_ in graph for i in ins)
    uses[out] += 1
    expr = {"input": (np.eye(n_in), np.zeros(n_in))}
    blocks = []
    for op, name, ins, *p in graph:
        for i in ins:
            uses[i] -= 1
        E = [expr[i] for i in ins]
        if op == "linear":
            expr[name] = (p[0] @ E[0][0], p[0] @ E[0][1] + p[1])
        elif op == "add":
            expr[name] = (E[0][0] + E[1][0], E[0][1] + E[1][1])
        elif op == "concat":
            expr[name] = (np.vstack([e[0] for e in E]), np.concatenate([e[1] for e in E]))
        elif op == "slice":
            expr[name] = (E[0][0][p[0]:p[1]], E[0][1][p[0]:p[1]])
        elif op == "relu":
            kept = [k for k in expr if uses[k] > 0]
            rows = [E[0]] + [(sg * expr[k][0], sg * expr[k][1]) for k in kept for sg in (1.0, -1.0)]
            blocks.append((np.vstack([r[0] for r in rows]), np.concatenate([r[1] for r in rows])))
            total = blocks[-1][0].shape[0]
            I = np.eye(total)
            m = E[0][0].shape[0]
            new = {name: (I[:m], np.zeros(m))}
            pos = m
            for k in kept:
                w = expr[k][0].shape[0]
                new[k] = (I[pos:pos + w] - I[pos + w:pos + 2 * w], np.zeros(w))
                pos += 2 * w
            expr = new
        expr = {k: e for k, e in expr.items() if uses[k] > 0 or k == name}
    blocks.append(expr[out])
    return blocks


def _write_dag_onnx(net: Net):
    """ONNX nodes and initialisers of a DAG net (Gemm / Relu / Add / Concat / Slice)."""
    from onnx import helper, numpy_helper
    nodes, inits = [], []
    for i, (op, out, ins, *p) in enumerate(net.graph):
        if op == "linear":
            inits += [numpy_helper.from_array(p[0].astype(np.float32), f"W{i}"),
                      numpy_helper.from_array(p[1].astype(np.float32), f"b{i}")]
            nodes.append(helper.make_node("Gemm", [ins[0], f"W{i}", f"b{i}"], [out], transB=1))
        elif op == "relu":
            nodes.append(helper.make_node("Relu", ins, [out]))
        elif op == "add":
            nodes.append(helper.make_node("Add", ins, [out]))
        elif op == "concat":
            nodes.append(helper.make_node("Concat", ins, [out], axis=1))
        elif op == "slice":
            for nm, v in (("st", p[0]), ("en", p[1]), ("ax", 1)):
                inits.append(numpy_helper.from_array(np.array([v], np.int64), f"{nm}{i}"))
            nodes.append(helper.make_node("Slice", [ins[0], f"st{i}", f"en{i}", f"ax{i}"], [out]))
    nodes.append(helper.make_node("Identity", ["out"], ["output"]))
    return nodes, inits


def write_onnx(net: Net, path) -> Path:
    """The network as a float32 ONNX model (Conv / Relu / Flatten / Gemm nodes, opset 13)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = _write_dag_onnx(net) if net.graph is not None else ([], [])
    cur, shape = "input", net.in_shape
    for i, layer in enumerate(net.layers):
        out = f"t{i}"
        if layer[0] == "linear":
            if len(shape) != 1:
                raise ValueError("linear layer on an unflattened tensor")
            inits += [numpy_helper.from_array(layer[1].astype(np.float32), f"W{i}"),
                      numpy_helper.from_array(layer[2].astype(np.float32), f"b{i}")]
            nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [out], transB=1))
            shape = (layer[1].shape[0],)
        elif layer[0] == "conv":
            W = layer[1]
            inits += [numpy_helper.from_array(W.astype(np.float32), f"W{i}"),
                      numpy_helper.from_array(layer[2].astype(np.float32), f"b{i}")]
            p, s = layer[4], layer[3]
            nodes.append(helper.make_node("Conv", [cur, f"W{i}", f"b{i}"], [out], kernel_shape=list(W.shape[2:]),
                                          strides=[s, s], pads=[p, p, p, p]))
            _, _, shape = _conv_dense(W, layer[2], shape, s, p)
        elif layer[0] == "relu":
            extra = {"alpha": LEAKY_ALPHA} if net.act == "leaky_relu" else {}
            nodes.append(helper.make_node(ONNX_ACT[net.act], [cur], [out], **extra))
        elif layer[0] == "flatten":
            nodes.append(helper.make_node("Flatten", [cur], [out], axis=1))
            shape = (int(np.prod(shape)),)
        cur = out
    if net.graph is None:
        nodes.append(helper.make_node("Identity", [cur], ["output"]))
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            [1, *net.in_shape])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, net.n_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


# ---------------------------------------------------------------------------------------------- boxes
def _ulps_up(x32, k):
    out = np.asarray(x32, np.float32).copy()
    for _ in range(int(k)):
        out = np.nextafter(out, np.float32(np.inf))
    return out


def _decimals(rng, m) -> np.ndarray:
    """``m`` short decimals (1-3 digits after the point, e.g. ``0.1``, ``-2.37``) none of which is a float32
    number: the float64 nearest each decimal, which ``repr`` writes back as the same short decimal."""
    out = np.empty(m)
    for i in range(m):
        scale = 10 ** rng.uniform(-1, 1.5)
        while True:
            v = round(float(rng.normal(0, scale)), int(rng.integers(1, 4)))
            if float(np.float32(v)) != v:
                break
        out[i] = v
    return out


def random_box(rng, n, kind=None):
    """``(lower, upper, kind)`` float64 arrays of length n."""
    kind = kind or str(rng.choice(BOX_KINDS))

    def one(kind, m):
        c = rng.normal(0, 1, m).astype(np.float32)
        if kind == "box":
            w = (10 ** rng.uniform(-2, 0.3, m)).astype(np.float32)
            lo = (c - w / 2).astype(np.float32)
            return _f32(lo), _f32(np.maximum(lo, (c + w / 2).astype(np.float32)))
        if kind == "point":
            return _f32(c), _f32(c)
        if kind == "ulps":
            return _f32(c), _f32(_ulps_up(c, rng.integers(1, 5)))
        if kind == "far":
            cf = (rng.choice([-1, 1], m) * 10 ** rng.uniform(3, 5, m)).astype(np.float32)
            w = np.abs(cf) * 10 ** rng.uniform(-6, -2, m)
            lo = (cf - w / 2).astype(np.float32)
            return _f32(lo), _f32(np.maximum(lo, (cf + w / 2).astype(np.float32)))
        raise AssertionError(kind)

    if kind in ("box", "point", "ulps", "far"):
        lo, hi = one(kind, n)
    elif kind == "zero_some":
        lo, hi = one("box", n)
        fixed = rng.random(n) < rng.uniform(0.3, 0.9)
        hi = np.where(fixed, lo, hi)
    elif kind == "decimal":  # 1..n inputs fixed at decimals with no float32 equal, the rest float32 intervals
        lo, hi = one("box", n)
        fixed = rng.permutation(n)[:int(rng.integers(1, n + 1))]
        lo[fixed] = hi[fixed] = _decimals(rng, fixed.size)
    elif kind == "one_free":
        lo, _ = one("point", n)
        hi = lo.copy()
        hi[int(rng.integers(n))] += 1e-7
    elif kind == "mixed":
        lo, hi = np.empty(n), np.empty(n)
        for i in range(n):
            k = str(rng.choice(["box", "point", "ulps", "far", "tiny", "decimal"]))
            if k == "decimal":
                lo[i] = hi[i] = _decimals(rng, 1)[0]
            elif k == "tiny":
                lo[i] = _f32(rng.normal(0, 1, 1))[0]
                hi[i] = lo[i] + 1e-7
            else:
                lo[i], hi[i] = (a[0] for a in one(k, 1))
    else:
        raise ValueError(f"unknown box kind {kind!r}")
    return lo, hi, kind


# ---------------------------------------------------------------------------------------------- specs
def _row(rng, n_out):
    r = rng.random()
    c = np.zeros(n_out)
    if r < 0.4 or n_out == 1:
        c = np.round(rng.normal(0, 1, n_out), 6) if r < 0.4 else np.array([rng.choice([-1.0, 1.0])])
    elif r < 0.7:
        c[int(rng.integers(n_out))] = rng.choice([-1.0, 1.0])
    else:
        i, j = rng.choice(n_out, 2, replace=False)
        c[i], c[j] = 1.0, -1.0
    if not np.any(c):
        c[0] = 1.0
    return c


def random_spec(rng, net: Net, box, kind=None):
    """``(boxes, polys, kind)``: boxes [(lo, hi)], polys[b] = [(C, d0)] for box b (before the shift)."""
    kind = kind or str(rng.choice(SPEC_KINDS))
    boxes = [box]
    if kind == "multibox":
        lo, hi, _ = box
        shift = (hi - lo) + np.abs(lo) * 1e-3 + 0.1
        lo2 = _f32(lo + shift * rng.uniform(-1, 1, lo.size))
        hi2 = np.maximum(lo2, _f32(lo2 + (hi - lo)))
        dec = np.flatnonzero((lo == hi) & (_f32(lo) != lo))  # decimal fixed inputs stay decimal in the second box
        if dec.size:
            lo2[dec] = hi2[dec] = _decimals(rng, dec.size)
        boxes.append((lo2, hi2, box[2]))
    n_poly = int(rng.integers(2, 4)) if kind == "disj" else 1
    polys = []
    for lo, hi, _ in boxes:
        y0 = net.forward(lo + (hi - lo) * rng.random(lo.size))[0]
        ps = []
        for _ in range(n_poly):
            rows = int(rng.integers(2, 4)) if kind == "poly" else int(rng.integers(1, 3)) if kind == "disj" else 1
            C = np.stack([_row(rng, net.n_out) for _ in range(rows)])
            spread = np.abs(C) @ (np.abs(y0) + 1.0)
            d0 = C @ y0 + spread * rng.normal(0, 0.1, rows)
            ps.append((C, d0))
        polys.append(ps)
    return [(lo, hi) for lo, hi, _ in boxes], polys, kind


def _assertions(boxes, polys, x, y, num) -> list[str]:
    """The property's ``assert`` lines: ``x(i)`` / ``y(j)`` name input / output elements, ``num`` writes a
    number; one box with a disjunction of polytopes, or a disjunction over several boxes."""
    def row(c, d):
        terms = [f"(* {num(cj)} {y(j)})" for j, cj in enumerate(c) if cj != 0.0]
        lhs = terms[0] if len(terms) == 1 else "(+ " + " ".join(terms) + ")"
        return f"(<= {lhs} {num(d)})"

    def poly(C, d):
        rows = [row(c, di) for c, di in zip(C, d)]
        return rows[0] if len(rows) == 1 else "(and " + " ".join(rows) + ")"

    def box_atoms(lo, hi):
        return [atom for i, (a, b) in enumerate(zip(lo, hi))
                for atom in (f"(>= {x(i)} {num(a)})", f"(<= {x(i)} {num(b)})")]

    if len(boxes) == 1:
        ps = [poly(C, d) for C, d in polys[0]]
        return ([f"(assert {a})" for a in box_atoms(*boxes[0])]
                + [f"(assert {ps[0]})" if len(ps) == 1 else "(assert (or " + " ".join(ps) + "))"])
    parts = ["(and " + " ".join(box_atoms(lo, hi)) + " " + poly(C, d) + ")"
             for (lo, hi), ps in zip(boxes, polys) for C, d in ps]
    return ["(assert (or " + " ".join(parts) + "))"]


def write_vnnlib(path, boxes, polys, n_out) -> Path:
    """VNN-LIB 1.0: one box with a disjunction of polytopes, or a disjunction over several boxes (numbers with
    float64 round-trip digits)."""
    n_in = boxes[0][0].size
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_out)]
    lines += _assertions(boxes, polys, lambda i: f"X_{i}", lambda j: f"Y_{j}", lambda v: repr(float(v)))
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def _num2(v) -> str:
    """A VNN-LIB 2.0 decimal literal (no exponent) that reads back as the float64 ``v`` exactly."""
    v = float(v)
    return "0.0" if v == 0.0 else np.format_float_positional(v, unique=True, trim="0")


def write_vnnlib2(path, boxes, polys, in_shape, n_out, etype="float32") -> Path:
    """The same property as :func:`write_vnnlib` as a VNN-LIB 2.0 query on one network ``N`` with input
    ``X`` of shape ``[1, *in_shape]`` and output ``Y`` of shape ``[1, n_out]`` (the ONNX tensors), both of
    element type ``etype``. Numbers are written positionally with float64 round-trip digits."""
    shape = (1, *in_shape)
    dims = lambda s: "[" + ",".join(str(int(k)) for k in s) + "]"  # noqa: E731
    lines = ["(vnnlib-version <2.0>)", "(declare-network N",
             f"    (declare-input X {etype} {dims(shape)})", f"    (declare-output Y {etype} {dims((1, n_out))})",
             ")"]
    lines += _assertions(boxes, polys, lambda i: "X[" + ",".join(str(int(k)) for k in np.unravel_index(i, shape)) + "]",
                         lambda j: f"Y[0,{j}]", _num2)
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# ----------------------------------------------------------------------------------------- ground truth
def magnitude(net: Net, boxes) -> np.ndarray:
    """``(n_out,)``: |W| propagated from max(|lower|, |upper|) plus |b|, a bound on every summed term."""
    a = np.max([np.maximum(np.abs(lo), np.abs(hi)) for lo, hi in boxes], axis=0)
    for W, b in net.blocks:
        a = np.abs(W) @ a + np.abs(b)
    return a


def interval_bounds(net: Net, lo, hi):
    """Pre-activation bounds [(l, u)] of every hidden block (float64, widened outward by 1e-9 relative)."""
    out = []
    l, u = lo.astype(np.float64), hi.astype(np.float64)
    for W, b in net.blocks[:-1]:
        Wp, Wm = np.maximum(W, 0), np.minimum(W, 0)
        zl, zu = Wp @ l + Wm @ u + b, Wp @ u + Wm @ l + b
        mag = np.abs(W) @ np.maximum(np.abs(l), np.abs(u)) + np.abs(b)
        zl, zu = zl - 1e-9 * (mag + 1e-30), zu + 1e-9 * (mag + 1e-30)
        out.append((zl, zu))
        l, u = np.maximum(zl, 0), np.maximum(zu, 0)
    return out


class MILPFailed(RuntimeError):
    pass


def margin(net: Net, x, C, d) -> float:
    """``max_i (C f(x) - d)_i`` in float64."""
    return float(np.max(C @ net.forward(x)[0] - d))


def milp_epigraph(net: Net, lo, hi, C, d, time_limit=20.0):
    """``(lower bound, argmin)`` of ``min_x max_i (C f(x) - d)_i`` over the box, by a big-M MILP.

    Variables: x, then per hidden layer the post-activations y and one binary per unstable neuron, then t.
    ``y = relu(z)`` with ``z = W h + b``, ``l <= z <= u``: inactive neurons ``y = 0``; active ``y = z``; unstable
    ``y >= 0, y >= z, y <= z - l (1 - a), y <= u a``. Objective ``t`` with ``t >= C_i (W_L h + b_L) - d_i``.
    """
    import scipy.sparse as sp
    from scipy.optimize import Bounds, LinearConstraint, milp

    pre = interval_bounds(net, lo, hi)
    n_in = lo.size
    sizes = [W.shape[0] for W, _ in net.blocks[:-1]]
    n_bin = [int(np.sum((l < 0) & (u > 0))) for l, u in pre]
    n_var = n_in + sum(sizes) + sum(n_bin) + 1
    lb = np.full(n_var, -np.inf)
    ub = np.full(n_var, np.inf)
    lb[:n_in], ub[:n_in] = lo, hi
    integ = np.zeros(n_var)
    rows, lo_c, hi_c = [], [], []

    def add(coefs: dict, low, high):
        """coefs: {var offset start: array of coefficients (n_rows, len)} -> rows of the constraint matrix."""
        M = sp.lil_matrix((next(iter(coefs.values())).shape[0], n_var))
        for start, A in coefs.items():
            M[:, start:start + A.shape[1]] = A
        rows.append(M.tocsr())
        lo_c.append(np.broadcast_to(low, M.shape[0]))
        hi_c.append(np.broadcast_to(high, M.shape[0]))

    h_start = 0
    pos = n_in
    bin_pos = n_in + sum(sizes)
    for (W, b), (l, u) in zip(net.blocks[:-1], pre):
        n = W.shape[0]
        y0 = pos
        lb[y0:y0 + n], ub[y0:y0 + n] = 0.0, np.maximum(u, 0.0)
        act, ina, uns = l >= 0, u <= 0, (l < 0) & (u > 0)
        I = np.eye(n)
        if act.any():  # y - W h = b
            add({y0: I[act], h_start: -W[act]}, b[act], b[act])
        if ina.any():
            ub[y0:y0 + n][ina] = 0.0
        if uns.any():
            k = int(uns.sum())
            Wu, bu, lu, uu, Iu = W[uns], b[uns], l[uns], u[uns], I[uns]
            bins = bin_pos
            lb[bins:bins + k], ub[bins:bins + k], integ[bins:bins + k] = 0.0, 1.0, 1.0
            add({y0: Iu, h_start: -Wu}, bu, np.inf)                           # y >= z
            add({y0: Iu, h_start: -Wu, bins: -np.diag(lu)}, -np.inf, bu - lu)   # y <= z - l + l a
            add({y0: Iu, bins: -np.diag(uu)}, -np.inf, 0.0)                   # y <= u a
            bin_pos += k
        h_start = y0
        pos += n
    W, b = net.blocks[-1]
    t = n_var - 1
    CW, Cb = C @ W, C @ b - d
    add({t: np.ones((C.shape[0], 1)), h_start: -CW}, Cb, np.inf)            # t - C W h >= C b - d
    cost = np.zeros(n_var)
    cost[t] = 1.0
    A = sp.vstack(rows).tocsr()
    cons = LinearConstraint(A, np.concatenate(lo_c), np.concatenate(hi_c))
    for presolve in (True, False):  # HiGHS's presolve can call boxes a few ulps wide infeasible; retry without
        res = milp(cost, integrality=integ, bounds=Bounds(lb, ub), constraints=cons,
                   options=dict(time_limit=time_limit, mip_rel_gap=1e-9, presolve=presolve))
        if res.status == 0 and res.x is not None:
            break
    if res.status != 0 or res.x is None:
        raise MILPFailed(f"MILP ended with status {res.status}: {res.message}")
    dual = getattr(res, "mip_dual_bound", None)
    lower = float(res.fun if dual is None or not np.isfinite(dual) else min(dual, res.fun))
    return lower, np.clip(res.x[:n_in], lo, hi)


@dataclass
class Instance:
    seed: int
    index: int
    net: Net
    boxes: list
    polys: list          # per box: [(C, d)] with d already shifted to the label
    label: str           # "sat" | "unsat"
    delta_kind: str
    box_kind: str
    spec_kind: str
    value: float         # min_x g(x) after the shift (sat: -delta, unsat: >= +delta)
    milp_time: float = 0.0
    route: str = "v1"    # "v1": a VNN-LIB 1.0 file (real semantics); "v2f32": a float32-typed VNN-LIB 2.0 query
    oracle: str = "milp"  # the ground truth the label's value comes from (ORACLES)

    @property
    def kind(self) -> str:
        net = self.net.kind if self.net.act == "relu" else f"{self.net.kind}-{self.net.act}"
        return f"{net}/{self.box_kind}/{self.spec_kind}/{self.delta_kind}"

    @property
    def proof_only_pair(self) -> bool:
        """The label is not certain enough to judge a ``sat``: an ``unsat`` label with the ``hair`` delta rests on
        HiGHS's dual bound ``lo`` within its tolerances (module docstring), so this instance runs only in
        proof-only configurations, where it counts toward the decidedness statistics and nothing else."""
        return self.label == "unsat" and self.delta_kind == "hair"

    def undecidable(self, proof_only: bool) -> bool:
        """No verdict but ``unknown`` / ``timeout`` can be both correct and judged: a ``sat`` label in a
        proof-only configuration, or a :attr:`proof_only_pair`. Such a pair gets the short timeout."""
        return (self.label == "sat" and proof_only) or self.proof_only_pair

    def decidable(self, proof_only: bool) -> bool:
        """The pair counts toward the decided fraction: a ``clear`` delta (1e-3 S, far from every tolerance)
        and a label the configuration can reach (``sat`` needs falsification)."""
        return self.delta_kind == "clear" and not (self.label == "sat" and proof_only)


def ground_truth(net: Net, boxes, polys):
    """``(lo, hi, S)`` of ``min_x g(x)`` (see the module docstring); raises MILPFailed."""
    lows, highs = [], []
    for (lo, hi), ps in zip(boxes, polys):
        for C, d in ps:
            if np.all(lo == hi):
                v = margin(net, lo, C, d)
                lows.append(v)
                highs.append(v)
            else:
                low, x = milp_epigraph(net, lo, hi, C, d)
                lows.append(low)
                highs.append(margin(net, x, C, d))
    M = magnitude(net, boxes)
    v_lo, v_hi = min(lows), min(highs)
    S = 1.0 + abs(v_hi) + max(float(np.max(np.abs(C) @ M + np.abs(d))) for ps in polys for C, d in ps)
    if v_hi - v_lo > MILP_ACCEPT * S:
        raise MILPFailed(f"MILP inexact: argmin value {v_hi!r} vs lower bound {v_lo!r} (S {S:.3g})")
    return v_lo, v_hi, S


def _interval(net: Net, l, u):
    """Interval bounds ``(N, n_out)`` of the network's outputs over boxes ``(N, n_in)``: float64 centre-radius
    products widened by 1e-9 relative (as :func:`interval_bounds`), each monotone activation at the ends widened
    by 1e-12 relative (numpy's exp/log1p/tanh err by a few 1e-16). Independent of bnb's code."""
    for i, (W, b) in enumerate(net.blocks):
        c, r = (u + l) / 2, (u - l) / 2
        zc, zr = c @ W.T + b, r @ np.abs(W).T
        mag = np.maximum(np.abs(l), np.abs(u)) @ np.abs(W).T + np.abs(b)
        l, u = zc - zr - 1e-9 * (mag + 1e-30), zc + zr + 1e-9 * (mag + 1e-30)
        if i < len(net.blocks) - 1:
            fl, fu = activate(net.act, l), activate(net.act, u)
            l, u = fl - 1e-12 * np.abs(fl) - 1e-300, fu + 1e-12 * np.abs(fu) + 1e-300
    return l, u


def _interval_min(net: Net, lo, hi, C, d) -> float:
    """A certified lower bound of ``min_x max_i (C f(x) - d)_i`` over the box: interval bounds of every row on
    sub-boxes, the worst sub-box bisected along its widest input, :data:`GT_SPLITS` times."""
    boxes = [(lo.astype(np.float64), hi.astype(np.float64))]

    def bound(bl):
        L = np.stack([b[0] for b in bl])
        U = np.stack([b[1] for b in bl])
        yl, yu = _interval(net, L, U)
        Cp, Cm = np.maximum(C, 0), np.minimum(C, 0)
        rows = yl @ Cp.T + yu @ Cm.T - d                                   # (N, rows) lower bounds
        mag = np.maximum(np.abs(yl), np.abs(yu)) @ np.abs(C).T + np.abs(d)
        return (rows - 1e-9 * (mag + 1e-30)).max(axis=1)
    vals = list(bound(boxes))
    for _ in range(GT_SPLITS):
        k = int(np.argmin(vals))
        bl, bu = boxes[k]
        j = int(np.argmax(bu - bl))
        if bu[j] - bl[j] <= 0:
            break
        mid = (bl[j] + bu[j]) / 2
        left, right = (bl, np.where(np.arange(bl.size) == j, mid, bu)), (np.where(np.arange(bl.size) == j, mid, bl), bu)
        boxes[k:k + 1] = [left, right]
        vals[k:k + 1] = list(bound([left, right]))
    return float(min(vals))


def _search_min(net: Net, lo, hi, C, d, seed=0):
    """``(value, x)``: the smallest ``max_i (C f(x) - d)_i`` found by 2000 samples and projected gradient descent
    from the best 16 (float64 torch), the point inside the box; ``value`` evaluated by :meth:`Net.forward`."""
    import torch
    rng = np.random.default_rng(seed)
    x = lo + (hi - lo) * rng.random((2000, lo.size))
    x = np.vstack([x, lo, hi, (lo + hi) / 2])
    g = (net.forward(x) @ C.T - d).max(axis=1)
    start = x[np.argsort(g)[:16]]
    blocks = [(torch.from_numpy(W), torch.from_numpy(b)) for W, b in net.blocks]
    fn = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
          "softplus": torch.nn.functional.softplus,
          "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, LEAKY_ALPHA)}[net.act]
    t_lo, t_hi = torch.from_numpy(lo.astype(np.float64)), torch.from_numpy(hi.astype(np.float64))
    xt = torch.from_numpy(start).requires_grad_(True)
    Ct, dt = torch.from_numpy(C), torch.from_numpy(d)
    for _ in range(40):
        h = xt
        for i, (W, b) in enumerate(blocks):
            h = h @ W.T + b
            if i < len(blocks) - 1:
                h = fn(h)
        val = (h @ Ct.T - dt).max(dim=1).values
        (gr,) = torch.autograd.grad(val.sum(), xt)
        with torch.no_grad():
            xt -= 0.05 * (t_hi - t_lo) * gr.sign()
            xt.copy_(torch.maximum(torch.minimum(xt, t_hi), t_lo))
    pts = np.vstack([x, xt.detach().numpy()])
    g = (net.forward(pts) @ C.T - d).max(axis=1)
    k = int(np.argmin(g))
    return float(g[k]), pts[k]


def _sandwich_min(net: Net, lo, hi, C, d, scale):
    """``(lower bound, g at the MILP's argmin)`` of ``min_x max_i (C f(x) - d)_i`` by the piecewise-linear sandwich
    MILP (:func:`relaxations.milp_sandwich.sandwich_epigraph`, :data:`SANDWICH_PIECES` pieces per neuron, exact for
    LeakyReLU), or None when HiGHS does not finish within :data:`SANDWICH_LIMIT` seconds (or fails) or the MILP
    would need more than :data:`SANDWICH_MAX_BINARIES` binaries. The lower
    bound is lowered by ``MILP_ACCEPT * scale`` for HiGHS's feasibility tolerances (``1e-7`` on rows of size up to
    ``scale``: where the minimum sits at a corner the sandwich is exact there, and HiGHS's value came out up to
    ``4e-9`` above an attained value on 3 of 6 sigmoid draws without it)."""
    from relaxations.milp import MILPNotOptimal
    from relaxations.milp_sandwich import Act, sandwich_epigraph
    act = Act(net.act, LEAKY_ALPHA if net.act == "leaky_relu" else 0.0)
    try:
        low, x = sandwich_epigraph(net.blocks, act, lo, hi, C, d, SANDWICH_PIECES, SANDWICH_LIMIT,
                                   SANDWICH_MAX_BINARIES)
    except MILPNotOptimal:
        return None
    return low - MILP_ACCEPT * scale, margin(net, x, C, d)


def smooth_ground_truth(net: Net, boxes, polys):
    """``(lo, hi, S, sources)`` for a non-ReLU network (a MILP cannot encode its activation exactly): ``hi`` = ``g``
    at the best point found by sampling and gradient descent or at the sandwich MILP's argmin (a real point of a
    box, evaluated in float64: the ``sat`` label is exact, as with the MILP's argmin), ``lo`` = the larger of a
    certified interval branch-and-bound lower bound and the sandwich MILP's lower bound (:func:`_sandwich_min`;
    valid up to HiGHS's tolerances, as the ReLU MILP's), so the ``unsat`` label holds; ``sources``: which oracle
    gave each (``lo``: ``interval`` / ``sandwich``; ``hi``: ``search`` / ``sandwich``)."""
    lows, highs = [], []
    M = magnitude(net, boxes)
    for (lo, hi), ps in zip(boxes, polys):
        for C, d in ps:
            if np.all(lo == hi):
                v = margin(net, lo, C, d)
                lows.append((v - 1e-9 * (1 + abs(v)), "interval"))
                highs.append((v, "search"))
                continue
            low, high = (_interval_min(net, lo, hi, C, d), "interval"), (_search_min(net, lo, hi, C, d)[0], "search")
            sw = _sandwich_min(net, lo, hi, C, d, 1.0 + float(np.max(np.abs(C) @ M + np.abs(d))))
            if sw is not None:
                low = max(low, (sw[0], "sandwich"))
                high = min(high, (sw[1], "sandwich"))
            lows.append(low)
            highs.append(high)
    (v_lo, src_lo), (v_hi, src_hi) = min(lows), min(highs)
    if v_lo > v_hi:
        raise MILPFailed(f"{src_lo} lower bound {v_lo!r} above a sampled value {v_hi!r}: a harness bug")
    S = 1.0 + abs(v_hi) + max(float(np.max(np.abs(C) @ M + np.abs(d))) for ps in polys for C, d in ps)
    return v_lo, v_hi, S, {"lo": src_lo, "hi": src_hi}


def float32_bounds(boxes) -> bool:
    """Every bound of every box is a float32 number (the boxes a float32-typed query may use here)."""
    return all(np.array_equal(a, _f32(a)) for box in boxes for a in box)


def make_instances(seed: int, index: int, kinds=None, v2_float32=0.0):
    """Both labelled instances (sat, unsat) of one random (network, boxes, polytopes) draw.

    Deterministic in ``(seed, index)``. Returns ``([Instance, Instance], None)`` or ``([], reason)``.
    ``kinds``: optional dict with net / box / spec / delta to force a family. ``v2_float32``: the probability
    that a draw whose bounds are all float32 numbers is written as a float32-typed VNN-LIB 2.0 query (drawn
    from its own stream, so the instances themselves do not depend on it).
    """
    kinds = kinds or {}
    act = kinds.get("act") or "relu"
    if act == "mixed":  # its own stream: the ReLU draws stay as they were
        act = str(np.random.default_rng([seed, index, 3]).choice(ACTIVATIONS))
    rng = np.random.default_rng([seed, index])
    net_kind = kinds.get("net")
    if act != "relu":  # chains only (the DAG ground truth carries tensors past a ReLU as relu(t), relu(-t))
        net_kind = net_kind if net_kind in ("dense", "sparse", "conv") else str(rng.choice(["dense", "sparse", "conv"]))
    net = random_net(rng, net_kind)
    net.act = act
    box = random_box(rng, net.n_in, kinds.get("box"))
    boxes, polys0, spec_kind = random_spec(rng, net, box, kinds.get("spec"))
    delta_kind = kinds.get("delta") or str(rng.choice(list(DELTA), p=DELTA_P))
    t0 = time.monotonic()
    try:
        if act == "relu":
            (v_lo, v_hi, S), sources = ground_truth(net, boxes, polys0), {"lo": "milp", "hi": "milp"}
        else:
            v_lo, v_hi, S, sources = smooth_ground_truth(net, boxes, polys0)
    except MILPFailed as e:
        return [], str(e)
    elapsed = time.monotonic() - t0
    rel, absolute = DELTA[delta_kind]
    delta = rel * S + absolute
    # hair deltas only under real semantics (v1): float32 evaluation errs by far more than 1e-6
    v2 = (float32_bounds(boxes) and np.random.default_rng([seed, index, 2]).random() < v2_float32
          and delta_kind != "hair" and act == "relu")  # (float32 queries on other activations are refused)
    out = []
    for label, shift in (("sat", v_hi + delta), ("unsat", v_lo - delta)):
        polys = [[(C, d + shift) for C, d in ps] for ps in polys0]
        out.append(Instance(seed, index, net, boxes, polys, label, delta_kind, box[2], spec_kind,
                            -delta if label == "sat" else v_lo - shift, elapsed / 2, "v2f32" if v2 else "v1",
                            sources["hi" if label == "sat" else "lo"]))
    return out, None


def check_onnx(net: Net, onnx_path, boxes, polys):
    """The ONNX file agrees with the float64 network at the box centres (far inside the deltas)."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    M = magnitude(net, boxes)
    for lo, hi in boxes:
        x = ((lo + hi) / 2).astype(np.float32)
        y = sess.run(None, {"input": x.reshape(1, *net.in_shape)})[0].reshape(-1).astype(np.float64)
        ref = net.forward(x.astype(np.float64))[0]
        if not np.all(np.abs(y - ref) <= 1e-5 * (1 + M)):
            raise AssertionError(f"ONNX file disagrees with the ground-truth network: {y} vs {ref}")


def write_instance(inst: Instance, folder, stem) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = write_onnx(inst.net, folder / f"{stem}.onnx")
    if inst.route == "v2f32":
        vnn_path = write_vnnlib2(folder / f"{stem}.vnnlib", inst.boxes, inst.polys, inst.net.in_shape,
                                 inst.net.n_out, "float32")
    else:
        vnn_path = write_vnnlib(folder / f"{stem}.vnnlib", inst.boxes, inst.polys, inst.net.n_out)
    return onnx_path, vnn_path


# ------------------------------------------------------------------------------------------- running
def sample_configs(rng, k: int) -> list[tuple[str, ...]]:
    """``k`` distinct override tuples drawn from GRID: proof-only mode with probability PROOF_ONLY_P (no
    falsification, so an unsound bound cannot hide behind a counterexample found first), the attack off more
    often than on (it hides bound bugs too)."""
    probs = {"general.proof_only": [PROOF_ONLY_P, 1 - PROOF_ONLY_P], "attack.enabled": [0.4, 0.6]}
    seen, out = set(), []
    for _ in range(50 * k):
        if len(out) == k:
            break
        c = tuple(f"{key}={rng.choice(vals, p=probs.get(key))}" for key, vals in GRID.items())
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


# configurations that refuse non-ReLU networks (tests/test_sshaped.py), replaced by the nearest that applies
NON_RELU_SUBSTITUTE = {"bab.branching=relu": "bab.branching=input", "bab.branching=partition": "bab.branching=input"}

LEAK = "replayed in proof-only mode"  # bnb's message when the engine asks for a replay in proof-only mode


def is_proof_only(overrides) -> bool:
    """Whether a configuration (override strings; the last one for a key wins, as in load_config) is proof-only."""
    value = "false"
    for o in overrides:
        key, _, v = o.partition("=")
        if key == "general.proof_only":
            value = v.strip().lower()
    return value in ("true", "1", "yes")


def with_proof_only(overrides) -> tuple[str, ...]:
    """The configuration in proof-only mode."""
    return tuple(o for o in overrides if not o.startswith("general.proof_only=")) + ("general.proof_only=true",)


def judge(label: str, verdict: str, witness_problem: str | None = None, proof_only: bool = False,
          message: str = "") -> str:
    """"wrong" | "error" | "ok". A ``sat`` whose counterexample fails :func:`check_witness` is wrong; in a
    proof-only configuration any ``sat`` is wrong, whatever the label (the mode leaked: no falsification may run),
    and so is the error bnb raises when its engine asks for a replay there."""
    if proof_only and (verdict == "sat" or (verdict == "error" and LEAK in message)):
        return "wrong"
    if verdict == "error":
        return "error"
    if (label == "sat" and verdict == "unsat") or (label == "unsat" and verdict == "sat"):
        return "wrong"
    if verdict == "sat" and witness_problem:
        return "wrong"
    return "ok"


def onnx_session(onnx_path):
    import onnxruntime as ort
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def onnx_eval(sess, net: Net, x) -> np.ndarray:
    """onnxruntime's output (float64 copy) at the float32 point ``x``, one point per run as a checker runs it."""
    x = np.asarray(x, np.float32).reshape(1, *net.in_shape)
    return sess.run(None, {"input": x})[0].reshape(-1).astype(np.float64)


def check_witness(inst: Instance, ce, sess, float32_semantics: bool) -> str | None:
    """Why the counterexample ``ce`` of a ``sat`` verdict does not show the property violated, or None.

    Always: ``x`` lies in one of the boxes (float64 comparison with the written bounds, so a fixed decimal input
    must equal the decimal exactly) and reaches one of that box's polytopes on the float64 ground-truth network
    within ``WITNESS_TOL (|C| (1 + M))`` (the tolerance :func:`check_onnx` allows between the ONNX file and the
    float64 network, carried through the rows). A float32 witness (``x32`` unset): ``x`` is a float32 number and
    onnxruntime's output at ``x`` satisfies the polytope with no tolerance (``C y <= d``). An exact-point witness
    (``x32`` set; real semantics only, the box holding no float32 point): ``x32`` is ``x`` rounded to float32,
    onnxruntime at ``x32`` violates within ``ONNX_ATOL``, and the proven bound ``real_margin`` (< 0) is not below
    the float64 margin at ``x`` (by more than float64 rounding)."""
    if ce is None:
        return "sat without a counterexample"
    x = np.asarray(ce.x, np.float64).reshape(-1)
    if x.size != inst.net.n_in or not np.all(np.isfinite(x)):
        return f"counterexample of size {x.size} (or not finite) for {inst.net.n_in} inputs"
    inside = [b for b, (lo, hi) in enumerate(inst.boxes) if np.all(lo <= x) and np.all(x <= hi)]
    if not inside:
        out = min(float(np.max(np.maximum(lo - x, x - hi))) for lo, hi in inst.boxes)
        return f"counterexample outside every box (by {out:.3g})"
    exact = ce.x32 is not None
    if exact and float32_semantics:
        return "exact-point (non-float32) witness for a float32 query"
    if not exact and not np.array_equal(x, x.astype(np.float32).astype(np.float64)):
        return "witness without x32 is not a float32 point"
    if exact and not np.array_equal(np.asarray(ce.x32, np.float32), x.astype(np.float32)):
        return "x32 is not x rounded to float32"
    if exact and (ce.real_margin is None or not ce.real_margin < 0):
        return f"exact-point witness without a proven negative real margin ({ce.real_margin})"
    M = magnitude(inst.net, inst.boxes)
    y32 = onnx_eval(sess, inst.net, ce.x32 if exact else x)
    problems = []
    for b in inside:
        for C, d in inst.polys[b]:
            scale = float(np.max(np.abs(C) @ (1.0 + M)))
            m64 = margin(inst.net, x, C, d)
            m32 = float(np.max(C @ y32 - d))
            why = []
            if m64 > WITNESS_TOL * scale:
                why.append(f"float64 margin {m64:.4g} > {WITNESS_TOL * scale:.3g}")
            if exact:
                if m32 > ONNX_ATOL:
                    why.append(f"onnxruntime margin at x32 {m32:.4g} > {ONNX_ATOL:g}")
                if m64 > ce.real_margin + 1e-9 * scale:
                    why.append(f"float64 margin {m64:.4g} above the proven bound {ce.real_margin:.4g}")
            elif m32 > 0.0:
                why.append(f"onnxruntime margin {m32:.4g} > 0")
            if not why:
                return None
            problems.append("; ".join(why))
    return "no polytope reached: " + " | ".join(problems)


def verify_call(onnx_path, spec_path, overrides, timeout, route="v1", certificate=None):
    """``(verdict, seconds, message, counterexample)``; bad-input exceptions count as errors. ``route``
    ``v2f32``: ``spec_path`` is a VNN-LIB 2.0 query, read with bnb's 2.0 reader and passed as a Property.
    ``certificate``: where an unsat answer's proof is written (:func:`check_certificate`)."""
    from bnb.config import load_config
    from bnb.errors import BnbError
    from bnb.pipeline.verify import verify
    cfg = load_config([], list(FIXED) + list(overrides))
    t0 = time.monotonic()
    try:
        if route == "v1":
            spec = str(spec_path)
        else:
            from bnb.io.vnnlib2 import parse_query_text
            spec = parse_query_text(Path(spec_path).read_text(), str(spec_path)).prop
        r = verify(str(onnx_path), spec, cfg, timeout=timeout, certificate=certificate)
        return r.verdict.value, time.monotonic() - t0, r.message, r.counterexample
    except BnbError as e:
        return "error", time.monotonic() - t0, f"bad input: {e}", None
    except Exception as e:  # noqa: BLE001 - a crash is reported, not propagated
        return "error", time.monotonic() - t0, f"crash: {type(e).__name__}: {e}", None


def check_certificate(cert, onnx_path, vnn_path, message) -> str:
    """The independent checker's answer on an unsat pair's certificate: ``accepted``, ``rejected: ...`` (a
    failure: an unsound bound or a logging bug) or ``unsupported: ...`` (what the verifier or the checker cannot
    certify yet); ``exact`` too (``--exact``) on the smallest networks, which must agree."""
    if not Path(cert).exists():
        reason = message.split("certificate: unsupported", 1)[-1] if "unsupported" in message else " (no file)"
        return "unsupported:" + reason
    import certcheck
    res = certcheck.check(str(cert), str(onnx_path), str(vnn_path))
    out = res.status if res.status == "accepted" else f"{res.status}: {res.reason}"
    with np.load(cert, allow_pickle=False) as z:
        neurons = sum(json.loads(bytes(z["manifest"]))["relu_sizes"])
    if res.status == "accepted" and neurons <= CERT_EXACT_NEURONS:
        ex = certcheck.check(str(cert), str(onnx_path), str(vnn_path), exact=True)
        if ex.status != "accepted":
            out = f"rejected: float accepts, --exact says {ex.status}: {ex.reason}"
    return out


CERT_EXACT_NEURONS = 40  # networks with at most this many ReLUs get the checker's exact mode as well


def run_verify(onnx_path, vnn_path, overrides, timeout, route="v1"):
    """``(verdict, seconds, message)`` of :func:`verify_call`."""
    return verify_call(onnx_path, vnn_path, overrides, timeout, route)[:3]


def run_index(seed, index, n_configs=3, timeout=5.0, forced=None, keep=None, kinds=None, workdir=None,
              v2_float32=V2_FLOAT32, proof_only=False, short_timeout=SHORT_TIMEOUT, certificates=False):
    """Generate instance ``index`` (both labels) and verify each under sampled (or ``forced``) configs; every
    ``sat`` verdict's counterexample goes through :func:`check_witness`.

    ``proof_only``: every configuration in proof-only mode; an instance whose label only proof-only mode may use
    (:attr:`Instance.proof_only_pair`) always is. A pair that can only correctly end ``unknown`` / ``timeout``
    (:meth:`Instance.undecidable`: a ``sat`` label in proof-only mode runs to its time limit) gets
    ``min(timeout, short_timeout)``. ``certificates``: every unsat answer (VNN-LIB 1.0 route) writes a certificate,
    checked by the independent checker (:func:`check_certificate`); a rejected one is a failure (status ``cert``).

    Returns ``(rows, skipped_reason)``; each row is a dict (one verify call).
    """
    import torch
    torch.set_num_threads(1)
    try:
        insts, why = make_instances(seed, index, kinds, v2_float32)
    except Exception as e:  # noqa: BLE001 - a harness failure skips the draw, loudly, instead of ending the run
        return [], f"harness failure: {type(e).__name__}: {e}"
    if why:
        return [], why
    rows = []
    crng = np.random.default_rng([seed, index, 1])
    tmp = Path(tempfile.mkdtemp(prefix="fuzz_", dir=workdir))
    try:
        files = []
        for inst in insts:
            stem = f"s{seed}_i{index}_{inst.label}"
            try:
                onnx_path, vnn_path = write_instance(inst, tmp, stem)
                check_onnx(inst.net, onnx_path, inst.boxes, inst.polys)
            except Exception as e:  # noqa: BLE001
                return [], f"harness failure: {type(e).__name__}: {e}"
            files.append((inst, stem, onnx_path, vnn_path))
        for inst, stem, onnx_path, vnn_path in files:
            configs = [tuple(forced)] if forced is not None else sample_configs(crng, n_configs)
            sess = None
            for ov in configs:
                if inst.net.act != "relu":  # what applies to these activations (the others refuse them by name)
                    ov = tuple(NON_RELU_SUBSTITUTE.get(o, o) for o in ov)
                if proof_only or inst.proof_only_pair:
                    ov = with_proof_only(ov)
                po = is_proof_only(ov)
                limit = min(timeout, short_timeout) if inst.undecidable(po) else timeout
                cert_path = tmp / f"{stem}.npz" if certificates and inst.route == "v1" else None
                if cert_path is not None and cert_path.exists():
                    cert_path.unlink()
                verdict, secs, msg, ce = verify_call(onnx_path, vnn_path, ov, limit, inst.route, cert_path)
                cert = ""
                if cert_path is not None and verdict == "unsat":
                    cert = check_certificate(cert_path, onnx_path, vnn_path, msg or "")
                witness = ""
                if verdict == "sat":
                    sess = sess or onnx_session(onnx_path)
                    problem = check_witness(inst, ce, sess, inst.route == "v2f32")
                    witness = "exact" if problem is None and ce.x32 is not None else "ok" if problem is None else "bad"
                    if problem:
                        msg = f"witness check failed: {problem}; bnb: {msg}"
                status = judge(inst.label, verdict, msg if witness == "bad" else None, po, msg or "")
                if status == "ok" and cert.startswith("rejected"):
                    status, msg = "cert", f"certificate {cert}; bnb: {msg}"
                rows.append(dict(seed=seed, index=index, kind=inst.kind, label=inst.label, verdict=verdict,
                                 cert=cert.split(":")[0],
                                 status=status, time=round(secs, 3), milp_time=round(inst.milp_time, 3),
                                 n_in=inst.net.n_in, overrides=" ".join(ov), message=msg, route=inst.route,
                                 oracle=inst.oracle,
                                 witness=witness, proof_only=int(po), limit=limit,
                                 decidable=int(inst.decidable(po)),
                                 decided=int(inst.decidable(po) and verdict == inst.label and status == "ok")))
                if status != "ok" and keep:
                    dest = Path(keep)
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy(onnx_path, dest / onnx_path.name)
                    shutil.copy(vnn_path, dest / vnn_path.name)
                    rows[-1]["kept"] = str(dest / stem)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows, None


def repro_line(row, timeout) -> str:
    timeout = row.get("limit", timeout)
    sets = " ".join(f"--set {o}" for o in row["overrides"].split())
    route = "1" if row.get("route") == "v2f32" else "0"
    line = (f"python benchmarks/fuzz.py --seed {row['seed']} --instance {row['index']} --timeout {timeout:g} "
            f"--v2-float32 {route} {sets}")
    if row.get("kept"):
        fixed = " ".join(f"--set {o}" for o in FIXED)
        if row.get("route") == "v2f32":
            line += (f"\n    bnb-vnnlib verify {row['kept']}.vnnlib --network N={row['kept']}.onnx "
                     f"--timeout {timeout:g} {fixed} {sets}")
        else:
            line += (f"\n    bnb verify {row['kept']}.onnx {row['kept']}.vnnlib --timeout {timeout:g} {fixed} {sets}")
    return line


def _worker(args):
    return args[1], run_index(*args)


def fuzz(draws, seed=0, n_configs=3, timeout=5.0, jobs=1, keep=None, out=None, indices=None, forced=None,
         kinds=None, log=print, start=0, v2_float32=V2_FLOAT32, proof_only=False, short_timeout=SHORT_TIMEOUT,
         certificates=False):
    """Run ``draws`` draw indices from ``start`` (or exactly ``indices``); each draw gives a sat and an unsat
    instance, each verified under ``n_configs`` sampled configurations (or ``forced``), all in proof-only mode
    with ``proof_only`` (:func:`run_index`). Returns the summary: counts, ``decidable`` / ``decided`` pairs
    (:meth:`Instance.decidable`), the skipped draws and every row."""
    t0 = time.monotonic()
    indices = list(indices) if indices is not None else list(range(start, start + draws))
    tasks = [(seed, i, n_configs, timeout, forced, keep, kinds, None, v2_float32, proof_only, short_timeout,
              certificates) for i in indices]
    verdicts, statuses, skipped, all_rows = Counter(), Counter(), [], []
    writer = f = None
    if out:
        f = open(out, "w", newline="")
        fields = ["seed", "index", "kind", "route", "oracle", "label", "verdict", "status", "cert", "witness",
                  "proof_only",
                  "decidable", "decided", "limit", "time", "milp_time", "n_in", "overrides", "message", "kept"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()

    def results():
        if jobs > 1:
            import multiprocessing as mp
            with mp.get_context("fork").Pool(jobs) as pool:
                yield from pool.imap_unordered(_worker, tasks)
        else:
            for t in tasks:
                yield _worker(t)

    try:
        for done, (index, (rows, why)) in enumerate(results(), 1):
            if why:
                skipped.append((index, why))
            for r in rows:
                verdicts[r["verdict"]] += 1
                statuses[r["status"]] += 1
                all_rows.append(r)
                if writer:
                    writer.writerow(r)
                if r["status"] != "ok":
                    log(f"{r['status'].upper()}: seed {r['seed']} instance {r['index']} {r['kind']} {r['route']} label "
                        f"{r['label']} -> {r['verdict']} [{r['overrides']}] {r['message'][:200]}\n"
                        f"    repro: {repro_line(r, timeout)}")
            if f:
                f.flush()
            if done % 50 == 0:
                log(f"... {done}/{len(tasks)} draws, {len(all_rows)} verify calls, {statuses['wrong']} wrong, "
                    f"{time.monotonic() - t0:.0f}s")
    finally:
        if f:
            f.close()
    elapsed = time.monotonic() - t0
    summary = dict(draws=len(tasks), instances=2 * (len(tasks) - len(skipped)), pairs=len(all_rows),
                   verdicts=dict(verdicts), wrong=statuses["wrong"], errors=statuses["error"],
                   skipped=len(skipped), time=elapsed, rows=all_rows, skipped_reasons=skipped,
                   certificates=dict(Counter(r["cert"] for r in all_rows if r["cert"])),
                   cert_rejected=statuses["cert"],
                   decidable=sum(r["decidable"] for r in all_rows), decided=sum(r["decided"] for r in all_rows),
                   proof_only=sum(r["proof_only"] for r in all_rows))
    return summary


def decided_fraction(summary) -> float:
    """Decided share of the decidable pairs (1.0 when there are none)."""
    return summary["decided"] / summary["decidable"] if summary["decidable"] else 1.0


def family_table(rows) -> list[str]:
    """Per network kind, box kind, delta kind, route (VNN-LIB 1.0 / float32 2.0) and mode (proof-only or
    falsifying): pairs, verdicts, wrong, the ``sat`` witnesses checked (``exact``: exact-point witnesses, the box
    holding no float32 point), and ``decided``: decided / decidable pairs (:meth:`Instance.decidable`)."""
    cols = ("pairs", "sat", "unsat", "unknown", "timeout", "error", "wrong", "exact")
    count: dict = {}
    for r in rows:
        net, box, _, delta = r["kind"].split("/")
        net, _, act = net.partition("-")
        mode = "proof-only" if r.get("proof_only") else "falsifying"
        for key in (("net", net), ("act", act or "relu"), ("box", box), ("delta", delta),
                    ("route", r.get("route", "v1")), ("mode", mode), ("oracle", r.get("oracle", "milp"))):
            c = count.setdefault(key, Counter())
            c["pairs"] += 1
            c[r["verdict"]] += 1
            c["wrong"] += r["status"] == "wrong"
            c["exact"] += r.get("witness") == "exact"
            c["decidable"] += r.get("decidable", 0)
            c["decided"] += r.get("decided", 0)
    order = ([("net", k) for k in NET_KINDS] + [("act", k) for k in ACTIVATIONS] + [("box", k) for k in BOX_KINDS]
             + [("delta", k) for k in DELTA]
             + [("route", k) for k in ROUTES] + [("mode", k) for k in ("proof-only", "falsifying")]
             + [("oracle", k) for k in ORACLES])
    out = [f"{'family':>16} " + " ".join(f"{c:>7}" for c in cols) + f" {'decided':>14}"]
    for key in order:
        if key in count:
            c = count[key]
            dec = f"{c['decided']}/{c['decidable']}" + (f" {100 * c['decided'] / c['decidable']:3.0f}%"
                                                         if c["decidable"] else "     ")
            out.append(f"{key[0] + ' ' + key[1]:>16} " + " ".join(f"{c[k]:>7}" for k in cols) + f" {dec:>14}")
    return out


def print_summary(s, log=print):
    rows = s["rows"]
    log("")
    log(f"{'instances':>10} {'pairs':>6} " + " ".join(f"{v:>7}" for v in ("sat", "unsat", "unknown", "timeout",
                                                                          "error"))
        + f" {'wrong':>6} {'skipped':>8} {'time':>8}")
    log(f"{s['instances']:>10} {s['pairs']:>6} " + " ".join(f"{s['verdicts'].get(v, 0):>7}" for v in
                                                         ("sat", "unsat", "unknown", "timeout", "error"))
        + f" {s['wrong']:>6} {s['skipped']:>8} {s['time']:>7.1f}s")
    if rows:
        per = s["time"] / len(rows)
        verify_t = np.mean([r["time"] for r in rows])
        log(f"{per:.3f} s per pair overall ({verify_t:.3f} s in verify); {s['proof_only']} pairs in proof-only mode")
        log(f"decided: {s['decided']} of {s['decidable']} decidable pairs ({100 * decided_fraction(s):.1f} %; "
            f"clear delta, and a sat label only where falsification is on)")
        for line in family_table(rows):
            log(line)
    if s.get("certificates"):
        log("certificates of unsat answers: " + ", ".join(f"{k} {n}" for k, n in sorted(s["certificates"].items())))
    reasons = Counter("harness failure" if w.startswith("harness") else "MILP not optimal" if "status" in w
                      else "MILP inexact" if "inexact" in w else "other" for _, w in s["skipped_reasons"])
    share = s["skipped"] / s["draws"] if s["draws"] else 0.0
    log(f"skipped draws: {s['skipped']} of {s['draws']} ({100 * share:.1f} %)"
        + (": " + ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())) if reasons else "")
        + (f"; more than {100 * MAX_SKIPPED:g} %" if share > MAX_SKIPPED else ""))
    bad = [r for r in rows if r["status"] == "wrong"]
    if bad:
        by = Counter()
        for r in bad:
            net, box, spec, delta = r["kind"].split("/")
            ov = dict(o.split("=", 1) for o in r["overrides"].split())
            by[("box", box)] += 1
            by[("label", r["label"])] += 1
            by[("method", ov.get("bounds.method", "default"))] += 1
            by[("dtype", ov.get("general.dtype", "default"))] += 1
            by[("attack", ov.get("attack.enabled", "default"))] += 1
            by[("proof_only", ov.get("general.proof_only", "default"))] += 1
            by[("branching", ov.get("bab.branching", "default"))] += 1
            by[("route", r.get("route", "v1"))] += 1
        log("wrong verdicts by " + ", ".join(f"{k}={v}: {n}" for (k, v), n in sorted(by.items())))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=600, help="instances (each random draw gives a sat and an unsat one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first draw index")
    ap.add_argument("--quick", action="store_true", help="100 instances (50 draws, ~300 pairs), 3 s timeout")
    ap.add_argument("--configs", type=int, default=3, help="configurations sampled per instance")
    ap.add_argument("--timeout", type=float, default=5.0, help="verify time limit per pair in seconds")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (one torch thread each)")
    ap.add_argument("--out", help="CSV file with one row per verify call")
    ap.add_argument("--keep", help="folder receiving the ONNX/VNN-LIB files of wrong and error pairs")
    ap.add_argument("--instance", type=int, action="append", help="only these draw indices (repeatable)")
    ap.add_argument("--set", dest="sets", action="append", help="run only this configuration (section.key=value, "
                    "repeatable; unspecified grid keys take the verifier's defaults)")
    for k, choices in (("net", NET_KINDS), ("box", BOX_KINDS), ("spec", SPEC_KINDS), ("delta", tuple(DELTA))):
        ap.add_argument(f"--{k}", choices=choices, help=f"force the {k} family")
    ap.add_argument("--act", choices=ACTIVATIONS + ("mixed",),
                    help="the activation of the chain networks (default relu; mixed: one drawn per instance)")
    ap.add_argument("--v2-float32", type=float, default=V2_FLOAT32, metavar="FRACTION",
                    help=f"share of draws whose bounds are all float32 numbers written as float32-typed VNN-LIB 2.0 "
                    f"queries (default {V2_FLOAT32:g}; 1: all of them, 0: none)")
    ap.add_argument("--proof-only", action="store_true",
                    help="every configuration in proof-only mode (general.proof_only: no falsification), for the "
                    "soundness run: any sat is wrong, a violated pair can only end unknown/timeout")
    ap.add_argument("--short-timeout", type=float, default=SHORT_TIMEOUT, metavar="SECONDS",
                    help="time limit of the pairs that can only end unknown/timeout: a sat label in proof-only mode, "
                    f"an unsat label with the hair delta (default {SHORT_TIMEOUT:g}; never above --timeout)")
    ap.add_argument("--certificates", action="store_true",
                    help="every unsat answer writes a certificate, checked by the independent checker (certcheck); "
                    "a rejected certificate is a failure like a wrong verdict")
    ap.add_argument("--min-decided", type=float, default=0.0, metavar="FRACTION",
                    help="exit 1 when fewer than this share of the decidable pairs (clear delta; a sat label only "
                    "where falsification is on) are decided correctly")
    a = ap.parse_args(argv)
    if a.quick:
        a.n = min(a.n, 100)
        a.timeout = min(a.timeout, 3.0)
    import torch
    torch.set_num_threads(1)
    kinds = {k: getattr(a, k) for k in ("net", "box", "spec", "delta", "act") if getattr(a, k)}
    s = fuzz((a.n + 1) // 2, a.seed, a.configs, a.timeout, a.jobs, a.keep, a.out, a.instance, a.sets, kinds or None,
             start=a.start, v2_float32=a.v2_float32, proof_only=a.proof_only, short_timeout=a.short_timeout,
             certificates=a.certificates)
    print_summary(s)
    harness = [(i, w) for i, w in s["skipped_reasons"] if w.startswith("harness")]
    for index, why in harness + [(i, w) for i, w in s["skipped_reasons"] if (i, w) not in harness][:5]:
        print(f"skipped draw {index}: {why}")
    if decided_fraction(s) < a.min_decided:
        print(f"too few pairs decided: {s['decided']} of {s['decidable']} ({100 * decided_fraction(s):.1f} %) "
              f"< --min-decided {a.min_decided:g}")
        return 1
    return 1 if s["wrong"] or s["cert_rejected"] else 0


if __name__ == "__main__":
    sys.exit(main())
