"""Python's cyclic garbage collector, set for a long-lived peer process.

A peer allocates a few dicts per command that almost all die young by
reference counting, while its heap (the book, the session table, the log
index) is large and long-lived.  With the default thresholds (700, 10, 10)
the young generation is collected every 700 net container allocations, a
few times per batch, and every survivor is traversed again on its way to
the old generation.  A young threshold of 10,000 collects about fourteen
times less often; as before, a full collection still waits until the
objects promoted since the last one are a quarter of the old generation, so
its cost stays proportional to the heap's growth, not to its size.

``gc.freeze()`` after start-up moves what start-up built (modules, the
recovered state) out of the collector's sight: it is never garbage, and
without the freeze every full collection would walk it again.  The
collector stays on: reference cycles are still found and freed.
"""
from __future__ import annotations

import gc

#: Net container allocations between collections of the young generation.
YOUNG_THRESHOLD = 10_000


def tune() -> None:
    """Raise the young generation's threshold; the older ones keep theirs."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


def started() -> None:
    """Start-up is over: collect once, then freeze what survived."""
    gc.collect()
    gc.freeze()
