"""Suites over a Ray cluster (``bnb run --ray ADDRESS``, ``bnb study --ray ADDRESS``).

Ray is an optional extra (``pip install 'bnb-verifier[ray]'``), imported only here. The pool starts
``n`` Ray actors (one CPU each, placed by Ray on the cluster's nodes); every actor holds a local
:class:`bnb.runs.worker.WorkerPool` of one worker process, so an instance on a Ray node gets exactly the
isolation and limits of a local suite: its own process, killed and replaced when it overruns its timeout
by ``grace`` seconds (``timeout`` row), a dead worker or an internal error an ``error`` row, the address
space capped by ``memory_mb``. An actor that is lost (its node gone) gives an ``error`` row and is
replaced. Results arrive in completion order, as with :class:`~bnb.runs.worker.WorkerPool`, and the caller
appends them to the results file one by one (so ``--resume`` works the same).

The network and property files are read by path on the node: they must be visible there at the same
paths (a shared file system, or a single machine).
"""
from __future__ import annotations

import time

from bnb.errors import BnbError


class _Runner:
    """A Ray actor: one local worker pool of one process, reused from instance to instance."""

    def __init__(self, cfg, memory_mb, grace):
        from bnb.runs.worker import WorkerPool
        self.pool = WorkerPool(1, cfg, memory_mb, grace)

    def run(self, task):
        for _, res, wall in self.pool.run([task]):
            return res, wall, list(self.pool.warmups)
        return {"verdict": "error", "message": "no result", "stats": {}}, 0.0, []

    def close(self):
        self.pool.close()


class RayPool:
    """The interface of :class:`~bnb.runs.worker.WorkerPool` over ``n`` Ray actors at ``address``."""

    def __init__(self, address: str, n: int = 1, cfg=None, memory_mb=None, grace: float = 10.0, echo=None):
        try:
            import ray
        except ImportError:
            raise BnbError("--ray needs Ray: pip install 'bnb-verifier[ray]'") from None
        self.ray = ray
        self.echo = echo or (lambda m: None)
        self.n, self.cfg, self.memory_mb, self.grace = max(1, int(n)), cfg, memory_mb, grace
        self.warmups: list[float] = []
        self.replaced = 0
        try:
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        except Exception as e:  # ConnectionError and Ray's own errors: the cluster is not there
            raise BnbError(f"cannot connect to the Ray cluster: {type(e).__name__}: {e}", address) from None
        self._actor_cls = ray.remote(num_cpus=1)(_Runner)
        self.actors = []

    def _actor(self):
        return self._actor_cls.remote(self.cfg, self.memory_mb, self.grace)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:
                pass
        self.actors.clear()
        self.ray.shutdown()

    def run(self, tasks):
        ray = self.ray
        pending = list(tasks)
        pending.reverse()
        self.actors = [self._actor() for _ in range(min(self.n, len(pending)))]
        running = {}  # object ref -> (actor, task, start)
        idle = list(self.actors)
        seen = {}  # id(actor) -> the warm-ups it reported last
        while pending or running:
            while idle and pending:
                actor, task = idle.pop(), pending.pop()
                running[actor.run.remote(task)] = (actor, task, time.monotonic())
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                actor, task, t0 = running.pop(ref)
                try:
                    res, wall, warm = ray.get(ref)
                    self.warmups += warm[len(seen.get(id(actor), [])):]  # the actor's workers started since
                    seen[id(actor)] = warm
                    idle.append(actor)
                except Exception as e:  # the actor (or its node) was lost: an error row, a fresh actor
                    res = {"verdict": "error", "stats": {},
                           "message": f"Ray actor lost during the instance: {type(e).__name__}: {e}"}
                    wall = time.monotonic() - t0
                    self.replaced += 1
                    try:
                        ray.kill(actor)
                    except Exception:
                        pass
                    fresh = self._actor()
                    self.actors = [fresh if a is actor else a for a in self.actors]
                    idle.append(fresh)
                yield task, res, wall
