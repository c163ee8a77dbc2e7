"""bench-cluster's load generator (ctl/loadgen.py) against fake peers in this
reactor: it runs in a thread of the reactor's pool, so the fakes answer it."""
from __future__ import annotations

import os
import threading
import unittest

from twisted.internet import defer, protocol, reactor, threads

from tests.ctl.fakepeer import FakePeer, Refused
from tests.ctl.test_peers import PeersTestCase, _async
from tests.support import free_port
from twisted_exchange.ctl import loadgen
from twisted_exchange.ctl.bench import Workload
from twisted_exchange.ctl.peers import Route
from twisted_exchange.grenache import RPCServer
from twisted_exchange.pki import CA, CLIENT, PEER, Identity

NAMES = ["peer1", "peer2", "peer3"]


class RefusingOrders(FakePeer):
    def __call__(self, key, payload):
        if payload.get("action") == "submit":
            self.received.append(payload)
            raise Refused("ERR_INVALID_ORDER", "refused by the test")
        return super().__call__(key, payload)


class Silent(FakePeer):
    def __call__(self, key, payload):
        self.received.append(payload)
        return defer.Deferred()  # never answers


class Closing(protocol.Protocol):
    closed = threading.Event()

    def connectionMade(self):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.closed.set()


class Known:
    """``peers.route`` straight to known routes (the TLS test has no grape)."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes

    async def route(self, peer, **send_as):
        return self.routes[peer]


class LoadTests(PeersTestCase):

    async def load(self, peers, names=NAMES, clients=4, count=30, before=lambda: None, **kwargs):
        started = []
        recorder = await loadgen.load(peers, names, clients, duration=None, count=count, reactor=reactor,
                                      on_start=lambda: started.append(before()), **kwargs)
        self.assertEqual(len(started), 1)
        return recorder

    @_async
    async def test_a_counted_run_sends_exactly_that_many_orders_over_every_peer(self):
        fakes = [await self.cluster.add(FakePeer(name)) for name in NAMES]
        recorder = await self.load(self.peers)
        self.assertEqual((recorder.count, recorder.errors), (30, {}))
        orders = [[p for p in f.received if p["action"] == "submit"] for f in fakes]
        self.assertEqual(sum(map(len, orders)), 30)
        self.assertTrue(all(orders))
        self.assertEqual({p["client"] for f in orders for p in f}, {f"bench{n}" for n in range(4)})
        summary = recorder.summary()
        self.assertEqual(set(summary["latency_ms_by_peer"]), set(NAMES))
        self.assertGreater(summary["latency_ms"]["p99"], 0)

    @_async
    async def test_the_orders_are_bench_loads_for_the_same_seed(self):
        fake = await self.cluster.add(FakePeer("peer1"))
        await self.load(self.peers, names=["peer1"], clients=1, count=5, seed=3)
        expected = Workload("bench0", 3 * 1_000_003)
        self.assertEqual(len(fake.received), 5)
        for sent in fake.received:
            order = expected.next_order()
            self.assertEqual({**sent, "request": None}, {**order, "request": None})

    @_async
    async def test_an_error_reply_is_counted_and_that_peer_is_not_used_again(self):
        await self.cluster.add(FakePeer("peer1"))
        refusing = await self.cluster.add(RefusingOrders("peer2"))
        recorder = await self.load(self.peers, names=["peer1", "peer2"], clients=2, count=20)
        self.assertEqual(recorder.errors, {"ERR_INVALID_ORDER": 2})  # one per client
        self.assertEqual(len(refusing.received), 2)
        self.assertEqual(recorder.count, 18)

    @_async
    async def test_a_peer_that_does_not_listen_is_done_without(self):
        fake = await self.cluster.add(FakePeer("peer1"))
        await self.cluster.announce("peer2", free_port())
        recorder = await self.load(self.peers, names=["peer1", "peer2"], clients=2, count=10)
        self.assertEqual((recorder.count, recorder.errors), (10, {}))
        self.assertEqual(len(fake.received), 10)

    @_async
    async def test_a_connection_the_server_closes_while_idle_is_dropped_without_a_failure(self):
        fake = await self.cluster.add(FakePeer("peer1"))
        closing = reactor.listenTCP(0, protocol.Factory.forProtocol(Closing), interface="127.0.0.1")
        self.addCleanup(closing.stopListening)
        await self.cluster.announce("peer2", closing.getHost().port)
        Closing.closed.clear()
        recorder = await self.load(self.peers, names=["peer1", "peer2"], clients=1, count=10,
                                   before=lambda: Closing.closed.wait(5))  # closed before the clock starts
        self.assertEqual((recorder.count, recorder.errors), (10, {}))
        self.assertEqual(len(fake.received), 10)

    @_async
    async def test_a_call_without_an_answer_times_out_and_a_client_left_without_peers_stops(self):
        silent = await self.cluster.add(Silent("peer1"))
        recorder = await self.load(self.peers, names=["peer1"], clients=2, count=10, timeout=0.3)
        self.assertEqual((recorder.count, recorder.errors), (0, {"ERR_TIMEOUT": 2}))
        self.assertEqual(len(silent.received), 2)

    @_async
    async def test_over_tls_each_client_sends_as_itself_to_the_identity_it_expects(self):
        ca = CA.create()
        fake, impostor = FakePeer("peer1"), FakePeer("peer2")
        callers = []
        routes = {}
        for peer, serves_as in ((fake, "peer1"), (impostor, "peer1")):  # peer2's server proves peer1
            def handler(key, payload, caller, peer=peer):
                callers.append((peer.id, caller.identity))
                return peer(key, payload)
            server = RPCServer(handler, host="127.0.0.1", port=0, reactor=reactor, with_caller=True,
                               tls=ca.issue(Identity(PEER, serves_as)))
            await server.start()
            self.addCleanup(server.stop)
            routes[peer.id] = Route(None, f"127.0.0.1:{server.port}", f"exchange:{peer.id}", peer.id,
                                    Identity(PEER, peer.id))
        recorder = await self.load(Known(routes), names=["peer1", "peer2"], clients=2, count=8,
                                  credential_of=lambda name: ca.issue(Identity(CLIENT, name)))
        self.assertEqual((recorder.count, recorder.errors), (8, {}))
        self.assertEqual(len(fake.received), 8)
        self.assertEqual(impostor.received, [])
        self.assertEqual({identity for _, identity in callers},
                         {Identity(CLIENT, "bench0"), Identity(CLIENT, "bench1")})


class StopTests(PeersTestCase):

    @_async
    async def test_a_run_that_is_stopped_ends_within_a_sweep(self):
        await self.cluster.add(Silent("peer1"))  # nothing is ever answered: only stop ends it
        route = await self.peers.route("peer1")
        stop = threading.Event()
        reactor.callLater(0.3, stop.set)
        started = reactor.seconds()
        recorder = await threads.deferToThread(loadgen.run, ["peer1"], [Workload("bench0", 1)],
                                               [({"peer1": route}, None)], 60.0, None, 60.0, stop=stop)
        self.assertLess(reactor.seconds() - started, 5)
        self.assertEqual((recorder.count, recorder.errors), (0, {}))

    @unittest.skipUnless(hasattr(os, "SCHED_BATCH"), "SCHED_BATCH is Linux's")
    @_async
    async def test_the_run_yields_to_the_peers_and_its_thread_goes_back_as_it_came(self):
        await self.cluster.add(FakePeer("peer1"))
        route = await self.peers.route("peer1")
        during = []

        def run_then_policy():
            before = os.sched_getscheduler(0)
            recorder = loadgen.run(["peer1"], [Workload("bench0", 1)], [({"peer1": route}, None)], None, 3,
                                   on_start=lambda: during.append(os.sched_getscheduler(0)))
            return recorder.count, before, os.sched_getscheduler(0)
        count, before, after = await threads.deferToThread(run_then_policy)
        self.assertEqual((count, during, after), (3, [os.SCHED_BATCH], before))
