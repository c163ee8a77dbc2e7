"""Replica: client proposals, forwarding, dedupe, ERR_NO_LEADER, compaction."""
from __future__ import annotations

import json
import random
import unittest

from hypothesis import given, settings, strategies as st

from twisted_exchange.replication.raft import LEADER, RaftConfig
from twisted_exchange.replication.replica import Ready, Replica, ReplicationError
from twisted_exchange.replication.state_machine import ReplicatedStateMachine
from twisted_exchange.replication.storage import MemoryStorage

IDS = ["a", "b", "c"]


def order(client: str, request: str, side: str = "buy", price: str = "100", quantity: str = "1") -> dict:
    return {"action": "submit", "client": client, "request": request, "symbol": "BTCUSD",
            "side": side, "type": "limit", "price": price, "quantity": quantity}


def applied(replica: Replica) -> Ready:
    """The replica's ready batch, applied (nothing persisted or sent)."""
    ready = replica.ready()
    replica.apply(ready)
    return ready


class Cluster:
    """Three replicas on a perfect in-memory network, driven by hand."""

    def __init__(self, config: RaftConfig = RaftConfig(), ids: list[str] = IDS, background: bool = False) -> None:
        self.config = config
        self.ids = ids
        self.background = background
        self.due: dict[str, list[dict]] = {i: [] for i in ids}  # background snapshots taken, not handed back
        self.storage = {i: MemoryStorage() for i in ids}
        self.replicas = {i: self._start(i) for i in ids}
        self.down: set[str] = set()
        self.inflight: list[dict] = []
        self.results: dict[str, dict[int, dict]] = {i: {} for i in ids}
        self.readies: dict[str, list] = {i: [] for i in ids}
        self.drop = lambda message: False

    def _start(self, node_id: str) -> Replica:
        return Replica(node_id, self.ids, self.storage[node_id].load(),
                       random.Random(node_id), self.config, background_snapshots=self.background)

    def restart(self, node_id: str) -> None:
        self.replicas[node_id] = self._start(node_id)
        self.down.discard(node_id)

    def drain(self) -> None:
        """Process ready batches and deliver messages until the network is quiet."""
        while True:
            for node_id, replica in self.replicas.items():
                if node_id in self.down:
                    continue
                ready = replica.ready()  # persist, send, then apply, as the shell does
                self.readies[node_id].append(ready)
                self.storage[node_id].save(ready.hard_state, ready.entries, ready.snapshot)
                self.inflight.extend(ready.messages)
                replica.apply(ready)
                if ready.compaction:
                    self.storage[node_id].compact(ready.compaction)
                if ready.snapshot_due:  # taken now, as the shell's fork does, handed back by the test
                    self.due[node_id].append(dict(ready.snapshot_due, data=replica.state_machine.snapshot()))
                self.results[node_id].update(ready.results)
            if not self.inflight:
                return
            messages, self.inflight = self.inflight, []
            for message in messages:
                if message["to"] in self.down or message["from"] in self.down or self.drop(message):
                    continue
                self.replicas[message["to"]].step(message)

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for node_id, replica in self.replicas.items():
                if node_id not in self.down:
                    replica.tick()
            self.drain()

    def leader(self) -> str:
        for _ in range(100):
            leaders = [i for i, r in self.replicas.items()
                       if i not in self.down and r.node.role == LEADER]
            if leaders:
                return leaders[0]
            self.tick()
        raise AssertionError("no leader elected")


