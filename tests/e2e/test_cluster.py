"""End-to-end: real supervisord, grapes and peers on loopback (issue 6, tests 1-6)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from twisted_exchange.grenache import GrenacheError
from tests.e2e.cluster import (
    SYMBOL, Cluster, Trader, statuses, wait_for_convergence, wait_for_leader,
)
from tests.support import NODE_MODULES, eventually, node_or_skip, raw_http_status


class ClusterTestCase(TestCase):
    timeout = 180
    peer_args = ""
    peer_count = 3

    def grape_command(self) -> str | None:
        """The grape program of the topology (None: ours)."""
        return None

    leader_timeout = 30.0
    secure = True  # as shipped; False only where a test is about plain HTTP

    @defer.inlineCallbacks
    def setUp(self):
        self.cluster = Cluster(self, peers=self.peer_count, grape_command=self.grape_command(),
                               peer_args=self.peer_args, secure=self.secure)
        self.prepare()
        self.cluster.start()
        self.peers = self.cluster.peer_ids
        self.client = self.cluster.client()
        try:
            self.leader = yield wait_for_leader(self.client, self.peers, self.leader_timeout)
        except AssertionError as e:  # seen once in CI: the end of every peer's and grape's log with it
            names = [*self.peers, *(f"grape{n + 1}" for n in range(len(self.cluster.grape_urls)))]
            tails = "\n".join(f"--- {name}.log\n" + "\n".join(self.cluster.log(name).splitlines()[-15:])
                               for name in names)
            raise AssertionError(f"{e}\n{tails}") from None

    def prepare(self) -> None:
        """Runs before supervisord starts: the config is written, nothing runs yet."""

    def call(self, peer: str, payload: dict, timeout: float = 5.0):
        """``payload`` to ``peer``, sent as the client it names (if any: in
        secure mode only that client's credential may), else as the tester."""
        name = payload.get("client", "tester") if isinstance(payload, dict) else "tester"
        client = self.cluster.client(name=name) if isinstance(name, str) and name else self.client
        return client.request(f"exchange:{peer}", payload, timeout=timeout)

    def node_trade(self, client: str, price: str, quantity: str, credential: str):
        """Run the Node example client: one sell on peer2 via grape 2, then the book
        (``credential``: what ``exchangectl client add --json`` printed)."""
        script = str(NODE_MODULES.parent / "exchange_client.js")
        return deferToThread(
            subprocess.run, [node_or_skip(), script, self.cluster.grape_urls[1], "peer2", client, "sell",
                             price, quantity, credential],
            capture_output=True, text=True, timeout=60)

    @defer.inlineCallbacks
    def node_sells(self, price: str, quantity: str):
        """The Node example client's reply after it sold as client ``nodejs``
        (credential from ``exchangectl client add``): its own, not a fake's."""
        node_or_skip()
        added = yield self.exchangectl("client", "add", "nodejs", "--json")
        self.assertEqual(added.returncode, 0, added.stderr)
        done = yield self.node_trade("nodejs", price, quantity, added.stdout)
        self.assertEqual(done.returncode, 0, done.stderr)
        reply = json.loads(done.stdout)
        self.assertIsNone(reply["submit"]["err"])
        self.assertEqual(reply["submit"]["data"]["order"]["client"], "nodejs")
        self.assertIn([price, quantity], reply["book"]["data"]["asks"])
        return reply, added.stdout

    def exchangectl(self, *args: str):
        """Run exchangectl in a thread (it runs its own reactor in a child process)."""
        argv = [sys.executable, "-m", "twisted_exchange.ctl", "-c", str(self.cluster.config), *args]
        return deferToThread(subprocess.run, argv, capture_output=True, text=True, timeout=60)

    @defer.inlineCallbacks
    def assert_consistent(self, trader: Trader):
        """Every peer converged, holds every acknowledged order and fill, and
        no order is filled beyond its quantity."""
        found = yield wait_for_convergence(self.client, self.peers, timeout=60)
        self.assertEqual(len({s["digest"] for s in found.values()}), 1)
        trades_by_peer = {}
        for peer in self.peers:
            reply = yield self.call(peer, {"action": "trades", "symbol": SYMBOL, "limit": 1000})
            trades_by_peer[peer] = reply["trades"]
        first = trades_by_peer[self.peers[0]]
        for peer in self.peers[1:]:
            self.assertEqual(trades_by_peer[peer], first, f"{peer}'s trades differ")
        trade_ids = {t["trade_id"] for t in first}
        filled = defaultdict(Decimal)
        for t in first:
            filled[t["maker_order"]] += Decimal(t["quantity"])
            filled[t["taker_order"]] += Decimal(t["quantity"])
        for result in trader.acked.values():
            order_id = result["order"]["id"]
            for fill in result["fills"]:
                self.assertIn(fill["trade_id"], trade_ids)
            for peer in self.peers:
                reply = yield self.call(peer, {"action": "order", "order_id": order_id})
                order = reply["order"]
                self.assertEqual(order["client"], result["order"]["client"])
                self.assertLessEqual(Decimal(order["filled"]), Decimal(order["quantity"]))
                self.assertEqual(Decimal(order["filled"]), filled[order_id])


class BasicClusterTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_order_submitted_with_exchangectl_on_peer1_rests_in_every_book(self):
        done = yield self.exchangectl("submit", "buy", "2", "100.5", "--peer", "peer1",
                                      "--client", "alice", "--json")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout)["order"]["status"], "open")
        for peer in ("peer2", "peer3"):
            book = yield eventually(lambda: self.call(peer, {"action": "book"}).addCallback(
                lambda b: b if b["bids"] else None), what=f"order in {peer}'s book")
            self.assertEqual(book["bids"], [["100.5", "2"]])
        shown = yield self.exchangectl("book", "peer2", "--json")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertEqual(json.loads(shown.stdout)["bids"], [["100.5", "2"]])

    @defer.inlineCallbacks
    def test_300_concurrent_crossing_orders_on_all_peers_leave_identical_books(self):
        trader = Trader(self.cluster, self.peers)
        yield trader.run(clients=30, orders_each=10)
        self.assertEqual(len(trader.acked), 300)
        self.assertEqual(trader.refused, [])
        self.assertTrue(any(r["fills"] for r in trader.acked.values()), "no order crossed")
        yield self.assert_consistent(trader)

    @defer.inlineCallbacks
    def test_bad_rpc_input_gets_clear_errors_and_changes_nothing(self):
        yield self.call("peer1", {"action": "submit", "client": "a", "request": "r1",
                                  "symbol": SYMBOL, "side": "buy", "type": "limit",
                                  "price": "100", "quantity": "1"})
        yield wait_for_convergence(self.client, self.peers)
        bad_payloads = [
            "garbage", 42, None, [], {"action": 7}, {"action": "explode"},
            {"action": "submit"}, {"action": "submit", "client": "a", "request": "r2"},
            {"action": "submit", "client": "a", "request": "r3", "symbol": SYMBOL, "side": "buy",
             "type": "limit", "price": 100, "quantity": "1"},
            {"action": "submit", "client": "a", "request": "r4", "symbol": SYMBOL, "side": "buy",
             "type": "limit", "price": "1e400", "quantity": "1"},
            {"action": "cancel", "client": "b", "request": "r5", "order_id": "1"},
            {"action": "book", "symbol": ["x"]}, {"action": "book", "depth": -1},
            {"action": "raft.batch", "from": "peer2", "to": "peer1", "messages": [1, "x", {}]},
            {"action": "raft.batch", "from": "mallory", "to": "peer1",
             "messages": [{"type": "raft.append", "from": "mallory", "to": "peer1", "term": 99}]},
        ]
        for payload in bad_payloads:
            try:
                result = yield self.call("peer1", payload)
            except GrenacheError as e:
                self.assertRegex(str(e), r"^ERR_[A-Z_]+", payload)
                self.assertNotIn("ERR_INTERNAL", str(e), payload)
            else:
                self.assertEqual(payload["action"], "raft.batch", f"{payload!r} got {result!r}")
        port = self.cluster.peer_ports[0]
        for raw in [b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nnot json!",
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n[1,2",
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n{}",
                    b"\x00\xff garbage \r\n\r\n"]:
            status = yield deferToThread(raw_http_status, port, raw, self.cluster.tls_files())
            self.assertIn(status, (b"400", b"413", b""), raw)
        yield wait_for_convergence(self.client, self.peers)
        for peer in self.peers:
            book = yield self.call(peer, {"action": "book"})
            self.assertEqual((book["bids"], book["asks"]), ([["100", "1"]], []), peer)
            orders = yield self.call(peer, {"action": "orders"})
            self.assertEqual([o["id"] for o in orders["orders"]], ["1"], peer)


class OnePeerClusterTests(ClusterTestCase):
    """``exchangectl init DIR 1``: a lone peer is its own majority (it once
    waited for an acknowledgement no other voter could send, and every
    order timed out)."""

    peer_count = 1

    @defer.inlineCallbacks
    def test_a_lone_peer_commits_and_matches_orders(self):
        bought = yield self.exchangectl("submit", "buy", "2", "100", "--client", "alice", "--json")
        self.assertEqual(bought.returncode, 0, bought.stderr)
        sold = yield self.exchangectl("submit", "sell", "1", "100", "--client", "bob", "--json")
        self.assertEqual(sold.returncode, 0, sold.stderr)
        self.assertEqual([f["quantity"] for f in json.loads(sold.stdout)["fills"]], ["1"])
        book = yield self.call("peer1", {"action": "book"})
        self.assertEqual((book["bids"], book["asks"]), ([["100", "1"]], []))


class LeaderCrashTests(ClusterTestCase):
    @defer.inlineCallbacks
    def test_leader_killed_under_load_loses_nothing_and_rejoins(self):
        trader = Trader(self.cluster, self.peers, seed=11)
        load = trader.run(clients=30, orders_each=20)
        yield eventually(lambda: len(trader.acked) >= 60, what="load under way")
        victim = self.leader
        before = yield statuses(self.client, [victim])
        pid = self.cluster.supervisor.kill(victim)
        self.assertGreater(pid, 0)
        yield load
        self.assertEqual(len(trader.acked), 600)
        self.assertEqual(trader.refused, [])
        # A new election happens (the restarted victim may win it, in a later term).
        survivors = [p for p in self.peers if p != victim]
        yield eventually(lambda: statuses(self.client, survivors).addCallback(
            lambda found: len(found) == 2 and all(s["term"] > before[victim]["term"]
                                                  for s in found.values())),
            what="a new term after the leader's death")
        yield eventually(lambda: self.cluster.supervisor.process(victim)["pid"] not in (0, pid),
                         what=f"supervisord restarting {victim}")
        yield self.assert_consistent(trader)


class SnapshotCatchUpTests(ClusterTestCase):
    peer_args = "--snapshot-every 40"

    @defer.inlineCallbacks
    def test_a_peer_behind_the_compacted_log_catches_up_by_snapshot_and_a_wiped_one_is_refused(self):
        trader = Trader(self.cluster, self.peers, seed=5)
        yield trader.run(clients=10, orders_each=12)
        victim = next(p for p in self.peers if p != self.leader)
        before = yield wait_for_convergence(self.client, self.peers)
        self.cluster.supervisor.stop(victim)
        more = Trader(self.cluster, [p for p in self.peers if p != victim], seed=6, name="later")
        yield more.run(clients=5, orders_each=20)  # the leader compacts past what the victim holds
        yield eventually(lambda: statuses(self.client, [self.leader]).addCallback(  # in the background
            lambda s: s[self.leader]["snapshot_index"] > before[victim]["applied"]), what="the leader compacting")
        self.cluster.supervisor.start(victim)
        found = yield wait_for_convergence(self.client, self.peers, timeout=60)
        self.assertGreater(found[victim]["snapshot_index"], before[victim]["applied"])
        self.assertGreater(found[victim]["applied"], 200)
        trader.acked.update(more.acked)
        yield self.assert_consistent(trader)
        self.cluster.supervisor.stop(victim)
        shutil.rmtree(self.cluster.data_dir(victim))
        self.cluster.supervisor.start(victim, wait=False)  # an empty directory under a member's id
        yield eventually(lambda: self.cluster.supervisor.process(victim)["statename"] == "FATAL",
                         timeout=60, what=f"{victim} refused")
        self.assertIn(f"exchangectl member replace {victim}", self.cluster.log(victim))


class SnapshotCrashTests(ClusterTestCase):
    """Snapshots are written by forked children every 40 entries here: peers
    killed -9 at any moment of that (the child dies with its peer) lose
    nothing and come back."""
    peer_args = "--snapshot-every 40"

    @defer.inlineCallbacks
    def test_peers_killed_while_compacting_under_load_lose_nothing(self):
        trader = Trader(self.cluster, self.peers, seed=13)
        load = trader.run(clients=20, orders_each=25)
        for round, victim in enumerate([self.leader] + [p for p in self.peers if p != self.leader]):
            yield eventually(lambda: len(trader.acked) >= 100 * (round + 1), what=f"load under way ({round})")
            pid = self.cluster.supervisor.kill(victim)
            self.assertGreater(pid, 0)
            yield eventually(lambda: self.cluster.supervisor.process(victim)["pid"] not in (0, pid),
                             what=f"supervisord restarting {victim}")
        yield load
        self.assertEqual(len(trader.acked), 500)
        self.assertEqual(trader.refused, [])
        found = yield wait_for_convergence(self.client, self.peers, timeout=60)
        self.assertTrue(all(status["snapshot_index"] > 0 for status in found.values()), found)
        yield self.assert_consistent(trader)


class NodeGrapeClusterTests(ClusterTestCase):
    """The real grenache-grape stands in for ours; a Node grenache client in
    secure mode trades with a credential from ``exchangectl client add``, and
    that credential cannot act as another client."""

    def grape_command(self) -> str:
        node = node_or_skip()
        return f"{node} {NODE_MODULES / 'grenache-grape' / 'bin' / 'grape.js'}"

    @defer.inlineCallbacks
    def test_cluster_on_node_grapes_replicates_and_serves_a_secure_node_client(self):
        trader = Trader(self.cluster, self.peers, seed=3)
        yield trader.run(clients=10, orders_each=5)
        self.assertEqual(len(trader.acked), 50)
        yield self.assert_consistent(trader)
        _, credential = yield self.node_sells("250.5", "1.25")
        impostor = yield self.node_trade("alice", "251", "1", credential)
        self.assertIn("ERR_FORBIDDEN", json.loads(impostor.stdout)["submit"]["err"])
