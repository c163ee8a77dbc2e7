"""PeerDirectory and RaftTransport: stale addresses, dead peers, batching."""
import os
import random
import shutil
import tempfile

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from twisted_exchange.grenache import GrenacheError
from twisted_exchange.peer.directory import PROVEN, PeerDirectory, ProvenFile
from twisted_exchange.peer.service import announcing_links
from twisted_exchange.peer.protocol import MAX_BATCH
from twisted_exchange.peer.transport import MAX_QUEUED, RaftTransport
from twisted_exchange.pki import Identity


class FakeLink:
    grape_url = "http://127.0.0.1:1"

    def __init__(self, found: dict[str, list[str]], down: bool = False):
        self.found = found
        self.down = down

    def lookup(self, name):
        if self.down:
            return defer.fail(GrenacheError("ERR_REQUEST_GENERIC", "connection refused"))
        if not self.found.get(name):
            return defer.fail(GrenacheError("ERR_GRAPE_LOOKUP_EMPTY"))
        return defer.succeed(list(self.found[name]))


class FakeClient:
    """Records calls; each call's Deferred is fired by the test."""

    def __init__(self):
        self.calls = []
        self.expected = []
        self.cancelled = []

    def request_to(self, dest, key, payload, timeout=None, expect=None):
        d = defer.Deferred(lambda d: self.cancelled.append(dest))
        self.calls.append((dest, key, payload, d))
        self.expected.append(expect)
        return d


def message(to: str, n: int) -> dict:
    return {"type": "raft.append", "from": "peer1", "to": to, "term": 1, "n": n}


