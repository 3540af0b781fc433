"""ONNX model -> :class:`relaxations.network.Network`: chains of operators and computation graphs (residual
``Add``, ``Concat``, ``Slice``, ``Split``, ``Gather``, ``Pad``, ...) alike.

Two passes. **Ops**: every node, in the model's (topological) order, goes through the operator table
(:mod:`bnb.io.onnx_ops`) into ops on named tensors (:mod:`bnb.io.onnx_dataflow`); constants are folded, and an
unsupported node is one error naming the op and the node. **Lowering** (:mod:`bnb.io.onnx_lowering`): the ops the
output depends on become a chain of layers; a model that is a chain of operators becomes the chain of their
layers. The network is then simplified (elementwise maps and reshapes folded into their neighbours).
"""
from __future__ import annotations

from bnb.errors import ModelError
from bnb.io.onnx_dataflow import Dataflow
from bnb.io.onnx_lowering import adapt, lower
from bnb.io.onnx_nodes import initializers, network_input
from bnb.io.onnx_ops import read_node
from relaxations.network import Network


def convert_model(model, path):
    """``(network, onnx_input_shape, input_name, batchable, chain)`` of a parsed ``ModelProto`` (file ``path``, for
    errors): ``onnx_input_shape`` is ``(1, *per_sample)``, the network's input shape ``per_sample``; ``batchable``:
    the model's batch dimension is symbolic, so onnxruntime may evaluate many points at once; ``chain``: the same
    network before simplification, one layer per operator step (what the float32 evaluation-error bound of
    :mod:`relaxations.float_error` reads: the folds would hide the operators' own roundings)."""
    consts = initializers(model, path)
    inp, onnx_in_shape, batchable = network_input(model, consts, path)
    g = Dataflow(consts, path)
    g.shapes[inp.name] = onnx_in_shape
    for node in model.graph.node:
        read_node(g, node)
    outs = [o.name for o in model.graph.output]
    if len(outs) != 1:
        raise ModelError(f"expected exactly one network output, found {len(outs)}", path)
    out = g.name(outs[0])
    if out not in g.shapes:
        raise ModelError(f"graph output {outs[0]!r} is not computed from the input by supported ops", path)
    try:
        layers = adapt(lower(g.ops, inp.name, out, g.shapes), onnx_in_shape[1:])
        chain = Network(layers, onnx_in_shape[1:])
        net = chain.simplified()
    except ValueError as e:
        raise ModelError(f"inconsistent shapes: {e}", path) from None
    return net, onnx_in_shape, inp.name, batchable, chain
