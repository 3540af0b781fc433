"""ONNX subset reader: a chain of affine operators with constants and Relu, composed into affine segments.

`load(path)` -> (n_in, ops) with ops a list of segments (one more than ReLU layers), each a list of
('add', c) / ('mul', m, divide?) / ('mat', M) acting on the flat vector. `segments(ops, n_in, ex)` -> list of
(W, b, Wr, br): the true map of segment k is W' y + b' with |W' - W| <= Wr, |b' - b| <= br (None: exact).
"""
import importlib.util
import os
import sys

import numpy as np

from .arith import INFL, TINY, U, conv, gam


class Unsupported(Exception):
    pass


def _proto():
    if "onnx.onnx_ml_pb2" in sys.modules:
        return sys.modules["onnx.onnx_ml_pb2"]
    spec = importlib.util.find_spec("onnx")  # load only the protobuf schema, not the onnx package
    path = os.path.join(os.path.dirname(spec.origin), "onnx_ml_pb2.py")
    mspec = importlib.util.spec_from_file_location("certcheck_onnx_ml_pb2", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


_DT = {1: ("<f4", "float_data"), 11: ("<f8", "double_data"), 7: ("<i8", "int64_data"), 6: ("<i4", "int32_data")}


def tensor(t):
    if t.data_type not in _DT or t.data_location == 1:
        raise Unsupported(f"tensor {t.name!r} of data type {t.data_type}")
    dt, field = _DT[t.data_type]
    a = np.frombuffer(t.raw_data, dtype=dt) if t.raw_data else np.array(getattr(t, field), dtype=dt)
    return a.reshape(tuple(t.dims))


def load(path):
    model = _proto().ModelProto()
    with open(path, "rb") as f:
        model.ParseFromString(f.read())
    g = model.graph
    const = {t.name: tensor(t) for t in g.initializer}
    inputs = [i for i in g.input if i.name not in const]
    if len(inputs) != 1 or len(g.output) != 1:
        raise Unsupported("the network must have one input and one output")
    shape = shape0 = tuple(d.dim_value or 1 for d in inputs[0].type.tensor_type.shape.dim)
    cur, ops, seg = inputs[0].name, [], []
    for nd in g.node:
        att = {a.name: a for a in nd.attribute}
        if nd.op_type == "Constant" and "value" in att:
            const[nd.output[0]] = tensor(att["value"].t)
            continue
        data = [k for k, i in enumerate(nd.input) if i == cur]
        cs = [const.get(i) for i in nd.input if i != cur and i]
        if len(data) != 1 or any(c is None for c in cs) or len(nd.output) != 1:
            raise Unsupported(f"node {nd.name or nd.op_type}: not a chain with constant operands")
        op, first = nd.op_type, data[0] == 0
        n = int(np.prod(shape))
        if op in ("Add", "Sub", "Mul", "Div"):
            c = cs[0].astype(np.float64)
            if np.broadcast_shapes(shape, c.shape) != shape:
                raise Unsupported(f"{op} broadcasts the data")
            c = np.broadcast_to(c, shape).ravel()
            if op == "Add":
                seg.append(("add", c))
            elif op == "Sub":
                seg += [("add", -c)] if first else [("mul", -np.ones(n), False), ("add", c)]
            elif op == "Mul":
                seg.append(("mul", c, False))
            elif not first or not np.all(c != 0):
                raise Unsupported("Div of a constant by the data, or by zero")
            else:
                seg.append(("mul", c, True))
        elif op in ("Flatten", "Reshape"):
            if op == "Flatten":
                ax = att["axis"].i if "axis" in att else 1
                shape = (int(np.prod(shape[:ax])), int(np.prod(shape[ax:])))
            else:
                tgt = [shape[i] if v == 0 else int(v) for i, v in enumerate(cs[0].tolist())]
                shape = np.empty(shape).reshape(tgt).shape
        elif op == "MatMul" and first and cs[0].ndim == 2 and n == shape[-1] == cs[0].shape[0]:
            seg.append(("mat", cs[0].astype(np.float64).T))
            shape = shape[:-1] + (cs[0].shape[1],)
        elif op == "Gemm" and first and len(shape) == 2 and shape[0] == 1 and not (
                "transA" in att and att["transA"].i):
            al = np.float64(att["alpha"].f if "alpha" in att else 1.0)
            be = np.float64(att["beta"].f if "beta" in att else 1.0)
            B = cs[0].astype(np.float64)
            M = al * (B if "transB" in att and att["transB"].i else B.T)  # float32 x float32: exact in float64
            if M.shape[1] != n:
                raise Unsupported("Gemm shape")
            seg.append(("mat", M))
            shape = (1, M.shape[0])
            if len(cs) > 1:
                seg.append(("add", np.broadcast_to(be * cs[1].astype(np.float64), (M.shape[0],)).ravel()))
        elif op == "Relu":
            ops.append(seg)
            seg = []
        else:
            raise Unsupported(f"operator {op}")
        cur = nd.output[0]
    if cur != g.output[0].name:
        raise Unsupported("the output is not the end of the chain")
    ops.append(seg)
    return int(np.prod(shape0)), ops


def segments(ops, n_in, ex):
    """Compose each segment's operators into one affine map with rigorous radii (float) or exactly (ex)."""
    segs, n = [], n_in
    for seg in ops:
        W = Wr = None
        b, br = conv(np.zeros(n), ex), np.zeros(n)
        for o in seg:
            if o[0] == "add":
                b = b + conv(o[1], ex)
                br = br if ex else br + U * np.abs(b)
                continue
            R = np.zeros((len(o[1]), len(o[1]))) if o[0] == "mul" else np.zeros(o[1].shape)
            if o[0] == "mul" and ex:
                M = np.diag(1 / conv(o[1], ex) if o[2] else conv(o[1], ex))
            elif o[0] == "mul":
                m = 1.0 / o[1] if o[2] else o[1]
                M, R = np.diag(m), np.diag(2 * U * np.abs(m) + TINY if o[2] else 0 * m)
            else:
                M = conv(o[1], ex)
            if ex:
                W, b = (M if W is None else M @ W), M @ b
                continue
            aM, k = np.abs(M) + R, M.shape[1]
            if W is None:
                W, Wr = M, R
            else:
                W, Wr = M @ W, aM @ Wr + R @ np.abs(W) + gam(k) * (np.abs(M) @ np.abs(W)) + TINY
            bn = M @ b
            br = aM @ br + R @ np.abs(b) + gam(k) * (np.abs(M) @ np.abs(b)) + (k + 2) * TINY
            b = bn
        if W is None:
            W = conv(np.eye(n), ex)
        if ex:
            Wr = br = None
        else:
            Wr = None if Wr is None or not Wr.any() else Wr * INFL
            br = None if not br.any() else br * INFL
        segs.append((W, b, Wr, br))
        n = W.shape[0]
    return segs
