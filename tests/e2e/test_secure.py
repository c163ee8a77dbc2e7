"""End-to-end in Grenache secure mode (issue 10, as far as it is built): the
supervised cluster rendered with ``secure=True`` makes its certificates on
first start, exchangectl trades with client credentials, and credentials,
not payload fields, decide who may do what."""
from __future__ import annotations

import json
import socket

from twisted.internet import defer
from twisted.internet.threads import deferToThread

from twisted_exchange.grenache import GrenacheError, Link, RPCClient, RPCServer
from twisted_exchange.pki import CA, Identity
from tests.e2e.cluster import SYMBOL, statuses, wait_for_convergence
from tests.e2e.test_cluster import ClusterTestCase
from tests.support import LOOPBACK


class SecureClusterTests(ClusterTestCase):
    secure = True

    @defer.inlineCallbacks
    def test_exchangectl_trades_as_its_client_and_another_credential_cannot_cancel_it(self):
        done = yield self.exchangectl("submit", "buy", "2", "100.5", "--peer", "peer1",
                                      "--client", "alice", "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        order = json.loads(done.stdout)["order"]
        self.assertEqual(order["client"], "alice")
        done = yield self.exchangectl("cancel", order["id"], "--peer", "peer2", "--client", "mallory")
        self.assertEqual(done.returncode, 1)
        self.assertIn("ERR_NOT_OWNER", done.stderr)
        mallory = self.cluster.client(name="mallory")   # mallory's credential, alice's name
        with self.assertRaises(GrenacheError) as caught:
            yield mallory.request("exchange:peer2", {"action": "cancel", "client": "alice",
                                                     "request": "99", "order_id": order["id"]})
        self.assertEqual(caught.exception.code, "ERR_FORBIDDEN")
        done = yield self.exchangectl("cancel", order["id"], "--peer", "peer3", "--client", "alice")
        self.assertEqual(done.returncode, 0, done.stderr)
        yield wait_for_convergence(self.client, self.peers)
        done = yield self.exchangectl("check", "--wait", "20")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    @defer.inlineCallbacks
    def test_a_forged_raft_batch_from_a_client_credential_changes_nothing(self):
        before = yield statuses(self.client, self.peers)
        follower = next(p for p in self.peers if p != self.leader)
        forged = {"action": "raft.batch", "from": self.leader, "to": follower, "messages": [
            {"type": "raft.append", "from": self.leader, "to": follower, "term": 10**6,
             "prev_index": 0, "prev_term": 0, "commit": 1, "last_index": 1, "epoch": None,
             "entries": [{"index": 1, "term": 10**6, "command": {
                 "action": "submit", "client": "mallory", "request": "1", "symbol": SYMBOL,
                 "side": "buy", "type": "limit", "price": "1", "quantity": "1"}}]}]}
        mallory = self.cluster.client(name="mallory")
        with self.assertRaises(GrenacheError) as caught:
            yield mallory.request(f"exchange:{follower}", forged, retry=0)
        self.assertEqual(caught.exception.code, "ERR_FORBIDDEN")
        after = yield statuses(self.client, self.peers)
        self.assertEqual({p: s["term"] for p, s in after.items()}, {p: s["term"] for p, s in before.items()})
        book = yield self.call(follower, {"action": "book"})
        self.assertEqual(book["bids"], [])

    @defer.inlineCallbacks
    def test_plain_http_gets_a_clear_refusal_not_a_hang(self):
        port = self.cluster.peer_ports[0]
        reply = yield deferToThread(_plain_post, port)
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply)
        self.assertIn(b"ERR_TLS_REQUIRED", reply)
        plain = RPCClient(Link(self.cluster.grape_urls[0]), timeout=5.0)
        self.addCleanup(plain.close)
        with self.assertRaises(GrenacheError) as caught:
            yield plain.request("exchange:peer1", {"action": "status"}, retry=0)
        self.assertIn("ERR_TLS_REQUIRED", str(caught.exception))

    @defer.inlineCallbacks
    def test_a_node_grenache_client_trades_in_secure_mode_with_a_credential_from_exchangectl(self):
        added = yield self.exchangectl("client", "add", "nodejs", "--json")
        self.assertEqual(added.returncode, 0, added.stderr)
        done = yield self.node_trade("nodejs", "250.5", "1.25", added.stdout)
        self.assertEqual(done.returncode, 0, done.stderr)
        reply = json.loads(done.stdout)
        self.assertIsNone(reply["submit"]["err"])
        self.assertEqual(reply["submit"]["data"]["order"]["client"], "nodejs")
        self.assertIn(["250.5", "1.25"], reply["book"]["data"]["asks"])
        impostor = yield self.node_trade("alice", "251", "1", added.stdout)
        self.assertIn("ERR_FORBIDDEN", json.loads(impostor.stdout)["submit"]["err"])


class PoisonedDiscoveryTests(ClusterTestCase):
    """Fakes announced for every peer, each claiming to be that peer with a
    certificate from another CA, while clients submit and a peer restarts."""

    secure = True

    @defer.inlineCallbacks
    def start_fakes(self):
        impostor_ca = CA.create()
        answered = []

        def fake(key, payload, caller=None):
            answered.append(payload)
            return {"ok": True, "order": {"id": "fake"}, "fills": []}
        for peer in self.peers:
            server = RPCServer(fake, tls=impostor_ca.issue(Identity("peer", peer), [LOOPBACK]),
                               with_caller=True)
            yield server.start()
            self.addCleanup(server.stop)
            for url in self.cluster.grape_urls:
                link = Link(url)
                self.addCleanup(link.close)
                for name in (f"exchange:{peer}", "exchange"):
                    link.start_announcing(name, server.port, 1.0)
        return answered

    @defer.inlineCallbacks
    def test_fakes_cost_retries_never_a_fake_acknowledgement_and_peers_rejoin_past_them(self):
        answered = yield self.start_fakes()
        victim = next(p for p in self.peers if p != self.leader)
        survivors = [p for p in self.peers if p != victim]
        placed = []
        for n in range(6):
            if n == 3:  # a routine restart while the fakes are announced
                self.cluster.supervisor.stop(victim)
                self.cluster.supervisor.start(victim)
            done = yield self.exchangectl("submit", "buy", "1", str(100 + n), "--peer", survivors[n % 2],
                                          "--client", "alice", "--json")
            self.assertEqual(done.returncode, 0, done.stderr)
            placed.append(json.loads(done.stdout)["order"]["id"])
        self.assertNotIn("fake", placed)
        self.assertEqual(answered, [])  # no fake ever got a payload: TLS failed first
        found = yield wait_for_convergence(self.client, self.peers, timeout=60)
        self.assertEqual(len({s["applied"] for s in found.values()}), 1)
        book = yield self.call(victim, {"action": "book", "depth": 20})
        self.assertEqual(sorted(price for price, _ in book["bids"]), [str(100 + n) for n in range(6)])
        done = yield self.exchangectl("check", "--wait", "20")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)


def _plain_post(port: int) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=10) as s:
        s.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n["r","k",1]')
        return s.recv(65536)
