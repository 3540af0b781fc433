"""Reading ONNX files without importing the ``onnx`` package (its import costs ~0.7 s, mostly ``ml_dtypes``).

Only the generated protobuf classes (``onnx/onnx_ml_pb2.py``, which needs nothing but ``google.protobuf``) are
loaded, under their own module name, so that a later ``import onnx`` in the same process reuses them instead of
registering the schema twice. Tensors and attributes are decoded here for the few types a network uses; what
the loader builds from them is compared with onnxruntime on every load (:meth:`LoadedModel.check`).
"""
from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np

_PB2 = "onnx.onnx_ml_pb2"

# TensorProto.DataType -> (numpy dtype of raw_data, the typed field holding the values otherwise)
_TENSOR_TYPES = {k: (np.dtype(t), field) for k, (t, field) in {
    1: (np.float32, "float_data"), 2: (np.uint8, "int32_data"), 3: (np.int8, "int32_data"),
    4: (np.uint16, "int32_data"), 5: (np.int16, "int32_data"), 6: (np.int32, "int32_data"),
    7: (np.int64, "int64_data"), 9: (np.bool_, "int32_data"), 10: (np.float16, "int32_data"),
    11: (np.float64, "double_data"), 12: (np.uint32, "uint64_data"), 13: (np.uint64, "uint64_data"),
}.items()}
_LITTLE_ENDIAN = {k: t.newbyteorder("<") for k, (t, _) in _TENSOR_TYPES.items()}  # the byte order of raw_data


def _pb2():
    if _PB2 in sys.modules:
        return sys.modules[_PB2]
    if "onnx" in sys.modules:  # the package is there anyway: use its classes
        import onnx.onnx_ml_pb2 as pb2
        return pb2
    pkg = importlib.util.find_spec("onnx")  # locates the package without running its __init__
    if pkg is None or not pkg.submodule_search_locations:
        raise ImportError("the onnx package is not installed")
    for folder in pkg.submodule_search_locations:
        spec = importlib.util.spec_from_file_location(_PB2, f"{folder}/onnx_ml_pb2.py")
        if spec is not None:
            break
    module = importlib.util.module_from_spec(spec)
    sys.modules[_PB2] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_PB2]
        raise
    return module


def parse_model(data: bytes):
    """A ``ModelProto`` from the bytes of an ONNX file (protobuf's own errors on a malformed file)."""
    model = _pb2().ModelProto()
    model.ParseFromString(data)
    return model


def tensor_bytes(name: str, values: np.ndarray, data_type: int) -> bytes:
    """A serialised ``TensorProto`` named ``name`` holding ``values`` (their shape; the values in ``raw_data``) as
    ``data_type`` (a ``TensorProto.DataType``: 1 float32, 11 float64, ...); ``ValueError`` if a value would not
    be held exactly."""
    values = np.asarray(values)
    stored = np.ascontiguousarray(values, dtype=_LITTLE_ENDIAN[data_type])
    if not np.array_equal(stored.astype(values.dtype), values, equal_nan=values.dtype.kind in "fc"):
        raise ValueError(f"{name}: values not representable exactly as {stored.dtype.name}")
    t = _pb2().TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(int(d) for d in values.shape)
    t.raw_data = stored.tobytes()
    return t.SerializeToString()


def to_array(t, float_dtype=None) -> np.ndarray:
    """The value of a ``TensorProto`` (a writable array), floating-point values in ``float_dtype`` where given
    (converted in the one copy out of the message), else in their own type; ``ValueError`` for types and storage
    the loader does not handle."""
    if t.data_location == 1:
        raise ValueError(f"tensor {t.name!r} keeps its data in an external file; not supported")
    if t.data_type not in _TENSOR_TYPES:
        raise ValueError(f"tensor {t.name!r} has data type {t.data_type}; not supported")
    dtype, field = _TENSOR_TYPES[t.data_type]
    out = float_dtype if float_dtype is not None and dtype.kind == "f" else dtype
    shape = tuple(t.dims)
    raw = t.raw_data  # (each read of the field is a copy of the bytes)
    if raw:
        arr = np.frombuffer(raw, dtype=_LITTLE_ENDIAN[t.data_type]).astype(out)
    elif t.data_type == 10:  # float16 values travel as their bit patterns in int32_data
        arr = np.asarray(t.int32_data, dtype=np.uint16).view(np.float16).astype(out, copy=False)
    else:
        arr = np.asarray(getattr(t, field), dtype=out)
    if arr.size != math.prod(shape):
        raise ValueError(f"tensor {t.name!r} holds {arr.size} values for shape {shape}")
    return arr.reshape(shape)


def attribute_value(a):
    """The Python value of an ``AttributeProto`` (numbers, bytes, tensors and lists of them)."""
    kind = a.type
    if kind == 1:
        return a.f
    if kind == 2:
        return a.i
    if kind == 3:
        return a.s
    if kind == 4:
        return a.t
    if kind == 6:
        return list(a.floats)
    if kind == 7:
        return list(a.ints)
    if kind == 8:
        return list(a.strings)
    if kind == 9:
        return list(a.tensors)
    raise ValueError(f"attribute {a.name!r} of type {kind} is not supported")
