"""Worker processes for suites: one instance at a time per process, the parent as the backstop.

Nothing one instance does may change the answer of another (issue 15): a timeout, a crash, an
out-of-memory condition, a native library's abort. So ``bnb run`` verifies every instance in a worker
process (``forkserver`` context, else ``spawn``: never a fork of the parent, so no torch state of the
parent's is copied into a worker) and the parent

- sends one task at a time to each worker and waits for its complete result dict, with a wall-clock
  limit of the instance's timeout plus ``grace`` seconds (the verifier stops cooperatively at its own
  deadline; the grace is for a run that does not);
- kills (SIGKILL) a worker that overruns and records ``timeout`` for the row; records ``error`` for a
  worker that dies (the signal or exit code is named in the message) or fails its own way, and in both
  cases starts a fresh worker for the next instance;
- optionally caps each worker's address space (``memory_mb``, ``RLIMIT_AS``, set after the warm-up
  imports), so that running out of memory is a ``MemoryError`` in that worker: an ``error`` row.

A healthy worker is reused: the warm-up (importing torch, the pipeline and onnxruntime, and one autograd
step) is paid once per suite by the fork server, then a few milliseconds per worker; it is measured and reported
(:attr:`WorkerPool.warmups`). A cooperative timeout is an ordinary return of
:func:`bnb.pipeline.verify.verify` (the deadline never raises asynchronously), so that worker is reused too.
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait

WARMUP_LIMIT = 300.0  # seconds a fresh worker may take to import everything before it counts as failed


# imported once by the fork server: the pipeline, and what it imports lazily on first use (the ONNX
# loader's onnxruntime). The optimisers are bnb's own (relaxations/optimize.py): torch.optim's step, which
# imports torch._dynamo (~1.7 s), is never taken.
PRELOAD = ["bnb.runs.worker", "bnb.pipeline.verify", "onnxruntime"]


def _context():
    """``forkserver`` where there is one: a fresh server process (not a fork of the parent) imports
    :data:`PRELOAD` once, without computing anything (no thread pools yet), and every worker is forked
    from it, so a replacement worker is ready in milliseconds instead of seconds; else ``spawn``."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


@dataclass
class Task:
    key: object          # the caller's handle (e.g. the row index)
    onnx: str
    vnnlib: str
    timeout: float
    cfg: object = None   # a bnb.config.Config (picklable dataclasses)
    hook: object = None  # tests: a picklable callable ``hook(task)`` run in the worker before verify
    certificate: str | None = None  # where an unsat answer's proof is written (bnb.pipeline.verify), or None


def _vm_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _warm_up(cfg) -> dict:
    """Import what an instance needs and take one autograd step, so that no instance pays for it."""
    t0 = time.monotonic()
    for name in PRELOAD:  # no-ops where the fork server imported them already
        importlib.import_module(name)
    import torch
    t_import = time.monotonic() - t0
    p = torch.zeros(2, requires_grad=True)
    torch.autograd.grad((p * p).sum(), [p])
    if cfg is not None and (cfg.bounds.lp_refine or cfg.bab.relu_method == "lp"):
        import cvxpy  # noqa: F401
    return {"import_s": t_import, "warmup_s": time.monotonic() - t0}


_MODELS = None  # this process's bnb.io.models.ModelCache: later properties of a network reuse it, loaded


def run_task(task: Task) -> dict:
    """Verify one instance in this process; always a complete dict ``verdict, message, stats``."""
    from bnb.errors import BnbError
    from bnb.io.models import ModelCache
    from bnb.pipeline.verify import verify
    from bnb.results import Verdict
    global _MODELS
    if _MODELS is None:
        _MODELS = ModelCache()
    try:
        if task.hook is not None:
            task.hook(task)
        res = verify(task.onnx, task.vnnlib, task.cfg, timeout=task.timeout, models=_MODELS,
                     certificate=task.certificate)
        verdict, msg, stats = res.verdict.value, res.message, res.stats
    except BnbError as e:
        verdict, msg, stats = Verdict.ERROR.value, str(e), {}
    except Exception as e:  # anything verify does not turn into a Result itself
        verdict, msg, stats = Verdict.ERROR.value, f"internal error: {type(e).__name__}: {e}", {}
    stats = {k: v for k, v in stats.items() if isinstance(v, (int, float, str, bool))}
    return {"verdict": verdict, "message": msg, "stats": stats}


def _worker_main(conn, cfg, memory_mb):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how a suite ends on Ctrl-C
    info = _warm_up(cfg)
    info["vm_mb"] = _vm_mb()
    if memory_mb:
        import resource
        limit = int(memory_mb * 2 ** 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    conn.send(("ready", info))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        result = run_task(task)
        try:
            conn.send(("result", result))
        except (BrokenPipeError, OSError):
            return


def describe_exit(code) -> str:
    if code is None:
        return "worker did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker killed by {name}"
    return f"worker exited with code {code}"


class _Worker:
    def __init__(self, ctx, cfg, memory_mb):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, cfg, memory_mb), daemon=True,
                                name="bnb-worker")
        self.t_start = time.monotonic()
        self.proc.start()
        child.close()
        self.ready = False
        self.task: Task | None = None
        self.t_task = 0.0
        self.info: dict = {}

    def kill(self):
        if self.proc.is_alive():
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, OSError):
                pass
        self.proc.join(5)
        self.conn.close()


