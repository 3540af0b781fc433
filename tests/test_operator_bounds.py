"""Bounds around every data-moving operator: sampled outputs and pre-activations lie inside every method's bounds.

``tests/test_layer_contract.py`` checks each layer class alone (its ``interval`` and ``backward`` on one layer);
this module checks what the converter makes of each ONNX operator variant *inside a network*, through every
bounding method: the operator's layer (or ``Stage`` / ``Gather`` lowering) sits between unstable ReLUs,

    x (1, 3) -> Gemm -> Relu -> Gemm -> Reshape -> OP -> Relu -> Reshape -> Gemm -> y (1, 2),

so that its backward pass is used both for the output bounds and for the intermediate bounds of the ReLU after
it, with relaxed neurons on either side. The operator models are the variants of ``tests/onnx_builders.py``
(ConvTranspose, AveragePool, Pad, Transpose, MatMul and Gemm with the constant on either side, Gather, Concat,
Split, Slice: 27 variants). On a moderate box (half-width 0.5) and a wide one (3.0) around the same centre:

- ``ibp``, ``crown``, ``dp0`` and ``alpha``, in float32 and float64, bound the outputs of 4,008 sampled points
  per box (the corners and random points), evaluated by the float64 converted network and (the first 400) by
  onnxruntime, and their intermediate bounds (``BoundResult.pre_bounds``) contain the sampled pre-activations;
  CROWN leaves neurons after the operator unstable (so the check is not of a linear stretch);
- so do ``crown`` and ``dp0`` with ``bounds.intermediate: ibp`` and ``forward`` (``BoundOptions.intermediate``;
  alpha/beta-CROWN always start from CROWN's), on the wide box too (elsewhere ``forward`` is tested only on
  near-point boxes);
- ``beta`` with one unstable neuron of every ReLU layer split (active in one domain, inactive in the other, on
  the wide box) bounds the samples that satisfy its splits and calls neither domain infeasible;
- ``mn-crown`` (group hulls and Anderson cuts) on the moderate box, for the first variant of each operator;
- the triangle ``lp`` through an elementwise map that no neighbouring layer absorbs.

Tolerances. The bounds are rigorous in real arithmetic for the converted network (float64 parameters; a float32
copy carries the rounding of its parameters, ``rep_err``), so against the float64 evaluation of that network at
the (float32) sample points the only slack is the rounding of that evaluation, below 1e-14 here:
``TOL64 = 1e-12 (1 + max |value|)``. onnxruntime evaluates in float32; it agrees with the float64 network within
``TOL_ORT = 1e-5 (1 + max |y|)`` (asserted first: sums of at most ~60 products of size <= 3), so its outputs
are checked with that slack.
"""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from bnb.io.onnx_loader import load_onnx
from relaxations.layers import ElementwiseAffine
from relaxations.methods import bound_rows
from relaxations.options import BoundOptions, MultiNeuronOptions
from relaxations.state import DomainState

from conftest import pre_activations
from onnx_builders import build_model, make_model, node

pytestmark = pytest.mark.fast

torch.set_num_threads(1)  # tiny tensors: one thread is faster on a busy machine

F32, F64 = torch.float32, torch.float64
N_IN, HIDDEN, N_OUT = 3, 8, 2
HALF_WIDTHS = (0.5, 3.0)  # a moderate box and a wide one, around the same centre
N_SAMPLES = 4000          # random points per box, plus its 8 corners
N_ORT = 400               # of which the first (corners first) are also evaluated by onnxruntime (one call each)
ITERS = 3                 # optimisation steps of alpha, beta, mn-crown (any iterate is a sound bound)
# mn-crown: k-neuron group hulls and Anderson cuts, a few of each (speed)
MN_OPTIONS = BoundOptions(mn=MultiNeuronOptions(cuts="both", max_groups=4, octa_iters=3, rounds=1))
TOL64, TOL_ORT = 1e-12, 1e-5

VARIANTS = {"ConvTranspose": 2, "AveragePool": 3, "Pad": 3, "Transpose": 3, "MatMul": 3, "Gemm": 3, "Gather": 2,
            "Concat": 2, "Split": 3, "Slice": 3}
CASES = [(op, k) for op, n in VARIANTS.items() for k in range(n)]
IDS = [f"{op}-{k}" for op, k in CASES]


