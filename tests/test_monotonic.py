"""A reactor on CLOCK_MONOTONIC: its timers ignore wall-clock steps (monotonic.py)."""
from __future__ import annotations

import time
import unittest
from unittest import mock

from twisted.internet.epollreactor import EPollReactor

from twisted_exchange.monotonic import use_monotonic_time


class MonotonicTimeTests(unittest.TestCase):

    def setUp(self):
        self.reactor = EPollReactor()  # one of its own: never installed, never run
        self.addCleanup(self.reactor.waker.connectionLost, None)
        self.addCleanup(self.reactor._poller.close)

    def stepped(self, seconds: float):
        """The wall clock, as the stock reactor reads it, stepped by ``seconds`` (NTP, a VM resume)."""
        wall = time.time()
        return mock.patch.object(EPollReactor, "seconds", lambda reactor: wall + seconds)

    def test_a_timer_waits_its_delay_whatever_the_wall_clock_does(self):
        use_monotonic_time(self.reactor)
        self.reactor.callLater(0.05, lambda: None)
        for step in (-3600, 3600):
            with self.stepped(step):
                self.assertTrue(0 < self.reactor.timeout() <= 0.05, step)

    def test_the_stock_clock_would_wait_an_hour_after_a_step_back(self):
        self.reactor.callLater(0.05, lambda: None)
        with self.stepped(-3600):
            self.assertGreater(self.reactor.timeout(), 3600)

    def test_it_refuses_a_reactor_with_timers_already_on_the_wall_clock(self):
        self.reactor.callLater(1, lambda: None)
        with self.assertRaises(RuntimeError):
            use_monotonic_time(self.reactor)
