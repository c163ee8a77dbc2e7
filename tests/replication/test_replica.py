"""Replica: client proposals, forwarding, dedupe, ERR_NO_LEADER, compaction."""
from __future__ import annotations

import random
import unittest

from twisted_exchange.replication.raft import LEADER, RaftConfig
from twisted_exchange.replication.replica import Replica, ReplicationError
from twisted_exchange.replication.storage import MemoryStorage

IDS = ["a", "b", "c"]


def order(client: str, request: str, side: str = "buy", price: str = "100", quantity: str = "1") -> dict:
    return {"action": "submit", "client": client, "request": request, "symbol": "BTCUSD",
            "side": side, "type": "limit", "price": price, "quantity": quantity}


class Cluster:
    """Three replicas on a perfect in-memory network, driven by hand."""

    def __init__(self, config: RaftConfig = RaftConfig(), ids: list[str] = IDS) -> None:
        self.config = config
        self.ids = ids
        self.storage = {i: MemoryStorage() for i in ids}
        self.replicas = {i: self._start(i) for i in ids}
        self.down: set[str] = set()
        self.inflight: list[dict] = []
        self.results: dict[str, dict[int, dict]] = {i: {} for i in ids}
        self.readies: dict[str, list] = {i: [] for i in ids}

    def _start(self, node_id: str) -> Replica:
        return Replica(node_id, self.ids, self.storage[node_id].load(),
                       random.Random(node_id), self.config)

    def restart(self, node_id: str) -> None:
        self.replicas[node_id] = self._start(node_id)
        self.down.discard(node_id)

    def drain(self) -> None:
        """Process ready batches and deliver messages until the network is quiet."""
        while True:
            for node_id, replica in self.replicas.items():
                if node_id in self.down:
                    continue
                ready = replica.ready()
                self.readies[node_id].append(ready)
                self.storage[node_id].save(ready.hard_state, ready.entries, ready.snapshot)
                if ready.compaction:
                    self.storage[node_id].compact(ready.compaction)
                self.inflight.extend(ready.messages)
                self.results[node_id].update(ready.results)
            if not self.inflight:
                return
            messages, self.inflight = self.inflight, []
            for message in messages:
                if message["to"] not in self.down and message["from"] not in self.down:
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
        self.assertEqual(caught.exception.code, "ERR_INVALID_COMMAND")

    def test_no_leader_is_reported_after_bounded_wait(self):
        config = RaftConfig(no_leader_ticks=15)
        cluster = Cluster(config)
        cluster.down = {"b", "c"}
        token = cluster.replicas["a"].propose(order("alice", "r1"))
        cluster.tick(14)
        self.assertNotIn(token, cluster.results["a"])
        cluster.tick(1)
        self.assertTrue(cluster.results["a"][token]["error"].startswith("ERR_NO_LEADER: "))
