"""Wall-clock deadlines checked cooperatively by every long loop.

A run stops only where a loop asks :meth:`Deadline.expired` (and winds down with the best sound result
so far) or calls :meth:`Deadline.check` (which raises :class:`VerificationTimeout` at that point of *our*
code). Nothing raises asynchronously: an exception delivered by a signal can land inside an import, a
file write or a native solver call and leave the process broken for everything that follows (issue 15).
The backstop for a run that overruns its limit anyway lies outside the verifier: the worker parent of
``bnb run`` kills and replaces the worker (:mod:`bnb.runs.worker`); ``bnb verify`` ends the process.
"""
from __future__ import annotations

import math
import time


class VerificationTimeout(Exception):
    """Raised by :meth:`Deadline.check` once the limit has passed."""


class Deadline:
    def __init__(self, seconds: float | None):
        self.start = time.monotonic()
        self.end = math.inf if seconds is None or seconds <= 0 else self.start + seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.end

    def check(self) -> None:
        if self.expired():
            raise VerificationTimeout()


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``, 10 ms resolution; NaN elsewhere): what the
    interpreter's start-up and the imports took, when read at the start of the work."""
    import os
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return math.nan
