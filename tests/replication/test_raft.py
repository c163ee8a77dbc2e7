"""RaftNode, one rule of Figure 2 (and of the thesis extensions) per test,
driven by hand-built message sequences."""
from __future__ import annotations

import random
import unittest

from twisted_exchange.replication.raft import (
    CANDIDATE, FOLLOWER, LEADER, PRE_CANDIDATE, RaftConfig, RaftNode,
)

CONFIG = RaftConfig(election_ticks=10, heartbeat_ticks=2)
PEERS = ["a", "b", "c"]


def log(*terms: int, start: int = 1) -> list[dict]:
    """Entries with the given terms from index ``start``; commands name their position."""
    return [{"index": start + i, "term": term, "command": {"at": start + i, "term": term}}
            for i, term in enumerate(terms)]


def make(node_id: str = "a", terms: tuple[int, ...] = (), term: int = 0, vote: str | None = None,
         commit: int = 0, snapshot: dict | None = None, seed: int = 0) -> RaftNode:
    start = snapshot["index"] + 1 if snapshot else 1
    return RaftNode(node_id, PEERS, random.Random(seed), CONFIG,
                    {"term": term, "vote": vote, "commit": commit}, snapshot, log(*terms, start=start))


def sent(node: RaftNode, kind: str | None = None) -> list[dict]:
    """The messages of the next ready() (of one type, if given)."""
    return [m for m in node.ready().messages if kind is None or m["type"] == kind]


def vote_request(term: int, last_index: int, last_term: int, sender: str = "b",
                 kind: str = "raft.vote") -> dict:
    return {"type": kind, "from": sender, "to": "a", "term": term,
            "last_index": last_index, "last_term": last_term}


def append(term: int, prev_index: int, prev_term: int, entries: list[dict], commit: int = 0,
           sender: str = "b", last_index: int | None = None, epoch: int | None = None) -> dict:
    """An AppendEntries; by default the leader's log ends with ``entries``."""
    return {"type": "raft.append", "from": sender, "to": "a", "term": term, "prev_index": prev_index,
            "prev_term": prev_term, "entries": entries, "commit": commit,
            "last_index": prev_index + len(entries) if last_index is None else last_index,
            "epoch": epoch}


def reply(sender: str, term: int, **fields) -> dict:
    return {"type": "raft.append_reply", "from": sender, "to": "a", "term": term, "epoch": None, **fields}


def elect(node: RaftNode) -> RaftNode:
    """Make ``node`` leader of the next term through a (pre-)vote from b."""
    while node.role == FOLLOWER:
        node.tick()
    node.step({"type": "raft.prevote_reply", "from": "b", "to": node.id, "term": node.term + 1,
               "granted": True})
    node.step({"type": "raft.vote_reply", "from": "b", "to": node.id, "term": node.term, "granted": True})
    assert node.role == LEADER
    return node


