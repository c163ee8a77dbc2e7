"""The pieces of ``exchangectl bench-cluster`` that run without a cluster:
the naive baseline peer, the direct caller, and the report."""
from __future__ import annotations

import os
import time

from twisted.internet import defer
from twisted.trial import unittest

from tests.ctl.fakepeer import FakePeer
from tests.support import LOOPBACK
from twisted_exchange.ctl.benchcluster import CPUMeter, Direct, cpu_seconds, free_ports, report
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.naive import NaivePeer
from twisted_exchange.grenache import RPCServer


class Broadcasts:
    """Records what a NaivePeer sends to the others."""

    def __init__(self):
        self.sent = []

    def request_to(self, dest, key, payload):
        self.sent.append((dest, key, payload))
        return defer.succeed({"ok": True})


def order(client, side, price, request):
    return {"action": "submit", "client": client, "request": request, "symbol": "BTCUSD", "side": side,
            "type": "limit", "price": price, "quantity": "1"}


class NaivePeerTests(unittest.SynchronousTestCase):

    def test_a_submit_is_matched_here_then_broadcast_to_every_other_peer(self):
        client = Broadcasts()
        peer = NaivePeer("n1", ["127.0.0.1:2", "127.0.0.1:3"], client)
        reply = peer("exchange", order("a", "buy", "100", "r1"))
        self.assertTrue(reply["ok"])
        self.assertEqual([dest for dest, _, _ in client.sent], ["127.0.0.1:2", "127.0.0.1:3"])
        self.assertEqual(client.sent[0][2], {"action": "naive.order", "command": order("a", "buy", "100", "r1")})
        self.assertEqual(peer("exchange", {"action": "status"})["applied"], 1)

    def test_orders_arriving_in_different_orders_diverge_which_is_the_point_of_the_baseline(self):
        first, second = NaivePeer("n1", [], Broadcasts()), NaivePeer("n2", [], Broadcasts())
        orders = [order("a", "sell", "100", "r1"), order("b", "buy", "101", "r2"), order("c", "sell", "99", "r3")]
        for command in orders:
            first("exchange", {"action": "naive.order", "command": command})
        for command in reversed(orders):
            second("exchange", {"action": "naive.order", "command": command})
        status = [p("exchange", {"action": "status"}) for p in (first, second)]
        self.assertEqual([s["applied"] for s in status], [3, 3])
        self.assertNotEqual(status[0]["digest"], status[1]["digest"])


class DirectTests(unittest.TestCase):

    @defer.inlineCallbacks
    def test_calls_a_known_address_and_turns_errors_into_ctl_errors(self):
        from twisted.internet import reactor
        server = RPCServer(FakePeer("peer1"), host=LOOPBACK, port=0, reactor=reactor)
        yield server.start()
        self.addCleanup(server.stop)
        direct = Direct({"peer1": f"{LOOPBACK}:{server.port}"}, reactor)
        self.addCleanup(direct.close)
        reply = yield defer.ensureDeferred(direct.call({"action": "status"}, "peer1"))
        self.assertEqual(reply["id"], "peer1")
        with self.assertRaises(CtlError) as caught:
            yield defer.ensureDeferred(direct.call({"action": "order", "order_id": "404"}, "peer1"))
        self.assertEqual(caught.exception.code, "ERR_UNKNOWN_ORDER")


class ReportTests(unittest.SynchronousTestCase):

    def summary(self, rate, p99):
        return {"orders_per_second": rate, "committed": 10, "failed": 0,
                "latency_ms": {"p50": p99 / 2, "p99": p99}}

    def test_report_compares_with_the_targets_and_the_baseline(self):
        fast = {**self.summary(6000, 30.0),
                "cpu_ms_per_order": {"peers": 0.4, "client": 0.15, "cores_at_target": 2.75},
                "latency_ms_by_peer": {"peer1": {"p50": 17.0, "p99": 44.5}, "peer2": {"p50": 10.6, "p99": 24.8}}}
        text = report({"cluster": {"in_flight_1": self.summary(900, 4.0), "in_flight_64": fast, "leader": "peer2",
                                   "failover": {"killed": "peer2", "seconds": 2.5},
                                   "check": {"ok": True, "summary": "3 peers agree"}},
                       "baseline": {**self.summary(3000, 9.0), "peers": 3, "diverged_peers": 2,
                                    "distinct_books": 3},
                       "rpc_baseline": {"impl": "node", "in_flight": 64, "requests_per_second": 10000.0},
                       "ratio_to_rpc": 0.6})
        self.assertIn("2 of 3 peers diverged", text)
        self.assertIn("64 in flight, by peer sent to: peer1 p50 17.00 p99 44.50, peer2 (leader) p50 10.60"
                      " p99 24.80", text)
        self.assertIn("CPU per order at 64 in flight: peers 0.400 ms + clients 0.150 ms (at 5,000 orders/s:"
                      " 2.75 cores", text)
        self.assertIn("cluster / baseline throughput: 2.00", text)
        self.assertIn("plain Grenache RPC (node), 64 in flight: 10000 requests/s; cluster / RPC: 0.60", text)
        self.assertTrue(text.endswith("targets: orders/s (64 in flight) >= 5000 met, p99 (64 in flight) <= 20 ms"
                                      " MISSED, p99 (1 in flight) <= 5 ms met, cluster / RPC >= 0.5 met,"
                                      " failover <= 2 s MISSED, 0 divergence met"), text)

    def test_report_says_why_the_rpc_baseline_is_not_nodes(self):
        results = {"cluster": {"in_flight_1": self.summary(900, 4.0), "in_flight_64": self.summary(6000, 10.0),
                               "leader": "peer1", "failover": {"killed": "peer1", "seconds": 0.5},
                               "check": {"ok": True, "summary": "3 peers agree"}},
                   "baseline": {**self.summary(3000, 9.0), "peers": 3, "diverged_peers": 2, "distinct_books": 3},
                   "rpc_baseline": {"impl": "python", "in_flight": 64, "requests_per_second": 20000.0,
                                    "why": "node not found"},
                   "ratio_to_rpc": 0.3}
        self.assertIn("plain Grenache RPC (python), 64 in flight: 20000 requests/s; cluster / RPC: 0.30"
                      " (not Node's: node not found)", report(results))

    def test_free_ports_are_distinct(self):
        ports = free_ports(5)
        self.assertEqual(len(set(ports)), 5)


class CPUMeterTests(unittest.SynchronousTestCase):

    def burn(self, seconds: float) -> None:
        until = time.process_time() + seconds
        while time.process_time() < until:
            pass

    def test_cpu_seconds_of_a_process_is_what_it_used(self):
        before = cpu_seconds(os.getpid())
        self.burn(0.3)
        self.assertLess(abs(cpu_seconds(os.getpid()) - before - 0.3), 0.1)

    def test_cost_per_order_and_the_cores_the_target_would_take(self):
        class OneProcess:
            def process(self, name):
                return {"pid": os.getpid()}
        meter = CPUMeter(OneProcess(), ["peer1"])  # the "peers" are this process too
        self.burn(0.5)
        cost = meter.per_order(1000)
        self.assertLess(abs(cost["peers"] - 0.5), 0.1)  # ms per order: 0.5 s over 1,000 orders
        self.assertLess(abs(cost["client"] - 0.5), 0.1)
        self.assertLess(abs(cost["cores_at_target"] - (cost["peers"] + cost["client"]) * 5), 0.02)
