"""Raft snapshots between peers in chunks, below Raft.

A snapshot is the whole state: it can outgrow any single RPC body (64 MiB).
So a ``raft.snapshot`` message does not travel in a ``raft.batch``: the
sender encodes it once and streams it as ``raft.snapshot_chunk`` calls, each
carrying ``offset`` into the encoded message, as the Raft paper's
InstallSnapshot does (Figure 13), and the receiver answers with the offset
it wants next.  Once the last chunk is in, the receiver decodes the message
and hands it to Raft like any other, so ``raftnode`` never sees chunks.

A transfer runs beside the peer's ``raft.batch`` calls (heartbeats keep
flowing, so the follower does not start an election while it downloads);
a new snapshot for the same follower replaces the transfer in flight; a
failed call ends the transfer, and Raft sends the snapshot again.
"""
from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from twisted_exchange.grenache import GrenacheError, RPCClient, wire
from twisted_exchange.peer.directory import PeerDirectory
from twisted_exchange.peer.protocol import (
    ERR_BAD_MESSAGE, MAX_SNAPSHOT_BYTES, SNAPSHOT_CHUNK, RequestError, SnapshotChunk, service_name,
)
from twisted_exchange.pki import PEER, Identity
from twisted_exchange.wal.file_storage import WrittenData

#: Bytes of the encoded snapshot message per call (base64 of it stays under 1 MiB bodies).
CHUNK_BYTES = 512 << 10


class SnapshotSender:
    """Streams ``raft.snapshot`` messages from ``node_id`` to peers in ``directory``."""

    log = Logger()

    def __init__(self, node_id: str, directory: PeerDirectory, client: RPCClient,
                 timeout: float = 5.0, verify: bool = False, chunk_bytes: int = CHUNK_BYTES) -> None:
        self._node_id = node_id
        self._directory = directory
        self._client = client
        self._timeout = timeout
        self._verify = verify
        self._chunk_bytes = chunk_bytes
        self._transfers: dict[str, defer.Deferred[None]] = {}

    def send(self, message: dict) -> defer.Deferred[None]:
        """Stream ``message`` to ``message["to"]``, replacing a transfer to it in
        flight; fires when the transfer ends (whole, failed or replaced)."""
        destination = message["to"]
        old = self._transfers.pop(destination, None)
        if old is not None:
            old.cancel()
        snapshot = message["snapshot"]
        if isinstance(snapshot["data"], WrittenData):  # in a file, not in memory: spliced in as it is
            message = {**message, "snapshot": {**snapshot, "data": snapshot["data"].fragment()}}
        transfer = f"{snapshot['index']}.{snapshot['term']}.{uuid.uuid4().hex[:12]}"
        d = defer.ensureDeferred(self._stream(destination, transfer, wire.encode(message)))
        d.addErrback(self._failed, destination)
        d.addBoth(self._done, destination, d)
        self._transfers[destination] = d
        return d

    async def _stream(self, destination: str, transfer: str, data: bytes) -> None:
        offset = 0
        while True:
            address = self._directory.address(destination)
            if address is None:
                return  # not found yet: Raft sends the snapshot again
            chunk = data[offset:offset + self._chunk_bytes]
            payload = {"action": SNAPSHOT_CHUNK, "from": self._node_id, "to": destination,
                       "transfer": transfer, "offset": offset, "size": len(data),
                       "data": base64.b64encode(chunk).decode("ascii")}
            reply = await self._client.request_to(
                address, service_name(destination), payload, timeout=self._timeout,
                expect=Identity(PEER, destination) if self._verify else None)
            wanted = reply.get("next") if isinstance(reply, dict) else None
            if wanted == len(data) or type(wanted) is not int or not 0 <= wanted < len(data):
                return  # received whole (or the receiver's answer makes no sense: Raft retries)
            offset = wanted

    def _failed(self, failure, destination: str) -> None:
        if not failure.check(defer.CancelledError):
            self.log.info("snapshot transfer to {peer} failed: {error}", peer=destination,
                          error=failure.getErrorMessage() if failure.check(GrenacheError) else failure.value)

    def _done(self, _, destination: str, d: defer.Deferred[None]) -> None:
        if self._transfers.get(destination) is d:
            del self._transfers[destination]

    def stop(self) -> None:
        """Cancel every transfer in flight."""
        for d in list(self._transfers.values()):
            d.cancel()


@dataclass
class _Transfer:
    transfer: str
    size: int
    data: bytearray


class SnapshotAssembler:
    """Each sender's chunks, in order, into the ``raft.snapshot`` message they encode.

    One transfer per sender is kept (a new one replaces it); a chunk at
    another offset than the next one is answered with the offset wanted,
    so a lost or repeated chunk costs a resend, not the transfer.
    """

    def __init__(self, max_bytes: int = MAX_SNAPSHOT_BYTES) -> None:
        self._max_bytes = max_bytes
        self._transfers: dict[str, _Transfer] = {}

    def receive(self, chunk: SnapshotChunk) -> tuple[int, dict | None]:
        """(the offset wanted next, the whole message once its last chunk is in)."""
        if chunk.size > self._max_bytes:
            raise RequestError(ERR_BAD_MESSAGE, f"a snapshot of {chunk.size} bytes is over {self._max_bytes}")
        current = self._transfers.get(chunk.sender)
        if current is None or current.transfer != chunk.transfer:
            if chunk.offset != 0:
                return 0, None
            current = self._transfers[chunk.sender] = _Transfer(chunk.transfer, chunk.size, bytearray())
        if chunk.offset != len(current.data) or chunk.size != current.size:
            return len(current.data), None
        if len(current.data) + len(chunk.data) > current.size:
            del self._transfers[chunk.sender]
            raise RequestError(ERR_BAD_MESSAGE, "chunks beyond the snapshot's size")
        current.data += chunk.data
        if len(current.data) < current.size:
            return len(current.data), None
        del self._transfers[chunk.sender]
        try:
            message = wire.decode(bytes(current.data))
        except ValueError:
            raise RequestError(ERR_BAD_MESSAGE, "the snapshot's chunks are not JSON") from None
        if type(message) is not dict or message.get("type") != "raft.snapshot":
            raise RequestError(ERR_BAD_MESSAGE, "the chunks are not a raft.snapshot message")
        return current.size, message
