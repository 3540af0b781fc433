"""A float32-typed query is ``unsat`` only with its evaluation-error margin (``Polytope.slack``, docs/soundness.md,
"Float32 semantics"), checked in proof-only mode, where no counterexample can answer first: networks that
onnxruntime evaluates to 0 while the real network gives ``x`` (``x + 2^24 - 2^24``), asked ``y <= 0.125`` on
``[0.25, 0.75]``: ``unsat`` in real arithmetic, violated at every float32 input, so never ``unsat`` as float32."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bnb.config import load_config
from bnb.pipeline.verify import verify
from bnb.results import Verdict

pytest.importorskip("vnnlib", reason="float32 queries need the 'vnnlib' package (extra vnnlib2)")
from bnb.io.vnnlib2 import parse_query_text  # noqa: E402

pytestmark = pytest.mark.fast

BIG = 2.0 ** 24  # float32 spacing is 2 there: x + BIG rounds to BIG for every x in [0.25, 0.75]


def _model(path, ops):
    """ONNX float32 ``y = x`` (1 input, 1 output) followed by ``ops``: ``(op, constant or None)``."""
    inits, nodes, last = [], [helper.make_node("Identity", ["x"], ["h"])], "h"
    for i, (op, const) in enumerate(ops):
        ins = [last]
        if const is not None:
            inits.append(numpy_helper.from_array(np.full((1,), const, np.float32), f"c{i}"))
            ins.append(f"c{i}")
        nodes.append(helper.make_node(op, ins, [f"e{i}"]))
        last = f"e{i}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _query(etype):
    text = ("(vnnlib-version <2.0>)\n(declare-network N\n"
            f"    (declare-input X {etype} [1,1])\n    (declare-output Y {etype} [1,1])\n)\n"
            "(assert (and (>= X[0,0] 0.25) (<= X[0,0] 0.75)))\n(assert (<= Y[0,0] 0.125))\n")
    return parse_query_text(text, "q.vnnlib").prop


def _decide(path, etype, dtype, timeout):
    cfg = load_config((), ("general.proof_only=true", f"general.dtype={dtype}"))
    cfg.general.threads = 1
    return verify(str(path), _query(etype), cfg, timeout=timeout)


def _check(path, dtype):
    """The float32 network violates everywhere; the real query is unsat (float64 bounds: at 2^24 float32 bounds
    are too coarse to prove it); the float32 query, bounded in ``dtype``, ends unknown or timeout."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xs = np.linspace(0.25, 0.75, 11, dtype=np.float32)
    ys = [float(sess.run(None, {"x": np.array([[x]], np.float32)})[0][0, 0]) for x in xs]
    assert max(ys) <= 0.125, "the float32 network must violate the property everywhere"
    real = _decide(path, "real", "float64", 20.0)
    assert real.verdict is Verdict.UNSAT, real.message  # y = x >= 0.25 > 0.125 in real arithmetic
    f32 = _decide(path, "float32", dtype, 3.0)
    assert f32.verdict in (Verdict.UNKNOWN, Verdict.TIMEOUT), (f32.verdict, f32.message)


def test_affine_cancellation_is_never_unsat_as_float32(tmp_path):
    _check(_model(tmp_path / "add_sub.onnx", [("Add", BIG), ("Sub", BIG)]), "float32")


def test_cancellation_through_a_relu_is_never_unsat_as_float32(tmp_path):
    _check(_model(tmp_path / "add_relu_sub.onnx", [("Add", BIG), ("Relu", None), ("Sub", BIG)]), "float64")