def wrapped_model(op: str, variant: int) -> onnx.ModelProto:
    """The operator model ``build_model(op, variant)`` between two ReLU layers: its input ``x`` is the reshaped
    output of ``Gemm -> Relu -> Gemm`` on the network input, its output ``y`` goes through ``Relu`` and a final
    ``Gemm`` to two outputs. Same opset as the operator model."""
    inner, in_shape = build_model(op, variant)
    out_shape = [d.dim_value for d in inner.graph.output[0].type.tensor_type.shape.dim]
    n_mid, n_post = int(np.prod(in_shape)), int(np.prod(out_shape))
    rng = np.random.default_rng([11, variant, *op.encode()])
    rename = {"x": "op_in", "y": "op_out"}
    nodes = [node("Gemm", ["x", "w1", "b1"], "h1", transB=1), node("Relu", ["h1"], "a1"),
             node("Gemm", ["a1", "w2", "b2"], "h2", transB=1), node("Reshape", ["h2", "shape_in"], "op_in")]
    for n in inner.graph.node:
        m = helper.make_node(n.op_type, [rename.get(i, i) for i in n.input], [rename.get(o, o) for o in n.output])
        m.attribute.extend(n.attribute)
        nodes.append(m)
    nodes += [node("Relu", ["op_out"], "a2"), node("Reshape", ["a2", "shape_flat"], "f"),
              node("Gemm", ["f", "w3", "b3"], "y", transB=1)]
    inits = {"w1": rng.uniform(-1, 1, (HIDDEN, N_IN)), "b1": rng.uniform(-0.5, 0.5, HIDDEN),
             "w2": rng.uniform(-1, 1, (n_mid, HIDDEN)), "b2": rng.uniform(-0.5, 0.5, n_mid),
             "shape_in": np.array(in_shape, np.int64), "shape_flat": np.array([1, -1], np.int64),
             "w3": rng.uniform(-1, 1, (N_OUT, n_post)), "b3": rng.uniform(-0.5, 0.5, N_OUT)}
    assert not set(inits) & {t.name for t in inner.graph.initializer}
    inits.update({t.name: numpy_helper.to_array(t) for t in inner.graph.initializer})
    return make_model(nodes, inits, (1, N_IN), inner.opset_import[0].version)


class Case:
    """One wrapped operator model, loaded as ``bnb verify`` loads it, with its boxes ``(2, N_IN)`` (float32
    values: the same box in both dtypes) and, per box, the sample points ``x`` ``(2, S, N_IN)`` (float32
    values), the float64 converted network's outputs ``y64`` ``(2, S, N_OUT)`` and pre-activations ``pre`` (per
    ReLU layer ``(2, S, n_j)``), and onnxruntime's outputs ``y_ort`` ``(2, N_ORT, N_OUT)`` at the first samples."""

    def __init__(self, folder, op, variant):
        path = folder / f"{op}-{variant}.onnx"
        path.write_bytes(wrapped_model(op, variant).SerializeToString())
        model = load_onnx(path)
        self.name, self.net = f"{op}-{variant}", model.network.to(dtype=F64)
        g = np.random.default_rng([3, variant, *op.encode()])
        c = g.uniform(-1, 1, N_IN)
        lo = np.stack([c - w for w in HALF_WIDTHS]).astype(np.float32)
        hi = np.stack([c + w for w in HALF_WIDTHS]).astype(np.float32)
        self.lo, self.hi = torch.from_numpy(lo).double(), torch.from_numpy(hi).double()
        corners = np.array([[(i >> d) & 1 for d in range(N_IN)] for i in range(2 ** N_IN)], np.float32)
        x = [np.concatenate([lo[b] + (hi[b] - lo[b]) * corners,
                             lo[b] + (hi[b] - lo[b]) * g.random((N_SAMPLES, N_IN), np.float32)])
             for b in range(len(HALF_WIDTHS))]
        x = np.clip(np.stack(x), lo[:, None], hi[:, None])
        S = x.shape[1]
        self.x = torch.from_numpy(x).double()
        flat = self.x.reshape(-1, N_IN)
        self.y64 = self.net.forward(flat).reshape(2, S, -1)
        self.y_ort = torch.from_numpy(model.run_onnx(x[:, :N_ORT].reshape(-1, N_IN))).reshape(2, N_ORT, -1)
        self.pre = [z.reshape(2, S, -1) for z in pre_activations(self.net, flat)]
        gap = (self.y_ort - self.y64[:, :N_ORT]).abs().max()
        assert gap <= TOL_ORT * (1 + self.y64.abs().max()), (self.name, float(gap))

    def state(self, dtype, **kw):
        return DomainState(self.lo.to(dtype), self.hi.to(dtype), **kw)

    def box(self, *boxes):
        """The same case restricted to the boxes ``boxes`` (indices; a repeated one is a copy)."""
        out = copy.copy(self)
        pick = list(boxes)
        out.lo, out.hi, out.x, out.y64, out.y_ort = (t[pick] for t in (self.lo, self.hi, self.x, self.y64, self.y_ort))
        out.pre = [z[pick] for z in self.pre]
        return out


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder, built = tmp_path_factory.mktemp("operators"), {}

    def get(op, variant):
        if (op, variant) not in built:
            built[op, variant] = Case(folder, op, variant)
        return built[op, variant]
    return get