class ElectionTests(unittest.TestCase):

    def test_election_timeout_is_drawn_from_the_injected_rng_within_one_to_two_timeouts(self):
        timeouts = set()
        for seed in range(20):
            node = make(seed=seed)
            ticks = 0
            while node.role == FOLLOWER:
                node.tick()
                ticks += 1
            timeouts.add(ticks)
        self.assertTrue(all(10 <= t < 20 for t in timeouts), timeouts)
        self.assertGreater(len(timeouts), 3)

    def test_timeout_starts_a_pre_vote_that_does_not_change_the_term(self):
        node = make(terms=(1, 1), term=1)
        for _ in range(20):
            node.tick()
        self.assertEqual((node.role, node.term, node.vote), (PRE_CANDIDATE, 1, None))
        prevotes = sent(node, "raft.prevote")
        self.assertEqual(sorted(m["to"] for m in prevotes), ["b", "c"])
        self.assertEqual({(m["term"], m["last_index"], m["last_term"]) for m in prevotes}, {(2, 2, 1)})

    def test_majority_of_pre_votes_starts_a_real_election_with_a_persisted_self_vote(self):
        node = make(term=1)
        for _ in range(20):
            node.tick()
        node.ready()
        node.step({"type": "raft.prevote_reply", "from": "c", "to": "a", "term": 2, "granted": True})
        self.assertEqual((node.role, node.term, node.vote), (CANDIDATE, 2, "a"))
        ready = node.ready()
        self.assertEqual(ready.hard_state, {"term": 2, "vote": "a", "commit": 0})
        self.assertEqual(sorted(m["to"] for m in ready.messages if m["type"] == "raft.vote"), ["b", "c"])

    def test_candidate_with_majority_becomes_leader_and_appends_a_no_op(self):
        node = elect(make(terms=(1,), term=1))
        self.assertEqual(node.log[-1], {"index": 2, "term": 2, "command": None})
        appends = sent(node, "raft.append")
        self.assertEqual(sorted(m["to"] for m in appends), ["b", "c"])
        self.assertEqual(appends[0]["entries"], [{"index": 2, "term": 2, "command": None}])

    def test_majority_of_refusals_sends_candidate_back_to_follower(self):
        node = make(term=1)
        for _ in range(20):
            node.tick()
        node.step({"type": "raft.prevote_reply", "from": "b", "to": "a", "term": 1, "granted": False})
        self.assertEqual(node.role, PRE_CANDIDATE)
        node.step({"type": "raft.prevote_reply", "from": "c", "to": "a", "term": 1, "granted": False})
        self.assertEqual((node.role, node.term), (FOLLOWER, 1))

    def test_vote_is_granted_to_candidate_with_up_to_date_log_and_persisted(self):
        node = make(terms=(1, 2), term=2)
        node.step(vote_request(term=3, last_index=2, last_term=2))
        ready = node.ready()
        self.assertEqual(ready.hard_state, {"term": 3, "vote": "b", "commit": 0})
        self.assertEqual([(m["type"], m["granted"], m["term"]) for m in ready.messages],
                         [("raft.vote_reply", True, 3)])

    def test_vote_is_refused_to_candidate_with_stale_log(self):
        node = make(terms=(1, 2), term=2)
        node.step(vote_request(term=3, last_index=5, last_term=1))
        self.assertEqual([m["granted"] for m in sent(node)], [False])
        self.assertEqual((node.term, node.vote), (3, None))

    def test_vote_is_refused_to_candidate_with_shorter_log_of_the_same_last_term(self):
        node = make(terms=(1, 2, 2), term=2)
        node.step(vote_request(term=3, last_index=2, last_term=2))
        self.assertEqual([m["granted"] for m in sent(node)], [False])

    def test_only_one_vote_per_term_but_a_repeated_request_is_granted_again(self):
        node = make(term=1)
        node.step(vote_request(term=2, last_index=0, last_term=0, sender="b"))
        node.step(vote_request(term=2, last_index=0, last_term=0, sender="c"))
        node.step(vote_request(term=2, last_index=0, last_term=0, sender="b"))
        self.assertEqual([(m["to"], m["granted"]) for m in sent(node)],
                         [("b", True), ("c", False), ("b", True)])

    def test_vote_request_of_an_older_term_is_refused_with_the_current_term(self):
        node = make(term=5)
        node.step(vote_request(term=4, last_index=9, last_term=4))
        self.assertEqual([(m["granted"], m["term"]) for m in sent(node)], [(False, 5)])

    def test_pre_vote_is_granted_without_changing_term_or_vote(self):
        node = make(terms=(1,), term=1, vote="c")
        for _ in range(10):
            node.tick()   # no leader heard from: not in a lease
        node.step(vote_request(term=2, last_index=1, last_term=1, kind="raft.prevote"))
        self.assertEqual([(m["type"], m["granted"], m["term"]) for m in sent(node)],
                         [("raft.prevote_reply", True, 2)])
        self.assertEqual((node.term, node.vote), (1, "c"))

    def test_pre_vote_and_vote_are_ignored_while_a_leader_was_heard_from_recently(self):
        node = make(terms=(1,), term=1)
        node.step(append(term=1, prev_index=1, prev_term=1, entries=[]))
        node.ready()
        node.step(vote_request(term=2, last_index=1, last_term=1, sender="c", kind="raft.prevote"))
        node.step(vote_request(term=2, last_index=1, last_term=1, sender="c"))
        self.assertEqual(sent(node), [])
        self.assertEqual((node.term, node.leader), (1, "b"))

    def test_higher_term_in_any_message_turns_a_leader_into_follower(self):
        node = elect(make(term=1))
        node.ready()
        node.step(reply("c", term=7, success=False, reject_index=0, hint_index=1, hint_term=None))
        self.assertEqual((node.role, node.term, node.vote, node.leader), (FOLLOWER, 7, None, None))

    def test_leader_steps_down_when_it_hears_from_no_majority_for_an_election_timeout(self):
        node = elect(make(term=1))
        for _ in range(CONFIG.election_ticks):
            node.tick()
        self.assertEqual(node.role, FOLLOWER)

    def test_leader_that_hears_from_a_majority_keeps_leading(self):
        node = elect(make(term=1))
        for _ in range(CONFIG.election_ticks):
            node.step(reply("b", term=node.term, success=True, match=1))
            node.tick()
        self.assertEqual(node.role, LEADER)


