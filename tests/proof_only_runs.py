"""Verdict tests in proof-only mode: thresholds just below and just above the exact optimum.

In proof-only mode (``general.proof_only``, docs/soundness.md) nothing can answer ``sat``, so on a violated
property the only sound ends are ``unknown`` and ``timeout``: an ``unsat`` there is an unsound bound, however
close to the optimum the threshold is. Falsification left on (even with ``attack.enabled: false``, which leaves
the candidate checks and PGD inside branch and bound) can find the counterexample first and hide it.

Thresholds, for a property "``c . y <= t`` is reachable" (violated iff the exact minimum is ``<= t``):

- violated: ``t = w + m`` with ``w`` the network's own value at the MILP's minimiser, a witness (``c . y = w``
  at that input, whatever the MILP's tolerances), for ``m`` in :func:`margins`;
- holding: ``t = opt - m`` with ``opt`` the MILP's minimum, solved with feasibility tolerances of ``1e-10`` and
  checked against the witness (``w - opt <= 1e-7``), so a margin of ``1e-6`` is above the MILP's error.

:func:`margins` gives a relative one, ``max(1e-3 |opt|, 1e-3)``, and an absolute one, ``1e-6``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bnb.engine.context import Stats
from bnb.engine.options import engine_options
from bnb.engine.root import run_bab
from bnb.timing import Deadline, VerificationTimeout
from relaxations.milp import milp_solve

REL, ABS = 1e-3, 1e-6
TIGHT = {"mip_feasibility_tolerance": 1e-10, "primal_feasibility_tolerance": 1e-10}
NOT_PROVEN = ("unknown", "timeout")  # the only sound ends of a violated property in proof-only mode


@dataclass
class Optimum:
    """``opt``: the exact minimum of ``c . net(x)`` over the box (MILP); ``witness``: ``c . net(x*)`` at the
    MILP's minimiser ``x*`` (float64 forward pass); ``x``: that minimiser."""
    opt: float
    witness: float
    x: np.ndarray


def exact_min(net, lo, hi, c=None) -> Optimum:
    """The exact minimum of ``c . net(x)`` (``c``: ``(out_size,)``, default the first output) over ``[lo, hi]``."""
    c = np.eye(net.out_size)[0] if c is None else np.asarray(c, dtype=np.float64)
    res = milp_solve(net, np.asarray(lo, np.float64), np.asarray(hi, np.float64), C=c[None], solver_opts=TIGHT)
    x = res.argmin[0]
    y = net.to(dtype=torch.float64)(torch.tensor(x, dtype=torch.float64)[None])[0].numpy()
    w = float(c @ y)
    opt = float(res.lb[0])
    assert opt <= w + 1e-9 and w - opt <= 1e-7, (opt, w)  # the optimum is attained: a 1e-6 margin is meaningful
    return Optimum(opt, w, x)


def margins(opt: float, rel: float = REL) -> tuple[float, float]:
    """``(max(rel |opt|, rel), 1e-6)``: the relative and the absolute margin."""
    return max(rel * abs(opt), rel), ABS


def proof_only(cfg):
    """``cfg`` with ``general.proof_only`` on (and the attack off, which proof-only implies); returned."""
    cfg.general.proof_only = True
    cfg.attack.enabled = False
    return cfg


def no_replay(xs):
    raise AssertionError("a candidate was replayed in proof-only mode")


def decide(net, lo, hi, polys, cfg, seconds: float, stats: Stats | None = None) -> str:
    """:func:`bnb.engine.root.run_bab` on the box ``[lo, hi]`` (numpy or tensors) with a deadline; ``"timeout"``
    when the deadline ends it. The replay fails the test if ever called (proof-only mode never replays).
    ``stats``: receives the run statistics."""
    t = lambda a: torch.as_tensor(a, dtype=net.dtype)  # noqa: E731
    try:
        status, _ = run_bab(net, t(lo), t(hi), polys, engine_options(cfg), Deadline(seconds), no_replay,
                            Stats() if stats is None else stats)
    except VerificationTimeout:
        return "timeout"
    return status