class ReplicaTests(unittest.TestCase):

    def test_proposal_at_follower_is_forwarded_and_answered_after_local_apply(self):
        cluster = Cluster()
        leader = cluster.leader()
        follower = next(i for i in IDS if i != leader)
        token = cluster.replicas[follower].propose(order("alice", "r1"))
        cluster.drain()
        cluster.tick()
        result = cluster.results[follower][token]
        self.assertTrue(result["ok"])
        self.assertEqual(cluster.replicas[follower].exchange.order("1")["client"], "alice")
        hashes = {r.state_machine.state_hash() for r in cluster.replicas.values()}
        self.assertEqual(len(hashes), 1)

    def test_ready_hands_out_committed_entries_that_apply_applies_and_answers(self):
        cluster = Cluster(ids=["a"])
        cluster.leader()
        replica = cluster.replicas["a"]
        token = replica.propose(order("alice", "r1"))
        ready = replica.ready()
        self.assertEqual([e["index"] for e in ready.committed], [2])  # a one-peer cluster commits at once
        self.assertEqual((replica.state_machine.applied, ready.results), (1, []))
        with self.assertRaises(RuntimeError):
            replica.ready()  # before apply: entry 2 would be handed out never to be applied
        replica.apply(ready)
        self.assertEqual(replica.state_machine.applied, 2)
        self.assertEqual([t for t, result in ready.results if result["ok"]], [token])
        self.assertEqual(replica.ready().committed, [])  # applied: the next batch may come

    def test_a_one_peer_cluster_answers_its_proposals(self):
        cluster = Cluster(ids=["a"])
        self.assertEqual(cluster.leader(), "a")
        token = cluster.replicas["a"].propose(order("alice", "r1"))
        cluster.drain()
        self.assertTrue(cluster.results["a"][token]["ok"])
        self.assertEqual([e["index"] for e in cluster.storage["a"].load().entries], [1, 2])

    def test_retried_request_returns_original_result_without_reapplying(self):
        cluster = Cluster()
        leader = cluster.leader()
        first = cluster.replicas[leader].propose(order("alice", "r1"))
        cluster.tick(2)
        again = cluster.replicas[leader].propose(order("alice", "r1"))
        cluster.tick(2)
        self.assertEqual(cluster.results[leader][first], cluster.results[leader][again])
        self.assertEqual(cluster.replicas[leader].exchange.book("BTCUSD")["bids"], [["100", "1"]])

    def test_proposal_without_client_and_request_is_refused(self):
        cluster = Cluster()
        with self.assertRaises(ReplicationError) as caught:
            cluster.replicas["a"].propose({"action": "submit"})
        self.assertEqual(caught.exception.code, "ERR_INVALID_ORDER")

    def test_non_canonical_command_is_refused_and_nothing_enters_the_log(self):
        cluster = Cluster()
        replica = cluster.replicas[cluster.leader()]
        before = replica.node.last_index
        for command in (dict(order("alice", "r1"), quantity=float("inf")),
                        dict(order("alice", "r2"), extra={"a": [{"b": 1}]}),
                        dict(order("alice", "r3"), price=100)):
            with self.subTest(command=command), self.assertRaises(ReplicationError) as caught:
                replica.propose(command)
            self.assertEqual(caught.exception.code, "ERR_INVALID_ORDER")
        cluster.tick(2)
        self.assertEqual(replica.node.last_index, before)

    def test_forwarded_command_that_fails_admission_is_dropped(self):
        cluster = Cluster()
        leader = cluster.leader()
        replica = cluster.replicas[leader]
        before = replica.node.last_index
        follower = next(i for i in IDS if i != leader)
        for command in ({"client": 5, "request": "r1"}, {"client": "a"}, "garbage", None,
                        dict(order("alice", "r1"), quantity=float("nan"))):
            replica.step({"type": "raft.forward", "from": follower, "to": leader,
                          "term": replica.node.term, "command": command})
        self.assertEqual(replica.node.last_index, before)

    def test_stale_or_reused_request_is_answered_at_once_without_entering_the_log(self):
        cluster = Cluster()
        leader = cluster.leader()
        replica = cluster.replicas[leader]
        for n in range(70):
            replica.propose(order("alice", f"r{n}"))
        cluster.tick(2)
        before = replica.node.last_index
        stale = replica.propose(order("alice", "r0"))
        reused = replica.propose(order("alice", "r69", price="101"))
        results = dict(applied(replica).results)
        self.assertTrue(results[stale]["error"].startswith("ERR_STALE_REQUEST: "))
        self.assertTrue(results[reused]["error"].startswith("ERR_REQUEST_REUSED: "))
        self.assertEqual(replica.node.last_index, before)

    def test_concurrent_reuse_of_a_request_id_gets_refused_not_the_other_result(self):
        cluster = Cluster()
        leader = cluster.leader()
        replica = cluster.replicas[leader]
        first = replica.propose(order("alice", "r1"))
        second = replica.propose(order("alice", "r1", price="101"))
        cluster.tick(2)
        self.assertTrue(cluster.results[leader][first]["ok"])
        self.assertTrue(cluster.results[leader][second]["error"].startswith("ERR_REQUEST_REUSED: "))

    def test_status_is_o1_reporting_the_digest_not_a_hash_of_the_state(self):
        cluster = Cluster()
        replica = cluster.replicas[cluster.leader()]
        replica.propose(order("alice", "r1"))
        cluster.tick(2)
        replica.state_machine.state_hash = None  # any walk of the state would now fail
        replica.state_machine.exchange = None  # (a compiled Exchange's methods cannot be replaced)
        status = replica.status()
        self.assertEqual(status["digest"], replica.state_machine.digest)
        self.assertNotIn("state_hash", status)

    def test_no_leader_is_reported_after_bounded_wait(self):
        config = RaftConfig(no_leader_ticks=15)
        cluster = Cluster(config)
        cluster.down = {"b", "c"}
        token = cluster.replicas["a"].propose(order("alice", "r1"))
        cluster.tick(14)
        self.assertNotIn(token, cluster.results["a"])
        cluster.tick(1)
        self.assertTrue(cluster.results["a"][token]["error"].startswith("ERR_NO_LEADER: "))

    def test_lost_forward_is_sent_again_after_forward_ticks(self):
        cluster = Cluster(RaftConfig(forward_ticks=3))
        leader = cluster.leader()
        follower = next(i for i in IDS if i != leader)
        cluster.drop = lambda message: message["type"] == "raft.forward"
        token = cluster.replicas[follower].propose(order("alice", "r1"))
        cluster.tick(3)
        self.assertNotIn(token, cluster.results[follower])
        cluster.drop = lambda message: False
        cluster.tick(3)
        self.assertTrue(cluster.results[follower][token]["ok"])

    def test_leader_appends_a_repeated_forward_once_per_term(self):
        cluster = Cluster()
        leader = cluster.leader()
        replica = cluster.replicas[leader]
        forward = {"type": "raft.forward", "from": "x", "to": leader, "term": replica.node.term,
                   "command": order("alice", "r1")}
        before = replica.node.last_index
        replica.step(dict(forward, **{"from": next(i for i in IDS if i != leader)}))
        replica.step(dict(forward, **{"from": next(i for i in IDS if i != leader)}))
        self.assertEqual(replica.node.last_index, before + 1)

    def test_request_already_executed_here_is_answered_at_once(self):
        cluster = Cluster()
        leader = cluster.leader()
        first = cluster.replicas[leader].propose(order("alice", "r1"))
        cluster.tick(2)
        follower = next(i for i in IDS if i != leader)
        again = cluster.replicas[follower].propose(order("alice", "r1"))
        self.assertEqual(applied(cluster.replicas[follower]).results, [(again, cluster.results[leader][first])])

    def test_compaction_is_surfaced_and_a_lagging_follower_catches_up_by_snapshot(self):
        cluster = Cluster(RaftConfig(compact_every=5))
        leader = cluster.leader()
        lagging = next(i for i in IDS if i != leader)
        cluster.down = {lagging}
        for n in range(12):
            cluster.replicas[leader].propose(order("alice", f"r{n}", price=str(90 + n)))
            cluster.tick()
        self.assertTrue(any(r.compaction for r in cluster.readies[leader]))
        self.assertGreater(cluster.replicas[leader].node.snap_index, 0)
        cluster.restart(lagging)
        cluster.tick(4)
        self.assertTrue(any(r.snapshot for r in cluster.readies[lagging]))
        self.assertEqual(cluster.replicas[lagging].status()["digest"],
                         cluster.replicas[leader].status()["digest"])
        self.assertEqual(len(cluster.replicas[lagging].exchange.book("BTCUSD", depth=20)["bids"]), 12)

    def test_a_background_snapshot_is_asked_for_once_and_compacts_when_handed_back(self):
        cluster = Cluster(RaftConfig(compact_every=5), background=True)
        leader = cluster.leader()
        replica = cluster.replicas[leader]
        for n in range(12):
            replica.propose(order("alice", f"r{n}", price=str(90 + n)))
            cluster.tick()
        self.assertFalse(any(r.compaction for r in cluster.readies[leader]))
        [due] = cluster.due[leader]                       # one at a time, however far past the interval
        self.assertEqual(replica.node.snap_index, 0)
        self.assertTrue(replica.snapshot_taken(due))
        self.assertEqual(replica.node.snap_index, due["index"])
        self.assertLess(replica.node.snap_index, replica.state_machine.applied)
        cluster.storage[leader].compact(due)
        cluster.tick()
        self.assertEqual(len(cluster.due[leader]), 2)   # due again at once: 5 more were applied meanwhile
        replica.snapshot_abandoned()                       # the shell failed to take it: asked again
        cluster.tick()
        self.assertEqual(len(cluster.due[leader]), 3)
        self.assertEqual(cluster.due[leader][1]["index"], cluster.due[leader][2]["index"])

    def test_a_stored_snapshot_stands_for_the_parsed_one_only_at_its_index(self):
        cluster = Cluster(RaftConfig(compact_every=5))
        replica = cluster.replicas[cluster.leader()]
        for n in range(12):
            replica.propose(order("alice", f"r{n}", price=str(90 + n)))
            cluster.tick()
        parsed = replica.node.snapshot
        replica.snapshot_stored(parsed["index"] - 1, "an older file")
        self.assertIs(replica.node.snapshot, parsed)
        replica.snapshot_stored(parsed["index"], "its file")
        self.assertEqual(replica.node.snapshot, {**parsed, "data": "its file"})

    def test_a_big_book_lets_the_log_grow_to_a_quarter_of_its_orders_between_snapshots(self):
        cluster = Cluster(RaftConfig(compact_every=5), background=True)
        leader = cluster.leader()
        replica = cluster.replicas[leader]

        def rest(count):
            for _ in range(count):
                rest.n += 1
                replica.propose(order("alice", f"r{rest.n:04d}", price=str(rest.n)))
            cluster.tick()
            for due in cluster.due[leader]:
                replica.snapshot_taken(due)
            taken = len(cluster.due[leader])
            cluster.due[leader].clear()
            return taken
        rest.n = 0
        self.assertEqual(rest(40), 1)
        first = replica.node.snap_index
        self.assertEqual(rest(10), 0)      # 10 entries < 50 orders / 4, though > compact_every
        self.assertEqual(rest(10), 1)      # 20 >= 60 / 4
        self.assertGreaterEqual(replica.node.snap_index - first, replica.exchange.known_orders() // 4)

    def test_a_snapshot_installed_while_one_is_taken_makes_that_one_stale(self):
        cluster = Cluster(RaftConfig(compact_every=5), background=True)
        leader = cluster.leader()
        follower = next(i for i in IDS if i != leader)
        for n in range(6):
            cluster.replicas[leader].propose(order("alice", f"r{n}", price=str(90 + n)))
            cluster.tick()
        [stale] = cluster.due[follower]
        cluster.drop = lambda message: follower in (message["to"], message["from"])
        for n in range(6, 20):
            cluster.replicas[leader].propose(order("alice", f"r{n}", price=str(90 + n)))
            cluster.tick()
            for due in cluster.due[leader]:  # the leader's shell hands each back at once
                cluster.replicas[leader].snapshot_taken(due)
            cluster.due[leader].clear()
        self.assertGreater(cluster.replicas[leader].node.snap_index, cluster.replicas[follower].node.last_index)
        cluster.drop = lambda message: False
        cluster.tick(4)
        installed = cluster.replicas[follower].node.snap_index
        self.assertTrue(any(r.snapshot for r in cluster.readies[follower]))
        self.assertGreater(installed, stale["index"])
        self.assertFalse(cluster.replicas[follower].snapshot_taken(stale))
        self.assertEqual(cluster.replicas[follower].node.snap_index, installed)
        self.assertEqual(cluster.replicas[follower].status()["digest"], cluster.replicas[leader].status()["digest"])

    def test_restarted_replica_recovers_its_state_from_storage(self):
        cluster = Cluster()
        leader = cluster.leader()
        for n in range(3):
            cluster.replicas[leader].propose(order("alice", f"r{n}"))
        cluster.tick(2)
        before = cluster.replicas[leader].status()
        state = cluster.replicas[leader].state_machine.state_hash()
        cluster.restart(leader)
        applied(cluster.replicas[leader])
        recovered = cluster.replicas[leader].status()
        self.assertEqual((recovered["role"], recovered["term"]), ("follower", before["term"]))
        self.assertLessEqual(recovered["applied"], before["applied"])  # commit is volatile
        cluster.tick(40)  # it learns the commit index from the leader and applies the rest
        after = cluster.replicas[leader].status()
        self.assertGreaterEqual(after["applied"], before["applied"])
        self.assertEqual(cluster.replicas[leader].state_machine.state_hash(), state)

    def test_status_reports_identity_role_and_progress(self):
        cluster = Cluster()
        leader = cluster.leader()
        status = cluster.replicas[leader].status()
        self.assertEqual((status["id"], status["role"], status["leader"], status["peers"]),
                         (leader, "leader", leader, [i for i in IDS if i != leader]))
        self.assertEqual(status["commit"], status["applied"])


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12)
FIELDS = st.sampled_from(["action", "client", "request", "symbol", "side", "type", "price", "quantity",
                          "tif", "post_only", "order_id", "extra"])
