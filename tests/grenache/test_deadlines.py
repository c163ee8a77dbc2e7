"""Request deadlines on one timer per clock (grenache/deadlines.py)."""
from __future__ import annotations

import gc
import weakref

from twisted.internet import defer, task
from twisted.trial import unittest

from twisted_exchange.grenache.deadlines import COALESCE, SWEEP_AFTER, Deadlines, deadlines


class TimedOut(Exception):
    pass


class DeadlinesTests(unittest.SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.deadlines = Deadlines(self.clock)

    def add(self, seconds: float, d: defer.Deferred | None = None) -> defer.Deferred:
        return self.deadlines.add(d if d is not None else defer.Deferred(), seconds, TimedOut)

    def test_an_unanswered_request_fails_with_the_timeout_error_at_its_deadline(self):
        d = self.add(5)
        self.clock.advance(4.999)
        self.assertNoResult(d)
        self.clock.advance(0.001)
        self.failureResultOf(d, TimedOut)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_answer_passes_through_and_leaves_no_timer_once_nothing_is_pending(self):
        first, second = defer.Deferred(), defer.Deferred()
        self.add(5, first)
        self.add(5, second)
        first.callback("one")
        self.assertEqual(self.successResultOf(first), "one")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the second still waits
        second.errback(ValueError("refused"))
        self.failureResultOf(second, ValueError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)  # nothing left to expire

    def test_a_request_cancelled_by_its_caller_is_cancelled_not_timed_out(self):
        d = self.add(5)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)

    def test_answered_requests_before_a_pending_one_do_not_expire_it_early(self):
        answered = [self.add(1) for _ in range(100)]
        self.clock.advance(0.5)
        pending = self.add(1)
        for d in answered:
            d.callback(None)
        self.clock.advance(0.75)  # the answered ones were due at 1: the timer found only them
        self.assertNoResult(pending)
        self.clock.advance(0.25)
        self.failureResultOf(pending, TimedOut)

    def test_a_shorter_deadline_than_the_timers_moves_the_timer_earlier(self):
        late = self.add(10)
        early = self.add(1)
        self.clock.advance(1)
        self.failureResultOf(early, TimedOut)
        self.assertNoResult(late)
        self.clock.advance(9)
        self.failureResultOf(late, TimedOut)

    def test_deadlines_due_together_expire_on_one_timer_at_most_coalesce_late(self):
        requests = []
        for _ in range(50):  # one request every millisecond, none answered
            requests.append(self.add(1))
            self.clock.advance(0.001)
        fired = []
        self.clock.advance(1 - 0.05)  # the first is due now
        for step in range(100):
            done = [d for d in requests if d.called]
            fired.append(len(done))
            self.clock.advance(0.001)
        self.assertEqual(fired[0], 1)
        # the rest were due within the next 49 ms; they expire together COALESCE after the first
        self.assertEqual(fired[int(COALESCE * 1000) - 1], 1)
        self.assertEqual(fired[int(COALESCE * 1000) + 1], 50)
        for d in requests:
            self.failureResultOf(d, TimedOut)

    def test_answered_entries_are_swept_so_memory_follows_what_is_pending(self):
        pending = self.add(3600)
        for _ in range(100 * SWEEP_AFTER):  # an hour's timeout at a high rate, each answered at once
            self.add(3600, defer.succeed(None))
        queued = sum(len(queue) for queue in self.deadlines._queues.values())
        self.assertLessEqual(queued, SWEEP_AFTER + 3)
        self.clock.advance(3600)
        self.failureResultOf(pending, TimedOut)

    def test_requests_of_different_timeouts_each_expire_in_time(self):
        requests = {seconds: self.add(seconds) for seconds in (3, 1, 2)}
        for second in (1, 2, 3):
            self.clock.advance(1)
            self.assertEqual(sorted(s for s, d in requests.items() if d.called), list(range(1, second + 1)))
        for d in requests.values():
            self.failureResultOf(d, TimedOut)

    def test_one_deadlines_per_clock_kept_no_longer_than_the_clock(self):
        other = task.Clock()
        self.assertIs(deadlines(self.clock), deadlines(self.clock))
        self.assertIsNot(deadlines(self.clock), deadlines(other))
        gone = weakref.ref(other)
        deadlines(other).add(defer.Deferred(), 5, TimedOut).callback("answered")
        del other
        gc.collect()
        self.assertIsNone(gone())
