"""exchangectl's Grenache calls against fake peers behind a real (in-process) grape."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, protocol, reactor, task, utils
from twisted.trial import unittest

from tests.ctl.fakepeer import FakeCluster, FakePeer
from tests.support import LOOPBACK, free_port, free_ports, python_module
from twisted_exchange.ctl import bench
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.grenache import GrenacheError
from twisted_exchange.ctl.peers import Peers, check
from twisted_exchange.ctl.topology import render
from twisted_exchange.pki import CA, CLIENT, PEER, Identity


def _async(f):
    def test(self):
        return defer.ensureDeferred(f(self))
    test.__name__ = f.__name__
    return test


class PeersTestCase(unittest.TestCase):

    def setUp(self):
        self.cluster = FakeCluster(self)
        self.peers = self.connect([self.cluster.grape_url])

    def connect(self, grapes, timeout=2.0) -> Peers:
        peers = Peers(grapes, timeout=timeout)
        self.addCleanup(lambda: defer.ensureDeferred(peers.close()))
        return peers

    async def failure(self, awaitable) -> CtlError:
        try:
            await awaitable
        except CtlError as e:
            return e
        self.fail("no CtlError")


class CallTests(PeersTestCase):

    @_async
    async def test_a_query_reaches_the_named_peer(self):
        await self.cluster.add(FakePeer("peer1"))
        await self.cluster.add(FakePeer("peer2"))
        reply = await self.peers.call({"action": "book", "symbol": "BTCUSD", "depth": 5}, "peer2")
        self.assertEqual(reply["peer"], "peer2")
        self.assertEqual(self.cluster.peers["peer2"].received, [{"action": "book", "symbol": "BTCUSD", "depth": 5}])
        self.assertEqual(self.cluster.peers["peer1"].received, [])

    @_async
    async def test_without_a_peer_any_peer_answers(self):
        await self.cluster.add(FakePeer("peer1"))
        reply = await self.peers.call({"action": "status"})
        self.assertEqual(reply["id"], "peer1")

    @_async
    async def test_an_error_reply_is_shown_exactly_as_the_peer_sent_it(self):
        await self.cluster.add(FakePeer("peer1"))
        error = await self.failure(self.peers.call({"action": "order", "order_id": "404"}, "peer1"))
        self.assertEqual(str(error), "ERR_UNKNOWN_ORDER: no order '404'")
        self.assertEqual(error.code, "ERR_UNKNOWN_ORDER")

    @_async
    async def test_a_dead_grape_costs_one_failed_lookup_then_is_asked_last(self):
        await self.cluster.add(FakePeer("peer1"))
        peers = self.connect([f"http://127.0.0.1:{free_port()}", self.cluster.grape_url])
        dead = peers._links[0]
        asked = []
        lookup = dead.lookup
        dead.lookup = lambda key: (asked.append(key), lookup(key))[1]
        for _ in range(3):
            self.assertEqual((await peers.call({"action": "status"}, "peer1"))["id"], "peer1")
        self.assertEqual(asked, ["exchange:peer1"])

    @_async
    async def test_a_peer_nobody_announces_is_reported_as_such(self):
        error = await self.failure(self.peers.call({"action": "status"}, "peer3"))
        self.assertEqual(str(error), "peer3 is announced on no grape (is it running? see: exchangectl status)")

    @_async
    async def test_a_stale_address_is_a_transport_error_naming_the_peer(self):
        await self.cluster.announce("peer3", free_port())
        error = await self.failure(self.peers.call({"action": "status"}, "peer3"))
        self.assertTrue(str(error).startswith("peer3: ERR_REQUEST_GENERIC"), str(error))
        self.assertEqual(error.code, "ERR_REQUEST_GENERIC")

    @_async
    async def test_a_dead_first_grape_is_skipped(self):
        await self.cluster.add(FakePeer("peer1"))
        peers = self.connect([f"http://{LOOPBACK}:{free_port()}", self.cluster.grape_url])
        self.assertEqual((await peers.call({"action": "status"}, "peer1"))["id"], "peer1")

    @_async
    async def test_a_hung_first_grape_does_not_hold_the_call(self):
        # It accepts connections and never answers (SIGSTOP, a silent host):
        # the next grape is asked LOOKUP_HEDGE_SECONDS later, well inside the
        # minute this lookup would otherwise wait for its timeout.
        await self.cluster.add(FakePeer("peer1"))
        hung = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), interface=LOOPBACK)
        self.addCleanup(hung.stopListening)
        peers = self.connect([f"http://{LOOPBACK}:{hung.getHost().port}", self.cluster.grape_url], timeout=60)
        self.assertEqual((await peers.call({"action": "status"}, "peer1"))["id"], "peer1")
        self.assertIn("exchange:peer1", peers._links[0]._asking)  # still waiting for the hung grape

    @_async
    async def test_a_grape_that_knows_nobody_does_not_hide_one_that_does(self):
        await self.cluster.add(FakePeer("peer1"))
        empty = FakeCluster(self)
        await empty.add(FakePeer("peer2"))
        peers = self.connect([empty.grape_url, self.cluster.grape_url])
        self.assertEqual((await peers.call({"action": "status"}, "peer1"))["id"], "peer1")

    @_async
    async def test_no_grape_reachable_says_so_with_the_reasons(self):
        dead = f"http://{LOOPBACK}:{free_port()}"
        error = await self.failure(self.connect([dead]).call({"action": "status"}, "peer1"))
        self.assertTrue(str(error).startswith("no grape reachable (ERR_REQUEST_GENERIC"), str(error))
        self.assertIn(dead, str(error))

    @_async
    async def test_statuses_report_each_peer_or_its_error(self):
        await self.cluster.add(FakePeer("peer1"))
        statuses = await self.peers.statuses(["peer1", "peer2"])
        self.assertEqual(statuses["peer1"]["id"], "peer1")
        self.assertIsInstance(statuses["peer2"], CtlError)


class PinnedTests(PeersTestCase):
    """Peers whose address the cluster's config fixes are called there first."""

    def pinned(self, addresses, timeout=2.0, credential=None) -> Peers:
        peers = Peers([self.cluster.grape_url], timeout=timeout, credential=credential, pinned=addresses)
        self.addCleanup(lambda: defer.ensureDeferred(peers.close()))
        self.lookups = []
        link = peers._links[0]
        lookup = link.lookup
        link.lookup = lambda key: (self.lookups.append(key), lookup(key))[1]
        return peers

    async def flood(self, peer_id: str, fakes: int = 20) -> None:
        """Announce ``fakes`` addresses where nothing listens as ``peer_id``
        (and as any peer)."""
        for port in free_ports(fakes):
            for name in ("exchange", f"exchange:{peer_id}"):
                try:
                    await self.cluster.link.announce(name, port)
                except GrenacheError:
                    pass  # a lone grape stores it and says "No nodes to query", as Node's does

    @_async
    async def test_a_pinned_peer_is_reached_when_the_grape_knows_only_fakes_of_it(self):
        real = await self.cluster.add(FakePeer("peer1"), announced=False)
        await self.flood("peer1")
        unpinned = await self.failure(self.connect([self.cluster.grape_url]).call({"action": "status"}, "peer1"))
        self.assertEqual(unpinned.code, "ERR_REQUEST_GENERIC")  # what a flood did before
        peers = self.pinned({"peer1": real.address})
        for _ in range(3):
            self.assertEqual((await peers.call({"action": "status"}, "peer1"))["id"], "peer1")
        self.assertEqual(self.lookups, [])

    @_async
    async def test_without_a_peer_a_pinned_one_answers(self):
        await self.flood("peer1")
        real = await self.cluster.add(FakePeer("peer2"), announced=False)
        peers = self.pinned({"peer2": real.address})
        self.assertEqual((await peers.call({"action": "status"}))["id"], "peer2")
        self.assertEqual(self.lookups, [])

    @_async
    async def test_without_a_peer_a_refused_pinned_one_falls_back_to_any_announced_peer(self):
        await self.cluster.add(FakePeer("peer2"))
        peers = self.pinned({"peer1": f"{LOOPBACK}:{free_port()}"})
        self.assertEqual((await peers.call({"action": "status"}))["id"], "peer2")
        self.assertEqual(set(self.lookups), {"exchange"})

    @_async
    async def test_a_refused_pinned_address_falls_back_to_the_lookup(self):
        await self.cluster.add(FakePeer("peer1"))
        peers = self.pinned({"peer1": f"{LOOPBACK}:{free_port()}"})
        self.assertEqual((await peers.call({"action": "status"}, "peer1"))["id"], "peer1")
        self.assertEqual(set(self.lookups), {"exchange:peer1"})

    @_async
    async def test_in_secure_mode_another_peer_at_the_pinned_address_is_not_taken_for_it(self):
        ca = CA.create()
        await self.cluster.add(FakePeer("peer1"), tls=ca.issue(Identity(PEER, "peer1"), [LOOPBACK]))
        other = await self.cluster.add(FakePeer("peer2"), tls=ca.issue(Identity(PEER, "peer2"), [LOOPBACK]))
        peers = self.pinned({"peer1": other.address}, credential=ca.issue(Identity(CLIENT, "cli")))
        self.assertEqual((await peers.call({"action": "status"}, "peer1"))["id"], "peer1")
        self.assertEqual(set(self.lookups), {"exchange:peer1"})
        self.assertEqual(other.received, [])

    @_async
    async def test_a_pinned_peers_error_reply_is_its_answer_not_a_reason_to_look_up(self):
        real = await self.cluster.add(FakePeer("peer1"))
        error = await self.failure(self.pinned({"peer1": real.address}).call(
            {"action": "order", "order_id": "404"}, "peer1"))
        self.assertEqual(error.code, "ERR_UNKNOWN_ORDER")
        self.assertEqual(self.lookups, [])

    @_async
    async def test_in_secure_mode_a_silent_pinned_address_costs_the_connect_timeout_then_the_lookup_answers(self):
        # A TLS handshake it never answers (plain HTTP to it would wait for
        # the reply instead: see the next test).
        ca = CA.create()
        await self.cluster.add(FakePeer("peer1"), tls=ca.issue(Identity(PEER, "peer1"), [LOOPBACK]))
        silent = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), interface=LOOPBACK)
        self.addCleanup(silent.stopListening)
        peers = self.pinned({"peer1": f"{LOOPBACK}:{silent.getHost().port}"}, timeout=10.0,
                            credential=ca.issue(Identity(CLIENT, "cli")))
        self.assertEqual((await peers.call({"action": "status"}, "peer1"))["id"], "peer1")  # else ERR_TIMEOUT
        self.assertEqual(set(self.lookups), {"exchange:peer1"})

    @_async
    async def test_a_pinned_call_that_used_up_the_time_is_not_tried_again(self):
        await self.cluster.add(FakePeer("peer1"))
        silent = reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), interface=LOOPBACK)
        self.addCleanup(silent.stopListening)
        peers = self.pinned({"peer1": f"{LOOPBACK}:{silent.getHost().port}"}, timeout=0.5)
        error = await self.failure(peers.call({"action": "status"}, "peer1"))
        self.assertEqual(error.code, "ERR_TIMEOUT")
        self.assertTrue(str(error).startswith("peer1: "), str(error))
        self.assertEqual(self.lookups, [])


    @_async
    async def test_a_route_to_a_pinned_peer_takes_no_lookup_and_reaches_it_through_fakes(self):
        real = await self.cluster.add(FakePeer("peer1"), announced=False)
        await self.flood("peer1")
        route = await self.pinned({"peer1": real.address}).route("peer1")
        self.assertEqual(route.address, real.address)
        self.assertEqual((await route.call({"action": "status"}))["id"], "peer1")
        self.assertEqual(self.lookups, [])

    @_async
    async def test_after_a_pinned_route_fails_in_transport_the_next_is_looked_up_and_the_one_after_pinned(self):
        real = await self.cluster.add(FakePeer("peer1"))
        refused = f"{LOOPBACK}:{free_port()}"
        peers = self.pinned({"peer1": refused})
        first = await peers.route("peer1")
        error = await self.failure(first.call({"action": "status"}))
        self.assertEqual((first.address, error.code), (refused, "ERR_REQUEST_GENERIC"))
        second = await peers.route("peer1")
        self.assertEqual(second.address, real.address)
        self.assertEqual((await second.call({"action": "status"}))["id"], "peer1")
        self.assertEqual(set(self.lookups), {"exchange:peer1"})
        self.assertEqual((await peers.route("peer1")).address, refused)

    @_async
    async def test_a_pinned_routes_error_reply_keeps_the_next_route_pinned(self):
        real = await self.cluster.add(FakePeer("peer1"), announced=False)
        peers = self.pinned({"peer1": real.address})
        error = await self.failure((await peers.route("peer1")).call({"action": "order", "order_id": "404"}))
        self.assertEqual(error.code, "ERR_UNKNOWN_ORDER")
        self.assertEqual((await peers.route("peer1")).address, real.address)
        self.assertEqual(self.lookups, [])


