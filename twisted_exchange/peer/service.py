"""PeerService: the ready loop that connects the pure replica to the world.

Every event (a tick, a Raft batch, a client command) mutates the replica; one
flush per reactor turn then takes its ready batch and, in this order,
persists it (hard state, entries, snapshot), sends its messages, and fires
the Deferreds of finished client commands.  Persisting before sending is the
Raft stable-storage rule: a vote or an acknowledgement never leaves the peer
before it is on disk.
"""
from __future__ import annotations

import random

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from twisted_exchange.grenache import Link, RPCClient, RPCServer
from twisted_exchange.peer.api import PeerAPI
from twisted_exchange.peer.directory import PeerDirectory, service_name
from twisted_exchange.peer.membership import claim
from twisted_exchange.peer.transport import RaftTransport
from twisted_exchange.replication.raft import RaftConfig
from twisted_exchange.replication.replica import Replica
from twisted_exchange.wal import FileStorage

#: Seconds per Raft tick; election and heartbeat timeouts are counted in ticks.
TICK_SECONDS = 0.05
#: Seconds between grape look-ups of the other peers.
DIRECTORY_REFRESH_SECONDS = 1.0
#: Seconds between re-announcements (the grape forgets after --dpa).
ANNOUNCE_SECONDS = 1.0
#: Applied entries between snapshots (log compaction).
SNAPSHOT_EVERY = 10_000
#: Largest RPC body accepted: a Raft snapshot of the whole exchange travels
#: in one message (chunked InstallSnapshot is not built).
MAX_BODY = 64 << 20


class PeerService(Service):
    """One exchange peer: replica + storage + Grenache RPC server and client."""

    log = Logger()

    def __init__(self, node_id: str, peers: list[str], grape_urls: list[str], data_dir: str,
                 host: str = "127.0.0.1", port: int = 0, fsync: str = "batch",
                 snapshot_every: int = SNAPSHOT_EVERY, reactor: IReactorTime | None = None,
                 seed: int | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.node_id = node_id
        self._peers = list(peers)
        self._reactor = reactor
        self._host = host
        claim(data_dir, node_id, self._peers)
        self._storage = FileStorage(data_dir, fsync=fsync)
        recovered = self._storage.load()
        if recovered.repaired:
            self.log.warn("storage repaired: {what}", what=recovered.repaired)
        config = RaftConfig(compact_every=snapshot_every)
        self.replica = Replica(node_id, self._peers, recovered, random.Random(seed), config)
        self._links = [Link(url, reactor=reactor) for url in grape_urls]
        self._client = RPCClient(self._links[0], reactor=reactor)
        self._directory = PeerDirectory(self._links, [p for p in self._peers if p != node_id])
        self._transport = RaftTransport(node_id, self._directory, self._client)
        self._server = RPCServer(PeerAPI(self), host=host, port=port, max_body=MAX_BODY,
                                 reactor=reactor)
        self._waiting: dict[int, defer.Deferred] = {}
        self._flush_call = None
        self._loops: list[task.LoopingCall] = []
        self._role = None

    # -- what PeerAPI needs --------------------------------------------------

    @property
    def exchange(self):
        return self.replica.exchange

    @property
    def applied(self) -> int:
        return self.replica.state_machine.applied

    def propose(self, command: dict) -> defer.Deferred:
        """Replicate ``command``; fires with its result once applied here."""
        token = self.replica.propose(command)
        d = self._waiting[token] = defer.Deferred()
        self._schedule_flush()
        return d

    def deliver(self, sender: str, messages: list) -> None:
        """Step every Raft message from ``sender``; drop malformed ones.

        Raft survives lost messages, so a message that does not parse is
        dropped (and logged) rather than answered: the sender's next
        heartbeat or retry carries the same information.
        """
        for message in messages:
            if not (isinstance(message, dict) and sender in self._peers and sender != self.node_id
                    and message.get("from") == sender and message.get("to") == self.node_id
                    and isinstance(message.get("type"), str)
                    and type(message.get("term")) is int):
                self.log.warn("dropped malformed raft message from {sender!r}", sender=sender)
                continue
            try:
                self.replica.step(message)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                self.log.warn("dropped raft message {type} from {sender}: {error!r}",
                              type=message["type"], sender=sender, error=e)
        self._schedule_flush()

    def status(self) -> dict:
        status = dict(self.replica.status())
        status["peers"] = self._directory.known()
        status["address"] = f"{self._host}:{self.port}" if self.running else None
        return status

    # -- lifecycle ------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._server.port

    @defer.inlineCallbacks
    def startService(self):
        super().startService()
        yield self._server.start()
        self.log.info("{peer} serving Grenache RPC on {host}:{port}",
                      peer=self.node_id, host=self._host, port=self.port)
        for link in self._links:  # on every grape: one dying does not hide this peer
            for name in ("exchange", service_name(self.node_id)):
                link.start_announcing(name, self.port, ANNOUNCE_SECONDS)
        self._loop(self._tick, TICK_SECONDS)
        self._loop(self._directory.refresh, DIRECTORY_REFRESH_SECONDS)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        for loop in self._loops:
            loop.stop()
        self._loops.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._transport.stop()
        yield self._server.stop()
        yield self._client.close()
        for link in self._links:
            yield link.close()
        self._storage.close()
        self.log.info("{peer} stopped", peer=self.node_id)

    def _loop(self, f, seconds: float) -> None:
        loop = task.LoopingCall(f)
        loop.clock = self._reactor
        loop.start(seconds, now=True).addErrback(
            lambda failure: self.log.failure("{peer} loop stopped", failure, peer=self.node_id))
        self._loops.append(loop)

    # -- the ready loop -------------------------------------------------------

    def _tick(self) -> None:
        self.replica.tick()
        self._flush()

    def _schedule_flush(self) -> None:
        """Flush once at the end of this reactor turn, batching what arrives in it."""
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        ready = self.replica.ready()
        self._storage.save(ready.hard_state, ready.entries, ready.snapshot)
        if ready.compaction is not None:
            self._storage.compact(ready.compaction)
        self._transport.send(ready.messages)
        for token, result in ready.results:
            d = self._waiting.pop(token, None)
            if d is not None:
                d.callback(result)
        self._log_role()

    def _log_role(self) -> None:
        node = self.replica.node
        role = (node.role, node.term, node.leader)
        if role != self._role:
            self._role = role
            self.log.info("{peer} is {role} in term {term}, leader {leader}",
                          peer=self.node_id, role=role[0], term=role[1], leader=role[2])
