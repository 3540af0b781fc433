"""Tiny float32 ONNX models, one or more per operator bnb converts (``bnb.io.onnx_ops.OPERATORS``) and one per
operator it refuses by name (``REFUSED``), each using the operator on the data path (on a tensor computed from
the network input), built with ``onnx.helper``.

    build_model(op, variant=0) -> (onnx.ModelProto, input_shape)     # a converted operator
    CASES                                                          # every (op, variant)
    build_refused(op) -> (onnx.ModelProto, input_shape)              # a refused operator

Input shapes are ONNX shapes with the batch dimension 1; weights are seeded per (op, variant). Imported by
``tests/test_onnx_operators.py`` and by any test that wants a small model of one operator.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper, shape_inference

FLOAT, DOUBLE, BOOL, INT64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.INT64


def make_model(nodes, inits: dict, in_shape, opset: int = 13, out_type=FLOAT, in_type=FLOAT, out: str = "y",
               out_shape=None, infer: bool = True):
    """A model of ``nodes`` from input ``x`` (shape ``in_shape``) to output ``out`` (shape ``out_shape``, or
    from ONNX shape inference with ``infer``); ``inits``: initialisers by name (float arrays become float32,
    integer arrays int64, bool arrays bool)."""
    tensors = []
    for name, v in inits.items():
        v = np.asarray(v)
        v = v.astype(np.int64) if v.dtype.kind in "iu" else v if v.dtype == bool else v.astype(np.float32)
        tensors.append(numpy_helper.from_array(v, name))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", in_type, list(in_shape))],
                              [helper.make_tensor_value_info(out, out_type, out_shape)], initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return shape_inference.infer_shapes(model, strict_mode=True) if infer and out_shape is None else model


def node(op, ins, outs, **attrs):
    return helper.make_node(op, list(ins), [outs] if isinstance(outs, str) else list(outs), **attrs)


def ints(*v):
    return np.array(v, np.int64)


# ------------------------------------------------------------------------------ converted operators
# each builder: rng -> (nodes, initialisers, input shape[, opset[, output type[, output shape]]]); without an
# output shape, ONNX shape inference gives it
def _gemm(rng):
    return [node("Gemm", ["x", "W", "b"], "y", transB=1)], {"W": _r(rng, 4, 3), "b": _r(rng, 4)}, (1, 3)


def _gemm_trans_a(rng):  # x^T (3, 1) @ B (1, 4), scaled, plus a broadcast bias
    return ([node("Gemm", ["x", "B", "c"], "y", transA=1, alpha=0.5, beta=2.0)],
            {"B": _r(rng, 1, 4), "c": _r(rng, 4)}, (1, 3))


def _gemm_constant_first(rng):  # A^T (4, 1) @ x (1, 3): the data on the right
    return [node("Gemm", ["A", "x", "c"], "y", transA=1)], {"A": _r(rng, 1, 4), "c": _r(rng, 3)}, (1, 3)


def _matmul(rng):
    return [node("MatMul", ["x", "W"], "y")], {"W": _r(rng, 3, 4)}, (1, 3)


def _matmul_3d(rng):
    return [node("MatMul", ["x", "W"], "h"), node("Relu", ["h"], "y")], {"W": _r(rng, 3, 4)}, (1, 2, 3)


def _matmul_left(rng):  # W (4, 2) @ x (1, 2, 3)
    return [node("MatMul", ["W", "x"], "y")], {"W": _r(rng, 4, 2)}, (1, 2, 3)


def _add(rng):
    return [node("Add", ["x", "c"], "y")], {"c": _r(rng, 3)}, (1, 3)


def _add_constant_first(rng):
    return [node("Add", ["c", "x"], "y")], {"c": _r(rng, 1, 2, 3)}, (1, 2, 3)


def _add_residual(rng):  # two tensors computed from the input
    return ([node("Gemm", ["x", "W"], "h", transB=1), node("Relu", ["h"], "r"), node("Add", ["x", "r"], "y")],
            {"W": _r(rng, 3, 3)}, (1, 3))


def _sub(rng):
    return [node("Sub", ["x", "c"], "y")], {"c": _r(rng, 3)}, (1, 3)


def _sub_constant_first(rng):
    return [node("Sub", ["c", "x"], "y")], {"c": _r(rng, 3)}, (1, 3)


def _sub_two_tensors(rng):
    return ([node("Gemm", ["x", "W"], "h", transB=1), node("Relu", ["h"], "r"), node("Sub", ["r", "x"], "y")],
            {"W": _r(rng, 3, 3)}, (1, 3))


def _mul(rng):
    return [node("Mul", ["x", "c"], "y")], {"c": _r(rng, 1, 3)}, (1, 3)


def _mul_scalar_first(rng):
    return [node("Mul", ["c", "x"], "y")], {"c": np.float32(-1.5)}, (1, 2, 3)


def _div(rng):
    return [node("Div", ["x", "c"], "y")], {"c": rng.uniform(0.5, 2.0, 3) * rng.choice([-1, 1], 3)}, (1, 3)


def _neg(rng):
    return [node("Gemm", ["x", "W"], "h", transB=1), node("Neg", ["h"], "y")], {"W": _r(rng, 2, 3)}, (1, 3)


def _relu(rng):
    return ([node("Gemm", ["x", "W", "b"], "h", transB=1), node("Relu", ["h"], "y")],
            {"W": _r(rng, 5, 3), "b": _r(rng, 5)}, (1, 3))


def _smooth(op):
    """Builders of an elementwise activation ``op``: after a Gemm (a chain), and on one tensor of a graph (the
    residual ``x + act(W x)``: the activation acts on one slot of the state, the identity on the carried one)."""
    def chain(rng):
        return ([node("Gemm", ["x", "W", "b"], "h", transB=1), node(op, ["h"], "y")],
                {"W": 3 * _r(rng, 5, 3), "b": _r(rng, 5)}, (1, 3))

    def graph(rng):
        return ([node("Gemm", ["x", "W"], "h", transB=1), node(op, ["h"], "r"), node("Add", ["x", "r"], "y")],
                {"W": 3 * _r(rng, 3, 3)}, (1, 3))
    return [chain, graph]


def _leaky_relu_alpha(rng):  # an explicit slope, after a convolution
    return ([node("Conv", ["x", "W"], "h"), node("LeakyRelu", ["h"], "y", alpha=0.25)],
            {"W": _r(rng, 2, 1, 2, 2)}, (1, 1, 3, 3))


def _flatten(rng):
    return [node("Flatten", ["x"], "h", axis=1), node("Relu", ["h"], "y")], {}, (1, 2, 3, 2)


def _flatten_axis(rng):
    return [node("Flatten", ["x"], "y", axis=-1)], {}, (1, 2, 3)


def _reshape(rng):
    return [node("Reshape", ["x", "s"], "y")], {"s": ints(1, -1)}, (1, 2, 3)


def _reshape_copy_dims(rng):
    return [node("Reshape", ["x", "s"], "y")], {"s": ints(0, 3, 2)}, (1, 2, 3)


def _constant(rng):
    w = helper.make_tensor("w", FLOAT, [2, 3], _r(rng, 2, 3).reshape(-1).tolist())
    c = helper.make_tensor("c", FLOAT, [2], _r(rng, 2).tolist())
    return ([node("Constant", [], "W", value=w), node("Constant", [], "c", value=c),
             node("Gemm", ["x", "W"], "h", transB=1), node("Add", ["h", "c"], "y")], {}, (1, 3))


def _identity(rng):
    return [node("Identity", ["x"], "h"), node("Gemm", ["h", "W"], "y", transB=1)], {"W": _r(rng, 2, 3)}, (1, 3)


def _dropout(rng):
    return ([node("Gemm", ["x", "W"], "h", transB=1), node("Dropout", ["h"], "d"), node("Relu", ["d"], "y")],
            {"W": _r(rng, 4, 3)}, (1, 3))


def _cast(rng):
    return ([node("Gemm", ["x", "W"], "h", transB=1), node("Cast", ["h"], "c", to=FLOAT), node("Relu", ["c"], "y")],
            {"W": _r(rng, 4, 3)}, (1, 3))


def _cast_double(rng):
    return ([node("Gemm", ["x", "W"], "h", transB=1), node("Cast", ["h"], "y", to=DOUBLE)],
            {"W": _r(rng, 4, 3)}, (1, 3), 13, DOUBLE)


def _conv(rng):
    return ([node("Conv", ["x", "W", "b"], "y", pads=[1, 1, 1, 1], strides=[2, 2])],
            {"W": _r(rng, 3, 2, 3, 3), "b": _r(rng, 3)}, (1, 2, 5, 5))


def _conv_1d(rng):
    return [node("Conv", ["x", "W"], "y", dilations=[2], pads=[1, 1])], {"W": _r(rng, 3, 2, 3)}, (1, 2, 7)


def _conv_groups_asymmetric(rng):
    return ([node("Conv", ["x", "W", "b"], "h", group=2, pads=[0, 1, 1, 0]), node("Relu", ["h"], "y")],
            {"W": _r(rng, 4, 1, 2, 2), "b": _r(rng, 4)}, (1, 2, 4, 4))


def _conv_transpose(rng):
    return ([node("ConvTranspose", ["x", "W", "b"], "y", strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])],
            {"W": _r(rng, 2, 3, 3, 3), "b": _r(rng, 3)}, (1, 2, 3, 3))


def _conv_transpose_plain(rng):
    return [node("ConvTranspose", ["x", "W"], "y")], {"W": _r(rng, 2, 1, 2, 2)}, (1, 2, 2, 3)


def _average_pool(rng):
    return [node("AveragePool", ["x"], "y", kernel_shape=[2, 2], strides=[2, 2])], {}, (1, 2, 4, 4)


def _average_pool_1d(rng):
    return [node("AveragePool", ["x"], "y", kernel_shape=[3])], {}, (1, 2, 6)


def _average_pool_padded(rng):
    return ([node("AveragePool", ["x"], "y", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)],
            {}, (1, 1, 4, 4))


def _batch_normalization(rng):
    return ([node("BatchNormalization", ["x", "g", "b", "m", "v"], "y", epsilon=1e-3)],
            {"g": _r(rng, 3), "b": _r(rng, 3), "m": _r(rng, 3), "v": rng.uniform(0.5, 2.0, 3)}, (1, 3, 2, 2))


def _batch_normalization_2d(rng):
    return ([node("Gemm", ["x", "W"], "h", transB=1), node("BatchNormalization", ["h", "g", "b", "m", "v"], "y")],
            {"W": _r(rng, 3, 2), "g": _r(rng, 3), "b": _r(rng, 3), "m": _r(rng, 3), "v": rng.uniform(0.5, 2.0, 3)},
            (1, 2))


def _transpose(rng):
    return [node("Transpose", ["x"], "y", perm=[0, 2, 3, 1])], {}, (1, 2, 3, 2)


def _transpose_unit_axes(rng):  # only axes of size 1 move: the data keeps its order
    return [node("Transpose", ["x"], "y", perm=[0, 2, 1, 3])], {}, (1, 3, 1, 2)


def _transpose_default(rng):  # no perm: the axes reversed
    return [node("Transpose", ["x"], "y")], {}, (1, 2, 3)


def _squeeze(rng):
    return [node("Squeeze", ["x", "a"], "y")], {"a": ints(2)}, (1, 3, 1, 2)


def _squeeze_attribute(rng):  # opset 11: axes as an attribute
    return [node("Squeeze", ["x"], "y", axes=[-2])], {}, (1, 3, 1, 2), 11


def _squeeze_all(rng):
    return [node("Squeeze", ["x"], "y")], {}, (1, 3, 1, 2)


def _unsqueeze(rng):
    return [node("Unsqueeze", ["x", "a"], "y")], {"a": ints(1, 3)}, (1, 3)


def _unsqueeze_attribute(rng):
    return [node("Unsqueeze", ["x"], "y", axes=[-1])], {}, (1, 3), 11


def _concat(rng):
    nodes = [node("Gemm", ["x", "W"], "h", transB=1), node("Relu", ["h"], "r"), node("Concat", ["x", "r"], "y", axis=1)]
    return nodes, {"W": _r(rng, 2, 3)}, (1, 3)


def _concat_constant(rng):
    return [node("Concat", ["c", "x", "x"], "y", axis=-1)], {"c": _r(rng, 1, 2, 2)}, (1, 2, 3)


def _slice(rng):
    return ([node("Slice", ["x", "s", "e", "a", "t"], "y")],
            {"s": ints(1, 0), "e": ints(5, -1), "a": ints(1, 2), "t": ints(2, 1)}, (1, 6, 4))


def _slice_reversed(rng):
    return [node("Slice", ["x", "s", "e", "a", "t"], "y")], {"s": ints(-1), "e": ints(-100), "a": ints(1),
                                                              "t": ints(-1)}, (1, 5)


def _slice_attributes(rng):  # opset 9: starts, ends, axes as attributes
    return [node("Slice", ["x"], "y", starts=[1], ends=[3], axes=[1])], {}, (1, 4), 9


def _split(rng):  # sizes as an input; both parts used, in the other order
    return ([node("Split", ["x", "n"], ["a", "b"], axis=1), node("Concat", ["b", "a"], "y", axis=1)],
            {"n": ints(2, 4)}, (1, 6))


def _split_equal(rng):
    return [node("Split", ["x"], ["a", "b"], axis=-1), node("Sub", ["a", "b"], "y")], {}, (1, 2, 6)


def _split_attribute(rng):  # opset 11: sizes as an attribute
    return ([node("Split", ["x"], ["a", "b"], axis=1, split=[1, 2]), node("Concat", ["b", "a"], "y", axis=1)],
            {}, (1, 3, 2), 11)


def _gather(rng):
    return [node("Gather", ["x", "i"], "y", axis=1)], {"i": ints(3, 0, 4, -1)}, (1, 5)


def _gather_scalar(rng):
    return [node("Gather", ["x", "i"], "y", axis=1)], {"i": np.array(2, np.int64)}, (1, 4, 3)


def _pad(rng):
    return [node("Pad", ["x", "p", "v"], "y")], {"p": ints(0, 1, 0, 0, 0, 2), "v": np.float32(0.5)}, (1, 2, 3)


def _pad_attributes(rng):  # opset 10: pads and value as attributes
    return [node("Pad", ["x"], "y", pads=[0, 0, 1, 0, 0, 1], value=-1.0)], {}, (1, 2, 3), 10


def _pad_axes(rng):  # opset 18: only the listed axes
    return [node("Pad", ["x", "p", "", "a"], "y")], {"p": ints(2, 1), "a": ints(-1)}, (1, 2, 3), 18


def _shape(rng):  # Reshape to the input's own shape, read by Shape
    return ([node("Flatten", ["x"], "f"), node("Gemm", ["f", "W"], "h", transB=1), node("Shape", ["x"], "s"),
             node("Reshape", ["h", "s"], "y")], {"W": _r(rng, 6, 6)}, (1, 2, 3), 13, FLOAT, (1, 2, 3))


def _shape_start(rng):  # opset 15: Shape(x, start=1), completed by a Concat on constants
    return ([node("Flatten", ["x"], "f"), node("Relu", ["f"], "h"), node("Shape", ["x"], "s", start=1),
             node("Concat", ["one", "s"], "t", axis=0), node("Reshape", ["h", "t"], "y")],
            {"one": ints(1)}, (1, 3, 2), 15)


def _r(rng, *shape):
    return rng.uniform(-1, 1, shape).astype(np.float32)


BUILDERS = {
    "Gemm": [_gemm, _gemm_trans_a, _gemm_constant_first],
    "MatMul": [_matmul, _matmul_3d, _matmul_left],
    "Add": [_add, _add_constant_first, _add_residual],
    "Sub": [_sub, _sub_constant_first, _sub_two_tensors],
    "Mul": [_mul, _mul_scalar_first],
    "Div": [_div],
    "Neg": [_neg],
    "Relu": [_relu],
    "Sigmoid": _smooth("Sigmoid"),
    "Tanh": _smooth("Tanh"),
    "Softplus": _smooth("Softplus"),
    "LeakyRelu": _smooth("LeakyRelu") + [_leaky_relu_alpha],
    "Flatten": [_flatten, _flatten_axis],
    "Reshape": [_reshape, _reshape_copy_dims],
    "Constant": [_constant],
    "Identity": [_identity],
    "Dropout": [_dropout],
    "Cast": [_cast, _cast_double],
    "Conv": [_conv, _conv_1d, _conv_groups_asymmetric],
    "ConvTranspose": [_conv_transpose, _conv_transpose_plain],
    "BatchNormalization": [_batch_normalization, _batch_normalization_2d],
    "AveragePool": [_average_pool, _average_pool_1d, _average_pool_padded],
    "Transpose": [_transpose, _transpose_unit_axes, _transpose_default],
    "Squeeze": [_squeeze, _squeeze_attribute, _squeeze_all],
    "Unsqueeze": [_unsqueeze, _unsqueeze_attribute],
    "Concat": [_concat, _concat_constant],
    "Slice": [_slice, _slice_reversed, _slice_attributes],
    "Split": [_split, _split_equal, _split_attribute],
    "Gather": [_gather, _gather_scalar],
    "Pad": [_pad, _pad_attributes, _pad_axes],
    "Shape": [_shape, _shape_start],
}
"""Operator -> its model builders (variants: attribute forms, opset forms, the data on either side)."""

CASES = [(op, k) for op, builders in BUILDERS.items() for k in range(len(builders))]


def build_model(op: str, variant: int = 0):
    """``(model, input_shape)``: variant ``variant`` of the tiny model using ``op`` on the data path."""
    fn = BUILDERS[op][variant]
    nodes, inits, in_shape, *rest = fn(np.random.default_rng([len(op), variant, *op.encode()]))
    opset, out_type, out_shape = (rest + [13, FLOAT, None][len(rest):])[:3]
    return make_model(nodes, inits, in_shape, opset, out_type, out_shape=out_shape), tuple(in_shape)


# ------------------------------------------------------------------------------ refused operators
def build_refused(op: str):
    """``(model, input_shape)``: a valid model applying ``op`` (one of ``REFUSED``) to the network input."""
    rng = np.random.default_rng(len(op))
    shape, in_type, out_type, inits = (1, 3), FLOAT, FLOAT, {}
    if op in ("Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"):
        nodes, inits, out_type = [node(op, ["x", "c"], "y")], {"c": _r(rng, 1, 3)}, BOOL
    elif op in ("And", "Or", "Xor"):
        nodes, inits, in_type, out_type = [node(op, ["x", "c"], "y")], {"c": np.array([True, False, True])}, BOOL, BOOL
    elif op == "Not":
        nodes, in_type, out_type = [node(op, ["x"], "y")], BOOL, BOOL
    elif op == "Where":  # a constant mask on the data
        nodes, inits = [node(op, ["m", "x", "z"], "y")], {"m": np.array([True, False, True]), "z": np.zeros(3)}
    elif op in ("Softmax", "LogSoftmax"):
        nodes = [node(op, ["x"], "y", axis=-1)]
    elif op in ("Max", "Min"):  # of two tensors computed from the input
        nodes = [node("Neg", ["x"], "n"), node(op, ["x", "n"], "y")]
    elif op == "MaxPool":
        nodes, shape = [node(op, ["x"], "y", kernel_shape=[2, 2])], (1, 1, 4, 4)
    elif op == "GlobalMaxPool":
        nodes, shape = [node(op, ["x"], "y")], (1, 2, 3, 3)
    elif op in ("ArgMax", "ArgMin"):
        nodes, out_type = [node(op, ["x"], "y", axis=1)], INT64
    else:  # elementwise activations
        nodes = [node(op, ["x"], "y")]
    opset = {"Gelu": 20, "Mish": 18, "HardSwish": 14}.get(op, 13)
    return make_model(nodes, inits, shape, opset, out_type, in_type), shape
