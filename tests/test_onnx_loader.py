"""The ONNX loader: benchmark networks and hand-built graphs agree with onnxruntime."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bnb.errors import ModelError
from bnb.io.onnx_loader import load_onnx
from bnb.io.vnnlib import parse_vnnlib
from relaxations.layers import ElementwiseAffine
from relaxations.network import Network

from conftest import BENCHMARKS, random_points, require_bench

pytestmark = pytest.mark.fast  # the quick tier (`pytest -m fast`)


def assert_agrees(model, lower, upper, n=32, seed=0, tol=1e-4):
    x = random_points(lower, upper, n, seed)
    ours = model.network.forward(torch.from_numpy(x.astype(np.float64))).numpy()
    ref = model.run_onnx(x)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)


# ------------------------------------------------------------------------ benchmark networks
SAMPLE = [
    ("acasxu", "ACASXU_run2a_1_1_batch_2000.onnx", "prop_1.vnnlib"),
    ("acasxu", "ACASXU_run2a_3_5_batch_2000.onnx", "prop_3.vnnlib"),
    ("acasxu", "ACASXU_run2a_5_9_batch_2000.onnx", "prop_6.vnnlib"),
    ("mnist_fc", "mnist-net_256x2.onnx", "prop_0_0.03.vnnlib"),
    ("mnist_fc", "mnist-net_256x4.onnx", "prop_1_0.05.vnnlib"),
    ("mnist_fc", "mnist-net_256x6.onnx", "prop_2_0.03.vnnlib"),
    ("oval21", "cifar_base_kw.onnx", None),
]


@pytest.mark.parametrize("bench_name,net_name,spec_name", SAMPLE, ids=[s[1] for s in SAMPLE])
def test_benchmark_networks_agree_with_onnxruntime(bench_name, net_name, spec_name):
    folder = require_bench(bench_name)
    if spec_name is None:  # the first property written for this network
        spec_name = sorted(p.name for p in (folder / "vnnlib").iterdir()
                           if p.name.startswith(net_name.removesuffix(".onnx")))[0]
    model = load_onnx(folder / "onnx" / net_name)
    net = model.network
    prop = parse_vnnlib(folder / "vnnlib" / spec_name, net.in_size, net.out_size)
    for spec in prop.specs:
        assert_agrees(model, spec.lower, spec.upper)
        model.check(spec.lower, spec.upper)  # the loader's own check passes too


@pytest.mark.slow
@pytest.mark.parametrize("bench_name", BENCHMARKS)
def test_every_benchmark_network_loads(bench_name):
    folder = require_bench(bench_name)
    nets = sorted((folder / "onnx").glob("*.onnx"))
    assert nets
    for path in nets:
        model = load_onnx(path)
        n = model.network.in_size
        assert_agrees(model, np.zeros(n), np.ones(n), n=8)


# ------------------------------------------------------------------------ hand-built graphs
def make_model(path, nodes, inits, in_shape, out_shape, opset=13, dyn_batch=False):
    shape_in = ["N", *in_shape[1:]] if dyn_batch else list(in_shape)
    shape_out = ["N", *out_shape[1:]] if dyn_batch else list(out_shape)
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32) if np.asarray(v).dtype.kind == "f"
                                             else np.asarray(v), name=k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def load_and_compare(path, n_in, lo=-2.0, hi=2.0):
    model = load_onnx(path)
    assert model.network.in_size == n_in
    assert_agrees(model, np.full(n_in, lo), np.full(n_in, hi), n=64)
    return model


rng = np.random.default_rng(1)


def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0)])
def test_gemm(tmp_path, trans_b, alpha, beta):
    w = r(3, 4) if trans_b else r(4, 3)  # (out, in) with transB=1
    node = helper.make_node("Gemm", ["x", "W", "b"], ["y"], transA=0, transB=trans_b, alpha=alpha, beta=beta)
    load_and_compare(make_model(tmp_path / "g.onnx", [node], {"W": w, "b": r(3)}, (1, 4), (1, 3)), 4)


def test_gemm_without_bias_and_dynamic_batch(tmp_path):
    node = helper.make_node("Gemm", ["x", "W"], ["h"], transB=1)
    relu = helper.make_node("Relu", ["h"], ["y"])
    m = load_and_compare(make_model(tmp_path / "g.onnx", [node, relu], {"W": r(3, 4)}, (1, 4), (1, 3),
                                    dyn_batch=True), 4)
    assert m.batchable


def test_matmul_add(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["m"]),
             helper.make_node("Add", ["B2", "m"], ["y"])]  # constant first
    load_and_compare(make_model(tmp_path / "m.onnx", nodes, {"W": r(5, 6), "b": r(6), "W2": r(6, 2), "B2": r(2)},
                                (1, 5), (1, 2)), 5)


def test_sub_div_normalisation_and_mul(tmp_path):
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"]), helper.make_node("Div", ["s", "std"], ["d"]),
             helper.make_node("Mul", ["d", "k"], ["k1"]), helper.make_node("Sub", ["c", "k1"], ["k2"]),
             helper.make_node("Neg", ["k2"], ["k3"]),
             helper.make_node("Gemm", ["k3", "W", "b"], ["y"], transB=1)]
    inits = {"mean": r(4), "std": np.abs(r(4)) + 0.5, "k": r(1, 4), "c": np.float32(0.3), "W": r(2, 4), "b": r(2)}
    m = load_and_compare(make_model(tmp_path / "n.onnx", nodes, inits, (1, 4), (1, 2)), 4)
    # the elementwise maps are folded into the dense layer
    assert not any(isinstance(layer, ElementwiseAffine) for layer in m.network.layers)


def test_conv_batchnorm_folded_flatten(tmp_path):
    c_out = 3
    nodes = [helper.make_node("Conv", ["x", "K", "kb"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    inits = {"K": r(c_out, 2, 3, 3), "kb": r(c_out), "g": r(c_out), "beta": r(c_out), "mu": r(c_out),
             "var": np.abs(r(c_out)) + 0.1, "W": r(4, c_out * 3 * 3), "b": r(4)}
    m = load_and_compare(make_model(tmp_path / "c.onnx", nodes, inits, (1, 2, 6, 6), (1, 4)), 2 * 6 * 6)
    assert not any(isinstance(layer, ElementwiseAffine) for layer in m.network.layers)


def test_reshape_identity_constant(tmp_path):
    shape = numpy_helper.from_array(np.array([1, 6], np.int64))
    weight = numpy_helper.from_array(r(6, 3))
    nodes = [helper.make_node("Constant", [], ["shape"], value=shape),
             helper.make_node("Constant", [], ["W"], value=weight),
             helper.make_node("Identity", ["x"], ["i"]),
             helper.make_node("Reshape", ["i", "shape"], ["rs"]),
             helper.make_node("MatMul", ["rs", "W"], ["y"])]
    load_and_compare(make_model(tmp_path / "r.onnx", nodes, {}, (1, 2, 3), (1, 3)), 6)


def test_reshape_with_zero_and_minus_one(tmp_path):
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["rs"]),
             helper.make_node("MatMul", ["rs", "W"], ["y"])]
    inits = {"shape": np.array([0, -1], np.int64), "W": r(6, 2)}
    load_and_compare(make_model(tmp_path / "r.onnx", nodes, inits, (1, 3, 2), (1, 2)), 6)


def test_noop_transpose_squeeze_unsqueeze(tmp_path):
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),          # (1,4) -> (1,1,4)
             helper.make_node("Transpose", ["u"], ["t"], perm=[1, 0, 2]),  # moves only unit axes
             helper.make_node("Squeeze", ["t", "ax"], ["s"]),            # -> (1,4)
             helper.make_node("Gemm", ["s", "W", "b"], ["y"], transB=1)]
    inits = {"ax": np.array([1], np.int64), "W": r(3, 4), "b": r(3)}
    load_and_compare(make_model(tmp_path / "t.onnx", nodes, inits, (1, 4), (1, 3)), 4)


def test_constant_subgraph_is_folded(tmp_path):
    # shape arithmetic on constants, as exported graphs contain
    nodes = [helper.make_node("Add", ["b0", "b1"], ["b"]),
             helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)]
    load_and_compare(make_model(tmp_path / "f.onnx", nodes, {"b0": r(3), "b1": r(3), "W": r(3, 4)},
                                (1, 4), (1, 3)), 4)


@pytest.mark.parametrize("op", ["Elu", "Softmax", "HardSigmoid"])
def test_unsupported_op_names_op_and_file(tmp_path, op):
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1), helper.make_node(op, ["h"], ["y"])]
    path = make_model(tmp_path / "u.onnx", nodes, {"W": r(3, 4)}, (1, 4), (1, 3))
    with pytest.raises(ModelError) as e:
        load_onnx(path)
    assert op in str(e.value) and str(path) in str(e.value)


def test_residual_add_is_read_as_a_graph(tmp_path):
    """Once refused ("residual connections not supported"); now lowered by bnb.io.onnx_graph (tests/test_graph.py)."""
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1), helper.make_node("Add", ["h", "x"], ["y"])]
    load_and_compare(make_model(tmp_path / "res.onnx", nodes, {"W": r(4, 4)}, (1, 4), (1, 4)), 4)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(ModelError, match="no such file"):
        load_onnx(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff")
    with pytest.raises(ModelError) as e:
        load_onnx(bad)
    assert str(bad) in str(e.value)


# ------------------------------------------------------------------------ Network.from_torch
def test_from_torch_conv_flatten_linear():
    torch.manual_seed(0)
    seq = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=1, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(2, 2, 2, stride=2), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 5), torch.nn.ReLU(),
                              torch.nn.Linear(5, 3)).double()
    net = Network.from_torch(seq, (1, 6, 6))
    assert net.in_size == 36 and net.out_size == 3
    x = torch.randn(16, 1, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        ref = seq(x)
    torch.testing.assert_close(net.forward(x.reshape(16, -1)), ref)
    torch.testing.assert_close(net.forward(x), ref)


@pytest.mark.parametrize("layer_no,misread", [(2, "sign"), (4, "scale")])
def test_misread_acas_weight_is_caught(monkeypatch, layer_no, misread):
    """On a real network whose inputs are far from normalised (ACAS Xu: up to ~60,000), a middle layer's largest
    weight read with the wrong sign, or the whole layer read 1% too large, is caught by the load check: its
    tolerance (~3e-4 here) follows the rounding the network really shows at the checked points (~3e-7), not a
    worst-case bound of the term sizes (which allowed errors of ~900 on outputs of ~0.3)."""
    import bnb.io.onnx_loader as loader

    from conftest import acas
    onnx_path, spec = acas("4_1", "prop_4")
    load_onnx(onnx_path).check_property([(s.lower, s.upper) for s in parse_vnnlib(
        spec, 5, 5).specs])  # the faithful conversion passes
    convert = loader.convert_model

    def misread_convert(model, path):
        net, *rest = convert(model, path)
        lin = [layer for layer in net.layers if hasattr(layer, "weight")][layer_no]
        if misread == "sign":
            i, j = divmod(int(lin.weight.abs().argmax()), lin.weight.shape[1])
            lin.weight[i, j] = -lin.weight[i, j]
        else:
            lin.weight.mul_(1.01)
        return (net, *rest)

    monkeypatch.setattr(loader, "convert_model", misread_convert)
    model = load_onnx(onnx_path, check=False)
    with pytest.raises(ModelError, match="disagrees with onnxruntime"):
        model.check_property([(s.lower, s.upper) for s in parse_vnnlib(spec, 5, 5).specs])
