"""bnb: problem in, verdict out.

Layers, each importing only the ones after it: :mod:`bnb.cli` (the command lines) > :mod:`bnb.runs` (many
instances) > :mod:`bnb.pipeline` (one instance end to end) and :mod:`bnb.theory` (the THEORY.md demonstrations) >
:mod:`bnb.engine` (one input box decided by branch and bound) > :mod:`bnb.io` (ONNX and VNN-LIB in) > the base
modules :mod:`bnb.config`, :mod:`bnb.errors`, :mod:`bnb.results`, :mod:`bnb.timing`. The map: docs/architecture.md.
"""
__version__ = "0.1.0"
