"""DHT nodes talking KRPC to each other over loopback UDP."""
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from twisted_exchange.grape.compact import decode_nodes, encode_peer
from twisted_exchange.grape.dht import SILENCE, DHTNode
from twisted_exchange.grape.errors import GrapeError
from twisted_exchange.grape.krpc import KRPCError
from twisted_exchange.grape.routing import Contact
from twisted_exchange.grape.store import immutable_key
from tests.support import free_port


def make_node(test, **options) -> DHTNode:
    node = DHTNode(**options)
    port = reactor.listenUDP(0, node.protocol, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return node


def address(node: DHTNode):
    return ("127.0.0.1", node.port)


class TwoNodeTests(TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.b = make_node(self)
        self.a = make_node(self, bootstrap=[address(self.b)])
        size = yield self.a.join()
        self.assertEqual(size, 1)

    def test_joining_puts_each_node_in_the_others_table(self):
        self.assertIsNotNone(self.a.routing.get(self.b.id))
        self.assertIsNotNone(self.b.routing.get(self.a.id))

    @defer.inlineCallbacks
    def test_announce_is_stored_remotely_under_the_senders_ip_and_raw_name(self):
        hits = yield self.a.announce(b"svc", 4242)
        self.assertEqual(hits, 1)
        self.assertEqual(self.b.peers.get(b"svc"), [("127.0.0.1", 4242)])
        self.assertEqual(self.a.peers.get(b"svc"), [("127.0.0.1", 4242)])

    @defer.inlineCallbacks
    def test_lookup_finds_the_other_nodes_announce(self):
        yield self.b.announce(b"svc", 4242)
        self.b.peers.add(b"svc", "10.0.0.7", 80)
        found = yield self.a.lookup(b"svc")
        self.assertEqual(sorted(found), ["10.0.0.7:80", "127.0.0.1:4242"])

    @defer.inlineCallbacks
    def test_concurrent_lookups_of_one_name_share_one_result(self):
        yield self.b.announce(b"svc", 4242)
        first, second = yield defer.gatherResults([self.a.lookup(b"svc"), self.a.lookup(b"svc")])
        self.assertEqual(first, ["127.0.0.1:4242"])
        self.assertEqual(second, first)

    @defer.inlineCallbacks
    def test_lookup_of_unknown_name_is_empty(self):
        found = yield self.a.lookup(b"nobody")
        self.assertEqual(found, [])

    @defer.inlineCallbacks
    def test_put_then_get_from_the_other_node(self):
        key = yield self.a.put(b"hello")
        self.assertEqual(key, immutable_key(b"hello"))
        found = yield self.b.get(key)
        self.assertEqual((found.node_id, found.token, found.value), (self.b.id, None, b"hello"))
        self.b.values = type(self.b.values)()
        self.a.values.put(b"hello")
        found = yield self.b.get(key)
        self.assertEqual((found.node_id, found.value), (self.a.id, b"hello"))
        self.assertEqual(len(found.token), 20)

    @defer.inlineCallbacks
    def test_get_of_unknown_key_is_none(self):
        found = yield self.a.get(bytes(20))
        self.assertIsNone(found)

    @defer.inlineCallbacks
    def test_announce_with_a_bad_token_is_refused(self):
        d = self.a._query(address(self.b), b"announce_peer",
                          {b"info_hash": b"svc", b"port": 80, b"token": bytes(20)})
        error = yield self.assertFailure(d, KRPCError)
        self.assertEqual((error.code, error.message), (203, "cannot `announce_peer` with bad token"))
        self.assertEqual(self.b.peers.get(b"svc"), [])

    @defer.inlineCallbacks
    def test_implied_port_stores_the_udp_source_port(self):
        reply = yield self.a._query(address(self.b), b"get_peers", {b"info_hash": b"svc"})
        yield self.a._query(address(self.b), b"announce_peer",
                            {b"info_hash": b"svc", b"port": 1, b"implied_port": 1, b"token": reply[b"token"]})
        self.assertEqual(self.b.peers.get(b"svc"), [("127.0.0.1", self.a.port)])

    @defer.inlineCallbacks
    def test_find_node_answers_compact_nodes(self):
        reply = yield self.a._query(address(self.b), b"find_node", {b"target": self.a.id})
        self.assertEqual(decode_nodes(reply[b"nodes"]), [Contact(self.a.id, "127.0.0.1", self.a.port)])

    @defer.inlineCallbacks
    def test_get_peers_answers_values_when_it_has_peers(self):
        self.b.peers.add(b"svc", "10.0.0.7", 80)
        reply = yield self.a._query(address(self.b), b"get_peers", {b"info_hash": b"svc"})
        self.assertEqual(reply[b"values"], [encode_peer("10.0.0.7", 80)])
        self.assertNotIn(b"nodes", reply)
        self.assertEqual(len(reply[b"token"]), 20)

    @defer.inlineCallbacks
    def test_unknown_method_and_missing_fields_get_krpc_errors(self):
        for method, args, code, message in [
                (b"frobnicate", {}, 204, "Method Unknown"),
                (b"get_peers", {}, 203, "`get_peers` missing required `a.info_hash` field"),
                (b"find_node", {b"target": 5}, 203, "`find_node` missing required `a.target` field")]:
            error = yield self.assertFailure(self.a._query(address(self.b), method, args), KRPCError)
            self.assertEqual((error.code, error.message), (code, message))

    @defer.inlineCallbacks
    def test_oversized_and_mutable_puts_are_refused(self):
        reply = yield self.a._query(address(self.b), b"get", {b"target": bytes(20)})
        token = reply[b"token"]
        for args, code in [({b"v": b"x" * 1001}, 205), ({b"v": b"x", b"k": bytes(32)}, 400)]:
            d = self.a._query(address(self.b), b"put", {**args, b"token": token})
            error = yield self.assertFailure(d, KRPCError)
            self.assertEqual(error.code, code)


class LoneNodeTests(TestCase):
    @defer.inlineCallbacks
    def test_lone_node_serves_its_own_announce_but_reports_no_nodes(self):
        node = make_node(self)
        error = yield self.assertFailure(node.announce(b"svc", 4242), GrapeError)
        self.assertEqual(error.code, "No nodes to query")
        found = yield node.lookup(b"svc")
        self.assertEqual(found, ["127.0.0.1:4242"])

    @defer.inlineCallbacks
    def test_unreachable_bootstrap_times_out_and_announce_still_answers(self):
        node = make_node(self, bootstrap=[("127.0.0.1", free_port())], query_timeout=0.2)
        error = yield self.assertFailure(node.announce(b"svc", 4242), GrapeError)
        self.assertEqual(error.code, "No nodes to query")

    @defer.inlineCallbacks
    def test_node_that_times_out_is_dropped_from_the_table(self):
        node = make_node(self, query_timeout=0.2)
        dead = Contact(b"d" * 20, "127.0.0.1", free_port())
        node.routing.add(dead)
        yield node.lookup(b"svc")
        self.assertIsNone(node.routing.get(dead.id))

    @defer.inlineCallbacks
    def test_node_that_answers_with_another_id_replaces_the_old_one(self):
        node, restarted = make_node(self), make_node(self)
        stale = Contact(b"s" * 20, *address(restarted))
        node.routing.add(stale)
        yield node.lookup(b"svc")
        self.assertIsNone(node.routing.get(stale.id))
        self.assertIsNotNone(node.routing.get(restarted.id))

    def test_a_silent_bootstrap_costs_one_timeout_per_silence_not_one_per_lookup(self):
        clock = Clock()
        silent = ("127.0.0.1", free_port())
        node = make_node(self, bootstrap=[silent], clock=clock, query_timeout=1.0)
        asked = self.record_queries(node)
        first = node.lookup(b"svc")
        self.assertNoResult(first)
        clock.advance(1.0)
        self.assertEqual(self.successResultOf(first), [])
        self.assertEqual(self.successResultOf(node.lookup(b"svc")), [])  # at once: not asked
        self.assertEqual(asked, [silent])
        clock.advance(SILENCE)
        self.assertNoResult(node.lookup(b"svc"))  # the silence is over: asked again
        self.assertEqual(asked, [silent, silent])
        clock.advance(1.0)

    @defer.inlineCallbacks
    def test_a_silent_node_that_speaks_again_is_asked_again_at_once(self):
        port = free_port()
        node = make_node(self, bootstrap=[("127.0.0.1", port)], query_timeout=0.2)
        asked = self.record_queries(node)
        yield node.lookup(b"svc")
        yield node.lookup(b"svc")
        self.assertEqual(len(asked), 1)
        back = DHTNode()
        listening = reactor.listenUDP(port, back.protocol, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        yield back.protocol.query(address(node), b"ping", {b"id": back.id})
        yield node.lookup(b"svc")
        self.assertEqual(len(asked), 2)
        self.assertIsNotNone(node.routing.get(back.id))

    def record_queries(self, node: DHTNode) -> list:
        asked = []
        query = node.protocol.query

        def recorded(address, method, args):
            asked.append(address)
            return query(address, method, args)
        node.protocol.query = recorded
        return asked

    @defer.inlineCallbacks
    def test_isolated_node_rejoins_through_its_bootstrap_on_refresh(self):
        b = make_node(self)
        a = make_node(self, bootstrap=[address(b)])
        self.assertEqual(len(a.routing), 0)
        yield a.refresh()
        self.assertIsNotNone(a.routing.get(b.id))
        self.assertIsNone(a.refresh())


class ExpiryTests(TestCase):
    @defer.inlineCallbacks
    def test_remote_announce_expires_after_peer_max_age(self):
        clock = Clock()
        b = make_node(self, clock=clock, peer_max_age=10.0)
        a = make_node(self, bootstrap=[address(b)])
        yield a.announce(b"svc", 4242)
        clock.advance(9.9)
        reply = yield a._query(address(b), b"get_peers", {b"info_hash": b"svc"})
        self.assertEqual(reply[b"values"], [encode_peer("127.0.0.1", 4242)])
        clock.advance(0.1)
        reply = yield a._query(address(b), b"get_peers", {b"info_hash": b"svc"})
        self.assertNotIn(b"values", reply)