class FollowerReplicationTests(unittest.TestCase):

    def test_append_from_current_leader_is_stored_and_acknowledged(self):
        node = make(terms=(1,), term=1)
        node.step(append(term=1, prev_index=1, prev_term=1, entries=log(1, 1, start=2), commit=1))
        ready = node.ready()
        self.assertEqual([e["index"] for e in ready.entries], [2, 3])
        self.assertEqual([(m["success"], m["match"]) for m in ready.messages], [(True, 3)])
        self.assertEqual(node.leader, "b")

    def test_append_from_an_older_term_is_refused_with_the_current_term(self):
        node = make(terms=(1,), term=2)
        node.step(append(term=1, prev_index=1, prev_term=1, entries=log(1, start=2)))
        self.assertEqual([(m["success"], m["term"]) for m in sent(node)], [(False, 2)])
        self.assertEqual(node.last_index, 1)

    def test_follower_rejects_append_past_its_log_and_hints_its_next_index(self):
        node = make(terms=(1, 1), term=1)
        node.step(append(term=1, prev_index=5, prev_term=1, entries=log(1, start=6)))
        message = sent(node)[0]
        self.assertEqual((message["success"], message["reject_index"], message["hint_index"],
                          message["hint_term"]), (False, 5, 3, None))

    def test_follower_rejects_mismatched_prev_and_hints_first_index_of_that_term(self):
        node = make(terms=(1, 2, 2, 2), term=3)
        node.step(append(term=3, prev_index=4, prev_term=3, entries=[]))
        message = sent(node)[0]
        self.assertEqual((message["success"], message["hint_index"], message["hint_term"]), (False, 2, 2))
        self.assertEqual(node.last_index, 4)

    def test_follower_truncates_conflicting_suffix(self):
        node = make(terms=(1, 1, 2, 2), term=3)
        node.ready()
        node.step(append(term=3, prev_index=2, prev_term=1, entries=log(3, start=3)))
        self.assertEqual([e["term"] for e in node.log], [1, 1, 3])
        ready = node.ready()
        self.assertEqual(ready.entries, log(3, start=3))
        self.assertEqual(ready.messages[0]["match"], 3)

    def test_follower_keeps_matching_entries_when_a_reordered_shorter_append_arrives(self):
        node = make(terms=(1,), term=1)
        node.step(append(term=1, prev_index=1, prev_term=1, entries=log(1, 1, start=2)))
        node.step(append(term=1, prev_index=1, prev_term=1, entries=log(1, start=2)))
        self.assertEqual(node.last_index, 3)
        self.assertEqual([m["match"] for m in sent(node)], [3, 2])

    def test_follower_commit_is_min_of_leader_commit_and_last_new_entry(self):
        node = make(terms=(1, 1, 1, 7), term=1)   # a stale entry at 4 the leader did not send
        node.step(append(term=1, prev_index=2, prev_term=1, entries=[], commit=4))
        self.assertEqual(node.commit, 2)
        node.step(append(term=1, prev_index=2, prev_term=1, entries=log(1, start=3), commit=9))
        self.assertEqual(node.commit, 3)
        self.assertEqual([e["index"] for e in node.ready().committed], [1, 2, 3])

    def test_committed_entries_are_handed_out_once_and_in_order(self):
        node = make(terms=(1, 1, 1), term=1)
        node.step(append(term=1, prev_index=3, prev_term=1, entries=[], commit=2))
        self.assertEqual([e["index"] for e in node.ready().committed], [1, 2])
        node.step(append(term=1, prev_index=3, prev_term=1, entries=[], commit=3))
        self.assertEqual([e["index"] for e in node.ready().committed], [3])
        self.assertEqual(node.ready().committed, [])

    def test_restarted_node_hands_out_entries_up_to_its_persisted_commit(self):
        snapshot = {"index": 2, "term": 1, "data": {}}
        node = make(terms=(1, 2, 2), term=2, commit=4, snapshot=snapshot)
        self.assertEqual([e["index"] for e in node.ready().committed], [3, 4])