class CheckTests(PeersTestCase):

    @_async
    async def test_agreeing_peers_pass(self):
        for name in ("peer1", "peer2"):
            await self.cluster.add(FakePeer(name, applied=9, digest="cd" * 32))
        verdict = await check(self.peers, ["peer1", "peer2"], wait=2)
        self.assertTrue(verdict.ok, verdict.summary())

    @_async
    async def test_a_divergence_fails_at_once(self):
        await self.cluster.add(FakePeer("peer1", applied=9, digest="aa" * 32))
        await self.cluster.add(FakePeer("peer2", applied=9, digest="bb" * 32))
        started = self.cluster.reactor.seconds()
        verdict = await check(self.peers, ["peer1", "peer2"], wait=30)
        self.assertEqual([d.applied for d in verdict.divergences], [9])
        self.assertLess(self.cluster.reactor.seconds() - started, 10)

    @_async
    async def test_a_lagging_peer_is_given_time_to_catch_up(self):
        await self.cluster.add(FakePeer("peer1", applied=9, digest="aa" * 32))
        lagging = await self.cluster.add(FakePeer("peer2", applied=7, digest="77" * 32))
        self.cluster.reactor.callLater(0.3, lagging.status.update, applied=9, digest="aa" * 32)
        verdict = await check(self.peers, ["peer1", "peer2"], wait=10)
        self.assertTrue(verdict.ok, verdict.summary())

    @_async
    async def test_peers_that_never_converge_fail_at_the_deadline(self):
        await self.cluster.add(FakePeer("peer1", applied=9))
        await self.cluster.add(FakePeer("peer2", applied=7))
        verdict = await check(self.peers, ["peer1", "peer2"], wait=0.5)
        self.assertFalse(verdict.ok)
        self.assertEqual(verdict.divergences, [])


