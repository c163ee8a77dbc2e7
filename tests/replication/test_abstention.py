"""Scenario: a node that lost acknowledged entries must not vote on the word of
an append sent before its restart.

Three replicas on a hand-driven network.  The victim acknowledges entries
that commit only with its help (the third node is cut off), then restarts
with those entries lost.  An append the leader queued for it before the
crash arrives first: by itself it looks complete.  Then the leader dies and
the third node, which lacks the committed entries, asks for votes.  The
real node keeps abstaining, so no leader is elected without them; a node
that trusts the old append votes, and the committed entries are gone.
"""
from __future__ import annotations

import random
import unittest

from tests.replication.test_replica import Cluster, order
from twisted_exchange.replication.raft import LEADER, RaftNode
from twisted_exchange.replication.records import abstaining
from twisted_exchange.replication.replica import Replica


class TrustsAppendsFromBeforeItsRestart(RaftNode):
    def _holds_leader_log(self, message, last_new: int) -> bool:
        return last_new >= message["last_index"]


class ScenarioCluster(Cluster):
    def __init__(self, node_factory: type[RaftNode]) -> None:
        self.node_factory = node_factory
        super().__init__()

    def _start(self, node_id: str) -> Replica:
        return Replica(node_id, self.ids, self.storage[node_id].load(), random.Random(node_id),
                       self.config, node_factory=self.node_factory)


def leader_elected_without_committed_entries(node_factory: type[RaftNode]) -> bool:
    cluster = ScenarioCluster(node_factory)
    leader = cluster.leader()
    victim, other = [i for i in cluster.ids if i != leader]
    queued = []

    def record(message: dict) -> bool:
        if message["type"] == "raft.append" and message["to"] == victim:
            queued.append(message)
        return False                            # nothing is dropped
    cluster.drop = record
    cluster.replicas[leader].propose(order("alice", "r1"))
    cluster.tick(3)
    old_append = queued[-1]                     # sent while the leader's log ended at r1
    cut_off = {other}
    cluster.drop = lambda m: m["to"] in cut_off or m["from"] in cut_off
    for n in range(2, 5):
        cluster.replicas[leader].propose(order("alice", f"r{n}"))
    cluster.tick(3)
    committed = cluster.replicas[leader].node.commit
    assert committed > old_append["last_index"], "r2..r4 committed with the victim's help"
    storage = cluster.storage[victim]          # the victim loses what it acknowledged after r1
    del storage._entries[old_append["last_index"]:]
    storage._hard_state = abstaining(storage._hard_state)
    cluster.restart(victim)
    cluster.replicas[victim].step(old_append)   # the queued append arrives first
    cluster.down.add(leader)
    cluster.drop = lambda m: False
    for _ in range(60):
        cluster.tick()
        if cluster.replicas[other].node.role == LEADER:
            return cluster.replicas[other].node.last_index < committed
    return False


class ReplayedAppendTests(unittest.TestCase):
    def test_an_append_from_before_the_restart_never_ends_the_abstention(self):
        self.assertFalse(leader_elected_without_committed_entries(RaftNode))

    def test_trusting_it_would_elect_a_leader_without_committed_entries(self):
        self.assertTrue(leader_elected_without_committed_entries(TrustsAppendsFromBeforeItsRestart))
