"""The verify pipeline: load, parse, check, falsify, bound (and, later, branch), answer.

Stages, each honouring the deadline:
1. load the ONNX model and parse the VNN-LIB file;
2. check the converted network against onnxruntime on random points and corners of ``[-1, 1]`` and of
   every input box of the property, in one batch;
3. on small networks (:mod:`bnb.pipeline.screen`), a root CROWN bound of every (box, polytope) pair; the refuted
   ones are done, and when all are, ``unsat``;
4. PGD falsification of the pairs left; a hit replayed on the ONNX model is ``sat``;
5. branch and bound (``prove``) on the pairs left: every polytope provably unreachable from its box, ``unsat``.

In proof-only mode (``general.proof_only``, ``--proof-only``) stage 4 and every falsification inside branch and
bound are off: the answer is ``unsat``, ``unknown``, ``timeout`` or ``error``, never ``sat``.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from bnb.config import Config
from bnb.engine.attack import attack_property
from bnb.engine.context import check_heuristics
from bnb.engine.options import pgd_options
from bnb.errors import BnbError, ModelError
from bnb.io.models import ModelCache
from bnb.io.onnx_loader import load_onnx
from bnb.io.spec import Property
from bnb.io.vnnlib import parse_vnnlib
from bnb.io.witness import replay
from bnb.pipeline import presets, screen
from bnb.pipeline.prove import prove
from bnb.results import Result, Verdict
from bnb.timing import Deadline, VerificationTimeout
from relaxations.float_error import evaluation_error
from relaxations.fp import err_coeff, ieee_kernels, outward_box, tiny
from relaxations.network import UnsupportedNetwork


def resolve_device(name: str) -> torch.device:
    """The device of ``general.device``; on CUDA, with the IEEE kernels the rounding bounds assume."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BnbError("general.device is 'cuda' but no CUDA device is available")
    ieee_kernels(name)
    return torch.device(name)


def float32_slack(model, prop: Property) -> Property:
    """The property of a float32 query with every polytope's ``slack`` set: ``|C| E`` (rounded up), where ``E``
    bounds how far float32 evaluation moves each output over the box
    (:func:`relaxations.float_error.evaluation_error`, on the network before simplification)."""
    if not model.chain.relu_only:
        raise ModelError("float32 semantics (a VNN-LIB 2.0 float32 query) are supported for ReLU networks only: "
                         "there is no a-priori bound yet on the float32 evaluation of this network's activations")
    specs = []
    for spec in prop.specs:
        lo, hi = outward_box(spec.lower, spec.upper, torch.float64)
        E = evaluation_error(model.chain, lo, hi).numpy()
        polys = []
        for p in spec.disjuncts:
            C = np.abs(np.asarray(p.C, np.float64))
            with np.errstate(invalid="ignore", over="ignore"):
                slack = C @ E if len(p.d) else np.zeros(0)
            slack = np.where(np.isnan(slack), np.inf, slack)
            slack = slack * (1 + err_coeff(C.shape[1] + 2, torch.float64)) + (C.shape[1] + 6) * tiny(torch.float64)
            polys.append(dataclasses.replace(p, slack=slack))
        specs.append(dataclasses.replace(spec, disjuncts=polys))
    return dataclasses.replace(prop, specs=specs)


