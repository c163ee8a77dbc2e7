"""Three PeerServices and a grape in one reactor, over real loopback sockets."""
from __future__ import annotations

import shutil
import tempfile

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from twisted_exchange.grape.service import GrapeConfig, GrapeService
from twisted_exchange.grenache import GrenacheError, Link, RPCClient
from twisted_exchange.peer.service import PeerService
from tests.support import eventually, free_ports

PEERS = ["peer1", "peer2", "peer3"]


def order(client: str, request: str, side: str, price: str, quantity: str) -> dict:
    return {"action": "submit", "client": client, "request": request, "symbol": "BTCUSD",
            "side": side, "type": "limit", "price": price, "quantity": quantity}


class PeerClusterTests(TestCase):
    timeout = 60
    fsync = "never"

    @defer.inlineCallbacks
    def setUp(self):
        dht, api = free_ports(2)
        self.grape = GrapeService(GrapeConfig(dht_port=dht, api_port=api))
        self.grape.startService()
        self.addCleanup(self.grape.stopService)
        self.grape_url = f"http://127.0.0.1:{api}"
        self.peers = {}
        for peer_id in PEERS:
            yield self.start_peer(peer_id, self.data_dir(peer_id))
        self.link = Link(self.grape_url)
        self.client = RPCClient(self.link)
        self.addCleanup(self.link.close)
        self.addCleanup(self.client.close)
        yield eventually(self.one_leader_known_to_all)

    def data_dir(self, peer_id: str) -> str:
        path = tempfile.mkdtemp(prefix=f"tx-{peer_id}-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    @defer.inlineCallbacks
    def start_peer(self, peer_id: str, data_dir: str):
        peer = PeerService(peer_id, PEERS, [self.grape_url], data_dir, fsync=self.fsync,
                           seed=PEERS.index(peer_id))
        self.peers[peer_id] = peer
        yield peer.startService()
        self.addCleanup(lambda: peer.stopService() if peer.running else None)

    def one_leader_known_to_all(self):
        leaders = {p.replica.node.leader for p in self.peers.values() if p.running}
        return len(leaders) == 1 and None not in leaders

    def call(self, peer_id: str, payload: dict):
        return self.client.request(f"exchange:{peer_id}", payload)

    @defer.inlineCallbacks
    def test_order_submitted_on_one_peer_rests_in_every_peers_book(self):
        result = yield self.call("peer1", order("alice", "r1", "buy", "100.5", "2"))
        self.assertEqual(result["order"]["status"], "open")
        for peer_id in PEERS:
            book = yield eventually(lambda: self.call(peer_id, {"action": "book"}).addCallback(
                lambda b: b if b["bids"] else None))
            self.assertEqual(book["bids"], [["100.5", "2"]])
            self.assertEqual(book["peer"], peer_id)

    @defer.inlineCallbacks
    def test_crossing_orders_on_different_peers_fill_once(self):
        yield self.call("peer1", order("alice", "a1", "sell", "100", "1"))
        results = yield defer.gatherResults([
            self.call("peer2", order("bob", "b1", "buy", "100", "1")),
            self.call("peer3", order("carol", "c1", "buy", "100", "1")),
        ])
        filled = [r for r in results if r["fills"]]
        self.assertEqual(len(filled), 1)
        self.assertEqual(sum(len(r["fills"]) for r in results), 1)
        yield eventually(lambda: len({p.applied for p in self.peers.values()}) == 1)
        hashes = {p.replica.state_machine.state_hash() for p in self.peers.values()}
        self.assertEqual(len(hashes), 1)

    @defer.inlineCallbacks
    def test_retry_with_same_request_id_returns_the_original_result(self):
        first = yield self.call("peer2", order("dave", "d1", "buy", "99", "1"))
        again = yield self.call("peer3", order("dave", "d1", "buy", "99", "1"))
        self.assertEqual(first, again)
        book = yield self.call("peer1", {"action": "book"})
        self.assertEqual(book["bids"], [["99", "1"]])

    @defer.inlineCallbacks
    def test_refused_order_is_an_error_string_and_changes_nothing(self):
        with self.assertRaises(GrenacheError) as caught:
            yield self.call("peer1", order("erin", "e1", "buy", "abc", "1"))
        self.assertEqual(caught.exception.code, "ERR_INVALID_ORDER")
        status = yield self.call("peer1", {"action": "status"})
        self.assertEqual(status["id"], "peer1")
        self.assertIn(status["role"], ("leader", "follower"))

    @defer.inlineCallbacks
    def test_stopped_leader_is_replaced_and_nothing_acknowledged_is_lost(self):
        ack = yield self.call("peer1", order("frank", "f1", "sell", "105", "3"))
        leader = next(p for p in self.peers.values() if p.replica.node.role == "leader")
        yield leader.stopService()
        yield eventually(self.one_leader_known_to_all)
        survivor = next(p for p in PEERS if p != leader.node_id)
        second = yield self.call(survivor, order("gina", "g1", "buy", "105", "1"))
        self.assertEqual(second["fills"][0]["maker_order"], ack["order"]["id"])


class PeerClusterWithFsyncTests(PeerClusterTests):
    """The same behaviour with fsync per batch: writes run in a thread, in order."""

    fsync = "batch"
