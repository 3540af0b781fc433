"""Proving stage of the pipeline: branch and bound over every input box of the property.

The property holds (``unsat``) iff every box is decided safe; a counterexample in any box is ``sat``.
"""
from __future__ import annotations

from bnb import __version__
from bnb.engine.context import Stats
from bnb.engine.options import engine_options
from bnb.engine.prooflog import ProofLog, save
from bnb.engine.root import run_bab
from bnb.io.witness import replay
from bnb.results import Verdict
from relaxations.fp import outward_box


def falsification_off(xs, *boxes):
    """The replay of proof-only mode (``general.proof_only``): the engine must not look for counterexamples,
    so a call is an internal error (the run ends ``error``), never a verdict."""
    raise RuntimeError("a candidate counterexample was replayed in proof-only mode (general.proof_only)")


def proof_log(net, prop, lo, hi, spec):
    """A :class:`~bnb.engine.prooflog.ProofLog` for the box ``spec`` of ``prop``; it says ``unsupported`` at once
    for what the certificate format cannot hold (float32 queries, activations other than ReLU)."""
    sizes = [net.layers[i].out_size for i in net.activation_indices()]
    proof = ProofLog(sizes, lo, hi, spec.disjuncts, "input")
    if prop.float32:
        proof.unsupported("a float32 query")
    if not net.relu_only:
        proof.unsupported("activations other than ReLU")
    return proof


def prove(model, net, prop, cfg, deadline, stats, log, certificate=None):
    """Returns ``(verdict, counterexample, message)``. ``certificate``: ``(path, onnx_path)``; on ``unsat`` the
    proof is written to ``path`` (``docs/certificates.md``; the property's file is ``prop.path``) and
    ``stats["certificate"]`` says where, or ``unsupported (<reason>)``."""
    bab_stats = Stats()
    undecided = 0
    opts = engine_options(cfg)
    proofs = []
    for b, spec in enumerate(prop.specs):
        # rounded outward: the working box contains every real point of the file's box
        lo, hi = outward_box(spec.lower, spec.upper, net.dtype, net.device)
        validate = (falsification_off if cfg.general.proof_only else
                    lambda xs, b=b: replay(model, prop, xs, [b] * len(xs)))  # noqa: E731
        proof = proof_log(net, prop, lo, hi, spec) if certificate else None
        proofs.append(proof)
        try:
            status, ce = run_bab(net, lo, hi, spec.disjuncts, opts, deadline, validate, bab_stats, log, proof=proof)
        finally:
            for k, v in bab_stats.items():  # accumulate over boxes, next to the pipeline's own figures
                both_numeric = isinstance(v, (int, float)) and isinstance(stats.get(k), (int, float))
                stats[k] = stats[k] + v if both_numeric else v
            bab_stats = Stats()
        if status == "sat":
            return Verdict.SAT, ce, f"counterexample found in box {b} during branch and bound; {ce.describe()}"
        undecided += status == "unknown"
    if undecided:
        reason = ("branch and bound disabled" if not cfg.bab.enabled else
                  "domains left undecided" + ("; proof-only mode: no falsification" if cfg.general.proof_only else ""))
        return Verdict.UNKNOWN, None, f"{undecided} input box(es) not decided ({reason})"
    message = "every output polytope is unreachable"
    if certificate:
        stats["certificate"] = write_certificate(proofs, certificate, cfg, net, prop, log)
        message += f"; certificate: {stats['certificate']}"
    return Verdict.UNSAT, None, message


def write_certificate(proofs, path, cfg, net, prop, log) -> str:
    """Write the proof of an unsat property (one :class:`ProofLog` per box) to ``path`` (``(file, onnx_path)``);
    returns the file or ``unsupported (<reason>)``."""
    out, onnx_path = path
    reason = "no input box" if not proofs else next((p.reason for p in proofs if p.reason), None)
    if reason is None and len({p.branching for p in proofs}) > 1:
        reason = "boxes proven by different branchings"
    if reason is None and len(proofs) > 1 and any(p.cons is not None for p in proofs):
        reason = "multi-neuron constraints in a property of several boxes"
    if reason is not None:
        log(f"certificate not written: unsupported ({reason})")
        return f"unsupported ({reason})"
    size = save(out, proofs, onnx_path, prop.path, net.in_size, net.out_size, cfg.general.dtype,
                f"bnb {__version__}; {cfg.bounds.method} root, {cfg.bab.input_method} input children")
    log(f"certificate written to {out} ({size} bytes, {sum(p.n for p in proofs)} nodes)")
    return out
