"""``bnb serve`` / ``bnb query``: a warm process answering a stream of queries over a local UNIX socket.

Protocol: one JSON object per line each way. Requests::

    {"op": "verify", "onnx": "/abs/net.onnx", "vnnlib": "/abs/prop.vnnlib", "timeout": 60, "set": ["attack.seed=1"]}
    {"op": "ping"}
    {"op": "shutdown"}

Answers: ``{"verdict", "time", "message", "results", "exit_code"}`` for a verification (``results``: the text of
a VNN-COMP results file; ``exit_code``: that of ``bnb verify``), ``{"error", "exit_code": 2}`` for bad input or
a bad request, ``{"ok": true}`` otherwise.

Security boundary: the socket is a file in the local file system, created with mode 0600 (only the user who
started the server can connect; nothing listens on a network). A request names files for the server to
read, as its user, and options among those declared in :mod:`bnb.config`, validated as on the command line;
nothing in a request is evaluated or executed. Queries run one at a time, each with its cooperative deadline.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import stat
from pathlib import Path

from bnb.config import apply_mapping, parse_override
from bnb.errors import BnbError
from bnb.results import EXIT_BAD_INPUT, EXIT_CODES

_MAX_LINE = 1 << 20  # a request is a short JSON object; anything longer is refused


def _claim(path: Path):
    """Remove a stale socket file at ``path``; refuse a live server's socket or any other file."""
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise BnbError("exists and is not a socket; refusing to replace it", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: a server that did not clean up
        return
    finally:
        probe.close()
    raise BnbError("a server is already listening on this socket", path)


def _answer(verifier, req: dict, echo) -> dict:
    op = req.get("op", "verify")
    if op == "ping":
        return {"ok": True}
    if op != "verify":
        return {"error": f"unknown op {op!r} (verify, ping, shutdown)", "exit_code": EXIT_BAD_INPUT}
    try:
        onnx, vnnlib = req["onnx"], req["vnnlib"]
        if not isinstance(onnx, str) or not isinstance(vnnlib, str):
            raise KeyError
    except KeyError:
        return {"error": "a verify request needs 'onnx' and 'vnnlib' paths", "exit_code": EXIT_BAD_INPUT}
    try:
        cfg = verifier.cfg
        sets = req.get("set") or []
        if sets:
            cfg = copy.deepcopy(cfg)
            for text in sets:
                apply_mapping(cfg, parse_override(str(text)), "--set")
        timeout = req.get("timeout")
        result = verifier.verify(onnx, vnnlib, None if timeout is None else float(timeout), cfg)
    except BnbError as e:
        return {"error": str(e), "exit_code": EXIT_BAD_INPUT}
    except (TypeError, ValueError) as e:
        return {"error": f"bad request: {e}", "exit_code": EXIT_BAD_INPUT}
    echo(result.summary(f"{Path(onnx).name} / {Path(vnnlib).name}"))
    return {"verdict": result.verdict.value, "time": result.time, "message": result.message,
            "results": result.to_vnncomp(), "exit_code": EXIT_CODES[result.verdict]}


def serve(path, cfg, echo=print) -> int:
    """Listen on the UNIX socket ``path`` until a ``shutdown`` request or SIGTERM/SIGINT (after the query in
    progress). Returns the number of queries answered; the socket file is removed on the way out."""
    from bnb.pipeline.api import Verifier
    path = Path(path)
    _claim(path)
    verifier = Verifier(cfg)
    stop = []
    previous = {s: signal.signal(s, lambda *_: stop.append(True)) for s in (signal.SIGTERM, signal.SIGINT)}
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket file: read and write for this user only
    try:
        server.bind(str(path))
    finally:
        os.umask(old_umask)
    served = 0
    try:
        server.listen(8)
        server.settimeout(0.5)  # to notice a signal between connections
        echo(f"bnb serve: listening on {path} (pid {os.getpid()})")
        while not stop:
            try:
                conn, _ = server.accept()
            except (socket.timeout, InterruptedError):
                continue
            with conn:
                conn.settimeout(None)
                f = conn.makefile("rwb")
                for line in iter(lambda f=f: f.readline(_MAX_LINE + 1), b""):
                    if len(line) > _MAX_LINE:
                        _send(f, {"error": "request too long", "exit_code": EXIT_BAD_INPUT})
                        break
                    try:
                        req = json.loads(line)
                        if not isinstance(req, dict):
                            raise ValueError("not an object")
                    except ValueError as e:
                        _send(f, {"error": f"not a JSON request: {e}", "exit_code": EXIT_BAD_INPUT})
                        continue
                    if req.get("op") == "shutdown":
                        _send(f, {"ok": True})
                        stop.append(True)
                        break
                    _send(f, _answer(verifier, req, echo))
                    served += 1
                    if stop:
                        break
    finally:
        server.close()
        path.unlink(missing_ok=True)
        for s, h in previous.items():
            signal.signal(s, h)
    echo(f"bnb serve: stopped after {served} quer{'y' if served == 1 else 'ies'}")
    return served


def _send(f, obj: dict):
    try:
        f.write(json.dumps(obj).encode() + b"\n")
        f.flush()
    except OSError:  # the client went away
        pass


def query(path, request: dict, timeout: float | None = None) -> dict:
    """Send one request to the server at ``path`` and return its answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as e:
            raise BnbError(f"no server answers on this socket ({e.strerror or e})", path) from None
        f = s.makefile("rwb")
        f.write(json.dumps(request).encode() + b"\n")
        f.flush()
        line = f.readline()
        if not line:
            raise BnbError("the server closed the connection without an answer", path)
        return json.loads(line)
    finally:
        s.close()
