"""Loaded networks kept for the next property of the same model (``bnb run``'s workers, ``bnb serve``, the API).

A model is reused only while its file is unchanged: the key is the resolved path with the file's mtime and
size, so an edited or replaced file is loaded (and checked against onnxruntime) afresh. Every property is
still checked against onnxruntime inside its own boxes (:meth:`~bnb.io.onnx_loader.LoadedModel.check_property`),
with the model's kept session.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from bnb.errors import unreadable
from bnb.io.onnx_loader import LoadedModel, load_onnx


class ModelCache:
    """At most ``max_models`` loaded models (least recently used dropped first)."""

    def __init__(self, max_models: int = 64):
        self.max_models = max_models
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self.hits = 0
        self.loads = 0

    @staticmethod
    def _key(path) -> tuple:
        p = Path(path)
        try:
            st = p.stat()
        except OSError as e:
            raise unreadable(e, p) from None
        return os.path.realpath(p), st.st_mtime_ns, st.st_size

    def get(self, path) -> LoadedModel:
        """The converted model of ``path`` (not checked yet if freshly loaded: verify checks it)."""
        key = self._key(path)
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            self.hits += 1
            return model
        model = load_onnx(path, check=False)
        self.loads += 1
        for old in [k for k in self._models if k[0] == key[0]]:  # an older version of the same file
            del self._models[old]
        self._models[key] = model
        while len(self._models) > self.max_models:
            self._models.popitem(last=False)
        return model

    def __len__(self):
        return len(self._models)
