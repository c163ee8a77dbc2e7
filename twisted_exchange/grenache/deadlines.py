"""Request deadlines on one reactor timer.

``Deferred.addTimeout`` gives each request a DelayedCall: a Python object,
a push onto the reactor's heap ordered by a Python ``__lt__``, and a cancel
when the reply comes, which is nearly always.  At thousands of requests a
second that bookkeeping was a tenth of a bench client's CPU.  Here a request
costs a tuple on a heap of this module's and one callback; one DelayedCall
per reactor waits for the earliest deadline.  A reply leaves its entry on
the heap (finding it would cost more than the entry), and when no request
is pending the heap is dropped and the timer cancelled, so an idle reactor
holds nothing.

Under load the earliest deadline moves on with every request, so the timer
is set at most once per ``COALESCE`` seconds and each time expires every
request due: a deadline is met exactly when it is the only one due in that
window, and at most ``COALESCE`` late otherwise.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable
from weakref import WeakKeyDictionary

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

#: Seconds between two expiries of one reactor's deadlines, at least.
COALESCE = 0.05


class Deadlines:
    """The pending requests of one ``clock`` and when each must be answered."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, list]] = []
        self._order = itertools.count()
        self._pending = 0
        self._timer: IDelayedCall | None = None
        self._expired_at = float("-inf")

    def add(self, d: defer.Deferred[Any], seconds: float,
            timed_out: Callable[[], BaseException]) -> defer.Deferred[Any]:
        """``d``, cancelled once ``seconds`` pass without a result, and then
        failing with ``timed_out()`` instead of CancelledError."""
        due = self._clock.seconds() + seconds
        entry = [d, False]  # the Deferred until it has a result; whether it expired
        heapq.heappush(self._heap, (due, next(self._order), entry))
        self._pending += 1
        if self._timer is None or due < self._timer.getTime():
            self._arm()
        return d.addBoth(self._settled, entry, timed_out)

    def _settled(self, result: Any, entry: list, timed_out: Callable[[], BaseException]) -> Any:
        entry[0] = None
        self._pending -= 1
        if not self._pending:
            self._heap.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if entry[1] and isinstance(result, Failure) and result.check(defer.CancelledError):
            return Failure(timed_out())
        return result

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        now = self._clock.seconds()
        at = max(self._heap[0][0], self._expired_at + COALESCE)
        self._timer = self._clock.callLater(max(0.0, at - now), self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._expired_at = self._clock.seconds()
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)[2]
            if entry[0] is not None:
                entry[1] = True
                entry[0].cancel()  # may settle the last pending request: the heap is cleared then
        if heap and self._timer is None:
            self._arm()


_BY_CLOCK: WeakKeyDictionary[IReactorTime, Deadlines] = WeakKeyDictionary()


def deadlines(clock: IReactorTime) -> Deadlines:
    """The one ``Deadlines`` of ``clock``."""
    found = _BY_CLOCK.get(clock)
    if found is None:
        found = _BY_CLOCK[clock] = Deadlines(clock)
    return found
