"""End-to-end attacks on the cluster as shipped (Grenache secure mode, issue
10): the cluster makes its certificates on first start, exchangectl trades
with client credentials, credentials, not payload fields, decide who may do
what, and discovery cannot be poisoned."""
from __future__ import annotations

import http.client
import json
import ssl
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.threads import deferToThread

from twisted_exchange.grenache import GrenacheError, Link, RPCClient, RPCServer
from twisted_exchange.pki import CA, Credential, Identity
from tests.e2e.cluster import SYMBOL, statuses, wait_for_convergence
from tests.e2e.test_cluster import ClusterTestCase
from tests.support import LOOPBACK, connect, eventually


class SecureClusterTests(ClusterTestCase):

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
    def test_a_forged_raft_append_changes_nothing_whatever_credential_carries_it(self):
        """From a client credential, from no credential (plain HTTP, or TLS
        without a certificate), and from a certificate naming the leader but
        issued by another CA."""
        before = yield statuses(self.client, self.peers)
        follower = next(p for p in self.peers if p != self.leader)
        forged = {"action": "raft.batch", "from": self.leader, "to": follower, "messages": [
            {"type": "raft.append", "from": self.leader, "to": follower, "term": 10**6,
             "prev_index": 0, "prev_term": 0, "commit": 1, "last_index": 1, "epoch": None,
             "entries": [{"index": 1, "term": 10**6, "command": {
                 "action": "submit", "client": "mallory", "request": "1", "symbol": SYMBOL,
                 "side": "buy", "type": "limit", "price": "1", "quantity": "1"}}]}]}
        body = json.dumps(["f1", f"exchange:{follower}", forged]).encode()
        port = self.cluster.peer_ports[self.peers.index(follower)]
        with self.assertRaises(GrenacheError) as caught:
            yield self.cluster.client(name="mallory").request(f"exchange:{follower}", forged, retry=0)
        self.assertEqual(caught.exception.code, "ERR_FORBIDDEN")
        plain = yield deferToThread(_post, port, body, None)
        self.assertTrue(plain.startswith(b"HTTP/1.1 400") and b"ERR_TLS_REQUIRED" in plain, plain)
        anonymous = yield deferToThread(_post, port, body, {"ca": self.cluster.tls_files()["ca"]})
        self.assertNotIn(b"HTTP/1.1 200", anonymous)
        real_ca = self.cluster.credential("peer", self.leader).ca
        foreign = CA.create().issue(Identity("peer", self.leader), [LOOPBACK])
        impostor = RPCClient(Link(self.cluster.grape_urls[0]), timeout=5.0,
                             tls=Credential(foreign.key, foreign.cert, real_ca))
        self.addCleanup(impostor.close)
        with self.assertRaises(GrenacheError):
            yield impostor.request(f"exchange:{follower}", forged, retry=0)
        after = yield statuses(self.client, self.peers)
        self.assertEqual({p: s["term"] for p, s in after.items()}, {p: s["term"] for p, s in before.items()})
        for peer in self.peers:
            book = yield self.call(peer, {"action": "book"})
            self.assertEqual(book["bids"], [], peer)
        self.assertNotIn("mallory", (yield self.exchangectl("orders", "--json")).stdout)

    @defer.inlineCallbacks
    def test_request_ids_cannot_be_taken_over_by_another_credential(self):
        future = {"action": "submit", "client": "alice", "request": "9000000000000000000-1",
                  "symbol": SYMBOL, "side": "buy", "type": "limit", "price": "3", "quantity": "1"}
        with self.assertRaises(GrenacheError) as caught:
            yield self.cluster.client(name="mallory").request("exchange:peer1", future, retry=0)
        self.assertEqual(caught.exception.code, "ERR_FORBIDDEN")
        mine = yield self.call("peer2", {**future, "price": "4"})   # as alice, with her credential
        self.assertEqual((mine["order"]["client"], mine["order"]["price"]), ("alice", "4"))
        yield wait_for_convergence(self.client, self.peers)
        for peer in self.peers:
            book = yield self.call(peer, {"action": "book"})
            self.assertEqual(book["bids"], [["4", "1"]], peer)

    @defer.inlineCallbacks
    def test_plain_http_gets_a_clear_refusal_not_a_hang(self):
        port = self.cluster.peer_ports[0]
        reply = yield deferToThread(_post, port, b'["r","k",1]', None)
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply)
        self.assertIn(b"ERR_TLS_REQUIRED", reply)
        plain = RPCClient(Link(self.cluster.grape_urls[0]), timeout=5.0)
        self.addCleanup(plain.close)
        with self.assertRaises(GrenacheError) as caught:
            yield plain.request("exchange:peer1", {"action": "status"}, retry=0)
        self.assertIn("ERR_TLS_REQUIRED", str(caught.exception))


