"""The Raft message parser: what nodes send parses; anything else is refused."""
from __future__ import annotations

import json
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.replication.test_replica import Cluster, order
from twisted_exchange.replication.messages import MAX_ENTRIES, MessageError, parse_message


def append(**overrides) -> dict:
    message = {"type": "raft.append", "from": "a", "to": "b", "term": 3, "prev_index": 4,
               "prev_term": 2, "commit": 4, "last_index": 6, "epoch": None,
               "entries": [{"index": 5, "term": 2, "command": None},
                           {"index": 6, "term": 3, "command": order("alice", "r1")}]}
    message.update(overrides)
    return message


def refusal(message, sender: str = "a", receiver: str = "b") -> str:
    with unittest.TestCase().assertRaises(MessageError) as caught:
        parse_message(message, sender, receiver)
    return str(caught.exception)


class ParseMessageTests(unittest.TestCase):
    def test_every_message_a_cluster_sends_parses_after_a_json_round_trip(self):
        cluster = Cluster()
        sent = []
        cluster.drop = lambda message: sent.append(message) and False
        leader = cluster.leader()
        follower = next(i for i in cluster.ids if i != leader)
        for n in range(5):
            cluster.replicas[follower].propose(order("bob", f"r{n}"))
            cluster.tick()
        kinds = set()
        for message in sent:
            wire = json.loads(json.dumps(message, allow_nan=False))
            parse_message(wire, message["from"], message["to"])
            kinds.add(message["type"])
        self.assertLessEqual({"raft.append", "raft.append_reply", "raft.forward"}, kinds)

    def test_a_well_formed_append_parses_to_itself(self):
        self.assertEqual(parse_message(append(), "a", "b"), append())

    def test_missing_or_unknown_fields_are_refused(self):
        message = append()
        del message["prev_index"]
        self.assertIn("missing ['prev_index']", refusal(message))
        self.assertIn("unknown ['x']", refusal(append(x=1)))

    def test_numbers_must_be_ints_in_range(self):
        for bad in (True, 1.0, float("inf"), -1, 2**63, "4", None):
            refusal(append(commit=bad))
            refusal(append(term=bad))

    def test_sender_and_receiver_are_the_batch_ones(self):
        self.assertIn("claims to come from", refusal(append(), sender="c"))
        self.assertIn("is for", refusal(append(), receiver="c"))

    def test_entries_must_be_contiguous_after_prev_index_with_sane_terms(self):
        entries = append()["entries"]
        refusal(append(entries=entries[::-1]))
        refusal(append(entries=[{"index": 5, "term": 1, "command": None}]))   # below prev_term
        refusal(append(entries=[{"index": 5, "term": 4, "command": None}]))   # above message term
        refusal(append(entries=[{"index": 5, "term": 2}]))
        refusal(append(entries=[{"index": 5, "term": 2, "command": None}] * (MAX_ENTRIES + 1)))
        self.assertIn("last_index is below", refusal(append(last_index=5)))

    def test_entries_carrying_a_command_that_is_not_canonical_are_refused(self):
        poisoned = dict(order("alice", "r1"), quantity=1e999)
        self.assertIn("command refused",
                      refusal(append(entries=[{"index": 5, "term": 2, "command": poisoned}])))
        nested = dict(order("alice", "r1"), extra={"x": [[[[1]]]]})
        refusal({"type": "raft.forward", "from": "a", "to": "b", "term": 3, "command": nested})

    def test_append_reply_fields_depend_on_success(self):
        ok = {"type": "raft.append_reply", "from": "a", "to": "b", "term": 1, "success": True, "match": 3,
              "epoch": 9}
        self.assertEqual(parse_message(ok, "a", "b"), ok)
        refusal(dict(ok, success=False))
        refusal(dict(ok, success=1))
        failed = {"type": "raft.append_reply", "from": "a", "to": "b", "term": 1, "success": False,
                  "reject_index": 3, "hint_index": 2, "hint_term": None, "epoch": None}
        self.assertEqual(parse_message(failed, "a", "b"), failed)
        refusal(dict(failed, hint_term="1"))
        refusal(dict(failed, epoch=-1))
        refusal(dict(ok, epoch="9"))

    def test_snapshot_must_carry_index_term_and_object_data(self):
        snapshot = {"type": "raft.snapshot", "from": "a", "to": "b", "term": 2,
                    "snapshot": {"index": 3, "term": 2, "data": {}}}
        self.assertEqual(parse_message(snapshot, "a", "b"), snapshot)
        refusal(dict(snapshot, snapshot={"index": 3, "term": 2, "data": []}))
        refusal(dict(snapshot, snapshot={"index": 3, "term": 2}))

    @settings(max_examples=300, deadline=None)
    @given(st.dictionaries(st.sampled_from(sorted(append())) | st.text(max_size=3),
                           st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                                        | st.text(max_size=5),
                                        lambda inner: st.lists(inner, max_size=3)
                                        | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                                        max_leaves=8)))
    def test_whatever_arrives_is_refused_or_is_a_message_that_encodes(self, value):
        message = dict(append(), **value)
        try:
            parsed = parse_message(message, "a", "b")
        except MessageError:
            return
        json.dumps(parsed, allow_nan=False)
        self.assertEqual(set(parsed), set(append()))
