"""Request deadlines on one reactor timer.

``Deferred.addTimeout`` gives each request a DelayedCall: a Python object,
a push onto the reactor's heap ordered by a Python ``__lt__``, and a cancel
when the reply comes, which is nearly always.  At thousands of requests a
second that bookkeeping was a tenth of a bench client's CPU.  Here a request
costs an entry in a queue of this module's and one callback; one
DelayedCall per reactor waits for the earliest deadline.  Requests with the
same timeout are due in the order they were made, so each timeout has a
first-in first-out queue (a deque: no heap to keep in order).  A reply
leaves its entry queued (finding it would cost more than the entry) until
its time comes or a sweep of the answered ones (``SWEEP_AFTER``, amortised
over as many requests) removes it; when no request is pending the queues
are dropped and the timer cancelled, so an idle reactor holds nothing.

Under load the earliest deadline moves on with every request, so the timer
is set at most once per ``COALESCE`` seconds and each time expires every
request due: a deadline is met exactly when it is the only one due in that
window, and at most ``COALESCE`` late otherwise.
"""
from __future__ import annotations

import weakref
from collections import deque
from typing import Any, Callable
from weakref import WeakKeyDictionary

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

#: Seconds between two expiries of one reactor's deadlines, at least.
COALESCE = 0.05
#: Answered entries a queue may hold beyond twice the pending requests
#: before they are swept out (so memory follows what is pending, not the
#: request rate times the timeout).
SWEEP_AFTER = 1024


class Deadlines:
    """The pending requests of one ``clock`` and when each must be answered."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock_of = weakref.ref(clock)  # not the clock itself: see ``deadlines``
        self._queues: dict[float, deque[tuple[float, list]]] = {}  # timeout -> (due, entry), due first
        self._pending = 0
        self._timer: IDelayedCall | None = None
        self._expired_at = float("-inf")

    def add(self, d: defer.Deferred[Any], seconds: float,
            timed_out: Callable[[], BaseException]) -> defer.Deferred[Any]:
        """``d``, cancelled once ``seconds`` pass without a result, and then
        failing with ``timed_out()`` instead of CancelledError."""
        due = self._clock_of().seconds() + seconds
        entry = [d, False]  # the Deferred until it has a result; whether it expired
        queue = self._queues.get(seconds)
        if queue is None:
            queue = self._queues[seconds] = deque()
        elif len(queue) > 2 * self._pending + SWEEP_AFTER:
            queue = self._queues[seconds] = deque(item for item in queue if item[1][0] is not None)
        queue.append((due, entry))
        self._pending += 1
        if self._timer is None or due < self._timer.getTime():
            self._arm()
        return d.addBoth(self._settled, entry, timed_out)

    def _settled(self, result: Any, entry: list, timed_out: Callable[[], BaseException]) -> Any:
        entry[0] = None
        self._pending -= 1
        if not self._pending:
            self._queues.clear()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if entry[1] and isinstance(result, Failure) and result.check(defer.CancelledError):
            return Failure(timed_out())
        return result

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        clock = self._clock_of()
        first = min(queue[0][0] for queue in self._queues.values() if queue)
        at = max(first, self._expired_at + COALESCE)
        self._timer = clock.callLater(max(0.0, at - clock.seconds()), self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = self._expired_at = self._clock_of().seconds()
        for queue in list(self._queues.values()):
            while queue and queue[0][0] <= now:
                entry = queue.popleft()[1]
                if entry[0] is not None:
                    entry[1] = True
                    entry[0].cancel()  # may settle the last pending request: the queues are dropped then
        if self._timer is None and any(self._queues.values()):
            self._arm()


_BY_CLOCK: WeakKeyDictionary[IReactorTime, Deadlines] = WeakKeyDictionary()


def deadlines(clock: IReactorTime) -> Deadlines:
    """The one ``Deadlines`` of ``clock``, for as long as the clock lives
    (it refers to its clock weakly, or this registry would keep every
    clock, and every test's, forever; only a timer still set, while a
    request is pending, holds the clock).  Look it up once per caller: the
    lookup costs more than a request's deadline."""
    found = _BY_CLOCK.get(clock)
    if found is None:
        found = _BY_CLOCK[clock] = Deadlines(clock)
    return found