def _tol(t, rel):
    return rel * (1 + t.abs().max())


def assert_contains(case, res, what, keep=None):
    """``res``'s output bounds contain the outputs of the samples of each box (onnxruntime's and the float64
    network's), and its intermediate bounds their pre-activations; ``keep`` ``(2, S)``: only those samples."""
    keep = torch.ones(case.x.shape[:2], dtype=torch.bool) if keep is None else keep
    lb, ub = res.lb.double(), res.ub.double()
    for ref, rel in ((case.y64, TOL64), (case.y_ort, TOL_ORT)):
        tol = _tol(ref, rel)
        for b in range(lb.shape[0]):
            y = ref[b][keep[b, :ref.shape[1]]]
            if not len(y):  # (no sample of a split domain among the first N_ORT)
                continue
            assert torch.all(lb[b] <= y.min(0).values + tol), (case.name, what, b, lb[b], y.min(0).values)
            assert torch.all(ub[b] >= y.max(0).values - tol), (case.name, what, b, ub[b], y.max(0).values)
    assert len(res.pre_bounds) == len(case.pre), (case.name, what)
    for j, (z, (l, u)) in enumerate(zip(case.pre, res.pre_bounds)):
        tol = _tol(z, TOL64)
        for b in range(l.shape[0]):
            zb = z[b][keep[b]]
            assert torch.all(l[b].double() <= zb.min(0).values + tol), (case.name, what, b, "ReLU layer", j)
            assert torch.all(u[b].double() >= zb.max(0).values - tol), (case.name, what, b, "ReLU layer", j)


def unstable_after_the_operator(res):
    """Unstable neurons of the ReLU layers after the first (the operator's input is the first ReLU's
    output mapped by a Gemm), over both boxes."""
    return sum(int(((l < 0) & (u > 0)).sum()) for l, u in res.pre_bounds[1:])


@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("op,variant", CASES, ids=IDS)
def test_single_neuron_methods_contain_sampled_values_around_the_operator(cases, op, variant, dtype):
    """IBP, CROWN, DeepPoly (zero slopes) and alpha-CROWN on the moderate and the wide box at once."""
    case = cases(op, variant)
    net = case.net.to(dtype=dtype)
    C = torch.eye(N_OUT, dtype=dtype)
    for method in ("ibp", "crown", "dp0", "alpha"):
        res = bound_rows(net, case.state(dtype), C, method, iters=ITERS, want_upper=True)
        assert not bool(res.infeasible.any()), (case.name, method)  # no splits: never empty
        assert_contains(case, res, method)
        if method == "crown":  # the operator sits between relaxed neurons, not in a linear stretch
            assert unstable_after_the_operator(res) > 0, case.name


@pytest.mark.parametrize("op", list(VARIANTS))
def test_mn_crown_contains_sampled_values_around_the_operator(cases, op):
    """mn-crown with group hulls and Anderson cuts (few of each, for speed), float32, on the moderate box, for the
    first variant of each operator (the time it takes)."""
    case = cases(op, 0).box(0)
    res = bound_rows(case.net.to(dtype=F32), case.state(F32), torch.eye(N_OUT, dtype=F32), "mn-crown", MN_OPTIONS,
                     iters=ITERS, want_upper=True)
    assert res.constraints is not None and any(c is not None for c in res.constraints), case.name
    assert not bool(res.infeasible.any()), case.name
    assert_contains(case, res, "mn-crown")