class LeaderReplicationTests(unittest.TestCase):

    def test_proposals_between_two_ready_calls_go_out_as_one_append_per_follower(self):
        node = elect(make(term=1))
        node.ready()
        for n in range(5):
            node.propose({"n": n})
        appends = sent(node)
        self.assertEqual(sorted(m["to"] for m in appends), ["b", "c"])
        self.assertEqual([[e["command"]["n"] for e in m["entries"]] for m in appends],
                         [[0, 1, 2, 3, 4]] * 2)

    def test_a_lone_voter_commits_its_entries_with_no_reply_to_wait_for(self):
        node = RaftNode("a", ["a"], random.Random(0), CONFIG)
        while node.role != LEADER:
            node.tick()
        self.assertEqual([e["index"] for e in node.ready().committed], [1])  # its no-op
        node.propose({"n": 1})
        self.assertEqual([e["command"] for e in node.ready().committed], [{"n": 1}])

    def test_follower_does_not_accept_proposals(self):
        self.assertIsNone(make().propose({"n": 1}))

    def test_leader_commits_current_term_entry_once_a_majority_stores_it(self):
        node = elect(make(term=1))
        node.ready()
        node.step(reply("b", term=2, success=True, match=1))
        self.assertEqual(node.commit, 1)
        self.assertEqual([e["index"] for e in node.ready().committed], [1])

    def test_leader_does_not_commit_previous_term_entry_by_counting_replicas(self):
        node = elect(make(terms=(1, 2), term=2))   # leader of term 3; index 3 is its no-op
        node.ready()
        node.step(reply("b", term=3, success=True, match=2))
        self.assertEqual(node.commit, 0)
        node.step(reply("b", term=3, success=True, match=3))
        self.assertEqual(node.commit, 3)

    def test_leader_commit_advance_is_sent_to_followers_at_once(self):
        node = elect(make(term=1))
        node.ready()
        node.step(reply("b", term=2, success=True, match=1))
        self.assertEqual(sorted((m["to"], m["commit"]) for m in sent(node, "raft.append")),
                         [("b", 1), ("c", 1)])

    def test_leader_backtracks_with_conflict_term_hint(self):
        node = elect(make(terms=(1, 1, 1, 4, 4), term=4))   # no-op at 6
        node.ready()
        node.step(reply("b", term=5, success=False, reject_index=5, hint_index=3, hint_term=2))
        self.assertEqual([m["prev_index"] for m in sent(node, "raft.append") if m["to"] == "b"], [2])
        node.step(reply("c", term=5, success=False, reject_index=5, hint_index=2, hint_term=1))
        self.assertEqual([m["prev_index"] for m in sent(node, "raft.append") if m["to"] == "c"], [3])

    def test_leader_backtracks_to_follower_log_end_when_follower_is_short(self):
        node = elect(make(terms=(1, 1, 1, 1), term=1))
        node.ready()
        node.step(reply("b", term=2, success=False, reject_index=4, hint_index=2, hint_term=None))
        message = [m for m in sent(node, "raft.append") if m["to"] == "b"][0]
        self.assertEqual((message["prev_index"], [e["index"] for e in message["entries"]]), (1, [2, 3, 4, 5]))

    def test_stale_rejection_below_known_match_is_ignored(self):
        node = elect(make(terms=(1, 1), term=1))
        node.ready()
        node.step(reply("b", term=2, success=True, match=3))
        node.ready()
        node.step(reply("b", term=2, success=False, reject_index=1, hint_index=1, hint_term=None))
        self.assertEqual([m for m in sent(node, "raft.append") if m["to"] == "b"], [])

    def test_follower_that_lost_its_log_is_caught_up_again_from_its_log_end(self):
        node = elect(make(terms=(1, 1), term=1))
        node.ready()
        node.step(reply("b", term=2, success=True, match=3))
        node.ready()
        node.step(reply("b", term=2, success=False, reject_index=3, hint_index=1, hint_term=None))
        message = [m for m in sent(node, "raft.append") if m["to"] == "b"][0]
        self.assertEqual((message["prev_index"], [e["index"] for e in message["entries"]]), (0, [1, 2, 3]))

    def test_a_refusal_of_an_older_terms_append_arriving_late_says_nothing_about_the_log(self):
        # b refused an append of term 1 in its term 2; this node now leads term 2.
        node = elect(make(terms=(1, 1), term=1))
        node.ready()
        node.step(reply("b", term=2, success=False, reject_index=2, hint_index=0, hint_term=None))
        node.tick()
        node.tick()
        appends = [m for m in node.ready().messages if m["type"] == "raft.append" and m["to"] == "b"]
        self.assertEqual([m["prev_index"] for m in appends], [3])

    def test_wiped_follower_behind_the_compacted_log_gets_the_snapshot(self):
        snapshot = {"index": 3, "term": 1, "data": "state"}
        node = elect(make(terms=(1,), term=1, commit=4, snapshot=snapshot))
        node.ready()
        node.step(reply("b", term=2, success=True, match=5))
        node.ready()
        node.step(reply("b", term=2, success=False, reject_index=5, hint_index=1, hint_term=None))
        self.assertEqual([m["type"] for m in sent(node) if m["to"] == "b"], ["raft.snapshot"])

    def test_heartbeats_go_out_every_heartbeat_interval(self):
        node = elect(make(term=1))
        node.ready()
        node.step(reply("b", term=2, success=True, match=1))
        node.step(reply("c", term=2, success=True, match=1))
        node.ready()
        node.tick()
        self.assertEqual(sent(node), [])
        node.tick()
        self.assertEqual(sorted((m["to"], m["entries"]) for m in sent(node)), [("b", []), ("c", [])])