def thresholds(o: Optimum, violated_seconds: float, holding_seconds: float = 60.0):
    """The thresholds ``t`` of a verdict test around the exact minimum ``o``, each with its time limit: just below
    the optimum (the property holds: the answer must be unsat), then just above the witness by the relative and by
    the absolute margin (violated: never unsat)."""
    rel, tiny = margins(o.opt)
    return ((o.opt - margins(o.opt, 2 * REL)[0], holding_seconds), (o.witness + rel, violated_seconds),
            (o.witness + tiny, violated_seconds))


def relu_bab_config(**options):
    """A proof-only configuration for verdict tests on small networks: float64, ReLU branching, batches of 64, and
    ``options`` given as ``section__key=value`` (e.g. ``bounds__sign_refine=True``)."""
    from bnb.config import Config
    cfg = Config()
    cfg.general.dtype = "float64"
    cfg.bab.branching, cfg.bab.batch_size = "relu", 64
    for name, value in options.items():
        section, key = name.split("__")
        setattr(getattr(cfg, section), key, value)
    return proof_only(cfg)


class DomainBoundCheck:
    """Every bound the engine computes during a run, checked against sampled points: installed with
    ``monkeypatch`` in place of ``bnb.engine.context.bound_rows``, it asserts for each domain of each call that
    its row bounds are at most the rows' values, and its intermediate bounds contain the pre-activations, at
    every sampled point inside the domain (in its box and on the right side of each of its splits), and that
    no domain holding a point is called empty. It sees an unsound bound wherever the search went, whether or
    not that bound ever turns into a wrong verdict. ``checked``: (domain, point) pairs compared."""

    def __init__(self, monkeypatch, net, points, tol=1e-9):
        import bnb.engine.context as context_mod

        from conftest import pre_activations
        self.real, self.tol, self.checked = context_mod.bound_rows, tol, 0
        self.layers = len(net.layers)
        self.x = torch.as_tensor(np.asarray(points), dtype=net.dtype)
        with torch.no_grad():
            self.y = net(self.x)
            self.z = pre_activations(net, self.x)
        monkeypatch.setattr(context_mod, "bound_rows", self)

    def __call__(self, net, state, C, method, *args, **kwargs):
        r = self.real(net, state, C, method, *args, **kwargs)
        if len(net.layers) != self.layers:  # another network's run (sign proofs on a prefix): not this check's
            return r
        x = self.x
        inside = ((x[None] >= state.lower[:, None]) & (x[None] <= state.upper[:, None])).all(dim=2)  # (N, S)
        for s, z in zip(state.splits or [], self.z):
            s = s.reshape(s.shape[0], 1, -1)
            ok = ((s != 1) | (z[None] >= 0)) & ((s != -1) | (z[None] <= 0))
            inside &= ok.all(dim=2)
        if not bool(inside.any()):
            return r
        Cn = C if C.dim() == 3 else C.expand(state.size, *C.shape)  # (N, m, n_out)
        vals = torch.einsum("nmo,so->nms", Cn.to(self.y.dtype), self.y)  # (N, m, S)
        bad = (r.lb[:, :, None] > vals + self.tol) & inside[:, None, :]
        assert not bool(bad.any()), f"{method}: a bound above a sampled value in its domain (by " \
            f"{float((r.lb[:, :, None] - vals)[bad].max()):.3g})"
        assert not bool((r.infeasible & inside.any(dim=1)).any()), f"{method}: a domain holding a point called empty"
        for (lo, hi), z in zip(r.pre_bounds or [], self.z):
            lo, hi = lo.reshape(lo.shape[0], 1, -1), hi.reshape(hi.shape[0], 1, -1)
            out = ((z[None] < lo - self.tol) | (z[None] > hi + self.tol)).any(dim=2) & inside
            assert not bool(out.any()), f"{method}: intermediate bounds miss a sampled pre-activation"
        self.checked += int(inside.sum())
        return r


def witness_cloud(o: Optimum, lo, hi, n=2000, seed=0) -> np.ndarray:
    """``n`` points: half uniform in the box, half within 1e-2 of the MILP's minimiser (where an unsound bound
    would turn a violated property into unsat), and the minimiser itself."""
    g = np.random.default_rng(seed)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    uni = lo + (hi - lo) * g.uniform(size=(n // 2, lo.size))
    near = np.clip(o.x + 1e-2 * g.uniform(-1.0, 1.0, size=(n - n // 2, lo.size)), lo, hi)
    return np.vstack([uni, near, o.x[None]])
