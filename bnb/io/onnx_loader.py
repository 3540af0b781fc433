"""Loading an ONNX file: :func:`load_onnx` reads it, converts it (:func:`bnb.io.onnx_graph.convert_model`) and checks
the converted network against onnxruntime after every load (:class:`LoadedModel`).

Every tensor of the model is either a constant (initialisers, ``Constant`` nodes and anything computed only
from them) or computed from the network input; anything the converter cannot read is a
:class:`~bnb.errors.ModelError` naming the file (and the op and the node). The input's ONNX shape is
``(1, *per_sample)``: the leading batch dimension must be 1 (or symbolic).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from bnb.errors import ModelError, unreadable
from bnb.io.onnx_graph import convert_model
from bnb.io.onnx_proto import parse_model
from relaxations.network import Network


class LoadedModel:
    """A converted network together with what is needed to replay points on the original model."""

    def __init__(self, path: Path, network: Network, onnx_input_shape, input_name: str, batchable: bool,
                 model_bytes: bytes, chain: Network | None = None):
        self.path = path
        self.network = network
        self.chain = chain if chain is not None else network  # before simplification (float32 error bound)
        self.onnx_input_shape = tuple(onnx_input_shape)
        self.input_name = input_name
        self.batchable = batchable
        self._bytes = model_bytes
        self._session = None
        self._net32 = None  # float32 copy of the chain, for the check's rounding scale
        self.load_checked = False  # set by the first check that passes (every check batch holds the load box)

    @property
    def session(self):
        """The onnxruntime session of the model; a model onnxruntime refuses is a :class:`ModelError`."""
        if self._session is None:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.log_severity_level = 3
            try:
                self._session = ort.InferenceSession(self._bytes, opts, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own types (Fail, InvalidGraph, ...) and RuntimeError
                raise ModelError(f"onnxruntime cannot load the model (bnb checks its reading against it): "
                                 f"{ort_message(e)}", self.path) from None
        return self._session

    def run_onnx(self, x: np.ndarray) -> np.ndarray:
        """Evaluate the original ONNX model on float32 points ``(N, in_size)`` -> ``(N, out_size)`` float64."""
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        sess = self.session
        try:
            if self.batchable and len(x) > 1:
                out = sess.run(None, {self.input_name: x.reshape(len(x), *self.onnx_input_shape[1:])})[0]
                return out.reshape(len(x), -1).astype(np.float64)
            rows = [sess.run(None, {self.input_name: xi.reshape(self.onnx_input_shape)})[0].reshape(-1)
                    for xi in x]
        except Exception as e:
            raise ModelError(f"onnxruntime cannot evaluate the model: {ort_message(e)}", self.path) from None
        return np.stack(rows).astype(np.float64)

    def _rounding_scale(self, x: np.ndarray, boxes: list[int]) -> np.ndarray:
        """``(K, 1)``: how far float32 rounding moves this network's outputs at points like ``x`` ``(K, n_in)``:
        per box (``boxes[k]``: the box of point ``k``), the largest ``|f64(x) - f32(x)|`` of the converted network
        before simplification (one layer per operator step) evaluated in both precisions. onnxruntime rounds the
        same sums in another order, so its error is of the same size; it is measured at the points themselves, so
        a box far from the origin gets the large rounding it really has, and a deep network is not charged for
        worst-case growth it does not show."""
        if self._net32 is None:  # the chain, not the simplified network: its steps round as onnxruntime's do
            self._net32 = self.chain.to(dtype=torch.float32)
        with torch.no_grad():
            y64 = self.chain.forward(torch.from_numpy(x.astype(np.float64))).numpy()
            y32 = self._net32.forward(torch.from_numpy(x.astype(np.float32))).double().numpy()
        dev = np.abs(y64 - y32).max(axis=1)
        dev = np.where(np.isfinite(dev), dev, np.inf)
        ids = np.asarray(boxes)
        per_box = np.array([dev[ids == b].max() for b in range(ids.max() + 1)])
        return per_box[ids][:, None]

    def load_box(self):
        """The box of the load check: inputs near the usual ranges of normalised data, ``[-1, 1]``."""
        lo = -np.ones(self.network.in_size)
        return lo, -lo

    def check_load(self):
        """The check every load gets (verify folds it into :meth:`check_property`'s batch)."""
        self.check_boxes([self.load_box()])
        self.load_checked = True

    def check_property(self, boxes, seed: int = 0):
        """Check the property's ``boxes``, with the load box too on this model's first check: one batch."""
        first = [] if self.load_checked else [self.load_box()]
        self.check_boxes(first + list(boxes), seed=seed)
        self.load_checked = True

    def check(self, lower: np.ndarray, upper: np.ndarray, n_random: int = 64, seed: int = 0,
              rtol: float = 1e-4, atol: float = 1e-4):
        """:meth:`check_boxes` on one box."""
        self.check_boxes([(lower, upper)], n_random, seed, rtol, atol)

    def check_boxes(self, boxes, n_random: int = 64, seed: int = 0, rtol: float = 1e-4, atol: float = 1e-4,
                    slack: float = 100.0):
        """Compare the converted network with onnxruntime on random points, the centre and corners of each box
        ``(lower, upper)``: one batch of points, one forward pass and one onnxruntime run (one session per model).

        Raises :class:`ModelError` on a mismatch beyond ``atol + rtol |onnx| + slack * s``, where ``s`` is the
        rounding scale of the box (:meth:`_rounding_scale`: how much float32 evaluation moves the converted
        network's outputs there). A misread model errs by about the size of the outputs; rounding, by ``s``.
        """
        rng = np.random.default_rng(seed)
        pts, ids = [], []
        for b, (lower, upper) in enumerate(boxes):
            lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
            n = lower.size
            box_pts = [lower + (upper - lower) * rng.random((n_random, n)), ((lower + upper) / 2)[None]]
            if n <= 8:  # every corner
                bits = (np.arange(2 ** n)[:, None] >> np.arange(n)[None]) & 1
            else:  # a sample of corners
                bits = rng.integers(0, 2, size=(32, n))
            box_pts.append(np.where(bits == 1, upper, lower))
            pts += box_pts
            ids += [b] * sum(len(p) for p in box_pts)
        x = np.concatenate(pts).astype(np.float32)
        ours = self.network.forward(torch.from_numpy(x.astype(np.float64))).numpy()
        ref = self.run_onnx(x)
        err = np.abs(ours - ref)
        tol = atol + rtol * np.abs(ref) + slack * self._rounding_scale(x, ids)
        if not np.all(err <= tol):  # (NaN anywhere fails too)
            worst = float(np.nanmax(err - tol)) if np.isfinite(err - tol).any() else float("nan")
            raise ModelError(f"converted network disagrees with onnxruntime (max excess error {worst:.3g}); "
                             "refusing to verify a misread model", self.path)


def ort_message(e: Exception) -> str:
    """onnxruntime's message for ``e`` on one line, without its prefix (``[ONNXRuntimeError] : 1 : FAIL : ``)
    and the C++ source location and signature some messages start with."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
    m = re.match(r"\S+\.(?:cc|cpp|h):\d+ [^(]*\(", text)
    if m:  # skip "file.cc:123 name(args) ": the parentheses of the signature nest
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        text = text[i:].strip() or text
    return text


def load_onnx(path, check: bool = True) -> LoadedModel:
    """Load and convert an ONNX file; with ``check``, compare with onnxruntime on random points."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise unreadable(e, path) from None
    try:
        model = parse_model(data)
    except Exception as e:  # protobuf raises several types
        first = str(e).splitlines()[0] if str(e) else "parse error"
        raise ModelError(f"not a readable ONNX model ({type(e).__name__}: {first})", path) from None
    if len(model.graph.node) == 0:
        raise ModelError("not a readable ONNX model (empty graph)", path)
    net, in_shape, in_name, batchable, chain = convert_model(model, path)
    loaded = LoadedModel(path, net, in_shape, in_name, batchable, data, chain)
    if check:
        loaded.check_load()
    return loaded
