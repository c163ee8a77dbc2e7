"""Single-server membership changes in RaftNode, one rule per test, and the
configuration carried through snapshots, messages and storage."""
from __future__ import annotations

import random
import tempfile
import unittest

from twisted_exchange.replication.configuration import Configuration, ConfigurationError
from twisted_exchange.replication.messages import MessageError, parse_entry, parse_message
from twisted_exchange.replication.raft import FOLLOWER, LEADER, PRE_CANDIDATE, RaftNode
from twisted_exchange.wal import FileStorage
from tests.replication.test_raft import CONFIG, elect, reply


def leader_with_commit() -> RaftNode:
    """Node a, leader of term 1 over a, b, c, with its no-op committed."""
    node = elect(RaftNode("a", ["a", "b", "c"], random.Random(0), CONFIG))
    node.ready()
    node.step(reply("b", node.term, success=True, match=1))
    assert node.commit == 1
    return node


class ConfigurationTests(unittest.TestCase):

    def test_promote_needs_a_learner_and_remove_keeps_a_voter(self):
        configuration = Configuration.of(["a"])
        with self.assertRaises(ConfigurationError):
            configuration.change("promote", "b")
        with self.assertRaises(ConfigurationError):
            configuration.change("remove", "a")
        self.assertEqual(configuration.change("add", "b").change("promote", "b").voters, ("a", "b"))


