"""Independent checker of bnb's unsat certificates (docs/certificates.md): stdlib, numpy, ONNX protobuf only."""
from .check import Result, check

__all__ = ["Result", "check"]
