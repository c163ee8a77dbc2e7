"""Three PeerServices and a grape in one reactor, over real loopback sockets."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time

import orjson
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from twisted_exchange.grenache import GrenacheError, Link, RPCClient
from twisted_exchange.peer import compactor, membership, service
from twisted_exchange.peer.directory import ProvenFile
from twisted_exchange.peer.protocol import MAX_CLIENT_BODY
from twisted_exchange.peer.service import PeerService
from twisted_exchange.pki import CA, Identity
from twisted_exchange.wal.file_storage import WrittenData
from tests.support import LOOPBACK, eventually, free_ports, start_grape

PEERS = ["peer1", "peer2", "peer3"]


def order(client: str, request: str, side: str, price: str, quantity: str) -> dict:
    return {"action": "submit", "client": client, "request": request, "symbol": "BTCUSD",
            "side": side, "type": "limit", "price": price, "quantity": quantity}


def snapshots(peer: PeerService, outcome: str) -> float:
    return peer.metrics.registry.get_sample_value("twisted_exchange_snapshots_total", {"outcome": outcome})


class PeerClusterTests(TestCase):
    timeout = 60
    fsync = "never"

    @defer.inlineCallbacks
    def setUp(self):
        self.grape_url = start_grape(self)
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
    def start_peer(self, peer_id: str, data_dir: str, **options):
        peer = PeerService(peer_id, PEERS, [self.grape_url], data_dir, fsync=self.fsync,
                           seed=PEERS.index(peer_id), **options)
        self.peers[peer_id] = peer
        yield peer.startService()
        self.addCleanup(lambda: peer.stopService() if peer.running else None)

    def one_leader_known_to_all(self):
        leaders = {p.replica.node.leader for p in self.peers.values() if p.running}
        return len(leaders) == 1 and None not in leaders

    def call(self, peer_id: str, payload: dict):
        return self.client.request(f"exchange:{peer_id}", payload)

    @defer.inlineCallbacks
    def restart_compacting(self, every: int = 5):
        """Every peer restarted on its data, taking a snapshot every ``every`` entries."""
        for peer_id in PEERS:
            peer = self.peers[peer_id]
            yield peer.stopService()
            yield self.start_peer(peer_id, peer._data_dir, snapshot_every=every)
        yield eventually(self.one_leader_known_to_all)

    @defer.inlineCallbacks
    def trade(self, count: int, prefix: str = "r"):
        for n in range(count):
            yield self.call(PEERS[n % 3], order("alice", f"{prefix}{n:03d}", "buy", str(100 + n), "1"))

    def logged(self) -> list[str]:
        """The text of every event logged from now on."""
        events: list[str] = []

        def observe(event):
            events.append(formatEvent(event))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return events

    @defer.inlineCallbacks
    def test_every_peer_proves_every_other_peers_address_and_keeps_it_in_its_data_directory(self):
        def where(peer_id: str) -> dict:
            return {other: f"127.0.0.1:{self.peers[other].port}" for other in PEERS if other != peer_id}
        yield eventually(lambda: all(ProvenFile(p._data_dir).load() == where(i) for i, p in self.peers.items()))
        self.assertEqual([p._directory.unproven() for p in self.peers.values()], [[], [], []])
        follower = next(p for p in self.peers.values() if p.replica.node.role != "leader")
        follower._directory._proven.clear()  # as if it never had to call anyone: a follower need not
        yield eventually(lambda: not follower._directory.unproven())  # its refreshes ask them

    @defer.inlineCallbacks
    def test_every_peer_compacts_to_snapshots_written_in_the_background(self):
        yield self.restart_compacting()
        logged = self.logged()
        yield self.trade(30)
        yield eventually(lambda: all(p.replica.node.snap_index >= 5 for p in self.peers.values()))
        for peer_id, peer in self.peers.items():
            # where each peer stood, for a failure seen once (a snapshot installed instead?)
            where = f"{peer_id}: {peer.replica.status()}\n" + "\n".join(logged)
            self.assertIn("snapshot.json", os.listdir(peer._data_dir), where)
            self.assertGreater(snapshots(peer, "compacted") or 0, 0, where)
            self.assertTrue(any(line.startswith(f"{peer_id} compacted its log to entry ") for line in logged), where)
        yield eventually(lambda: len({p.replica.state_machine.state_hash() for p in self.peers.values()}) == 1)

    @defer.inlineCallbacks
    def test_a_peer_behind_the_compacted_log_installs_the_leaders_snapshot_and_says_so(self):
        yield self.restart_compacting()
        leader = self.peers["peer1"].replica.node.leader
        lagging = next(p for p in PEERS if p != leader)
        data_dir = self.peers[lagging]._data_dir
        yield self.peers[lagging].stopService()
        for n in range(20):
            yield self.call(leader, order("alice", f"l{n:03d}", "buy", str(100 + n), "1"))
        yield eventually(lambda: self.peers[leader].replica.node.snap_index >= 10)
        logged = self.logged()
        yield self.start_peer(lagging, data_dir, snapshot_every=5)
        try:
            yield eventually(lambda: self.peers[lagging].applied == self.peers[leader].applied)
        except AssertionError as timeout:  # say where each peer stood, for a failure seen once in CI
            statuses = {p: self.peers[p].replica.status() for p in PEERS}
            self.fail(f"{lagging} never caught up with {leader}: {timeout}\n{statuses}\n" + "\n".join(logged))
        self.assertTrue(any(line.startswith(f"{lagging} installed a snapshot from {leader} of entries up to ")
                            for line in logged), logged)
        # it holds the installed snapshot as a place in its file, not as a parsed copy
        self.assertIsInstance(self.peers[lagging].replica.node.snapshot["data"], WrittenData)

    @defer.inlineCallbacks
    def test_a_restarted_peer_holds_its_snapshot_in_the_file_not_in_memory(self):
        yield self.restart_compacting()
        yield self.trade(30)
        yield eventually(lambda: all(p.replica.node.snap_index >= 5 for p in self.peers.values()))
        yield self.restart_compacting(every=1000)
        for peer in self.peers.values():
            snapshot = peer.replica.node.snapshot
            self.assertIsInstance(snapshot["data"], WrittenData)
            self.assertEqual(orjson.loads(orjson.dumps(snapshot["data"].fragment()))["applied"], snapshot["index"])

    @defer.inlineCallbacks
    def test_a_peer_that_cannot_fork_serves_on_and_snapshots_later(self):
        yield self.restart_compacting()
        real_fork, failures = os.fork, []

        def fork():
            if len(failures) < 2:
                failures.append(1)
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            return real_fork()
        self.patch(compactor.os, "fork", fork)
        self.patch(service, "SNAPSHOT_RETRY_SECONDS", 0.2)
        yield self.trade(30)
        self.assertTrue(all(p.running for p in self.peers.values()))
        yield eventually(lambda: all(p.replica.node.snap_index >= 5 for p in self.peers.values()))
        self.assertEqual(len(failures), 2)
        self.assertEqual(sum(snapshots(peer, "failed") for peer in self.peers.values()), 2)

    @defer.inlineCallbacks
    def test_a_snapshot_child_that_runs_past_the_patience_is_hurried_and_finishes(self):
        yield self.restart_compacting()
        real_write, hurried = compactor.write_snapshot, []

        def slow_write(*args):  # in the child: a writer starved for a while
            time.sleep(0.3)
            real_write(*args)
        real_hurry = compactor.BackgroundSnapshot.hurry

        def hurry(writer):
            hurried.append(writer)
            real_hurry(writer)
        self.patch(compactor, "write_snapshot", slow_write)
        self.patch(compactor.BackgroundSnapshot, "hurry", hurry)
        self.patch(service, "SNAPSHOT_PATIENCE_SECONDS", 0.1)
        yield self.trade(10)
        yield eventually(lambda: all(p.replica.node.snap_index >= 5 for p in self.peers.values()))
        self.assertTrue(hurried)
        self.assertTrue(all(snapshots(peer, "compacted") > 0 for peer in self.peers.values()))

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
        # peer1 answers from its own book, which may apply the order a little later
        book = yield eventually(lambda: self.call("peer1", {"action": "book"}).addCallback(
            lambda book: book if book["bids"] else None))
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

    @defer.inlineCallbacks
    def test_a_wiped_peer_is_refused_even_by_a_leader_that_never_replicated_to_it(self):
        yield self.call("peer1", order("hana", "h1", "buy", "98", "1"))
        yield eventually(lambda: len({p.applied for p in self.peers.values()}) == 1)
        leader = next(p for p in self.peers.values() if p.replica.node.role == "leader")
        victim = next(p for p in PEERS if p != leader.node_id)
        yield self.peers[victim].stopService()
        # A new term, whose leader has stored nothing on the victim (it is down).
        yield leader.stopService()
        yield self.start_peer(leader.node_id, leader._data_dir)
        yield eventually(lambda: self.peers[leader.node_id].replica.node.term > leader.replica.node.term
                         and self.one_leader_known_to_all())
        refusals = []
        wiped = self.data_dir(victim)
        yield self.start_peer(victim, wiped, fail_stop=refusals.append)
        yield eventually(lambda: refusals, what=f"{victim} refused: {self.peers[victim].health()}")
        self.assertIn(f"{victim} has a new, empty data directory but", refusals[0])
        self.assertIn("has heard from it before", refusals[0])
        self.assertFalse(membership.recorded(wiped, victim))
        self.assertEqual(self.peers[victim].replica.node.term, 0)


class PeerClusterWithFsyncTests(PeerClusterTests):
    """The same behaviour with fsync per batch: writes run in a thread, in order."""

    fsync = "batch"


class SecurePeerClusterTests(PeerClusterTests):
    """The same behaviour in Grenache secure mode (mutual TLS, one cluster CA),
    and what it refuses: plain HTTP, forged Raft batches, impersonation."""

    @defer.inlineCallbacks
    def setUp(self):
        self.ca = CA.create()
        self.clients = {}
        yield super().setUp()

    def start_peer(self, peer_id: str, data_dir: str, **options):
        peer = PeerService(peer_id, PEERS, [self.grape_url], data_dir, fsync=self.fsync,
                           seed=PEERS.index(peer_id),
                           credential=self.ca.issue(Identity("peer", peer_id), ["127.0.0.1"]), **options)
        self.peers[peer_id] = peer
        self.addCleanup(lambda: peer.stopService() if peer.running else None)
        return peer.startService()

    def client_for(self, kind: str, name: str) -> RPCClient:
        if (kind, name) not in self.clients:
            client = self.clients[kind, name] = RPCClient(self.link, tls=self.ca.issue(Identity(kind, name)))
            self.addCleanup(client.close)
        return self.clients[kind, name]

    def call(self, peer_id: str, payload: dict, kind: str = "client", name: str | None = None):
        name = name or payload.get("client", "viewer")
        return self.client_for(kind, name).request(f"exchange:{peer_id}", payload,
                                                   expect=Identity("peer", peer_id))

    @defer.inlineCallbacks
    def refusal(self, peer_id: str, payload: dict, **who) -> defer.Deferred:
        with self.assertRaises(GrenacheError) as caught:
            yield self.call(peer_id, payload, **who)
        return caught.exception

    @defer.inlineCallbacks
    def test_a_plain_http_client_is_refused(self):
        with self.assertRaises(GrenacheError) as caught:
            yield self.client.request("exchange:peer1", {"action": "status"}, retry=0)
        self.assertIn("ERR_TLS_REQUIRED", str(caught.exception))

    @defer.inlineCallbacks
    def test_a_forged_raft_batch_from_a_client_or_another_peer_changes_nothing(self):
        leader = next(p for p in self.peers.values() if p.replica.node.role == "leader")
        follower = next(p for p in PEERS if p != leader.node_id)
        before = {p: s.replica.node.term for p, s in self.peers.items()}
        forged = {"action": "raft.batch", "from": leader.node_id, "to": follower, "messages": [
            {"type": "raft.vote", "from": leader.node_id, "to": follower, "term": 99,
             "last_index": 99, "last_term": 99}]}
        other = next(p for p in PEERS if p not in (leader.node_id, follower))
        for kind, name in (("client", leader.node_id), ("peer", other)):
            error = yield self.refusal(follower, forged, kind=kind, name=name)
            self.assertEqual(error.code, "ERR_FORBIDDEN")
        self.assertEqual({p: s.replica.node.term for p, s in self.peers.items()}, before)

    @defer.inlineCallbacks
    def test_a_client_body_over_one_mib_is_refused_unread_and_a_peers_is_not(self):
        padded = {"action": "status", "pad": "x" * (MAX_CLIENT_BODY + 1)}
        error = yield self.refusal("peer1", padded, name="mallory")
        self.assertIn("HTTP 413 [null,\"ERR_REQUEST_TOO_LARGE: Content-Length over 1048576 bytes\"", str(error))
        error = yield self.refusal("peer1", padded, kind="peer", name="peer2")
        self.assertEqual(str(error), "ERR_INVALID_QUERY: unknown fields: 'pad'")  # read, then judged

    @defer.inlineCallbacks
    def test_a_client_cannot_cancel_or_take_over_another_clients_orders_or_request_ids(self):
        placed = yield self.call("peer1", order("alice", "a0000001", "buy", "100", "1"))
        cancel = {"action": "cancel", "client": "alice", "request": "m0000001", "order_id": placed["order"]["id"]}
        error = yield self.refusal("peer2", cancel, name="mallory")
        self.assertEqual(error.code, "ERR_FORBIDDEN")
        error = yield self.refusal("peer3", order("alice", "a0000002", "sell", "1", "1"), name="mallory")
        self.assertEqual(error.code, "ERR_FORBIDDEN")
        book = yield self.call("peer1", {"action": "book"})
        self.assertEqual(book["bids"], [["100", "1"]])
        mine = yield self.call("peer3", order("alice", "a0000002", "sell", "101", "1"))
        self.assertEqual(mine["order"]["client"], "alice")


class PeerAddressTests(TestCase):
    """``peer_addresses`` (``--peer-address``): the config's word on where the others are."""

    timeout = 60

    @defer.inlineCallbacks
    def test_new_peers_given_each_others_addresses_elect_a_leader_with_no_grape_to_ask(self):
        # As a first start during a flood of fake announcements: nothing kept
        # in the data directories, and no lookup that finds anyone real.
        ports = free_ports(4)
        addresses = {peer_id: f"{LOOPBACK}:{port}" for peer_id, port in zip(PEERS, ports)}
        no_grape = f"http://{LOOPBACK}:{ports[3]}"
        peers = []
        for peer_id in PEERS:
            data_dir = tempfile.mkdtemp(prefix=f"tx-{peer_id}-")
            self.addCleanup(shutil.rmtree, data_dir, True)
            peer = PeerService(peer_id, PEERS, [no_grape], data_dir, port=int(addresses[peer_id].split(":")[1]),
                               fsync="never", seed=PEERS.index(peer_id),
                               peer_addresses={other: a for other, a in addresses.items() if other != peer_id})
            yield peer.startService()
            self.addCleanup(lambda peer=peer: peer.stopService() if peer.running else None)
            peers.append(peer)
        yield eventually(lambda: len({p.replica.node.leader for p in peers} - {None}) == 1
                         and all(p.replica.node.leader for p in peers), what="one leader known to all")

    def start_secure(self, ca: CA, peer_id: str, port: int, data_dir: str, given: dict[str, str],
                     grape: str) -> defer.Deferred:
        """A secure-mode peer told ``given`` addresses of the others; fires with it once started."""
        peer = PeerService(peer_id, PEERS, [grape], data_dir, port=port, fsync="never",
                           seed=PEERS.index(peer_id), peer_addresses=given,
                           credential=ca.issue(Identity("peer", peer_id), [LOOPBACK]))
        self.addCleanup(lambda: peer.stopService() if peer.running else None)
        return peer.startService().addCallback(lambda _: peer)

    def data_dir(self, peer_id: str) -> str:
        data_dir = tempfile.mkdtemp(prefix=f"tx-{peer_id}-")
        self.addCleanup(shutil.rmtree, data_dir, True)
        return data_dir

    @defer.inlineCallbacks
    def test_a_peer_the_others_have_no_address_for_tells_them_where_it_serves(self):
        # Secure mode, no grape to ask: peer1 and peer2 know only each other,
        # peer3 (as a peer added during a flood of fake announcements) knows them.
        ca = CA.create()
        ports = free_ports(4)
        addresses = {peer_id: f"{LOOPBACK}:{port}" for peer_id, port in zip(PEERS, ports)}
        given = {"peer1": {"peer2": addresses["peer2"]}, "peer2": {"peer1": addresses["peer1"]},
                 "peer3": {"peer1": addresses["peer1"], "peer2": addresses["peer2"]}}
        peers = []
        for peer_id, port in zip(PEERS, ports):
            peers.append((yield self.start_secure(ca, peer_id, port, self.data_dir(peer_id), given[peer_id],
                                                  f"http://{LOOPBACK}:{ports[3]}")))
        yield eventually(lambda: all(p.status()["peers"]["peer3"] == addresses["peer3"] for p in peers[:2]),
                         what="peer3's address known to peer1 and peer2")
        yield eventually(lambda: len({p.replica.node.leader for p in peers} - {None}) == 1
                         and all(p.replica.node.leader for p in peers), what="one leader known to all")

    @defer.inlineCallbacks
    def test_a_peer_restarted_at_another_address_tells_the_others(self):
        # Its old address is the one they were told and saw answer; no grape shows the new one.
        ca = CA.create()
        ports = free_ports(5)
        addresses = {peer_id: f"{LOOPBACK}:{port}" for peer_id, port in zip(PEERS, ports)}
        no_grape = f"http://{LOOPBACK}:{ports[3]}"
        data_dirs = {peer_id: self.data_dir(peer_id) for peer_id in PEERS}
        peers = {}
        for peer_id, port in zip(PEERS, ports):
            others = {other: a for other, a in addresses.items() if other != peer_id}
            peers[peer_id] = yield self.start_secure(ca, peer_id, port, data_dirs[peer_id], others, no_grape)
        yield eventually(lambda: all(p.status()["peers"].get("peer3") == addresses["peer3"]
                                     for p in (peers["peer1"], peers["peer2"])), what="peer3 proven")
        yield peers["peer3"].stopService()
        moved = f"{LOOPBACK}:{ports[4]}"
        told = {other: a for other, a in addresses.items() if other != "peer3"}  # its config, as before
        peers["peer3"] = yield self.start_secure(ca, "peer3", ports[4], data_dirs["peer3"], told, no_grape)
        yield eventually(lambda: all(p.status()["peers"]["peer3"] == moved
                                     for p in (peers["peer1"], peers["peer2"])),
                         what="peer3's new address known to peer1 and peer2")