class WorkerPool:
    """``n`` worker processes; :meth:`run` yields ``(task, result dict, wall seconds)`` as results arrive.

    Result dicts carry ``verdict``, ``message``, ``stats``; rows the parent decides itself (overrun,
    a dead worker) carry ``stats == {}`` and a message saying what happened.
    """

    def __init__(self, n: int = 1, cfg=None, memory_mb: float | None = None, grace: float = 10.0,
                 echo=None):
        self.n = max(1, int(n))
        self.cfg, self.memory_mb, self.grace = cfg, memory_mb, grace
        self.echo = echo or (lambda msg: None)
        self.ctx = _context()
        self.workers: list[_Worker] = []
        self.warmups: list[float] = []   # seconds from start to ready, per worker started
        self.replaced = 0  # fresh workers started in place of killed or failed ones
        self.retired = 0   # killed or failed workers not replaced yet

    def _spawn(self) -> _Worker:
        if self.retired:
            self.retired -= 1
            self.replaced += 1
        w = _Worker(self.ctx, self.cfg, self.memory_mb)
        self.workers.append(w)
        return w

    def _retire(self, w: _Worker):
        """Kill ``w`` and forget it; :meth:`run` starts a fresh worker when one is needed."""
        w.kill()
        self.workers.remove(w)
        self.retired += 1

    def close(self):
        for w in list(self.workers):
            if w.ready and w.task is None and w.proc.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
                w.proc.join(2)
            w.kill()
        self.workers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, tasks):
        pending = list(tasks)
        pending.reverse()
        busy = 0
        while pending or busy:
            while len(self.workers) < min(self.n, busy + len(pending)):
                self._spawn()
            # hand out tasks to idle, warm workers
            for w in self.workers:
                if pending and w.ready and w.task is None:
                    task = pending.pop()
                    try:
                        w.conn.send(task)
                    except OSError as e:  # died between tasks: redo the task on a fresh worker
                        pending.append(task)
                        self.echo(f"worker {w.proc.pid} lost before a task ({e}); replacing it")
                        self._retire(w)
                        break
                    w.task, w.t_task = task, time.monotonic()
                    busy += 1
            now = time.monotonic()
            limits = []
            for w in self.workers:
                if w.task is not None:
                    limits.append(w.t_task + w.task.timeout + self.grace)
                elif not w.ready:
                    limits.append(w.t_start + WARMUP_LIMIT)
            timeout = max(0.0, min(limits) - now) if limits else None
            handles = {}
            for w in self.workers:
                handles[w.conn] = w
                handles[w.proc.sentinel] = w
            ready = wait(list(handles), timeout)
            seen = []
            for h in ready:
                w = handles[h]
                if w not in seen:
                    seen.append(w)
            for w in seen:
                if w not in self.workers:
                    continue
                msg = None
                try:
                    if w.conn.poll():
                        msg = w.conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None and msg[0] == "ready":
                    w.ready, w.info = True, msg[1]
                    self.warmups.append(time.monotonic() - w.t_start)
                    continue
                if msg is not None and msg[0] == "result":
                    task, res = w.task, msg[1]
                    wall = time.monotonic() - w.t_task
                    w.task = None
                    busy -= 1
                    if res["verdict"] == "error":  # whatever went wrong may have left the process broken
                        self._retire(w)
                    yield task, res, wall
                    continue
                # the sentinel fired without a message: the worker died
                w.proc.join(5)
                why = describe_exit(w.proc.exitcode)
                task = w.task
                if task is None:
                    if not w.ready:
                        raise RuntimeError(f"a fresh worker failed to start ({why})")
                    self._retire(w)
                    continue
                wall = time.monotonic() - w.t_task
                busy -= 1
                w.task = None
                self._retire(w)
                yield task, {"verdict": "error", "message": f"{why} during the instance", "stats": {}}, wall
            # overruns and stuck warm-ups
            now = time.monotonic()
            for w in list(self.workers):
                if w.task is not None and now >= w.t_task + w.task.timeout + self.grace:
                    task, wall = w.task, now - w.t_task
                    w.task = None
                    busy -= 1
                    self._retire(w)
                    yield task, {"verdict": "timeout", "stats": {},
                                 "message": f"limit {task.timeout:g}s reached; worker killed after "
                                            f"{wall:.1f}s (grace {self.grace:g}s)"}, wall
                elif w.task is None and not w.ready and now >= w.t_start + WARMUP_LIMIT:
                    raise RuntimeError(f"a fresh worker did not start within {WARMUP_LIMIT:g}s")
