"""Raft messages to other peers, as one Grenache RPC call per destination.

Raft tolerates lost, duplicated and reordered messages, so the transport is
deliberately simple: messages for a peer queue up while one batch to it is in
flight, and go out together as the next ``raft.batch`` call.  A peer that is
down costs one short timeout per batch, never a growing backlog: the queue is
capped and the oldest messages are dropped first (the leader re-sends what a
follower still needs on its next heartbeat).

With ``verify`` (secure mode) a batch goes only to a server whose TLS
certificate names the destination peer; an address that cannot prove it is
forgotten, so a fake announced on the grape costs one failed call.

A batch asks for ``replies``: the destination answers it with its own
messages to this peer (peer.service), which are handed to ``deliver`` as
if that peer had sent them, so an acknowledgement needs no call of its
own.  A peer of an older version refuses the field (ERR_BAD_MESSAGE); its
batches then go without it.
"""
from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from twisted_exchange.grenache import GrenacheError, RPCClient
from twisted_exchange.peer.directory import PeerDirectory
from twisted_exchange.grenache.errors import ERR_TLS_IDENTITY
from twisted_exchange.peer.protocol import ERR_BAD_MESSAGE, ERR_WRONG_PEER, MAX_BATCH, RAFT_BATCH, service_name
from twisted_exchange.peer.snapshots import SnapshotSender
from twisted_exchange.pki import PEER, Identity

#: Messages kept per destination while a batch is in flight.
MAX_QUEUED = 256


class RaftTransport:
    """Sends Raft messages from ``node_id`` to the peers in ``directory``."""

    log = Logger()

    def __init__(self, node_id: str, directory: PeerDirectory, client: RPCClient,
                 timeout: float = 1.0, verify: bool = False,
                 deliver: Callable[[str, list], None] = lambda sender, messages: None) -> None:
        self._node_id = node_id
        self._deliver = deliver
        self._without_replies: set[str] = set()  # peers of a version that refuses them
        self._directory = directory
        self._client = client
        self._timeout = timeout
        self._verify = verify
        self._queues: dict[str, list[dict]] = {}
        self._in_flight: dict[str, Deferred] = {}
        self._snapshots = SnapshotSender(node_id, directory, client, verify=verify)

    def send(self, messages: list[dict]) -> None:
        """Queue ``messages`` (each with a "to") and send what can go now;
        a snapshot streams in chunks beside them (peer/snapshots.py)."""
        for message in messages:
            if message["type"] == "raft.snapshot":
                self._snapshots.send(message)
                continue
            queue = self._queues.setdefault(message["to"], [])
            queue.append(message)
            del queue[:-MAX_QUEUED]
        for destination in list(self._queues):
            self._flush(destination)

    def take(self, destination: str) -> list[dict]:
        """The messages queued for ``destination``, which the caller sends another way."""
        return self._queues.pop(destination, [])

    def _flush(self, destination: str) -> None:
        if destination in self._in_flight or not self._queues.get(destination):
            return
        address = self._directory.address(destination)
        if address is None:
            return  # not found yet; Raft re-sends once the directory knows it
        batch = self._queues.pop(destination)
        payload = {"action": RAFT_BATCH, "from": self._node_id, "to": destination,
                   "messages": batch}
        if destination not in self._without_replies:
            payload["replies"] = True
        expect = Identity(PEER, destination) if self._verify else None
        d = self._client.request_to(address, service_name(destination), payload,
                                    timeout=self._timeout, expect=expect)
        self._in_flight[destination] = d
        d.addCallbacks(self._replied, self._failed, (destination, address), None, (destination, address))
        d.addBoth(self._done, destination)

    def _replied(self, answer: object, destination: str, address: str) -> None:
        """Hand the destination's messages in ``answer`` on, as from that peer
        (each is parsed there like any other; secure mode checked who
        answered), within the bound a batch has."""
        self._directory.answered(destination, address)
        messages = answer.get("messages") if isinstance(answer, dict) else None
        if not isinstance(messages, list) or not messages:
            return
        if len(messages) > MAX_BATCH:
            self.log.warn("dropped an answer of {count} raft messages from {peer}: more than a batch holds",
                          count=len(messages), peer=destination)
            return
        self._deliver(destination, messages)

    def stop(self) -> None:
        """Drop queued messages and cancel the batches and snapshots in flight."""
        self._snapshots.stop()
        self._queues.clear()
        for d in list(self._in_flight.values()):
            d.cancel()

    def _failed(self, failure, destination: str, address: str) -> None:
        if failure.check(CancelledError):
            return
        error = failure.value
        if isinstance(error, GrenacheError) and error.code == ERR_BAD_MESSAGE:
            self._without_replies.add(destination)  # an older peer; Raft sends the batch again
        elif isinstance(error, GrenacheError) and error.code in (ERR_WRONG_PEER, ERR_TLS_IDENTITY):
            self._directory.forget(destination, address)  # someone else answers there
        else:
            self._directory.failed(destination, address)
        self.log.debug("raft batch to {peer} at {address} failed: {error}",
                       peer=destination, address=address, error=error)

    def _done(self, _, destination: str) -> None:
        del self._in_flight[destination]
        self._flush(destination)
