"""Wall-clock deadlines checked cooperatively by every long loop."""
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
