"""The flush's order on a task.Clock: a vote or an acknowledgement leaves
only once written; a leader's appends leave before its own write (thesis
10.2.1), so that the followers' fsync overlaps the leader's; committed
entries are applied after both (etcd's order)."""
from __future__ import annotations

from tests.peer.test_failstop import PeerHarness
from tests.peer.test_replies import append
from twisted_exchange.replication.raft import LEADER, PRE_CANDIDATE


class FlushOrderTests(PeerHarness):

    def setUp(self):
        super().setUp()
        self.events: list[tuple[str, list]] = []
        save = self.peer._storage.save

        def saving(hard_state, entries, snapshot):
            self.events.append(("save", [e["index"] for e in entries]))
            save(hard_state, entries, snapshot)
        self.peer._storage.save = saving
        self.peer._transport.send = lambda messages: self.events.append(
            ("send", sorted((m["type"], m["to"]) for m in messages)))

    def elect(self) -> None:
        """peer1 wins the next term with peer2's (pre-)vote; its first batch (the no-op) goes out."""
        while self.peer.replica.node.role != PRE_CANDIDATE:
            self.peer._tick()
        term = self.peer.replica.node.term + 1
        self.peer.deliver("peer2", [{"type": "raft.prevote_reply", "from": "peer2", "to": "peer1",
                                     "term": term, "granted": True}])
        self.clock.advance(0)
        self.peer.deliver("peer2", [{"type": "raft.vote_reply", "from": "peer2", "to": "peer1",
                                     "term": term, "granted": True}])
        self.clock.advance(0)
        self.assertEqual(self.peer.replica.node.role, LEADER)
        self.events.clear()

    def test_a_leaders_appends_leave_before_its_write(self):
        self.elect()
        self.peer.propose({"action": "submit", "client": "alice", "request": "r1", "symbol": "BTCUSD",
                           "side": "buy", "type": "limit", "price": "100", "quantity": "1"})
        self.clock.advance(0)
        appends = [("raft.append", "peer2"), ("raft.append", "peer3")]
        self.assertEqual(self.events, [("send", appends), ("save", [2])])

    def test_a_followers_acknowledgement_leaves_after_its_write(self):
        self.peer.deliver("peer2", [append()])
        self.clock.advance(0)
        self.assertEqual(self.events, [("save", [1]), ("send", [("raft.append_reply", "peer2")])])

    def test_a_candidates_vote_requests_leave_after_the_write_of_its_vote(self):
        while self.peer.replica.node.role != PRE_CANDIDATE:
            self.peer._tick()
        self.events.clear()
        self.peer.deliver("peer2", [{"type": "raft.prevote_reply", "from": "peer2", "to": "peer1",
                                     "term": self.peer.replica.node.term + 1, "granted": True}])
        self.clock.advance(0)
        self.assertEqual(self.events, [("save", []), ("send", [("raft.vote", "peer2"), ("raft.vote", "peer3")])])

    def test_the_acknowledgement_leaves_before_the_entries_it_commits_are_applied(self):
        answer = self.peer.deliver_and_reply("peer2", [dict(append(), commit=1)])
        replica, seen = self.peer.replica, []
        apply = replica.apply

        def applying(ready):
            seen.append((answer.called, replica.state_machine.applied))
            apply(ready)
        replica.apply = applying
        self.clock.advance(0)
        self.assertEqual(seen, [(True, 0)])
        self.assertEqual(replica.state_machine.applied, 1)