class SendFirstTests(unittest.TestCase):
    """Which ready batches' messages may leave before the batch is persisted
    (RaftReady.send_first, thesis 10.2.1)."""

    def test_a_leaders_appends_of_new_entries_may_leave_before_its_write(self):
        node = elect(make(term=1))
        node.ready()
        node.step(reply("b", term=2, success=True, match=1))
        node.ready()
        node.propose({"n": 1})
        ready = node.ready()
        self.assertEqual([e["index"] for e in ready.entries], [2])
        self.assertEqual(sorted((m["type"], m["to"], m["commit"]) for m in ready.messages),
                         [("raft.append", "b", 1), ("raft.append", "c", 1)])
        self.assertTrue(ready.send_first)

    def test_acknowledgements_wait_for_the_write(self):
        node = make()
        node.step(append(1, 0, 0, log(1)))
        ready = node.ready()
        self.assertEqual([m["type"] for m in ready.messages], ["raft.append_reply"])
        self.assertFalse(ready.send_first)

    def test_vote_requests_and_a_new_leaders_first_batch_wait_for_the_write_of_the_term(self):
        node = make()
        while node.role != PRE_CANDIDATE:
            node.tick()
        node.ready()
        node.step({"type": "raft.prevote_reply", "from": "b", "to": "a", "term": 1, "granted": True})
        ready = node.ready()
        self.assertEqual(({m["type"] for m in ready.messages}, ready.hard_state["vote"]), ({"raft.vote"}, "a"))
        self.assertFalse(ready.send_first)
        node.step({"type": "raft.vote_reply", "from": "b", "to": "a", "term": 1, "granted": True})
        self.assertEqual(node.role, LEADER)
        self.assertTrue(node.ready().send_first)  # term and vote were written with the vote requests

    def test_a_single_voter_commits_at_once_so_its_appends_to_a_learner_wait(self):
        node = RaftNode("a", ["a"], random.Random(0), CONFIG)
        while node.role != LEADER:
            node.tick()
        node.ready()  # commits its no-op at once
        node.propose_configuration("add", "l")
        node.ready()
        node.propose({"n": 1})
        ready = node.ready()
        self.assertEqual(node.commit, ready.entries[-1]["index"])
        self.assertEqual({(m["type"], m["to"]) for m in ready.messages}, {("raft.append", "l")})
        self.assertFalse(ready.send_first)