COMMANDS = JSONISH | st.builds(lambda base, changes: dict(base, **changes),
                               st.sampled_from([order("alice", "r1"),
                                                {"action": "cancel", "client": "bob", "request": "r1",
                                                 "order_id": "1"}]),
                               st.dictionaries(FIELDS, JSONISH, max_size=2))


class AdmissionPropertyTests(unittest.TestCase):

    def setUp(self):  # once per test, not per example: examples share the cluster
        self.cluster = Cluster()
        self.replica = self.cluster.replicas[self.cluster.leader()]

    @settings(max_examples=150, deadline=None)
    @given(COMMANDS)
    def test_whatever_a_client_sends_is_refused_or_enters_the_log_encodable_and_applies_alike(self, command):
        before = self.replica.node.last_index
        try:
            self.replica.propose(command)
        except ReplicationError as error:
            self.assertEqual(error.code, "ERR_INVALID_ORDER")
            return
        self.cluster.tick(2)
        for entry in self.replica.node.entries(before + 1, self.replica.node.last_index + 1):
            logged = entry["command"]
            wire = json.loads(json.dumps(logged, allow_nan=False))
            self.assertEqual(wire, logged)
            here, there = ReplicatedStateMachine(), ReplicatedStateMachine()
            results = [machine.apply({"index": 1, "term": 1, "command": c})
                       for machine, c in ((here, logged), (there, wire))]
            self.assertEqual(results[0], results[1])
            self.assertEqual(here.digest, there.digest)
            self.assertEqual(here.state_hash(), there.state_hash())