class PeerDirectoryTests(SynchronousTestCase):
    def test_unknown_peer_has_no_address_until_the_grape_lists_it(self):
        link = FakeLink({})
        directory = PeerDirectory([link], ["peer2"])
        self.successResultOf(directory.refresh())
        self.assertIsNone(directory.address("peer2"))
        link.found["exchange:peer2"] = ["127.0.0.1:5002"]
        self.successResultOf(directory.refresh())
        self.assertEqual(directory.address("peer2"), "127.0.0.1:5002")

    def test_peer_is_found_on_the_next_grape_when_the_first_is_down_or_empty(self):
        listed = {"exchange:peer2": ["127.0.0.1:5002"]}
        for first in (FakeLink(listed, down=True), FakeLink({})):
            directory = PeerDirectory([first, FakeLink(listed)], ["peer2"])
            self.successResultOf(directory.refresh())
            self.assertEqual(directory.address("peer2"), "127.0.0.1:5002")

    def test_failed_address_rotates_to_the_next_candidate_and_back(self):
        link = FakeLink({"exchange:peer2": ["127.0.0.1:1111", "127.0.0.1:2222"]})
        directory = PeerDirectory([link], ["peer2"])
        self.successResultOf(directory.refresh())
        first = directory.address("peer2")
        directory.failed("peer2", first)
        self.assertNotEqual(directory.address("peer2"), first)
        directory.failed("peer2", directory.address("peer2"))
        self.assertEqual(directory.address("peer2"), first)

    def test_working_address_stays_preferred_across_refreshes(self):
        link = FakeLink({"exchange:peer2": ["127.0.0.1:1111", "127.0.0.1:2222"]})
        directory = PeerDirectory([link], ["peer2"])
        self.successResultOf(directory.refresh())
        directory.failed("peer2", "127.0.0.1:1111")
        self.successResultOf(directory.refresh())
        self.assertEqual(directory.address("peer2"), "127.0.0.1:2222")

    def test_address_answering_as_another_peer_is_forgotten(self):
        link = FakeLink({"exchange:peer2": ["127.0.0.1:1111", "127.0.0.1:2222"]})
        directory = PeerDirectory([link], ["peer2"])
        self.successResultOf(directory.refresh())
        directory.forget("peer2", "127.0.0.1:1111")
        self.assertEqual(directory.address("peer2"), "127.0.0.1:2222")

    def test_a_restarted_peers_new_address_goes_before_its_old_ones_that_failed(self):
        for seed in range(20):  # whatever the shuffle
            listed = {"exchange:peer2": ["127.0.0.1:1111", "127.0.0.1:2222"]}
            directory = PeerDirectory([FakeLink(listed)], ["peer2"], rng=random.Random(seed))
            self.successResultOf(directory.refresh())
            for _ in range(2):  # the peer is gone from both
                directory.failed("peer2", directory.address("peer2"))
            listed["exchange:peer2"].append("127.0.0.1:3333")  # and back at a new address
            self.successResultOf(directory.refresh())
            self.assertEqual(directory.address("peer2"), "127.0.0.1:3333")

    def test_an_address_that_answers_again_is_no_longer_put_last(self):
        listed = {"exchange:peer2": ["127.0.0.1:1111"]}
        directory = PeerDirectory([FakeLink(listed)], ["peer2"], rng=random.Random(0))
        self.successResultOf(directory.refresh())
        directory.failed("peer2", "127.0.0.1:1111")
        directory.answered("peer2", "127.0.0.1:1111")  # it was back
        listed["exchange:peer2"].append("127.0.0.1:2222")
        self.successResultOf(directory.refresh())
        self.assertEqual(directory.address("peer2"), "127.0.0.1:1111")  # the one that answered

    def test_the_address_that_answered_stays_first_when_a_flood_of_fakes_hides_it(self):
        listed = {"exchange:peer2": ["127.0.0.1:5002"]}
        directory = PeerDirectory([FakeLink(listed)], ["peer2"], rng=random.Random(0))
        self.successResultOf(directory.refresh())
        directory.answered("peer2", "127.0.0.1:5002")
        listed["exchange:peer2"] = [f"10.0.0.{n}:1" for n in range(100)]  # the grape's 100, all fake
        self.successResultOf(directory.refresh())
        self.assertEqual(directory.address("peer2"), "127.0.0.1:5002")

    def test_while_the_proven_address_fails_calls_alternate_with_the_others_until_one_answers(self):
        listed = {"exchange:peer2": ["127.0.0.1:5002"]}
        directory = PeerDirectory([FakeLink(listed)], ["peer2"], rng=random.Random(0))
        self.successResultOf(directory.refresh())
        directory.answered("peer2", "127.0.0.1:5002")
        listed["exchange:peer2"] = ["10.0.0.1:1", "10.0.0.2:1", "127.0.0.1:6002"]  # the peer moved
        self.successResultOf(directory.refresh())
        tried = []
        for _ in range(6):
            address = directory.address("peer2")
            tried.append(address)
            if address == "127.0.0.1:6002":
                directory.answered("peer2", address)
                break
            directory.failed("peer2", address)
        self.assertEqual(tried[0::2][:len(tried[1::2])], ["127.0.0.1:5002"] * len(tried[1::2]))
        self.assertEqual(tried[-1], "127.0.0.1:6002")
        self.successResultOf(directory.refresh())
        self.assertEqual(directory.address("peer2"), "127.0.0.1:6002")

    def test_an_address_that_answered_as_another_peer_loses_its_place(self):
        listed = {"exchange:peer2": ["127.0.0.1:5002", "127.0.0.1:6002"]}
        directory = PeerDirectory([FakeLink(listed)], ["peer2"], rng=random.Random(0))
        self.successResultOf(directory.refresh())
        directory.answered("peer2", "127.0.0.1:5002")
        directory.forget("peer2", "127.0.0.1:5002")
        listed["exchange:peer2"] = ["127.0.0.1:6002"]
        self.successResultOf(directory.refresh())
        self.assertEqual(directory._candidates["peer2"], ["127.0.0.1:6002"])

    def test_where_a_peer_says_it_serves_comes_first_until_a_call_there_settles_it(self):
        listed = {"exchange:peer2": [f"10.0.0.{n}:1" for n in range(100)]}  # a flood of fakes
        directory = PeerDirectory([FakeLink(listed)], ["peer2"], rng=random.Random(0),
                                  proven={"peer2": "127.0.0.1:5002"})
        directory.claimed("peer2", "127.0.0.1:6002")  # it moved, and says so
        self.successResultOf(directory.refresh())
        self.assertEqual(directory._candidates["peer2"][:2], ["127.0.0.1:6002", "127.0.0.1:5002"])
        directory.answered("peer2", "127.0.0.1:6002")
        self.successResultOf(directory.refresh())
        self.assertEqual(directory._candidates["peer2"][0], "127.0.0.1:6002")  # proven now, claim or not
        directory.claimed("peer2", "127.0.0.1:7002")
        directory.failed("peer2", "127.0.0.1:7002")  # a claim that a call refutes ends
        self.successResultOf(directory.refresh())
        self.assertEqual(directory._candidates["peer2"][0], "127.0.0.1:6002")
        self.assertNotIn("127.0.0.1:7002", directory._candidates["peer2"])

    def test_a_peer_that_says_where_it_serves_is_tracked_from_then_on(self):
        directory = PeerDirectory([FakeLink({}, down=True)], ["peer2"])
        directory.claimed("peer4", "127.0.0.1:5004")  # a member added since the start
        self.assertEqual(directory.known(), {"peer2": None, "peer4": "127.0.0.1:5004"})

    def test_proven_addresses_from_before_a_restart_are_tried_before_any_lookup(self):
        directory = PeerDirectory([FakeLink({}, down=True)], ["peer2", "peer3"],
                                  proven={"peer2": "127.0.0.1:5002", "peer9": "127.0.0.1:5009"})
        self.assertEqual(directory.known(), {"peer2": "127.0.0.1:5002", "peer3": None})
        directory.track(["peer9"])  # a member added later
        self.assertEqual(directory.address("peer9"), "127.0.0.1:5009")

    def test_every_change_of_the_proven_addresses_is_told_and_only_a_change(self):
        told = []
        directory = PeerDirectory([FakeLink({})], ["peer2"], on_proven=told.append)
        directory.answered("peer2", "127.0.0.1:5002")
        directory.answered("peer2", "127.0.0.1:5002")
        directory.failed("peer2", "127.0.0.1:5002")  # still the one to come back to
        directory.forget("peer2", "127.0.0.1:5002")  # another identity answers there
        self.assertEqual(told, [{"peer2": "127.0.0.1:5002"}, {}])

    def test_new_candidates_are_not_ordered_by_their_string(self):
        addresses = [f"127.0.0.{n}:1" for n in range(1, 9)]
        firsts = set()
        for seed in range(20):
            directory = PeerDirectory([FakeLink({"exchange:peer2": addresses})], ["peer2"],
                                      rng=random.Random(seed))
            self.successResultOf(directory.refresh())
            self.assertEqual(sorted(directory._candidates["peer2"]), addresses)
            firsts.add(directory.address("peer2"))
        self.assertGreater(len(firsts), 1)