class LoadTests(PeersTestCase):

    @_async
    async def test_a_counted_run_sends_exactly_that_many_orders_over_every_peer(self):
        fakes = [await self.cluster.add(FakePeer(name)) for name in ("peer1", "peer2", "peer3")]
        recorder = await bench.load(self.peers, ["peer1", "peer2", "peer3"], 4, duration=None,
                                    count=30, reactor=self.cluster.reactor)
        self.assertEqual(recorder.count, 30)
        self.assertEqual(recorder.errors, {})
        orders = [[p for p in f.received if p["action"] == "submit"] for f in fakes]
        self.assertEqual(sum(map(len, orders)), 30)
        self.assertTrue(all(orders))
        for fake in fakes:  # each of the 4 clients connected first
            self.assertEqual([p["action"] for p in fake.received[:4]], ["status"] * 4)
        summary = recorder.summary()
        self.assertEqual(summary["committed"], 30)
        self.assertEqual(set(summary["latency_ms_by_peer"]), {"peer1", "peer2", "peer3"})
        self.assertGreater(summary["latency_ms"]["p99"], 0)

    def test_each_client_connects_first_then_sends_with_its_own_credential(self):
        sent = []

        class Recording:
            reactor = task.Clock()

            async def route(self, peer, **send_as):
                recording = self

                class Route:
                    def call(self, payload):
                        sent.append((payload["action"], payload.get("client"), peer, send_as))
                        return task.deferLater(recording.reactor, 1, lambda: {"ok": True})
                return Route()
        started_after = []
        result = defer.ensureDeferred(bench.load(Recording(), ["peer1", "peer2"], 3, duration=None,
                                                 count=9, reactor=Recording.reactor,
                                                 credential_of=lambda name: f"credential of {name}",
                                                 on_start=lambda: started_after.append(len(sent))))
        while not result.called:
            Recording.reactor.advance(1)
        recorder = self.successResultOf(result)
        self.assertEqual(recorder.count, 9)
        connects, orders = sent[:6], sent[6:]
        self.assertEqual({action for action, *_ in connects}, {"status"})
        self.assertEqual(sorted((peer, send_as["credential"]) for _, _, peer, send_as in connects),
                         sorted((peer, f"credential of bench{n}") for n in range(3) for peer in ("peer1", "peer2")))
        self.assertEqual({client for _, client, _, _ in orders}, {"bench0", "bench1", "bench2"})
        for action, client, _, send_as in orders:
            self.assertEqual((action, send_as), ("submit", {"credential": f"credential of {client}"}))
        # the two connecting calls per client (1 s each) are before the clock starts
        self.assertEqual(recorder.started, 2)
        self.assertEqual(started_after, [6])
        self.assertEqual({latency for _, latency in recorder.points}, {1000.0})

    def test_a_route_that_fails_is_looked_up_again_and_answers_at_once_do_not_recurse(self):
        routed, answers = [], iter([{"ok": True}, CtlError("peer1: ERR_REQUEST_GENERIC: refused", "ERR_REQUEST_GENERIC"),
                                    CtlError("ERR_INVALID_ORDER: price", "ERR_INVALID_ORDER")])

        class Answering:
            reactor = task.Clock()

            def route(self, peer):
                routed.append(peer)
                return defer.succeed(self)

            def call(self, payload):
                answer = next(answers, {"ok": True})
                return defer.fail(answer) if isinstance(answer, CtlError) else defer.succeed(answer)
        result = defer.ensureDeferred(bench.load(Answering(), ["peer1"], 1, duration=None, count=5000,
                                                 reactor=Answering.reactor))
        recorder = self.successResultOf(result)
        self.assertEqual(recorder.count, 4998)
        self.assertEqual(recorder.errors, {"ERR_REQUEST_GENERIC": 1, "ERR_INVALID_ORDER": 1})
        # one route to connect, and one after each failure
        self.assertEqual(routed, ["peer1", "peer1", "peer1"])

    def test_a_bug_in_a_call_fails_the_run_instead_of_hanging_it(self):
        class Broken:
            reactor = task.Clock()

            def route(self, peer):
                return defer.succeed(self)

            def call(self, payload):
                return defer.succeed({}) if payload["action"] == "status" else defer.fail(KeyError("bug"))
        result = defer.ensureDeferred(bench.load(Broken(), ["peer1"], 2, duration=None, count=10,
                                                 reactor=Broken.reactor))
        self.failureResultOf(result, defer.FirstError)

    @_async
    async def test_failures_are_counted_by_code(self):
        await self.cluster.add(FakePeer("peer1"))
        await self.cluster.announce("peer2", free_port())
        recorder = await bench.load(self.peers, ["peer1", "peer2"], 2, duration=None, count=6,
                                    reactor=self.cluster.reactor)
        self.assertEqual(recorder.count + sum(recorder.errors.values()), 6)
        self.assertEqual(set(recorder.errors), {"ERR_REQUEST_GENERIC"})