class SnapshotTests(unittest.TestCase):

    def test_compaction_drops_applied_entries_and_keeps_terms_reachable(self):
        node = make(terms=(1, 1, 2), term=2)
        node.step(append(term=2, prev_index=3, prev_term=2, entries=[], commit=3))
        node.ready()
        dropped = node.compact({"index": 2, "term": 1, "data": "state"})
        self.assertEqual([entry["index"] for entry in dropped], [1, 2])
        self.assertEqual([entry["index"] for entry in node.log], [3])
        self.assertEqual((node.snap_index, node.term_at(2), node.term_at(3), node.term_at(1)), (2, 1, 2, None))
        with self.assertRaises(ValueError):
            node.compact({"index": 4, "term": 2, "data": "beyond applied"})

    def test_leader_sends_snapshot_to_follower_behind_compacted_log(self):
        snapshot = {"index": 3, "term": 1, "data": "state"}
        node = elect(make(terms=(1,), term=1, commit=4, snapshot=snapshot))
        node.ready()
        node.step(reply("b", term=2, success=False, reject_index=4, hint_index=2, hint_term=None))
        messages = [m for m in sent(node) if m["to"] == "b"]
        self.assertEqual([(m["type"], m["snapshot"]) for m in messages], [("raft.snapshot", snapshot)])
        self.assertEqual([m for m in sent(node) if m["to"] == "b"], [])   # not resent while in flight
        node.step({"type": "raft.snapshot_reply", "from": "b", "to": "a", "term": 2, "match": 3})
        message = [m for m in sent(node) if m["to"] == "b"][0]
        self.assertEqual((message["type"], message["prev_index"]), ("raft.append", 3))

    def test_follower_installs_snapshot_and_discards_a_conflicting_log(self):
        node = make(terms=(1, 1, 2), term=2)
        snapshot = {"index": 5, "term": 3, "data": "state"}
        node.step({"type": "raft.snapshot", "from": "b", "to": "a", "term": 3, "snapshot": snapshot})
        ready = node.ready()
        self.assertEqual((ready.snapshot, node.last_index, node.commit, node.log), (snapshot, 5, 5, []))
        self.assertEqual([(m["type"], m["match"]) for m in ready.messages], [("raft.snapshot_reply", 5)])
        self.assertEqual(ready.committed, [])

    def test_entries_after_a_snapshot_that_replaced_a_longer_conflicting_log_are_persisted_again(self):
        node = make(terms=(1, 1, 2, 2), term=2)   # entries 1..4 stored (handed out by the last ready)
        node.ready()
        node.step({"type": "raft.snapshot", "from": "b", "to": "a", "term": 3,
                   "snapshot": {"index": 3, "term": 3, "data": "state"}})   # 3's term differs: log dropped
        node.step(append(term=3, prev_index=3, prev_term=3, entries=log(3, 3, start=4)))
        ready = node.ready()
        self.assertEqual([e["index"] for e in ready.entries], [4, 5])   # 4 too: storage dropped its 4

    def test_follower_keeps_log_suffix_after_a_matching_snapshot(self):
        node = make(terms=(1, 1, 2), term=2)
        node.step({"type": "raft.snapshot", "from": "b", "to": "a", "term": 2,
                   "snapshot": {"index": 2, "term": 1, "data": "state"}})
        self.assertEqual((node.snap_index, [e["index"] for e in node.log]), (2, [3]))

    def test_snapshot_not_beyond_commit_is_acknowledged_without_change(self):
        node = make(terms=(1, 1, 1), term=1)
        node.step(append(term=1, prev_index=3, prev_term=1, entries=[], commit=3))
        node.ready()
        node.step({"type": "raft.snapshot", "from": "b", "to": "a", "term": 1,
                   "snapshot": {"index": 2, "term": 1, "data": "state"}})
        ready = node.ready()
        self.assertIsNone(ready.snapshot)
        self.assertEqual([m["match"] for m in ready.messages], [3])
        self.assertEqual(node.last_index, 3)


