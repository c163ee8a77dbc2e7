"""PeerService at its edges, on a task.Clock: parsed delivery, fail-stop, health.

No sockets: the service is built but not started, and its loop is driven
by hand, so each test is one event and what it must (not) change.
"""
from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from twisted_exchange.peer import membership
from twisted_exchange.peer.service import PROBE_SECONDS, STALL_SECONDS, TICK_SECONDS, PeerService
from twisted_exchange.replication.replica import ReplicationError

PEERS = ["peer1", "peer2", "peer3"]


def vote(**overrides) -> dict:
    message = {"type": "raft.vote", "from": "peer2", "to": "peer1", "term": 7,
               "last_index": 0, "last_term": 0}
    message.update(overrides)
    return message


class PeerHarness(SynchronousTestCase):
    """peer1 of three on a task.Clock, its sends captured in ``self.sent``."""

    def setUp(self):
        self.clock = task.Clock()
        self.data_dir = tempfile.mkdtemp(prefix="tx-failstop-")
        self.addCleanup(shutil.rmtree, self.data_dir, True)
        self.stops: list[str] = []
        self.peer = PeerService("peer1", PEERS, ["http://127.0.0.1:1"], self.data_dir,
                                fsync="never", reactor=self.clock, seed=1,
                                fail_stop=self.stops.append)
        self.addCleanup(self.peer._storage.close)
        self.sent: list[dict] = []
        self.peer._transport.send = self.sent.extend


class PeerEdgeTests(PeerHarness):

    def test_a_malformed_message_with_a_higher_term_changes_nothing(self):
        malformed = {"type": "raft.append", "from": "peer2", "to": "peer1", "term": 9,
                     "prev_term": 0, "entries": [], "commit": 0}   # no prev_index
        self.peer.deliver("peer2", [malformed, vote(term=float("inf")), vote(granted=True), "x"])
        self.clock.advance(0)
        node = self.peer.replica.node
        self.assertEqual((node.term, node.leader, node.vote), (0, None, None))
        self.assertEqual(self.sent, [])
        self.assertEqual(self.stops, [])

    def test_a_batch_from_itself_is_dropped(self):
        self.peer.deliver("peer1", [vote(**{"from": "peer1"})])
        self.clock.advance(0)
        self.assertEqual(self.peer.replica.node.term, 0)

    def test_a_vote_request_from_a_server_its_configuration_does_not_name_yet_is_judged(self):
        # Raft thesis 4.1: a new server may campaign before its configuration reaches
        # this peer (who may send at all is the certificate's business, in secure mode).
        self.peer.deliver("peer4", [vote(**{"from": "peer4"})])
        self.clock.advance(0)
        self.assertEqual(self.peer.replica.node.term, vote()["term"])

    def test_a_message_claiming_another_sender_is_dropped(self):
        self.peer.deliver("peer3", [vote()])
        self.clock.advance(0)
        self.assertEqual(self.peer.replica.node.term, 0)

    def test_a_well_formed_vote_is_stepped_and_answered(self):
        self.peer.deliver("peer2", [vote()])
        self.clock.advance(0)
        self.assertEqual(self.peer.replica.node.term, 7)
        self.assertEqual([(m["type"], m["granted"]) for m in self.sent], [("raft.vote_reply", True)])

    def test_the_sender_of_a_stepped_message_is_remembered_durably_and_of_a_dropped_one_not(self):
        self.peer.deliver("peer3", [vote(), "x"])   # claims peer2 as sender: dropped
        self.peer.deliver("peer2", [vote()])
        self.assertEqual(self.peer.status()["heard"], ["peer2"])
        self.assertEqual(list(membership.Heard(self.data_dir)), ["peer2"])

    def test_a_snapshot_whose_data_does_not_restore_is_dropped(self):
        bad = {"type": "raft.snapshot", "from": "peer2", "to": "peer1", "term": 3,
               "snapshot": {"index": 5, "term": 3, "data": {"applied": 5}}}
        self.peer.deliver("peer2", [bad])
        self.clock.advance(0)
        self.assertEqual((self.peer.replica.node.term, self.peer.replica.node.snap_index), (0, 0))

    def test_a_failed_write_stops_the_peer_before_anything_is_sent(self):
        def full_disk(*args):
            raise OSError(28, "No space left on device")
        self.peer._storage.save = full_disk
        self.peer.deliver("peer2", [vote()])
        self.clock.advance(0)
        self.assertEqual(len(self.stops), 1)
        self.assertTrue(self.stops[0].startswith("fail-stop: peer1 _flush failed: "), self.stops)
        self.assertIn("No space left on device", self.stops[0])
        self.assertEqual(self.sent, [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_an_exception_in_the_tick_loop_stops_the_peer_once(self):
        def broken():
            raise RuntimeError("bug")
        self.peer.replica.tick = broken
        self.peer._loop(self.peer._tick, TICK_SECONDS)
        self.clock.advance(TICK_SECONDS * 3)
        self.assertEqual(self.stops, ["fail-stop: peer1 _tick loop failed: bug"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_nothing_is_flushed_after_a_fail_stop(self):
        self.peer.replica.tick = lambda: 1 / 0
        self.peer._loop(self.peer._tick, TICK_SECONDS)
        self.peer.deliver("peer2", [vote()])
        self.clock.advance(0)
        self.assertEqual(len(self.stops), 1)
        self.assertEqual(self.sent, [])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_an_unwritable_data_directory_is_found_by_the_probe(self):
        self.peer._loop(self.peer._probe_storage, PROBE_SECONDS)
        self.assertEqual(self.stops, [])
        shutil.rmtree(self.data_dir)
        self.clock.advance(PROBE_SECONDS)
        self.assertEqual(len(self.stops), 1)
        self.assertIn("_probe_storage loop failed", self.stops[0])
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "probe.tmp")))
        self.assertEqual(len(self.flushLoggedErrors(FileNotFoundError)), 1)

    def test_health_names_a_stalled_loop_and_a_missing_leader(self):
        self.assertEqual(self.peer.health(), {"ok": False, "problems": ["tick loop stalled",
                                                                         "no leader known"]})
        self.peer._loop(self.peer._tick, TICK_SECONDS)
        self.peer.replica.node.leader = "peer2"
        self.assertEqual(self.peer.health(), {"ok": True, "problems": []})
        self.peer._loops[0].stop()
        self.clock.advance(STALL_SECONDS + TICK_SECONDS)
        self.assertEqual(self.peer.health()["problems"], ["tick loop stalled"])

    def test_health_names_a_peer_that_abstains_from_votes_after_discarding_data(self):
        self.peer._loop(self.peer._tick, TICK_SECONDS)
        self.peer.replica.node.leader = "peer2"
        self.peer.replica.node.abstain_until_term = 3
        health = self.peer.health()
        self.assertFalse(health["ok"])
        self.assertEqual(health["problems"], ["not voting until a leader after term 3 catches it up "
                                              "(damaged data discarded)"])

    def test_a_bug_in_propose_stops_the_peer_but_a_refusal_does_not(self):
        with self.assertRaises(ReplicationError):
            self.peer.propose({"action": "submit", "quantity": 1e999})
        self.assertEqual(self.stops, [])
        self.peer.replica.propose = lambda command: {}["missing"]
        with self.assertRaises(KeyError):
            self.peer.propose({"action": "cancel"})
        self.assertEqual(len(self.stops), 1)
        self.assertTrue(self.stops[0].startswith("fail-stop: peer1 propose failed"), self.stops)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
