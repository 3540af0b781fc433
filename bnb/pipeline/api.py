"""Python API for many queries in one process.

    from bnb.pipeline.api import Verifier
    v = Verifier(load_config(["configs/acasxu.yaml"]))
    for prop in props:
        result = v.verify("net.onnx", prop)      # a bnb.results.Result

The process pays the imports once, and each network is loaded once while its file is unchanged
(:class:`bnb.io.models.ModelCache`); every property is still checked against onnxruntime inside its own boxes,
and every verdict is decided exactly as by ``bnb verify``.
"""
from __future__ import annotations

from bnb.config import Config
from bnb.io.models import ModelCache
from bnb.results import Result


class Verifier:
    def __init__(self, cfg: Config | None = None, max_models: int = 64):
        self.cfg = cfg or Config()
        self.models = ModelCache(max_models)

    def verify(self, onnx_path, vnnlib_path, timeout: float | None = None, cfg: Config | None = None,
               log=None) -> Result:
        """:func:`bnb.pipeline.verify.verify` with this verifier's configuration (or ``cfg``) and its loaded models.
        Bad input raises :class:`bnb.errors.BnbError`, as there."""
        from bnb.pipeline.verify import verify
        return verify(onnx_path, vnnlib_path, cfg or self.cfg, timeout, log=log, models=self.models)