# the variants whose network keeps an ElementwiseAffine layer no neighbour absorbs (a Pad value, a Gemm's alpha or
# beta, a Concat with a constant, each right before a ReLU): the LP encoding once called ``layer.dense()``, which
# that class does not have, so every LP method (and mn-crown's Anderson cuts) raised NotImplementedError there
ELEMENTWISE = [("Pad", 0), ("Pad", 1), ("Gemm", 1), ("Gemm", 2), ("Concat", 1)]


@pytest.mark.parametrize("op,variant", ELEMENTWISE, ids=[f"{op}-{k}" for op, k in ELEMENTWISE])
def test_lp_bounds_through_an_elementwise_map_no_neighbour_absorbs(cases, op, variant):
    """The triangle LP (a dual certificate, float64) on the moderate box contains the samples."""
    case = cases(op, variant).box(0)
    assert any(isinstance(layer, ElementwiseAffine) for layer in case.net.layers), case.name
    res = bound_rows(case.net, case.state(F64), torch.eye(N_OUT, dtype=F64), "lp", want_upper=True)
    assert_contains(case, res, "lp")


@pytest.mark.parametrize("op,variant", CASES, ids=IDS)
def test_ibp_and_forward_intermediate_bounds_around_the_operator(cases, op, variant):
    """``bounds.intermediate: ibp`` and ``forward`` (what ``crown``, ``dp0``, ``dp1`` use for the ReLU inputs;
    alpha-CROWN always starts from CROWN's), on the moderate and the wide box, in both dtypes."""
    case = cases(op, variant)
    for dtype in (F32, F64):
        net = case.net.to(dtype=dtype)
        C = torch.eye(N_OUT, dtype=dtype)
        pre = {}
        for intermediate in ("ibp", "forward"):
            for method in ("crown", "dp0"):
                res = bound_rows(net, case.state(dtype), C, method, BoundOptions(intermediate=intermediate),
                                 want_upper=True)
                assert_contains(case, res, f"{method}/{intermediate}/{dtype}")
                pre[intermediate] = res.pre_bounds
        # the forward bounds (intersected with IBP's) are tighter somewhere on the wide box: they are checked
        tighter = sum(int(((lf[1] > li[1]) | (uf[1] < ui[1])).sum())
                      for (li, ui), (lf, uf) in zip(pre["ibp"], pre["forward"]))
        assert tighter > 0, (case.name, dtype)


@pytest.mark.parametrize("op,variant", CASES, ids=IDS)
def test_beta_with_a_split_in_every_relu_layer(cases, op, variant):
    """Two domains on the wide box: one unstable neuron of every ReLU layer fixed active in the first, inactive in
    the second. beta-CROWN's bounds of each domain contain the samples that satisfy its splits (at least 20 of
    them, so neither domain is empty), and it calls neither domain infeasible."""
    wide = cases(op, variant).box(1)
    case = wide.box(0, 0)  # the wide box twice: one copy per domain
    dtype = F32
    net = case.net.to(dtype=dtype)
    C = torch.eye(N_OUT, dtype=dtype)
    root = bound_rows(net, wide.state(dtype), C, "crown")
    splits, keep = [], torch.ones(2, case.x.shape[1], dtype=torch.bool)
    for (l, u), z in zip(root.pre_bounds, wide.pre):
        s = torch.zeros(2, l.shape[1], dtype=torch.int8)
        unstable = torch.nonzero((l[0] < 0) & (u[0] > 0)).flatten()
        if len(unstable):  # the neuron whose split leaves most samples in the smaller domain
            zu = z[0][:, unstable]
            left = torch.minimum((keep[0, :, None] & (zu >= 0)).sum(0), (keep[1, :, None] & (zu <= 0)).sum(0))
            i = int(unstable[torch.argmax(left)])
            s[0, i], s[1, i] = 1, -1
            keep &= torch.stack([z[0][:, i] >= 0, z[0][:, i] <= 0])
        splits.append(s)
    assert sum(int((s != 0).sum()) for s in splits) >= 4, case.name  # both ReLU layers split
    assert int(keep.sum(1).min()) >= 20, (case.name, keep.sum(1))
    res = bound_rows(net, case.state(dtype, splits=splits), C, "beta", iters=ITERS, want_upper=True)
    assert not bool(res.infeasible.any()), case.name
    assert_contains(case, res, "beta with splits", keep)