class RaftTransportTests(SynchronousTestCase):
    def setUp(self):
        self.link = FakeLink({"exchange:peer2": ["127.0.0.1:1111", "127.0.0.1:2222"]})
        self.directory = PeerDirectory([self.link], ["peer2", "peer3"])
        self.successResultOf(self.directory.refresh())
        self.client = FakeClient()
        self.transport = RaftTransport("peer1", self.directory, self.client)

    def test_messages_queued_while_a_batch_is_in_flight_go_out_together(self):
        self.transport.send([message("peer2", 1)])
        self.transport.send([message("peer2", 2), message("peer2", 3)])
        self.assertEqual(len(self.client.calls), 1)
        dest, key, payload, d = self.client.calls[0]
        self.assertEqual((key, payload["action"], payload["to"], payload["from"]),
                         ("exchange:peer2", "raft.batch", "peer2", "peer1"))
        d.callback({"ok": True, "id": "peer2"})
        self.assertEqual([m["n"] for m in self.client.calls[1][2]["messages"]], [2, 3])

    def test_failed_batch_moves_to_the_next_address(self):
        self.transport.send([message("peer2", 1)])
        first = self.client.calls[0][0]
        self.client.calls[0][3].errback(GrenacheError("ERR_REQUEST_GENERIC", "connection refused"))
        self.transport.send([message("peer2", 2)])
        self.assertNotEqual(self.client.calls[1][0], first)

    def test_an_answered_batch_clears_its_address_failure(self):
        self.transport.send([message("peer2", 1)])
        address = self.client.calls[0][0]
        self.client.calls[0][3].errback(GrenacheError("ERR_REQUEST_GENERIC", "connection refused"))
        self.assertIn(address, self.directory._failing["peer2"])
        self.directory._candidates["peer2"] = [address]
        self.transport.send([message("peer2", 2)])
        self.client.calls[1][3].callback({"ok": True})
        self.assertNotIn(address, self.directory._failing["peer2"])

    def test_address_of_another_peer_is_forgotten(self):
        self.transport.send([message("peer2", 1)])
        wrong = self.client.calls[0][0]
        self.client.calls[0][3].errback(GrenacheError("ERR_WRONG_PEER", "this is peer3"))
        self.assertNotIn(wrong, self.directory._candidates["peer2"])
        self.assertEqual(self.client.expected, [None])

    def test_in_secure_mode_a_batch_expects_the_destination_peer_and_a_fake_is_forgotten(self):
        transport = RaftTransport("peer1", self.directory, self.client, verify=True)
        transport.send([message("peer2", 1)])
        self.assertEqual(self.client.expected, [Identity("peer", "peer2")])
        fake = self.client.calls[0][0]
        self.client.calls[0][3].errback(GrenacheError("ERR_TLS_IDENTITY", "the server is not peer2"))
        self.assertNotIn(fake, self.directory._candidates["peer2"])

    def test_messages_for_an_unknown_peer_wait_and_are_capped(self):
        self.transport.send([message("peer3", n) for n in range(MAX_QUEUED + 10)])
        self.assertEqual(self.client.calls, [])
        self.link.found["exchange:peer3"] = ["127.0.0.1:3333"]
        self.successResultOf(self.directory.refresh())
        self.transport.send([])
        sent = self.client.calls[0][2]["messages"]
        self.assertEqual(len(sent), MAX_QUEUED)
        self.assertEqual(sent[-1]["n"], MAX_QUEUED + 9)

    def test_a_batch_asks_for_replies_and_the_answers_messages_are_delivered_as_from_that_peer(self):
        delivered = []
        transport = RaftTransport("peer1", self.directory, self.client,
                                  deliver=lambda sender, messages: delivered.append((sender, messages)))
        transport.send([message("peer2", 1)])
        self.assertIs(self.client.calls[0][2]["replies"], True)
        self.client.calls[0][3].callback({"ok": True, "id": "peer2", "messages": [{"n": "ack"}]})
        self.assertEqual(len(self.client.calls), 1)
        self.assertEqual(delivered, [("peer2", [{"n": "ack"}])])
        for answer in ({"ok": True, "id": "peer2"}, {"ok": True, "messages": []}, {"messages": "x"}, None):
            transport.send([message("peer2", 2)])
            self.client.calls[-1][3].callback(answer)
        self.assertEqual(len(delivered), 1)

    def test_an_answer_with_more_messages_than_a_batch_holds_is_dropped(self):
        delivered = []
        transport = RaftTransport("peer1", self.directory, self.client,
                                  deliver=lambda sender, messages: delivered.append(messages))
        transport.send([message("peer2", 1)])
        self.client.calls[0][3].callback({"ok": True, "messages": [{}] * (MAX_BATCH + 1)})
        self.assertEqual(delivered, [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        transport.send([message("peer2", 2)])
        self.client.calls[1][3].callback({"ok": True, "messages": [{}] * MAX_BATCH})
        self.assertEqual([len(m) for m in delivered], [MAX_BATCH])

    def test_a_peer_that_refuses_replies_gets_batches_without_them(self):
        self.transport.send([message("peer2", 1)])
        self.client.calls[0][3].errback(GrenacheError("ERR_BAD_MESSAGE", "raft.batch takes exactly ..."))
        self.transport.send([message("peer2", 2)])
        self.assertNotIn("replies", self.client.calls[1][2])
        self.assertEqual(self.client.calls[1][2]["messages"], [message("peer2", 2)])

    def test_take_hands_over_what_is_queued_for_a_peer(self):
        self.transport.send([message("peer2", 1)])
        self.transport.send([message("peer2", 2), message("peer3", 3)])
        self.assertEqual(self.transport.take("peer2"), [message("peer2", 2)])
        self.assertEqual(self.transport.take("peer2"), [])
        self.client.calls[0][3].callback({"ok": True})
        self.assertEqual(len(self.client.calls), 1)  # nothing left for peer2

    def test_stop_cancels_batches_in_flight(self):
        self.transport.send([message("peer2", 1)])
        self.transport.stop()
        self.assertEqual(self.client.cancelled, [self.client.calls[0][0]])
        self.transport.send([message("peer2", 2)])  # still usable: sends a new batch
        self.assertEqual(len(self.client.calls), 2)


class AnnouncingTests(SynchronousTestCase):
    """A grape files an announce under its own address: announce where it is right."""

    def links(self, *urls: str) -> list:
        return [type("L", (), {"grape_url": url})() for url in urls]

    def test_on_one_machine_every_grape(self):
        links = self.links("http://127.0.0.1:30001", "http://127.0.0.1:40001")
        self.assertEqual(announcing_links(links, "127.0.0.1"), links)

    def test_across_machines_only_the_grape_on_this_peers_address(self):
        links = self.links("http://10.0.0.1:30001", "http://10.0.0.2:40001", "http://10.0.0.3:30001")
        self.assertEqual(announcing_links(links, "10.0.0.2"), [links[1]])

    def test_with_no_grape_on_this_machine_every_grape(self):
        links = self.links("http://10.0.0.1:30001", "http://10.0.0.2:40001")
        self.assertEqual(announcing_links(links, "10.0.0.9"), links)


class ProvenFileTests(SynchronousTestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="proven-")  # not mktemp(): under pytest it writes into the checkout
        self.addCleanup(shutil.rmtree, self.directory)
        self.file = ProvenFile(self.directory)

    def test_saved_addresses_load_back(self):
        self.assertEqual(self.file.load(), {})
        self.file.save({"peer2": "127.0.0.1:5002"})
        self.assertEqual(ProvenFile(self.directory).load(), {"peer2": "127.0.0.1:5002"})

    def test_a_damaged_file_is_ignored_not_fatal(self):
        for damage in (b"{not json", b'["a list"]', b'{"peer2": 5002}'):
            with open(os.path.join(self.directory, PROVEN), "wb") as f:
                f.write(damage)
            self.assertEqual(self.file.load(), {})
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_a_failed_save_is_a_warning_not_an_error_in_the_caller(self):
        not_a_directory = os.path.join(self.directory, "file")
        open(not_a_directory, "w").close()
        ProvenFile(not_a_directory).save({"peer2": "127.0.0.1:5002"})  # NotADirectoryError, logged
        self.assertFalse(os.path.exists(os.path.join(self.directory, PROVEN)))
