"""exchangectl bench's recorder and plot (the load itself is in test_peers)."""
from __future__ import annotations

import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from unittest import mock

from twisted.trial import unittest

from twisted_exchange.ctl import bench
from twisted_exchange.ctl.errors import CtlError


class PlotTests(unittest.SynchronousTestCase):

    def recorder(self) -> bench.Recorder:
        recorder = bench.Recorder(started=100.0)
        for n in range(300):
            sent = 100.0 + n / 100
            recorder.committed(sent, sent + 0.001 * (1 + n % 7))
        return recorder

    def test_a_png_with_percentiles_and_throughput_is_written(self):
        _needs_matplotlib()
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "latency.png"
            bench.plot(self.recorder(), str(path), "3 clients, 300 orders")
            self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    def test_without_matplotlib_the_run_is_refused_before_it_starts(self):
        with mock.patch.dict(sys.modules, {"matplotlib": None}):
            with self.assertRaises(CtlError) as caught:
                bench.require_plotting()
        self.assertIn("pip install 'twisted-exchange[plot]'", str(caught.exception))

    def test_an_unwritable_path_is_a_one_line_error(self):
        _needs_matplotlib()
        with self.assertRaises(CtlError) as caught:
            bench.plot(self.recorder(), "/nonexistent/dir/x.png", "run")
        self.assertTrue(str(caught.exception).startswith("cannot write /nonexistent/dir/x.png"))


class RecorderTests(unittest.SynchronousTestCase):

    def test_latency_by_the_peer_an_order_was_sent_to(self):
        recorder = bench.Recorder(started=0.0)
        for n in range(1, 101):  # peer1: 1..100 ms; peer2: 10 ms each; one without a peer
            recorder.committed(0.0, n / 1000, "peer1")
            recorder.committed(0.0, 0.010, "peer2")
        recorder.committed(0.0, 0.5)
        summary = recorder.summary()
        self.assertEqual(summary["committed"], 201)
        self.assertEqual(summary["latency_ms_by_peer"], {"peer1": {"p50": 50.0, "p99": 99.0},
                                                         "peer2": {"p50": 10.0, "p99": 10.0}})
        self.assertIn("by peer sent to: peer1 p50 50.00 p99 99.00, peer2 p50 10.00 p99 10.00",
                      bench.report(summary))


def _needs_matplotlib() -> None:
    try:
        bench.require_plotting()
    except CtlError:
        raise unittest.SkipTest("matplotlib is not installed (pip install 'twisted-exchange[plot]')") from None


class WorkloadTests(unittest.SynchronousTestCase):

    def prices(self, resting: bool) -> dict[str, list[Decimal]]:
        workload = bench.Workload("alice", seed=3, resting=resting)
        prices: dict[str, list[Decimal]] = {"buy": [], "sell": []}
        for _ in range(2000):
            order = workload.next_order()
            prices[order["side"]].append(Decimal(order["price"]))
        return prices

    def test_crossing_orders_overlap_around_the_mid(self):
        prices = self.prices(resting=False)
        self.assertGreater(max(prices["buy"]), min(prices["sell"]))

    def test_resting_orders_never_cross_and_stay_positive(self):
        prices = self.prices(resting=True)
        self.assertLess(max(prices["buy"]), min(prices["sell"]))
        self.assertGreater(min(prices["buy"]), 0)
        self.assertGreater(len(set(prices["buy"])), 100)   # spread over many levels, as a real book
