"""Time a long-lived process's reactor by CLOCK_MONOTONIC, not the wall clock.

Twisted's reactors read ``time.time`` for every timer (``callLater``,
``LoopingCall``, our deadlines), so a wall-clock step moves them all: NTP
stepping a clock back an hour, or a VM resumed with an old clock, would
stop a peer's Raft ticks, its announcements to the grapes and its request
timeouts for that hour while it went on answering RPCs (its stall check,
on the same clock, would not see it), and a step forward fires every timer
at once.  Every use of the reactor's clock in this package measures a
duration or a deadline, never a date (log and metric timestamps read
``time.time`` themselves), so the monotonic clock is the right one; it is
the one asyncio's loops use.
"""
from __future__ import annotations

import time
from typing import Any


def use_monotonic_time(reactor: Any) -> None:
    """Make ``reactor.seconds`` (and so every timer on it) monotonic.

    Before anything is scheduled: a timer set on the wall clock would be
    compared with the monotonic one.  Raises RuntimeError otherwise.
    """
    if reactor.getDelayedCalls():
        raise RuntimeError("timers are already scheduled on the wall clock")
    reactor.seconds = time.monotonic