def abstaining(terms: tuple[int, ...] = (1, 2), term: int = 3, until: int = 3) -> RaftNode:
    """A node that discarded damaged data at ``term``: its hard state says so."""
    return RaftNode("a", PEERS, random.Random(0), CONFIG,
                    {"term": term, "vote": None, "commit": 0, "abstain_until_term": until},
                    None, log(*terms))


def idle(node: RaftNode) -> RaftNode:
    """Let the node's election timeout pass (it then hears from no leader)."""
    for _ in range(2 * CONFIG.election_ticks):
        node.tick()
    return node


class AbstentionTests(unittest.TestCase):
    """After discarding damaged data, no vote until caught up by a later leader."""

    def test_abstaining_node_refuses_votes_and_pre_votes_to_an_up_to_date_candidate(self):
        node = idle(abstaining())
        node.step(vote_request(term=4, last_index=9, last_term=3, kind="raft.prevote"))
        node.step(vote_request(term=4, last_index=9, last_term=3))
        self.assertEqual([(m["type"], m["granted"]) for m in sent(node)],
                         [("raft.prevote_reply", False), ("raft.vote_reply", False)])
        self.assertEqual((node.term, node.vote), (4, None))

    def test_abstaining_node_does_not_campaign_and_forgets_a_silent_leader(self):
        node = abstaining()
        node.step(append(term=3, prev_index=2, prev_term=2, entries=[], last_index=5))
        idle(node)
        self.assertEqual((node.role, node.term, node.leader), (FOLLOWER, 3, None))
        self.assertEqual([m for m in sent(node) if m["type"] != "raft.append_reply"], [])

    def test_abstention_is_persisted_with_the_hard_state(self):
        node = abstaining()
        node.step(vote_request(term=4, last_index=9, last_term=3))
        self.assertEqual(node.ready().hard_state,
                         {"term": 4, "vote": None, "commit": 0, "abstain_until_term": 3})

    def test_entries_of_the_abstention_term_do_not_end_it_while_the_leader_holds_more(self):
        node = abstaining()
        node.step(append(term=3, prev_index=2, prev_term=2, entries=log(3, start=3), commit=3,
                         last_index=9))
        idle(node)
        node.step(vote_request(term=4, last_index=9, last_term=3))
        self.assertEqual([m["granted"] for m in sent(node, "raft.vote_reply")], [False])

    def test_holding_all_of_the_leaders_log_as_sent_after_the_restart_ends_it_without_an_election(self):
        node = abstaining()
        node.step(append(term=3, prev_index=2, prev_term=2, entries=log(3, start=3), last_index=4))
        epoch = sent(node, "raft.append_reply")[0]["epoch"]
        self.assertIsInstance(epoch, int)
        self.assertEqual(node.abstain_until_term, 3)
        node.step(append(term=3, prev_index=3, prev_term=3, entries=log(3, start=4), commit=4, epoch=epoch))
        self.assertIsNone(node.abstain_until_term)
        ready = node.ready()
        self.assertEqual(ready.hard_state, {"term": 3, "vote": None, "commit": 4})
        self.assertEqual([m["epoch"] for m in ready.messages], [None])

    def test_an_append_sent_before_the_restart_does_not_end_it_however_complete(self):
        # Queued before the crash, it can end below entries acknowledged later.
        node = abstaining()
        node.step(append(term=3, prev_index=2, prev_term=2, entries=log(3, start=3)))
        node.step(append(term=3, prev_index=2, prev_term=2, entries=log(3, start=3), epoch=12345))
        self.assertEqual(node.abstain_until_term, 3)

    def test_a_restart_while_abstaining_draws_a_new_epoch(self):
        first, second = abstaining(), RaftNode("a", PEERS, random.Random(1), CONFIG,
                                               {"term": 3, "vote": None, "commit": 0,
                                                "abstain_until_term": 3}, None, log(1, 2))
        self.assertNotEqual(first.epoch, second.epoch)
        self.assertIsNone(elect(RaftNode("a", PEERS, random.Random(0), CONFIG)).epoch)

    def test_the_leader_echoes_the_epoch_each_follower_last_sent(self):
        node = elect(RaftNode("a", PEERS, random.Random(0), CONFIG))
        node.step(reply("b", node.term, success=False, reject_index=1, hint_index=1, hint_term=None,
                        epoch=77))
        node.ready()
        node.tick()
        node.tick()
        appends = {m["to"]: m["epoch"] for m in node.ready().messages if m["type"] == "raft.append"}
        self.assertEqual(appends, {"b": 77, "c": None})

    def test_an_entry_from_a_leader_of_a_later_term_ends_it_and_votes_resume(self):
        node = abstaining()
        node.step(append(term=4, prev_index=2, prev_term=2, entries=log(4, start=3), commit=2))
        ready = node.ready()
        self.assertEqual(ready.hard_state, {"term": 4, "vote": None, "commit": 2})
        idle(node)
        self.assertEqual(node.role, PRE_CANDIDATE)
        node.step(vote_request(term=5, last_index=3, last_term=4, sender="c"))
        self.assertEqual([m["granted"] for m in sent(node, "raft.vote_reply")], [True])

    def test_a_heartbeat_from_a_later_leader_alone_does_not_end_it(self):
        node = abstaining()
        node.step(append(term=4, prev_index=2, prev_term=2, entries=[], commit=2, last_index=3))
        self.assertEqual(node.abstain_until_term, 3)

    def test_a_snapshot_of_a_later_term_ends_it(self):
        node = abstaining()
        node.step({"type": "raft.snapshot", "from": "b", "to": "a", "term": 5,
                   "snapshot": {"index": 7, "term": 4, "data": "state"}})
        self.assertIsNone(node.abstain_until_term)

    def test_a_log_already_past_the_abstention_term_votes_at_once(self):
        node = abstaining(terms=(1, 4), term=4, until=3)
        self.assertEqual(node.ready().hard_state, {"term": 4, "vote": None, "commit": 0})
        node.step(vote_request(term=5, last_index=2, last_term=4))
        self.assertEqual([m["granted"] for m in sent(node)], [True])