class CommandLineTests(PeersTestCase):
    """exchangectl as a child process (its reactor runs once per process)
    against three fake peers served by this test's reactor."""

    async def start(self, hashes=("ab" * 32,) * 3) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.directory = Path(directory.name)
        self.config = self.directory / "cluster.conf"
        ports = []
        for n, digest in enumerate(hashes, 1):
            peer = await self.cluster.add(FakePeer(f"peer{n}", applied=9, digest=digest))
            ports.append(int(peer.address.rsplit(":", 1)[1]))
        self.config.write_text(render(3, grape_ports=[self.cluster.grape_ports], peer_ports=ports, secure=False))

    async def exchangectl(self, *args: str) -> tuple[str, str, int]:
        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, python_module("twisted_exchange.ctl", "-c", str(self.config), *args)[1:],
            env=os.environ)
        return out.decode(), err.decode(), code

    @_async
    async def test_book_shows_the_named_peers_book(self):
        await self.start()
        out, err, code = await self.exchangectl("book", "peer2", "--depth", "3")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(out.splitlines()[0], "BTCUSD on peer2 (applied 9)")
        self.assertEqual(out.splitlines()[2].split(), ["2", "100", "|", "101", "1.5"])
        self.assertEqual(self.cluster.peers["peer2"].received[-1],
                         {"action": "book", "symbol": "BTCUSD", "depth": 3})

    @_async
    async def test_submit_sends_the_protocol_payload_and_prints_the_reply_as_json(self):
        await self.start()
        out, err, code = await self.exchangectl("submit", "buy", "1.5", "100", "--peer", "peer1",
                                                "--client", "alice", "--request", "r1", "--json")
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(json.loads(out)["order"]["id"], "1")
        self.assertEqual(self.cluster.peers["peer1"].received, [
            {"action": "submit", "client": "alice", "request": "r1", "symbol": "BTCUSD", "side": "buy",
             "type": "limit", "quantity": "1.5", "post_only": False, "price": "100"}])

    @_async
    async def test_an_error_reply_is_one_line_and_exit_1(self):
        await self.start()
        out, err, code = await self.exchangectl("order", "404", "--peer", "peer3")
        self.assertEqual((code, out, err), (1, "", "error: ERR_UNKNOWN_ORDER: no order '404'\n"))

    @_async
    async def test_check_passes_when_peers_agree(self):
        await self.start()
        out, err, code = await self.exchangectl("check")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("ok: 3 peers agree at applied index 9", out)

    @_async
    async def test_check_reports_a_divergence_and_exits_1(self):
        await self.start(hashes=("ab" * 32, "ab" * 32, "ff" * 32))
        out, err, code = await self.exchangectl("check", "--json")
        self.assertEqual(code, 1)
        self.assertEqual(json.loads(out)["divergences"][0]["hashes"]["peer3"], "ff" * 32)
        self.assertEqual(err, f"error: peers diverge at applied index 9: peer1 {'ab' * 6}, peer2 {'ab' * 6},"
                              f" peer3 {'ff' * 6}\n")

    @_async
    async def test_bench_counts_orders_plots_latency_and_ends_with_check(self):
        await self.start()
        plot = self.directory / "latency.png"
        out, err, code = await self.exchangectl("bench", "--count", "12", "--clients", "3",
                                                "--plot", str(plot), "--json")
        self.assertEqual((code, err), (0, ""))
        report = json.loads(out)
        self.assertEqual((report["committed"], report["failed"]), (12, 0))
        self.assertTrue(report["check"]["ok"])
        received = [payload["action"] for p in self.cluster.peers.values() for payload in p.received]
        self.assertEqual(received.count("submit"), 12)
        self.assertEqual(plot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
