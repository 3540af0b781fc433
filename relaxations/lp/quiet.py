"""Keep HiGHS off standard output.

highspy prints a two-line banner to file descriptor 1 the first time a solver object is created in a process,
whatever the options; it would land inside ``bnb bounds --json`` output and results on stdout. Creating that
first object here, with descriptor 1 pointed at /dev/null, uses the banner up.
"""
from __future__ import annotations

import os
import sys

_done = False


def silence_highs_banner() -> None:
    global _done
    if _done:
        return
    _done = True
    try:
        import highspy
    except ImportError:  # cvxpy reports the missing solver itself when it is asked for
        return
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