def verify(onnx_path, vnnlib_path, cfg: Config | None = None, timeout: float | None = None,
           log=None, deadline: Deadline | None = None, models: ModelCache | None = None,
           certificate: str | None = None) -> Result:
    """Verify one instance. Bad input raises :class:`BnbError`; everything else becomes a Result.

    ``vnnlib_path``: a VNN-LIB 1.0 file, or a :class:`~bnb.io.spec.Property` already read from another format.

    The limit is cooperative: every long loop reads ``deadline`` and a :class:`VerificationTimeout` raised
    by ``deadline.check()`` (always in our own code, never asynchronously) becomes ``timeout``. ``deadline``
    replaces the one built from ``timeout`` (tests inject deadlines that expire at chosen points).
    ``models``: reuse the network of an earlier call on the same, unchanged file (it is checked against
    onnxruntime inside this property's boxes all the same). ``certificate``: a path where an ``unsat`` answer's
    proof is written (``docs/certificates.md``); ``stats["certificate"]`` then names the file, or says
    ``unsupported (<reason>)`` (no file is written).
    """
    cfg = cfg or Config()
    check_heuristics(cfg)
    limit = cfg.general.timeout if timeout is None else timeout
    deadline = deadline if deadline is not None else Deadline(limit)
    log = log or (lambda msg: None)
    stats: dict = {}
    if cfg.general.threads > 0:
        torch.set_num_threads(cfg.general.threads)

    t0 = time.monotonic()
    model = models.get(onnx_path) if models is not None else load_onnx(onnx_path, check=False)
    net0 = model.network
    stats["time_load"] = time.monotonic() - t0
    t0 = time.monotonic()
    if isinstance(vnnlib_path, Property):  # already read (a VNN-LIB 2.0 query, bnb.io.vnnlib2)
        prop = vnnlib_path
        prop.check_sizes(net0.in_size, net0.out_size)
    else:
        prop = parse_vnnlib(vnnlib_path, net0.in_size, net0.out_size)
    stats["time_parse"] = time.monotonic() - t0
    t0 = time.monotonic()
    model.check_property([(spec.lower, spec.upper) for spec in prop.specs], seed=cfg.general.seed)
    stats["time_check"] = time.monotonic() - t0
    log(f"network: {net0.describe()}; property: {prop.describe()}")
    cfg, preset, changed = presets.apply(cfg, net0, prop)
    if preset is not None:
        stats["preset"] = preset
        log(f"preset {preset}: " + (", ".join(f"{k}={v}" for k, v in changed.items()) or "no option changed"))
    device = resolve_device(cfg.general.device)
    dtype = torch.float64 if cfg.general.dtype == "float64" else torch.float32

    def finish(verdict, ce=None, message=""):
        stats.setdefault("time_total", deadline.elapsed())
        return Result(verdict, deadline.elapsed(), ce, message, stats)

    try:
        net = net0.to(device=device, dtype=dtype)
        if prop.float32:
            t0 = time.monotonic()
            prop = float32_slack(model, prop)
            stats["time_float32_error"] = time.monotonic() - t0
            stats["float32_slack_max"] = max((float(p.slack.max()) for s in prop.specs for p in s.disjuncts
                                              if len(p.d)), default=0.0)
            log(f"float32 query: proofs cover float32 evaluation (output constraints widened by up to "
                f"{stats['float32_slack_max']:.3g})")
        request = None  # (where an unsat answer's proof goes, the network's file), when one is asked for
        if certificate and isinstance(vnnlib_path, Property):
            stats["certificate"] = "unsupported (a VNN-LIB 2.0 query)"
        elif certificate:
            request = (certificate, onnx_path)
        refuted, restricted = None, (prop, None, None)
        if cfg.attack.enabled and screen.worthwhile(net, cfg):
            t0 = time.monotonic()
            refuted = screen.refuted_pairs(net, prop, cfg, deadline)
            stats["time_screen"] = time.monotonic() - t0
            stats["screen_refuted"] = sum(refuted)
            log(f"root CROWN bound before the attack: {sum(refuted)} of {len(refuted)} (box, polytope) pair(s) "
                "refuted")
            # (with a certificate, branch and bound's root refutes them again, on the record)
            if refuted and all(refuted) and request is None:
                return finish(Verdict.UNSAT, message="every output polytope is unreachable (root CROWN bound)")
            if request is None:
                restricted = screen.remaining(prop, refuted)
        if cfg.attack.enabled and not cfg.general.proof_only:
            t0 = time.monotonic()
            validate = lambda xs, boxes: replay(model, prop, xs, boxes)  # noqa: E731
            ce, best = attack_property(net, prop, pgd_options(cfg), validate, deadline, cfg.general.seed, refuted)
            stats["time_attack"] = stats["time_attack_stage"] = time.monotonic() - t0
            stats["attack_best_margin"] = best
            if ce is not None:
                return finish(Verdict.SAT, ce,
                              f"counterexample found by PGD, replayed on the ONNX model; {ce.describe()}")
            deadline.check()
        t0 = time.monotonic()
        left, box_map, poly_map = restricted
        try:
            verdict, ce, message = prove(model, net, left, cfg, deadline, stats, log, request)
        finally:
            stats["time_prove"] = time.monotonic() - t0
        if box_map is not None:
            ce = screen.to_original(ce, box_map, poly_map)
        return finish(verdict, ce, message)
    except VerificationTimeout:
        return finish(Verdict.TIMEOUT, message=f"limit {limit:g}s reached")
    except BnbError:
        raise
    except UnsupportedNetwork as e:  # an option that does not apply to this network's activations
        raise ModelError(str(e), onnx_path) from None
    except Exception as e:  # an internal error is never a verdict on the property
        return finish(Verdict.ERROR, message=f"internal error: {type(e).__name__}: {e}")