class MembershipRuleTests(unittest.TestCase):

    def test_a_configuration_takes_effect_when_appended_not_when_committed(self):
        node = leader_with_commit()
        index = node.propose_configuration("add", "d")
        self.assertGreater(index, node.commit)
        self.assertEqual(node.configuration.learners, ("d",))
        self.assertIn("d", node.peers)

    def test_a_second_change_is_refused_while_the_first_is_uncommitted(self):
        node = leader_with_commit()
        node.propose_configuration("add", "d")
        with self.assertRaisesRegex(ConfigurationError, "not committed yet"):
            node.propose_configuration("remove", "c")

    def test_a_new_leader_changes_nothing_before_an_entry_of_its_term_commits(self):
        node = elect(RaftNode("a", ["a", "b", "c"], random.Random(0), CONFIG))
        with self.assertRaisesRegex(ConfigurationError, "no entry of term"):
            node.propose_configuration("add", "d")

    def test_a_learner_is_promoted_only_once_caught_up(self):
        node = leader_with_commit()
        index = node.propose_configuration("add", "d")
        node.ready()
        node.step(reply("b", node.term, success=True, match=index))
        with self.assertRaisesRegex(ConfigurationError, "not caught up"):
            node.propose_configuration("promote", "d")
        node.step(reply("d", node.term, success=True, match=index))
        node.propose_configuration("promote", "d")
        self.assertEqual(node.configuration.voters, ("a", "b", "c", "d"))

    def test_a_learners_acknowledgement_does_not_commit(self):
        node = leader_with_commit()
        index = node.propose_configuration("add", "d")
        node.step(reply("d", node.term, success=True, match=index))
        self.assertLess(node.commit, index)

    def test_a_leader_left_the_only_voter_commits_without_replies(self):
        node = elect(RaftNode("a", ["a", "b"], random.Random(0), CONFIG))
        node.ready()
        node.step(reply("b", node.term, success=True, match=1))
        index = node.propose_configuration("remove", "b")
        self.assertEqual(node.configuration.voters, ("a",))
        node.ready()
        self.assertEqual(node.commit, index)  # b's acknowledgement is not needed any more
        command = node.propose({"n": 1})
        self.assertEqual([e["index"] for e in node.ready().committed], [command])

    def test_a_server_its_configuration_does_not_name_never_campaigns(self):
        node = RaftNode("d", ["a", "b", "c"], random.Random(0), CONFIG)
        for _ in range(100):
            node.tick()
        self.assertEqual(node.role, FOLLOWER)
        self.assertEqual(node.ready().messages, [])

    def test_a_removed_leader_steps_down_once_the_removal_commits(self):
        node = leader_with_commit()
        index = node.propose_configuration("remove", "a")
        node.ready()
        self.assertEqual(node.role, LEADER)
        node.step(reply("b", node.term, success=True, match=index))
        self.assertEqual(node.role, LEADER)  # b alone is not a majority of b, c
        node.step(reply("c", node.term, success=True, match=index))
        messages = node.ready().messages
        self.assertEqual(node.role, FOLLOWER)
        self.assertTrue(all(m["commit"] == index for m in messages if m["type"] == "raft.append"))

    def test_a_voter_whose_removal_is_uncommitted_campaigns_and_wins_with_the_new_voters(self):
        # Seed 828: the removed leader lost its lease before the removal
        # committed; its log alone held the removal, so the old voters
        # refused the others, and nobody could be elected.
        config = {"voters": ["b", "c", "d"], "learners": []}
        removal = {"type": "raft.append", "from": "b", "to": "a", "term": 1, "prev_index": 0, "prev_term": 0,
                   "entries": [{"index": 1, "term": 1, "command": None, "config": config}],
                   "commit": 0, "last_index": 1, "epoch": None}
        node = RaftNode("a", ["a", "b", "c", "d"], random.Random(0), CONFIG)
        node.step(removal)
        node.ready()
        for _ in range(2 * CONFIG.election_ticks):
            node.tick()
        self.assertEqual(sorted(m["to"] for m in node.ready().messages if m["type"] == "raft.prevote"),
                         ["b", "c", "d"])
        for voter in ("b", "c"):
            node.step({"type": "raft.prevote_reply", "from": voter, "to": "a", "term": 2, "granted": True})
        for voter in ("b", "c"):
            node.step({"type": "raft.vote_reply", "from": voter, "to": "a", "term": 2, "granted": True})
        self.assertEqual(node.role, LEADER)
        node.ready()
        for voter in ("b", "c"):
            node.step(reply(voter, node.term, success=True, match=node.last_index))
        node.ready()
        self.assertEqual(node.role, FOLLOWER)   # the removal committed: it steps down
        for _ in range(100):
            node.tick()
        self.assertEqual(node.role, FOLLOWER)   # and campaigns no more
        self.assertFalse([m for m in node.ready().messages if m["type"] == "raft.prevote"])

    def test_a_vote_request_from_a_candidate_outside_our_configuration_is_granted(self):
        # Seed 426: n1 was behind the change that added n5, and n5 needed its vote.
        node = RaftNode("a", ["a", "b", "c"], random.Random(0), CONFIG)
        node.step({"type": "raft.prevote", "from": "e", "to": "a", "term": 1, "last_index": 5, "last_term": 1})
        self.assertEqual([(m["type"], m["granted"]) for m in node.ready().messages], [("raft.prevote_reply", True)])

    def test_acknowledgements_of_entries_truncated_before_they_were_persisted_are_not_sent(self):
        # Seed 1885: in one batch, b acknowledged entry 2 of term 1 to a, then
        # a leader of term 2 truncated it; the reply would have promised an
        # entry b never stored.
        node = RaftNode("b", ["a", "b", "c"], random.Random(0), CONFIG)
        node.step({"type": "raft.append", "from": "a", "to": "b", "term": 1, "prev_index": 0, "prev_term": 0,
                   "entries": [{"index": 1, "term": 1, "command": None}, {"index": 2, "term": 1, "command": None}],
                   "commit": 0, "last_index": 2, "epoch": None})
        node.step({"type": "raft.append", "from": "c", "to": "b", "term": 2, "prev_index": 1, "prev_term": 1,
                   "entries": [{"index": 2, "term": 2, "command": None}],
                   "commit": 0, "last_index": 2, "epoch": None})
        ready = node.ready()
        self.assertEqual([(e["index"], e["term"]) for e in ready.entries], [(1, 1), (2, 2)])
        self.assertEqual([(m["to"], m["term"], m["match"]) for m in ready.messages if m["type"] == "raft.append_reply"],
                         [("c", 2, 2)])

    def test_a_follower_adopts_a_configuration_from_an_append_and_drops_it_on_truncation(self):
        node = RaftNode("b", ["a", "b", "c"], random.Random(0), CONFIG)
        config = {"voters": ["a", "b", "c"], "learners": ["d"]}
        node.step({"type": "raft.append", "from": "a", "to": "b", "term": 1, "prev_index": 0, "prev_term": 0,
                   "entries": [{"index": 1, "term": 1, "command": None, "config": config}],
                   "commit": 0, "last_index": 1, "epoch": None})
        self.assertEqual(node.configuration.learners, ("d",))
        node.step({"type": "raft.append", "from": "c", "to": "b", "term": 2, "prev_index": 0, "prev_term": 0,
                   "entries": [{"index": 1, "term": 2, "command": None}],
                   "commit": 0, "last_index": 1, "epoch": None})
        self.assertEqual(node.configuration, Configuration.of(["a", "b", "c"]))

    def test_a_snapshot_carries_the_configuration_and_one_without_takes_the_initial(self):
        config = {"voters": ["b", "c", "d"], "learners": []}
        node = RaftNode("b", ["a", "b", "c"], random.Random(0), CONFIG,
                        snapshot={"index": 5, "term": 1, "data": {}, "config": config})
        self.assertEqual(node.configuration.voters, ("b", "c", "d"))
        old = RaftNode("b", ["a", "b", "c"], random.Random(0), CONFIG, snapshot={"index": 5, "term": 1, "data": {}})
        self.assertEqual(old.configuration.voters, ("a", "b", "c"))


OLD = {"voters": ["a", "b", "c"], "learners": ["d"]}
PROMOTED = {"voters": ["a", "b", "c", "d"], "learners": []}


