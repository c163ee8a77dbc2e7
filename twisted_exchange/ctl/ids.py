"""Request ids that increase, as the exactly-once contract needs.

The replicated session table (replication/sessions.py) compares a client's
request ids by (length, text) and refuses an id at or below the highest one
whose result it dropped.  An id here is the wall clock in nanoseconds as 20
digits, a dash, and 4 random hex digits (so two processes acting for one
client rarely collide: the PRNG does, reseeded in a forked child): fixed
width, so the text order is the time order.  Within a process the time part
never repeats or goes back, even if the clock steps back.
"""
from __future__ import annotations

import random
import threading
import time

_lock = threading.Lock()
_last = 0


def new_request_id() -> str:
    """A request id above every id this process made before, e.g. ``01733812345678901234-9f3a``."""
    global _last
    with _lock:
        _last = max(time.time_ns(), _last + 1)
        now = _last
    return f"{now:020d}-{random.getrandbits(16):04x}"
