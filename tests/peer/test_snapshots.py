"""Snapshots in chunks: the assembler, the sender, and a transfer over real RPC
of a snapshot bigger than any RPC body."""
from __future__ import annotations

import base64
import hashlib

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_exchange.grenache import Link, RPCClient, RPCServer, wire
from twisted_exchange.peer.api import PeerAPI
from twisted_exchange.peer.directory import PeerDirectory
from twisted_exchange.peer.protocol import (
    MAX_BODY, SNAPSHOT_CHUNK, RequestError, SnapshotChunk, parse_request,
)
from twisted_exchange.peer.snapshots import SnapshotAssembler, SnapshotSender
from twisted_exchange.peer.transport import RaftTransport
from tests.peer.test_transport import FakeClient, FakeLink


def snapshot_message(data: object, index: int = 7) -> dict:
    return {"type": "raft.snapshot", "from": "peer1", "to": "peer2", "term": 2,
            "snapshot": {"index": index, "term": 2, "data": data}}


def chunks(message: dict, size: int, transfer: str = "t1") -> list[SnapshotChunk]:
    encoded = wire.encode(message)
    return [SnapshotChunk("peer1", "peer2", transfer, offset, len(encoded), encoded[offset:offset + size])
            for offset in range(0, len(encoded), size)]


class AssemblerTests(SynchronousTestCase):

    def test_chunks_in_order_give_the_message_once_the_last_is_in(self):
        message = snapshot_message({"book": list(range(100))})
        assembler = SnapshotAssembler()
        pieces = chunks(message, 50)
        for piece in pieces[:-1]:
            self.assertEqual(assembler.receive(piece), (piece.offset + 50, None))
        self.assertEqual(assembler.receive(pieces[-1]), (pieces[-1].size, message))

    def test_a_lost_or_repeated_chunk_is_answered_with_the_offset_wanted(self):
        message = snapshot_message("x" * 500)
        assembler = SnapshotAssembler()
        first, second, third, *rest = chunks(message, 100)
        self.assertEqual(assembler.receive(first), (100, None))
        self.assertEqual(assembler.receive(third), (100, None))   # second was lost
        self.assertEqual(assembler.receive(first), (100, None))   # a repeat changes nothing
        self.assertEqual(assembler.receive(second), (200, None))
        for piece in [third, *rest]:
            wanted, found = assembler.receive(piece)
        self.assertEqual(found, message)

    def test_a_new_transfer_replaces_the_old_and_must_start_at_0(self):
        old, new = snapshot_message("a" * 300), snapshot_message("b" * 300, index=9)
        assembler = SnapshotAssembler()
        assembler.receive(chunks(old, 100, "old")[0])
        self.assertEqual(assembler.receive(chunks(new, 100, "new")[1]), (0, None))
        for piece in chunks(new, 100, "new"):
            wanted, found = assembler.receive(piece)
        self.assertEqual(found, new)

    def test_oversized_undecodable_or_foreign_content_is_refused(self):
        with self.assertRaisesRegex(RequestError, "over 100"):
            SnapshotAssembler(max_bytes=100).receive(chunks(snapshot_message("x" * 200), 50)[0])
        garbage = SnapshotChunk("peer1", "peer2", "t", 0, 5, b"{nope")
        with self.assertRaisesRegex(RequestError, "not JSON"):
            SnapshotAssembler().receive(garbage)
        append = chunks({"type": "raft.append", "from": "peer1"}, 1000)[0]
        with self.assertRaisesRegex(RequestError, "not a raft.snapshot"):
            SnapshotAssembler().receive(append)

    def test_the_edge_parser_checks_every_field(self):
        good = {"action": SNAPSHOT_CHUNK, "from": "peer1", "to": "peer2", "transfer": "t",
                "offset": 0, "size": 3, "data": base64.b64encode(b"abc").decode()}
        self.assertEqual(parse_request(good), SnapshotChunk("peer1", "peer2", "t", 0, 3, b"abc"))
        for bad in ({"offset": 3}, {"offset": -1}, {"size": 0}, {"size": 2.5}, {"data": "not base64!"},
                    {"data": ""}, {"from": ""}, {"extra": 1}, {"transfer": "x" * 65}):
            with self.assertRaises(RequestError, msg=bad):
                parse_request({**good, **bad})


