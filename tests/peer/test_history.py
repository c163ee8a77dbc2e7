"""Throughput over the last minute and the digests of recent applied indexes."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from twisted_exchange.peer.history import Digests, Throughput


class ThroughputTests(SynchronousTestCase):
    def test_no_rate_before_two_samples(self):
        throughput = Throughput()
        self.assertEqual(throughput.per_second(), 0.0)
        throughput.sample(10.0, 5)
        self.assertEqual(throughput.per_second(), 0.0)

    def test_rate_is_applied_entries_over_the_window_only(self):
        throughput = Throughput(window=60, every=1)
        for second in range(100):  # 1 entry/s for 30 s, then 10 entries/s: only these are in the window
            throughput.sample(float(second), second if second < 30 else 30 + (second - 30) * 10)
        self.assertEqual(throughput.per_second(), 10.0)


class DigestsTests(SynchronousTestCase):
    def test_remembers_the_last_kept_indexes_only(self):
        digests = Digests(keep=3)
        for index in range(1, 6):
            digests.record(index, f"d{index}")
        self.assertEqual([digests.at(i) for i in range(1, 7)], [None, None, "d3", "d4", "d5", None])

    def test_a_gap_from_an_installed_snapshot_starts_over(self):
        digests = Digests()
        digests.record(1, "d1")
        digests.record(50, "d50")
        self.assertIsNone(digests.at(1))
        self.assertEqual(digests.at(50), "d50")
