"""Every operator bnb converts matches onnxruntime, and every operator it refuses is refused by name.

Each key of ``bnb.io.onnx_ops.OPERATORS`` has tiny models using it on the data path (``tests/onnx_builders.py``);
each is loaded the way ``bnb verify`` loads a model, and the converted network (before and after simplification),
evaluated in float64, must agree with onnxruntime (float32) on random inputs within rounding. An operator added
to the table without a model here fails :func:`test_every_operator_has_a_model`; ``bnb-vnnlib supports
--onnx-operators`` lists exactly the table.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from bnb.cli import vnnlib as vnnlib_cli
from bnb.errors import ModelError
from bnb.io.models import ModelCache
from bnb.io.onnx_ops import OPERATORS, REFUSED

from onnx_builders import BUILDERS, CASES, build_model, build_refused

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)

N_POINTS = 16
RTOL = ATOL = 1e-5  # float32 evaluation of sums of at most ~30 terms of size 1


def onnxruntime_outputs(model: onnx.ModelProto, x: np.ndarray, in_shape) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"x": xi.reshape(in_shape)})[0].reshape(-1).astype(np.float64) for xi in x])


def test_every_operator_has_a_model():
    assert set(BUILDERS) == set(OPERATORS)


def test_refused_operators_are_not_converted():
    assert not set(REFUSED) & set(OPERATORS)


@pytest.mark.parametrize("op,variant", CASES, ids=[f"{op}-{k}" for op, k in CASES])
def test_operator_matches_onnxruntime(tmp_path, op, variant):
    model, in_shape = build_model(op, variant)
    onnx.checker.check_model(model, full_check=True)
    assert op in {n.op_type for n in model.graph.node}
    path = tmp_path / f"{op}.onnx"
    path.write_bytes(model.SerializeToString())
    loaded = ModelCache(1).get(path)  # as `bnb verify` and `bnb-vnnlib verify` load a model
    assert loaded.onnx_input_shape == in_shape
    x = np.random.default_rng(variant).uniform(-1, 1, (N_POINTS, int(np.prod(in_shape)))).astype(np.float32)
    ref = onnxruntime_outputs(model, x, in_shape)
    for net in (loaded.network, loaded.chain):
        with torch.no_grad():
            ours = net.forward(torch.from_numpy(x.astype(np.float64))).numpy()
        assert ours.dtype == np.float64 and ours.shape == ref.shape, (ours.shape, ref.shape)
        np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)
    loaded.check_load()  # the loader's own check against onnxruntime passes too


def test_supports_lists_exactly_the_operator_table():
    result = CliRunner().invoke(vnnlib_cli.main, ["supports", "--onnx-operators"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == list(OPERATORS)


@pytest.mark.parametrize("op", sorted(REFUSED))
def test_refused_operator_is_one_line_naming_it(tmp_path, op):
    model, _ = build_refused(op)
    onnx.checker.check_model(model, full_check=True)
    model.graph.node[-1].name = "the_node"
    path = tmp_path / f"{op}.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError) as e:
        ModelCache(1).get(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == f"{path}: node the_node ({op}): unsupported operator {op!r}: {REFUSED[op]}"


def test_refused_operator_on_constants_names_the_reason(tmp_path):
    """A refused operator applied to constants only is still refused (bnb does not evaluate it), with its reason."""
    from onnx_builders import make_model, node
    nodes = [node("Greater", ["a", "b"], "m"), node("Where", ["m", "a", "b"], "c"), node("Add", ["x", "c"], "y")]
    model = make_model(nodes, {"a": np.ones(3), "b": np.zeros(3)}, (1, 3))
    path = tmp_path / "c.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelError, match=r"\(Greater\): unsupported operator 'Greater' on constants: comparisons"):
        ModelCache(1).get(path)


def test_product_of_two_tensors_is_refused_by_the_converter(tmp_path):
    """Mul, MatMul and Div of tensors computed from the input are refused by their converters, by name."""
    from onnx_builders import make_model, node
    for op, needle in (("Mul", "not linear"), ("MatMul", "not linear"), ("Div", "division by a tensor")):
        model = make_model([node("Relu", ["x"], "r"), node(op, ["x", "r"], "y")], {}, (1, 3), infer=False)
        path = tmp_path / f"{op}.onnx"
        path.write_bytes(model.SerializeToString())
        with pytest.raises(ModelError) as e:
            ModelCache(1).get(path)
        assert f"({op}): " in str(e.value) and needle in str(e.value) and str(path) in str(e.value)
