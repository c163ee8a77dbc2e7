"""CPU scheduling for a process that works in turns: Linux's SCHED_BATCH.

A peer's reactor turn is a batch: it reads what arrived, persists it with
one fsync, sends, applies and answers.  Under the default policy
(SCHED_OTHER) the wake-up of another process on a busy core (an answer
reaching the bench client, a batch reaching another peer) may preempt a
turn half done: the turn's fsync and its other sends wait behind the woken
process, and every switch refills the caches.  A loopback send wakes its
receiver from inside the call: py-spy charged 12-17% of a peer's busy time
at 64 in flight to socket sends under SCHED_OTHER, 5-6% under SCHED_BATCH.
SCHED_BATCH gives the same share of CPU at the same nice level and only
drops that wake-up preemption: a turn runs to its end (or to the end of its
time slice), and the woken process runs after it.  Where a core is idle a
woken process runs at once either way, so an unloaded peer answers as fast.

Measured on one warm 3-peer cluster (2 cores, mutual TLS, the bench
client of ctl/loadgen.py at 64 in flight, 7 s runs, 4 interleaved rounds
per arm), medians, peers + client:

    SCHED_OTHER + SCHED_OTHER   5,485 orders/s   p99 26.9 ms
    SCHED_BATCH + SCHED_OTHER   5,490 orders/s   p99 24.8 ms
    SCHED_OTHER + SCHED_BATCH   5,780 orders/s   p99 23.3 ms
    SCHED_BATCH + SCHED_BATCH   5,933 orders/s   p99 23.3 ms

Involuntary context switches per order per peer fell from 0.10-0.12 to
0.02-0.03; at 1 in flight p99 stayed 3.4-3.8 ms.  Peers run under
SCHED_BATCH unless ``--cpu-scheduling normal`` (or ``inherit``); the bench client's thread
runs under it for its run (``batch_scheduled``).  The policy is per
thread on Linux; threads and processes started afterwards inherit it (the
compactor's child then lowers itself to SCHED_IDLE).  Elsewhere, or where a
sandbox forbids the call, nothing changes and the caller is told why.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

#: The choices of ``--cpu-scheduling``, by the name of their os constant;
#: "inherit" leaves the policy the process was started with (systemd's
#: CPUSchedulingPolicy=, chrt) alone.
POLICIES = {"batch": "SCHED_BATCH", "normal": "SCHED_OTHER", "inherit": None}


def use_policy(policy: str) -> str | None:
    """Run the calling thread (and what it starts from now on) under
    ``policy``, a key of POLICIES; None, or why it could not."""
    name = POLICIES[policy]
    return None if name is None else switch(name)


def switch(name: str, pid: int = 0) -> str | None:
    """Put process ``pid`` (0: the calling thread) under the policy named
    ``name`` ("SCHED_IDLE", ...) at priority 0; None, or why it could not."""
    constant = getattr(os, name, None)
    if constant is None or not hasattr(os, "sched_setscheduler"):
        return f"{name} is not available on this system"
    try:
        os.sched_setscheduler(pid, constant, os.sched_param(0))
    except OSError as e:
        return f"cannot switch to {name}: {e.strerror or e}"
    return None


@contextmanager
def batch_scheduled() -> Iterator[None]:
    """The calling thread under SCHED_BATCH for the block (where it can be),
    then under its policy before: a pooled thread goes back as it came."""
    if not hasattr(os, "sched_getscheduler"):
        yield
        return
    before, param = os.sched_getscheduler(0), os.sched_getparam(0)
    if use_policy("batch") is not None:
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, before, param)
