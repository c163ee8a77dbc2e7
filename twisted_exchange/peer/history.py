"""What a peer remembers of its recent past, for ``status`` and the dashboard.

- :class:`Throughput`: applied entries per second over the last minute, from
  a ring of (time, applied index) samples taken once a second: fixed memory,
  O(1) per sample and per read.
- :class:`Digests`: this peer's state digest at each of its last ``keep``
  applied indexes (one append per applied entry), so another peer's
  (applied, digest) report can be checked against ours even when the two
  peers are not at the same index at the moment they are asked, which under
  load is almost never.
"""
from __future__ import annotations

from collections import deque

#: Seconds the throughput is averaged over.
WINDOW_SECONDS = 60.0
#: Seconds between two samples of the applied index.
SAMPLE_SECONDS = 1.0
#: Applied indexes whose digest a peer remembers.
DIGESTS_KEPT = 4096


class Throughput:
    """Applied entries per second over the last ``window`` seconds."""

    def __init__(self, window: float = WINDOW_SECONDS, every: float = SAMPLE_SECONDS) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=int(window / every) + 1)

    def sample(self, now: float, applied: int) -> None:
        self._samples.append((now, applied))

    def per_second(self) -> float:
        """0.0 until two samples exist; a restored snapshot may make it jump once."""
        if len(self._samples) < 2:
            return 0.0
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        return (last - first) / (end - start) if end > start else 0.0


class Digests:
    """The digest after each of the last ``keep`` consecutive applied indexes."""

    def __init__(self, keep: int = DIGESTS_KEPT) -> None:
        self._digests: deque[str] = deque(maxlen=keep)
        self._last = 0

    def record(self, index: int, digest: str) -> None:
        """``digest`` is the state's after applying ``index``; a gap (a snapshot
        was installed) starts the history again."""
        if index != self._last + 1:
            self._digests.clear()
        self._digests.append(digest)
        self._last = index

    def at(self, index: int) -> str | None:
        """The digest after ``index``, or None if not remembered."""
        back = self._last - index
        return self._digests[-1 - back] if 0 <= back < len(self._digests) else None