def stalled_promotion() -> dict[str, RaftNode]:
    """Seed 7663 in four nodes, a down (or abstaining after lost data).

    c led term 1: it added d as a learner (1), committed 2 with b, then
    appended the promotion of d (3) and was cut off.  a led term 2 with
    b's vote, appended 3 of term 2 and sent it to d alone, then went down.
    c counts by its promotion: 3 of a, b, c, d, and d refuses it (d's log
    ends in term 2).  b is behind c.  Only d's log can win, and in its own
    log d is a learner."""
    entries = [{"index": 1, "term": 1, "command": None, "config": OLD},
               {"index": 2, "term": 1, "command": None}]
    logs = {"b": (entries, {"term": 2, "vote": "a", "commit": 2}),
            "c": (entries + [{"index": 3, "term": 1, "command": None, "config": PROMOTED}],
                  {"term": 1, "vote": "c", "commit": 2}),
            "d": (entries + [{"index": 3, "term": 2, "command": None}], {"term": 2, "vote": None, "commit": 2})}
    return {node_id: RaftNode(node_id, ["a", "b", "c"], random.Random(node_id), CONFIG, hard_state, None, log)
            for node_id, (log, hard_state) in logs.items()}


def run(nodes: dict[str, RaftNode], ticks: int) -> None:
    """Tick every node and deliver every message at once (to the nodes that are up)."""
    for _ in range(ticks):
        for node in nodes.values():
            node.tick()
        while messages := [m for node in nodes.values() for m in node.ready().messages]:
            for message in messages:
                if message["to"] in nodes:
                    nodes[message["to"]].step(message)


class UnreceivedPromotionTests(unittest.TestCase):

    def test_a_learner_campaigns_only_after_refusing_a_candidate_and_until_it_hears_from_a_leader(self):
        nodes = stalled_promotion()
        learner, candidate = nodes["d"], nodes["c"]
        for _ in range(4 * CONFIG.election_ticks):
            learner.tick()
        self.assertEqual(learner.ready().messages, [])
        learner.step({"type": "raft.prevote", "from": "c", "to": "d", "term": 2,
                      "last_index": candidate.last_index, "last_term": candidate.last_term})
        self.assertEqual([m["granted"] for m in learner.ready().messages], [False])
        for _ in range(2 * CONFIG.election_ticks):
            learner.tick()
            if learner.role != FOLLOWER:
                break
        self.assertEqual(learner.role, PRE_CANDIDATE)
        self.assertEqual(sorted(m["to"] for m in learner.ready().messages if m["type"] == "raft.prevote"),
                         ["a", "b", "c"])
        learner.step({"type": "raft.append", "from": "a", "to": "d", "term": 2, "prev_index": 3, "prev_term": 2,
                      "entries": [], "commit": 2, "last_index": 3, "epoch": None})
        for _ in range(4 * CONFIG.election_ticks):
            learner.tick()
        self.assertFalse([m for m in learner.ready().messages if m["type"] == "raft.prevote"])

    def test_a_learner_a_candidate_counts_but_cannot_outvote_campaigns_and_unblocks_the_cluster(self):
        nodes = stalled_promotion()
        run(nodes, 200)
        leaders = [node for node in nodes.values() if node.role == LEADER]
        self.assertEqual(len(leaders), 1)
        leader = leaders[0]
        self.assertIn(leader.id, ("b", "c"))            # d led only until its term's entry committed
        self.assertEqual(leader.term_at(leader.commit), leader.term)
        self.assertEqual(leader.term_at(3), 2)          # d's log won: the promotion is gone
        self.assertEqual(leader.configuration, Configuration.of(["a", "b", "c"], ["d"]))


class WireAndStorageTests(unittest.TestCase):

    def test_the_edge_parser_takes_configuration_entries_and_refuses_bad_ones(self):
        good = {"index": 1, "term": 1, "command": None, "config": {"voters": ["a"], "learners": []}}
        self.assertEqual(parse_entry(dict(good)), good)
        for bad in ({"voters": [], "learners": []}, {"voters": ["b", "a"], "learners": []},
                    {"voters": ["a"], "learners": ["a"]}, {"voters": ["a"]}):
            with self.assertRaises(MessageError):
                parse_entry({**good, "config": bad})
        with self.assertRaises(MessageError):
            parse_message({"type": "raft.snapshot", "from": "a", "to": "b", "term": 1,
                           "snapshot": {"index": 1, "term": 1, "data": {}, "config": {"voters": []}}}, "a", "b")

    def test_file_storage_keeps_configuration_entries_and_snapshots(self):
        config = {"voters": ["a", "b"], "learners": ["c"]}
        with tempfile.TemporaryDirectory() as directory:
            storage = FileStorage(directory, fsync="never")
            storage.load()
            storage.save({"term": 1, "vote": None, "commit": 2},
                         [{"index": 1, "term": 1, "command": None},
                          {"index": 2, "term": 1, "command": None, "config": config}])
            storage.compact({"index": 1, "term": 1, "data": {}, "config": {"voters": ["a"], "learners": []}})
            storage.close()
            storage = FileStorage(directory, fsync="never")
            recovered = storage.load()
            storage.close()
        self.assertEqual(recovered.entries, [{"index": 2, "term": 1, "command": None, "config": config}])
        self.assertEqual(recovered.snapshot["config"], {"voters": ["a"], "learners": []})
        self.assertIsNone(recovered.discarded)