class PoisonedDiscoveryTests(ClusterTestCase):
    """Fakes announced for every peer, each claiming to be that peer with a
    certificate from another CA, while clients submit and a peer restarts."""

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


    @defer.inlineCallbacks
    def test_a_node_client_checks_the_peers_identity_and_trades_past_the_fakes(self):
        answered = yield self.start_fakes()
        reply, _ = yield self.node_sells("300", "1")
        self.assertNotEqual(reply["submit"]["data"]["order"]["id"], "fake")
        self.assertEqual(answered, [])
        book = yield self.call("peer1", {"action": "book"})
        self.assertEqual(book["asks"], [["300", "1"]])


class AnnouncementFloodTests(ClusterTestCase):
    """A thousand fake announcements under every name on both grapes, which
    answer a lookup with 100 of them at random: the peers keep each other."""

    def direct(self, peer: str, payload: dict):
        """``payload`` to ``peer`` at its own address (a lookup would mostly find fakes)."""
        address = f"127.0.0.1:{self.cluster.peer_ports[self.peers.index(peer)]}"
        client = self.cluster.client(name=payload.get("client", "tester"))
        return client.request_to(address, f"exchange:{peer}", payload, timeout=5.0)

    @defer.inlineCallbacks
    def direct_statuses(self):
        results = yield defer.DeferredList([self.direct(p, {"action": "status"}) for p in self.peers],
                                           consumeErrors=True)
        return {p: status for p, (ok, status) in zip(self.peers, results) if ok}

    @defer.inlineCallbacks
    def test_a_flood_of_fakes_does_not_part_the_peers_even_through_a_restart(self):
        names = ["exchange", *(f"exchange:{p}" for p in self.peers)]
        yield deferToThread(_flood, self.cluster.grape_urls, names, 1000)
        victim = next(p for p in self.peers if p != self.leader)
        self.cluster.supervisor.kill(victim)  # supervisord restarts it at its address
        for n in range(5):
            reply = yield self.direct(self.leader, {
                "action": "submit", "client": "alice", "request": f"flood-{n}", "symbol": SYMBOL,
                "side": "buy", "type": "limit", "price": str(100 + n), "quantity": "1"})
            self.assertTrue(reply["ok"], reply)

        def together(found):
            same = {(s["applied"], s["digest"], s["leader"]) for s in found.values()}
            return len(found) == len(self.peers) and len(same) == 1
        yield eventually(lambda: self.direct_statuses().addCallback(together), 60,
                         what="every peer at the same index, under the same leader")
        found = yield self.direct_statuses()
        self.assertEqual(found[victim]["leader"], self.leader)
        reply = yield self.direct(victim, {  # forwarded to the leader it knows from addresses.json
            "action": "submit", "client": "alice", "request": "flood-5", "symbol": SYMBOL,
            "side": "buy", "type": "limit", "price": "105", "quantity": "1"})
        self.assertTrue(reply["ok"], reply)
        book = yield self.direct(victim, {"action": "book", "depth": 20})
        self.assertEqual(sorted(price for price, _ in book["bids"]), [str(100 + n) for n in range(6)])
        # exchangectl calls the peers at the addresses cluster.conf gives them
        # (a lookup would mostly find fakes): a submit to any peer, then each book.
        done = yield self.exchangectl("submit", "buy", "1", "106", "--client", "alice", "--json")
        self.assertEqual(done.returncode, 0, done.stderr or done.stdout)
        self.assertEqual(json.loads(done.stdout)["order"]["status"], "open")
        for peer in self.peers:
            shown = yield eventually(lambda: self.exchangectl("book", peer, "--json").addCallback(
                lambda done: done if done.returncode == 0 and len(json.loads(done.stdout)["bids"]) == 7 else None),
                30, what=f"the order in {peer}'s book, shown by exchangectl")
            self.assertEqual(json.loads(shown.stdout)["bids"][0], ["106", "1"])


def _flood(grape_urls: list[str], names: list[str], count: int) -> None:
    """Announce ``count`` ports nobody serves under each of ``names`` on every grape."""
    for url in grape_urls:
        parts = urlsplit(url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        for name in names:
            for port in range(20000, 20000 + count):
                connection.request("POST", "/announce", json.dumps({"data": [name, port], "rid": "flood"}))
                connection.getresponse().read()
        connection.close()


def _post(port: int, body: bytes, tls: dict | None) -> bytes:
    """What the peer answers to one POST of ``body`` (b"" if it closes: a
    refused handshake)."""
    try:
        with connect(port, tls) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return s.recv(65536)
    except (ssl.SSLError, ConnectionError):
        return b""
