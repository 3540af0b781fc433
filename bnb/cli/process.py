"""How a command's process ends: quickly once its work is done (:func:`end_process`), and at the latest a grace
period after its time limit (:func:`start_watchdog`, :func:`with_watchdog`), whatever the running code does."""
from __future__ import annotations

import os
import sys

WATCHDOG_GRACE = 10.0  # seconds past the limit before `bnb verify` gives up on a run that ignores it


def end_process(code: int):
    """End the command. As a process of its own (its output is the process's stdout, not a test runner's
    capture), skip the interpreter's teardown, which costs ~0.4 s after importing torch and does nothing a
    finished command needs: every file is written and closed, and the output is flushed here."""
    if sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def start_watchdog(limit, announce, code: int):
    """If the process is still running ``WATCHDOG_GRACE`` seconds after ``limit``, call ``announce`` (say
    ``timeout``) and end the process with ``code``. It raises nothing in the running code, so no library is
    left half-way through anything that outlives the process. Returns the timer (``cancel()`` it), or None
    without a finite limit."""
    import math
    import threading
    if limit is None or limit <= 0 or not math.isfinite(limit):
        return None

    def fire():
        try:
            announce()
        finally:
            os._exit(code)

    timer = threading.Timer(limit + WATCHDOG_GRACE, fire)
    timer.daemon = True
    timer.start()
    return timer


def with_watchdog(limit, announce, code: int, work):
    """``work()`` under :func:`start_watchdog` (``limit``, ``announce``, ``code`` as there); the watchdog is
    cancelled however ``work`` ends. Returns what ``work`` returns."""
    watchdog = start_watchdog(limit, announce, code)
    try:
        return work()
    finally:
        if watchdog is not None:
            watchdog.cancel()
