"""ONNX subset reader: a chain of affine operators with constants and Relu, composed into affine segments.

`load(path)` -> (n_in, ops) with ops a list of segments (one more than ReLU layers), each a list of
('add', c) / ('div', c) / ('mat', M) acting on the flat vector. `segments(ops, n_in, ex)` -> list of
(W, b, Wr, br): the true map of segment k is W' y + b' with |W' - W| <= Wr, |b' - b| <= br (None: exact).
"""
import importlib.util
import os
import sys

import numpy as np

from .arith import INFL, TINY, U, conv, gam, mm

Unsupported = type("Unsupported", (Exception,), {})  # the input is outside the checker's subset


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

        def ai(k, default=0, att=att):
            return att[k].i if k in att else default
        if nd.op_type == "Constant" and "value" in att:
            const[nd.output[0]] = tensor(att["value"].t)
            continue
        data = [k for k, i in enumerate(nd.input) if i == cur]
        cs = [const.get(i) for i in nd.input if i != cur and i]
        if len(data) != 1 or any(c is None for c in cs) or len(nd.output) != 1 or nd.domain not in ("", "ai.onnx"):
            raise Unsupported(f"node {nd.name or nd.op_type}: not a chain with constant operands")
        op, first = nd.op_type, data[0] == 0
        if op not in ("Reshape", "Flatten") and any(c.dtype.kind != "f" for c in cs):
            raise Unsupported(f"{op} with an integer constant")
        n = int(np.prod(shape))
        if op in ("Add", "Sub", "Mul", "Div"):
            c = cs[0].astype(np.float64)
            if np.broadcast_shapes(shape, c.shape) != shape:
                raise Unsupported(f"{op} broadcasts the data")
            c = np.broadcast_to(c, shape).ravel()
            if op == "Add":
                seg.append(("add", c))
            elif op == "Sub":
                seg += [("add", -c)] if first else [("mat", -np.eye(n)), ("add", c)]
            elif op == "Mul":
                seg.append(("mat", np.diag(c)))
            elif not first or not np.all(c != 0):
                raise Unsupported("Div of a constant by the data, or by zero")
            else:
                seg.append(("div", c))
        elif op in ("Flatten", "Reshape", "Identity"):
            if op == "Flatten":
                shape = (int(np.prod(shape[:ai("axis", 1)])), int(np.prod(shape[ai("axis", 1):])))
            elif op == "Reshape":
                tgt = [shape[i] if v == 0 else int(v) for i, v in enumerate(cs[0].tolist())]
                shape = np.empty(shape).reshape(tgt).shape
        elif op == "MatMul" and first and cs[0].ndim == 2 and n == shape[-1] == cs[0].shape[0]:
            seg.append(("mat", cs[0].astype(np.float64).T))
            shape = shape[:-1] + (cs[0].shape[1],)
        elif op == "Gemm" and first and len(shape) == 2 and shape[0] == 1 and not ai("transA"):
            al, be = (np.float64(att[k].f if k in att else 1.0) for k in ("alpha", "beta"))
            B = cs[0].astype(np.float64)
            M = al * (B if ai("transB") else B.T)  # float32 x float32: exact in float64
            if M.shape[1] != n or ((al != 1 or be != 1) and any(c.dtype != np.float32 for c in cs)):
                raise Unsupported("Gemm shape, or alpha/beta with float64 operands")
            seg += [("mat", M)] + [("add", np.broadcast_to(be * c.astype(np.float64), (M.shape[0],))) for c in cs[1:]]
            shape = (1, M.shape[0])
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
            M = np.diag(1 / conv(o[1], ex)) if o[0] == "div" else conv(o[1], ex)
            if ex:
                W, b = (M if W is None else mm(M, W)), mm(M, b)
                continue
            R = np.diag(2 * U * np.abs(np.diag(M)) + TINY) if o[0] == "div" else np.zeros(M.shape)
            aM, k = np.abs(M) + R, M.shape[1]
            if W is None:
                W, Wr = M, R
            else:
                W, Wr = M @ W, aM @ Wr + R @ np.abs(W) + gam(k) * (np.abs(M) @ np.abs(W)) + TINY
            b, br = M @ b, aM @ br + R @ np.abs(b) + gam(k) * (np.abs(M) @ np.abs(b)) + (k + 2) * TINY
        W = conv(np.eye(n), ex) if W is None else W
        segs.append((W, b, None if ex or Wr is None or not Wr.any() else Wr * INFL,
                     None if ex or not br.any() else br * INFL))
        n = W.shape[0]
    return segs