class SenderTests(SynchronousTestCase):

    def sender(self) -> tuple[SnapshotSender, FakeClient]:
        directory = PeerDirectory([FakeLink({"exchange:peer2": ["127.0.0.1:5002"]})], ["peer2"])
        self.successResultOf(directory.refresh())
        client = FakeClient()
        return SnapshotSender("peer1", directory, client, chunk_bytes=64), client

    def test_streams_chunks_where_the_receiver_asks_and_stops_when_it_has_all(self):
        sender, client = self.sender()
        message = snapshot_message("y" * 150)
        self.assertEqual(len(wire.encode(message)) // 64, 3)  # four chunks: 0, 64, 128, 192
        done = sender.send(message)
        lost = [128]  # the receiver lost the chunk at 64: at 128 it asks for 64 again
        while not done.called:
            _, _, payload, d = client.calls[-1]
            end = payload["offset"] + len(base64.b64decode(payload["data"]))
            d.callback({"ok": True, "next": 64 if payload["offset"] in lost and not lost.clear() else end})
        self.assertEqual([call[2]["offset"] for call in client.calls], [0, 64, 128, 64, 128, 192])
        self.assertEqual({call[2]["transfer"] for call in client.calls}, {client.calls[0][2]["transfer"]})

    def test_a_newer_snapshot_cancels_the_transfer_in_flight(self):
        sender, client = self.sender()
        sender.send(snapshot_message("old" * 100))
        sender.send(snapshot_message("new" * 100, index=9))
        self.assertEqual(client.cancelled, ["127.0.0.1:5002"])
        self.assertNotEqual(client.calls[0][2]["transfer"], client.calls[1][2]["transfer"])

    def test_the_raft_transport_streams_snapshots_beside_its_batches(self):
        directory = PeerDirectory([FakeLink({"exchange:peer2": ["127.0.0.1:5002"]})], ["peer2"])
        self.successResultOf(directory.refresh())
        client = FakeClient()
        transport = RaftTransport("peer1", directory, client)
        transport.send([snapshot_message("z"), {"type": "raft.append", "from": "peer1", "to": "peer2"}])
        self.assertEqual(sorted(call[2]["action"] for call in client.calls), ["raft.batch", SNAPSHOT_CHUNK])
        transport.stop()
        self.assertEqual(len(client.cancelled), 2)


class Node:
    """What PeerAPI needs of a peer, recording what Raft would be given."""

    node_id = "peer2"

    def __init__(self) -> None:
        self.delivered: list[tuple[str, list]] = []

    def deliver(self, sender: str, messages: list) -> None:
        self.delivered.append((sender, messages))


class BigSnapshotTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_a_snapshot_bigger_than_any_rpc_body_arrives_whole(self):
        node = Node()
        from twisted.internet import reactor
        server = RPCServer(PeerAPI(node, reactor))
        yield server.start()
        self.addCleanup(server.stop)
        directory = PeerDirectory([FakeLink({"exchange:peer2": [f"127.0.0.1:{server.port}"]})], ["peer2"])
        yield directory.refresh()
        client = RPCClient(Link("http://127.0.0.1:1"), timeout=30.0)
        self.addCleanup(client.close)
        message = snapshot_message({"orders": "o" * (MAX_BODY + (6 << 20))})
        digest = hashlib.sha256(wire.encode(message)).hexdigest()
        yield SnapshotSender("peer1", directory, client, timeout=30.0).send(message)
        [(sender_id, [received])] = node.delivered
        self.assertEqual((sender_id, hashlib.sha256(wire.encode(received)).hexdigest()), ("peer1", digest))
