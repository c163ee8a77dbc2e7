"""A Raft batch that asks for replies is answered with this peer's next
messages to its sender, once persisted: PeerService on a task.Clock."""
from __future__ import annotations

from tests.peer.test_failstop import PeerHarness, vote


def append(term: int = 1, index: int = 1) -> dict:
    return {"type": "raft.append", "from": "peer2", "to": "peer1", "term": term, "prev_index": index - 1,
            "prev_term": 0 if index == 1 else term, "entries": [{"index": index, "term": term, "command": None}],
            "commit": 0, "last_index": index, "epoch": None}


class RepliesTests(PeerHarness):

    def setUp(self):
        super().setUp()
        self.saved: list[list[int]] = []
        save = self.peer._storage.save

        def saving(hard_state, entries, snapshot):
            self.saved.append([e["index"] for e in entries])
            save(hard_state, entries, snapshot)
        self.peer._storage.save = saving

    def test_the_acknowledgement_is_the_answer_and_is_persisted_first(self):
        answer = self.peer.deliver_and_reply("peer2", [append()])
        self.assertNoResult(answer)
        self.clock.advance(0)
        messages = self.successResultOf(answer)
        self.assertEqual([(m["type"], m["to"], m["match"]) for m in messages], [("raft.append_reply", "peer2", 1)])
        self.assertEqual(self.saved, [[1]])
        self.assertEqual(self.sent, [])

    def test_messages_to_other_peers_go_through_the_transport(self):
        answer = self.peer.deliver_and_reply("peer3", [vote(**{"from": "peer3"})])
        self.peer.deliver("peer2", [vote(term=8)])  # a newer term: peer1 answers peer2 (not waiting) too
        self.clock.advance(0)
        self.assertEqual([(m["type"], m["to"]) for m in self.successResultOf(answer)],
                         [("raft.vote_reply", "peer3")])
        self.assertEqual([(m["type"], m["to"]) for m in self.sent], [("raft.vote_reply", "peer2")])

    def test_what_the_transport_still_queued_for_the_peer_goes_first_in_the_answer(self):
        self.peer._transport.send = type(self.peer._transport).send.__get__(self.peer._transport)
        self.peer._transport._in_flight["peer2"] = None  # a batch to peer2 is out: new ones queue
        self.peer._transport._directory.address = lambda peer: "127.0.0.1:1"
        queued = {"type": "raft.append_reply", "from": "peer1", "to": "peer2", "term": 0, "n": "queued"}
        self.peer._transport.send([queued])
        answer = self.peer.deliver_and_reply("peer2", [append()])
        self.clock.advance(0)
        self.assertEqual([m.get("n", m["type"]) for m in self.successResultOf(answer)],
                         ["queued", "raft.append_reply"])
        self.assertEqual(self.peer._transport.take("peer2"), [])

    def test_a_newer_batch_from_the_same_peer_takes_over_the_answer(self):
        older = self.peer.deliver_and_reply("peer2", [])
        newer = self.peer.deliver_and_reply("peer2", [append()])
        self.assertEqual(self.successResultOf(older), [])
        self.clock.advance(0)
        self.assertEqual([m["type"] for m in self.successResultOf(newer)], ["raft.append_reply"])

    def test_nothing_to_say_is_an_empty_answer(self):
        answer = self.peer.deliver_and_reply("peer2", [])
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(answer), [])

    def test_stopping_answers_what_waits(self):
        answer = self.peer.deliver_and_reply("peer2", [append()])
        self.peer.running = True
        self.peer.stopService()
        self.assertEqual(self.successResultOf(answer), [])
