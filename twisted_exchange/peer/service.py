"""PeerService: the ready loop that connects the pure replica to the world.

Every event (a tick, a Raft batch, a client command) mutates the replica; one
flush per reactor turn then takes its ready batch and, in this order,
persists it (hard state, entries, snapshot), sends its messages, applies its
committed entries, and fires the Deferreds of finished client commands.
Persisting before sending is the Raft stable-storage rule: a vote or an
acknowledgement never leaves the peer before it is on disk.  A leader's
appends, which promise nothing about its disk, leave first
(``Ready.send_first``): the followers receive and write them while the
leader's own fsync runs, instead of after it.  Applying comes after both, as
in etcd: a follower's acknowledgement and a leader's appends are on the
critical path of every commit, the matching of entries already committed
is not.

A peer that sent a Raft batch asking for ``replies`` (peer.transport) gets
this peer's messages to it in the answer, from the flush after its batch
was stepped: an acknowledgement rides back on the call that carried the
entries, instead of costing a call of its own each way.

Fail-stop (as etcd panics on a WAL error): an unexpected exception in a tick,
a flush or a background loop, or a failed write or fsync, ends the process
at once with :data:`EXIT_FAIL_STOP` and one ``fail-stop:`` log line.  A peer
that cannot make progress safely must not go on answering as if it could;
supervisord restarts it and it recovers from its own log.
"""
from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_exchange.adminport import AdminPort
from twisted_exchange.grenache import GrenacheError, Link, RPCClient, RPCServer
from twisted_exchange.pki import PEER, Credential, Identity
from twisted_exchange.peer.admin import admin_resource
from twisted_exchange.peer.api import PeerAPI
from twisted_exchange.peer.build import state_machine_code
from twisted_exchange.peer.compactor import BackgroundSnapshot
from twisted_exchange.peer.directory import PeerDirectory, ProvenFile
from twisted_exchange.peer.history import SAMPLE_SECONDS, Digests, Throughput
from twisted_exchange.peer import membership
from twisted_exchange.peer.metrics import PeerMetrics
from twisted_exchange.peer.protocol import (
    ERR_UNKNOWN_ACTION, MAX_BODY, PEER_HELLO, SERVICE, max_body_for, service_name,
)
from twisted_exchange.peer.transport import RaftTransport
from twisted_exchange.replication.messages import MessageError, parse_message
from twisted_exchange.replication.raft import RaftConfig
from twisted_exchange.replication.replica import Replica, ReplicationError
from twisted_exchange.replication.state_machine import ReplicatedStateMachine
from twisted_exchange.wal import FileStorage

#: Seconds per Raft tick; election and heartbeat timeouts are counted in ticks.
TICK_SECONDS = 0.05
#: Seconds between grape look-ups of the other peers.
DIRECTORY_REFRESH_SECONDS = 1.0
#: Seconds between re-announcements (the grape forgets after --dpa).
ANNOUNCE_SECONDS = 1.0
#: Compacted log entries freed per reactor turn: 10,000 at once held the reactor ~10 ms.
RETIRE_PER_TURN = 1000
#: Seconds before a snapshot that could not be written (no fork, a failed child) is asked for again.
SNAPSHOT_RETRY_SECONDS = 5.0
#: Seconds a snapshot child runs at idle priority before it is raised to nice 19 (compactor.py).
SNAPSHOT_PATIENCE_SECONDS = 10.0
#: Applied entries between snapshots (log compaction).  Each snapshot costs
#: every peer its fork and the faults on the pages it writes while the child
#: lives (~15 ms of CPU, ctl/BENCHMARKS.md); 30,000 instead of 10,000
#: entries keep ~20 MB more of log in memory for a third of those stalls.
SNAPSHOT_EVERY = 30_000
#: Seconds without a tick after which status reports the loop as stalled.
STALL_SECONDS = 1.0
#: Seconds between checks that the data directory still takes a durable write.
PROBE_SECONDS = 5.0
#: Seconds the admin port waits for another peer's status before showing it unreachable.
CLUSTER_STATUS_TIMEOUT = 1.0
#: Hosts that bind every interface: no address to tell the other peers.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
#: How often a new data directory asks the other members again (peer.membership).
JOIN_RETRY_SECONDS = 1.0
#: Exit status of a fail-stop (see the module docstring).
EXIT_FAIL_STOP = 70


def exit_now(line: str) -> None:
    """The default fail-stop: say why on stderr and end the process at once.

    ``os._exit`` skips shutdown hooks on purpose: they would flush and save
    through the very path that just failed.
    """
    sys.stdout.flush()
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    os._exit(EXIT_FAIL_STOP)


class PeerService(Service):
    """One exchange peer: replica + storage + Grenache RPC server and client.

    With a ``credential`` (its peer certificate, see ``twisted_exchange.pki``)
    the peer runs in Grenache secure mode: its server is mutual TLS only and
    authorizes by certificate (``PeerAPI``), and it sends Raft messages only
    to servers that prove the destination peer's identity.
    """

    log = Logger()

    def __init__(self, node_id: str, peers: list[str], grape_urls: list[str], data_dir: str,
                 host: str = "127.0.0.1", port: int = 0, fsync: str = "batch",
                 snapshot_every: int = SNAPSHOT_EVERY, reactor: IReactorTime | None = None,
                 seed: int | None = None, fail_stop: Callable[[str], None] = exit_now,
                 credential: Credential | None = None, admin_port: int | None = None,
                 admin_clients: frozenset[str] = frozenset({"cli"}), peer_addresses: dict[str, str] | None = None,
                 max_connections: int | None = None, max_connections_per_address: int | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.node_id = node_id
        self._peers = list(peers)
        self._reactor = reactor
        self._host = host
        self._data_dir = data_dir
        self._fail_stop = fail_stop
        self._stopped_by: str | None = None
        self._new_data_dir = membership.claim(data_dir, node_id, self._peers)
        self._heard = membership.Heard(data_dir)
        self._joining: str | None = None  # while a new data directory waits to join: why
        self._join: defer.Deferred | None = None
        self.metrics = PeerMetrics(self)
        self.digests = Digests()
        self._throughput = Throughput()
        self._code = state_machine_code()  # read once: status is polled often
        self._storage = FileStorage(data_dir, fsync=fsync, on_fsync=self.metrics.fsynced)
        try:
            recovered = self._storage.load()
            self._probe_storage()  # a full or read-only disk is found before serving, not after
        except BaseException:
            self._storage.close()  # unlock the directory: the caller may try again
            raise
        if recovered.repaired:
            self.log.warn("storage repaired: {what}", what=recovered.repaired)
        config = RaftConfig(compact_every=snapshot_every)
        self.replica = Replica(node_id, self._peers, recovered, random.Random(seed), config,
                               on_apply=self._applied, background_snapshots=True)
        self._hold_stored_snapshot()
        self._compactor = BackgroundSnapshot(self._storage.background_path(), sync=fsync == "batch")
        self._snapshot_retry: IDelayedCall | None = None
        self._snapshot_started = 0.0
        self._links = [Link(url, reactor=reactor) for url in grape_urls]
        self._client = RPCClient(self._links[0], reactor=reactor, tls=credential)
        addresses = ProvenFile(data_dir)
        # The config's addresses (--peer-address) win over those kept: a stale one costs a failed call.
        self._directory = PeerDirectory(self._links, [p for p in self._peers if p != node_id],
                                        proven={**addresses.load(), **(peer_addresses or {})},
                                        on_proven=addresses.save)
        self._secure = credential is not None
        self._transport = RaftTransport(node_id, self._directory, self._client, verify=self._secure,
                                        deliver=self.deliver)
        api = self.metrics.metered(PeerAPI(self, reactor, authenticated=self._secure,
                                           admin_clients=admin_clients))
        self._server = RPCServer(api, host=host, port=port, max_body=MAX_BODY, utf8_only=True,
                                 tls=credential, with_caller=True, reactor=reactor,
                                 max_body_for=max_body_for, max_connections=max_connections,
                                 max_connections_per_address=max_connections_per_address)
        self._admin = (AdminPort(admin_resource(self), host, admin_port, reactor)
                       if admin_port is not None else None)
        self._waiting: dict[int, defer.Deferred] = {}
        self._replies: dict[str, defer.Deferred] = {}  # peer -> the answer to its batch, at the next flush
        self._flush_call = None
        self._greeted: set[str] = set()  # peers that answered this process's peer.hello
        self._loops: list[task.LoopingCall] = []
        self._role = None
        self._last_tick: float | None = None

    # -- what PeerAPI needs --------------------------------------------------

    @property
    def exchange(self):
        return self.replica.exchange

    @property
    def applied(self) -> int:
        return self.replica.state_machine.applied

    def propose(self, command: dict) -> defer.Deferred:
        """Replicate ``command`` (canonical, see peer.protocol); fires with its
        result once applied here.  A refusal (ReplicationError) is the
        client's; any other exception is a bug that may have left the
        replica half-changed: fail-stop."""
        try:
            token = self.replica.propose(command)
        except ReplicationError:
            raise
        except Exception:
            self._die("propose failed", Failure())
            raise
        d = self._waiting[token] = defer.Deferred()
        self._schedule_flush()
        return d

    def change_membership(self, change: str, peer: str) -> defer.Deferred:
        """Ask this peer, if it leads, for one membership change; fires once
        the change is committed and applied here (ReplicationError if refused)."""
        token = self.replica.change_membership(change, peer)
        d = self._waiting[token] = defer.Deferred()
        self._schedule_flush()
        return d

    def serves_at(self, peer_id: str, address: str) -> None:
        """Peer ``peer_id`` said, with its certificate, that it serves at ``address``."""
        if peer_id != self.node_id:
            self._directory.claimed(peer_id, address)

    def deliver(self, sender: str, messages: list) -> None:
        """Step every Raft message from ``sender`` that parses; drop the others.

        Each message is parsed completely before the replica sees it, so a
        malformed one changes nothing.  Raft survives lost messages, so it
        is dropped (and logged) rather than answered: the sender's next
        heartbeat or retry carries the same information.
        """
        if sender == self.node_id:
            self.log.warn("dropped raft batch from {sender!r}: not another peer", sender=sender)
            return
        if self._joining is not None:
            return  # no part in Raft before the cluster has said this peer is new
        self._directory.track([sender])  # a leader this peer's configuration does not name yet
        for message in messages:
            try:
                parsed = parse_message(message, sender, self.node_id)
                if parsed["type"] == "raft.snapshot" and parsed["snapshot"]["index"] > self.replica.node.commit:
                    _check_snapshot_data(parsed["snapshot"]["data"])  # only one the node would install
            except MessageError as e:
                self.log.warn("dropped raft message from {sender}: {error}", sender=sender, error=e)
                continue
            self._guarded(self._step, sender, parsed)
        self._schedule_flush()

    def deliver_and_reply(self, sender: str, messages: list) -> defer.Deferred:
        """``deliver``, then fire with this peer's messages to ``sender`` from
        the next flush (persisted, as every message is before it leaves).
        A newer batch from the same sender takes over: the older one's
        answer fires empty."""
        replied = defer.Deferred()
        earlier = self._replies.pop(sender, None)
        if earlier is not None:
            earlier.callback([])
        if self._stopped_by is None:
            self._replies[sender] = replied
            self.deliver(sender, messages)
            self._schedule_flush()  # also when deliver dropped the batch: the answer comes from a flush
        else:
            replied.callback([])
        return replied

    def _step(self, sender: str, message: dict) -> None:
        self._heard.add(sender)  # durably, before its vote or acknowledgement can count
        self.replica.step(message)

    def status(self) -> dict:
        """The replica's status, this peer's view of the others, and its health.

        Cheap by design (no walk of the state): monitoring may poll it often.
        """
        status = dict(self.replica.status())
        status["peers"] = self._directory.known()
        status["address"] = f"{self._host}:{self.port}" if self.running else None
        status["health"] = self.health()
        status["applied_per_second"] = round(self._throughput.per_second(), 1)
        status["admin"] = self._admin.url if self._admin is not None else None
        status["heard"] = list(self._heard)
        status["state_machine_code"] = self._code
        return status

    def cluster_status(self) -> defer.Deferred:
        """Every peer's status: this one's, and each other's asked over Grenache
        (in secure mode only from the address that proves to be that peer);
        for a peer that does not answer, the reason, one line."""
        others = self.replica.node.peers
        replies = defer.gatherResults([self._ask_status(p) for p in others])
        return replies.addCallback(lambda found: {self.node_id: self.status(), **dict(zip(others, found))})

    def _ask_status(self, peer_id: str) -> defer.Deferred:
        """``peer_id``'s status from its preferred address, or why not (one
        line); the directory learns whether that address is the peer's."""
        address = self._directory.address(peer_id)
        if address is None:
            return defer.succeed("not found on the grapes yet")
        expect = Identity(PEER, peer_id) if self._secure else None
        d = self._client.request_to(address, service_name(peer_id), {"action": "status"},
                                    timeout=CLUSTER_STATUS_TIMEOUT, expect=expect)

        def answered(status: dict) -> dict:
            self._directory.answered(peer_id, address)
            return status

        def failed(failure: Failure) -> str:
            self._directory.failed(peer_id, address)  # a stale announcement: the next one asks elsewhere
            return failure.getErrorMessage()
        return d.addCallbacks(answered, failed)

    def _refresh_directory(self) -> defer.Deferred:
        """Tell the peers that have not heard it where this one serves, look
        the peers up, then ask each peer whose address nothing has proven
        yet (a follower calls its leader only to forward an order): so every
        peer has proven addresses, kept across a restart, before a flood of
        fake announcements could hide them (directory.py)."""
        hellos = self._say_hello()
        d = self._directory.refresh()
        d.addCallback(lambda _: defer.gatherResults([self._ask_status(p) for p in self._directory.unproven()]))
        return defer.gatherResults([hellos, d])

    def _say_hello(self) -> defer.Deferred:
        """A ``peer.hello`` to each peer with a known address that has not
        answered one from this process yet (secure mode: it proves who says
        it), so a peer the grapes cannot show (a flood of fakes; added or
        moved since) is reached by every peer it reaches.  Until one
        answers, it is told again at every refresh; one that does not know
        the action (an older version) is not."""
        if not self._secure or self._host in WILDCARD_HOSTS:
            return defer.succeed(None)
        payload = {"action": PEER_HELLO, "from": self.node_id, "address": f"{self._host}:{self.port}"}
        calls = []
        for peer_id, known in self._directory.known().items():  # never this peer (see serves_at, deliver)
            if known is None or peer_id in self._greeted:
                continue
            d = self._client.request_to(known, service_name(peer_id), payload,
                                        timeout=CLUSTER_STATUS_TIMEOUT, expect=Identity(PEER, peer_id))
            calls.append(d.addCallbacks(self._greeted_by, self._hello_failed,
                                        callbackArgs=(peer_id, known), errbackArgs=(peer_id, known)))
        return defer.gatherResults(calls)

    def _greeted_by(self, _: object, peer_id: str, address: str) -> None:
        self._greeted.add(peer_id)
        self._directory.answered(peer_id, address)  # over TLS, as that peer

    def _hello_failed(self, failure: Failure, peer_id: str, address: str) -> None:
        """An older peer's refusal is its answer; a call that reached no
        such peer there rotates the directory, as a status call does."""
        if failure.check(GrenacheError) and failure.value.code == ERR_UNKNOWN_ACTION:
            self._greeted_by(None, peer_id, address)
        else:
            self._directory.failed(peer_id, address)

    def health(self) -> dict:
        """``ok`` unless something stops this peer from taking part; ``problems`` say what.

        A dead loop or an unwritable disk never shows here: either ends the
        process (fail-stop), so a peer that answers has both.
        """
        if self._joining is not None:
            return {"ok": False, "problems": [self._joining]}
        problems = []
        if self._last_tick is None or self._reactor.seconds() - self._last_tick > STALL_SECONDS:
            problems.append("tick loop stalled")
        if self.replica.node.leader is None:
            problems.append("no leader known")
        if self.replica.node.abstain_until_term is not None:
            problems.append("not voting until a leader after term "
                            f"{self.replica.node.abstain_until_term} catches it up (damaged data discarded)")
        return {"ok": not problems, "problems": problems}

    def connections(self) -> tuple[int, int, int]:
        """RPC connections open now, and those refused and evicted at a cap since the start (connections.py)."""
        return self._server.caps.counts()

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
        if self._admin is not None:
            try:
                self._admin.start()
            except BaseException:
                yield self._server.stop()
                raise
            self.log.info("{peer} serving metrics and the dashboard on {url}", peer=self.node_id,
                          url=self._admin.url)
        for link in announcing_links(self._links, self._host):
            for name in (SERVICE, service_name(self.node_id)):
                link.start_announcing(name, self.port, ANNOUNCE_SECONDS)
        self._loop(self._refresh_directory, DIRECTORY_REFRESH_SECONDS)
        self._loop(self._probe_storage, PROBE_SECONDS)
        self._loop(self._sample, SAMPLE_SECONDS)
        if self._new_data_dir:
            self._joining = "a new data directory: asking the other members whether they know this peer"
            self._join = self._join_if_not_wiped().addCallbacks(self._joined, self._refused)
        else:
            self._loop(self._tick, TICK_SECONDS)

    @defer.inlineCallbacks
    def _join_if_not_wiped(self):
        """Fires once every other member has answered and none counts this id
        as a member already (see ``membership``); MembershipError if one does."""
        waiting_for = None
        while True:
            yield self._directory.refresh()
            statuses = yield self.cluster_status()
            del statuses[self.node_id]
            silent = [peer for peer, status in statuses.items() if not isinstance(status, dict)]
            for status in statuses.values():
                reason = membership.wiped(self.node_id, status) if isinstance(status, dict) else None
                if reason is not None:
                    raise membership.MembershipError(reason)
            if not silent:
                membership.record(self._data_dir, self.node_id, self._peers)
                return
            if silent != waiting_for:
                waiting_for = silent
                self._joining = (f"a new data directory: waiting for {', '.join(silent)} to answer (every "
                                 f"other member must say it has not heard from {self.node_id} before)")
                self.log.info("{peer} has {what}", peer=self.node_id, what=self._joining)
            yield task.deferLater(self._reactor, JOIN_RETRY_SECONDS, lambda: None)

    def _joined(self, _) -> None:
        self._joining = None
        self.log.info("{peer} joins the cluster with a new data directory", peer=self.node_id)
        self._loop(self._tick, TICK_SECONDS)

    def _refused(self, failure: Failure) -> None:
        if failure.check(defer.CancelledError):
            return  # stopped while joining
        if not failure.check(membership.MembershipError):
            return self._die("joining failed", failure)
        self.log.error("{peer} refused: {reason}", peer=self.node_id, reason=failure.getErrorMessage())
        self._stopped_by = "refused"
        self._fail_stop(f"refused: {failure.getErrorMessage()}")

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self._join is not None:
            self._join.cancel()
        for loop in self._loops:
            loop.stop()
        self._loops.clear()
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        replies, self._replies = self._replies, {}
        for replied in replies.values():
            replied.callback([])
        self._transport.stop()
        if self._admin is not None:
            yield self._admin.stop()
        yield self._server.stop()
        yield self._client.close()
        for link in self._links:
            yield link.close()
        self._compactor.stop()
        if self._snapshot_retry is not None and self._snapshot_retry.active():
            self._snapshot_retry.cancel()
        self._storage.close()
        self.log.info("{peer} stopped", peer=self.node_id)

    def _loop(self, f, seconds: float) -> None:
        loop = task.LoopingCall(f)
        loop.clock = self._reactor
        loop.start(seconds, now=True).addErrback(
            lambda failure: self._die(f"{getattr(f, '__name__', f)} loop failed", failure))
        self._loops.append(loop)

    # -- fail-stop -------------------------------------------------------------

    def _guarded(self, f: Callable, *args) -> None:
        """Run ``f``; any exception is a fail-stop (the replica may be half-changed)."""
        try:
            f(*args)
        except Exception:
            self._die(f"{getattr(f, '__name__', f)} failed", Failure())

    def _die(self, what: str, failure: Failure) -> None:
        if self._stopped_by is not None:
            return
        self._stopped_by = what
        line = f"fail-stop: {self.node_id} {what}: {failure.getErrorMessage() or failure.type.__name__}"
        self.log.failure(line, failure)
        self._fail_stop(line)

    def _probe_storage(self) -> None:
        """A durable write into the data directory: a disk that turned read-only
        or full is found even while no entry arrives."""
        probe = os.path.join(self._data_dir, "probe.tmp")
        with open(probe, "wb") as file:
            file.write(b"probe")
            file.flush()
            os.fsync(file.fileno())
        os.unlink(probe)

    # -- history and metrics ----------------------------------------------------

    def _applied(self, index: int, command: dict | None, result: dict | None) -> None:
        """Replica's ``on_apply``: remember the digest, count the trades."""
        self.digests.record(index, self.replica.state_machine.digest)
        self.metrics.applied(index, command, result)

    def _sample(self) -> None:
        self._throughput.sample(self._reactor.seconds(), self.applied)

    # -- the ready loop -------------------------------------------------------

    def _tick(self) -> None:
        self._last_tick = self._reactor.seconds()
        self._compacted()
        self.replica.tick()
        self._directory.track(self.replica.node.peers)  # the live configuration's members
        self._flush()

    def _schedule_flush(self) -> None:
        """Flush once at the end of this reactor turn, batching what arrives in it."""
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self._reactor.callLater(0, self._guarded, self._flush)

    def _flush(self) -> None:
        if self._stopped_by is not None:
            return
        ready = self.replica.ready()
        if ready.send_first:
            self._send(ready.messages)
        self._storage.save(ready.hard_state, ready.entries, ready.snapshot)
        if ready.snapshot is not None:
            self._hold_stored_snapshot()
            self.log.info("{peer} installed a snapshot from {leader} of entries up to {index} (term {term})",
                          peer=self.node_id, leader=self.replica.node.leader, index=ready.snapshot["index"],
                          term=ready.snapshot["term"])
        if not ready.send_first:
            self._send(ready.messages)
        self.replica.apply(ready)
        if ready.compaction is not None:
            self._storage.compact(ready.compaction)
        for token, result in ready.results:
            d = self._waiting.pop(token, None)
            if d is not None:
                d.callback(result)
        if ready.snapshot_due is not None:  # the state machine is still as that apply() left it
            try:
                self._compactor.start(ready.snapshot_due, self.replica.state_machine)
                self._snapshot_started = self._reactor.seconds()
            except OSError as error:  # no process or memory for a child: the log grows meanwhile
                self._snapshot_failed(f"fork: {error}")
        self._log_role()

    def _compacted(self) -> None:
        """Compact to the snapshot a child finished writing, if one did."""
        done = self._compactor.poll()
        if done is None:
            waited = self._reactor.seconds() - self._snapshot_started
            if self._compactor.running and waited > SNAPSHOT_PATIENCE_SECONDS:
                self._compactor.hurry()
            return
        snapshot, failure = done
        if snapshot is None:
            self._snapshot_failed(failure)
            return
        dropped = self.replica.snapshot_taken(snapshot)
        if dropped is None:
            snapshot["data"].path.unlink(missing_ok=True)
            self.metrics.snapshotted("stale")
            return
        self._storage.compact(snapshot)
        seconds = self._reactor.seconds() - self._snapshot_started
        self.metrics.snapshotted("compacted", seconds)
        self.log.info("{peer} compacted its log to entry {index} (term {term}; snapshot written in "
                      "{seconds:.2f} s)", peer=self.node_id, index=snapshot["index"], term=snapshot["term"],
                      seconds=seconds)
        self._retire(dropped)

    def _hold_stored_snapshot(self) -> None:
        """Let the replica hold the stored snapshot's place in its file
        instead of a parsed copy (a restart's, or one installed from the
        leader), which would otherwise stay in memory until the next compaction."""
        stored = self._storage.stored_snapshot()
        if stored is not None:
            self.replica.snapshot_stored(stored["index"], stored["data"])

    def _snapshot_failed(self, why: str) -> None:
        self.metrics.snapshotted("failed")
        self.log.error("background snapshot failed ({why}); trying again in {seconds} s",
                       why=why, seconds=SNAPSHOT_RETRY_SECONDS)
        self._snapshot_retry = self._reactor.callLater(SNAPSHOT_RETRY_SECONDS, self.replica.snapshot_abandoned)

    def _retire(self, entries: list) -> None:
        """Free ``entries`` a slice per reactor turn."""
        del entries[-RETIRE_PER_TURN:]
        if entries:
            self._reactor.callLater(0, self._retire, entries)

    def _send(self, messages: list[dict]) -> None:
        """Messages to a peer whose batch waits for its answer go in that
        answer, with what the transport still queued for it (snapshots
        excepted: they stream in chunks); the rest go through the transport."""
        replies, self._replies = self._replies, {}
        answers = {peer: self._transport.take(peer) for peer in replies}
        others = []
        for message in messages:
            answer = answers.get(message["to"])
            if answer is None or message["type"] == "raft.snapshot":
                others.append(message)
            else:
                answer.append(message)
        self._transport.send(others)
        for peer, replied in replies.items():
            replied.callback(answers[peer])

    def _log_role(self) -> None:
        node = self.replica.node
        role = (node.role, node.term, node.leader)
        if role != self._role:
            self._role = role
            self.log.info("{peer} is {role} in term {term}, leader {leader}",
                          peer=self.node_id, role=role[0], term=role[1], leader=role[2])


def announcing_links(links: list[Link], host: str) -> list[Link]:
    """The grapes to announce on: a grape files an announce under its own
    address (Grenache's announce carries only a port), so those on this
    peer's ``host`` when there are any (several machines), else every one
    (one machine: one grape dying does not hide this peer)."""
    local = [link for link in links if urlsplit(link.grape_url).hostname == host]
    return local or list(links)


def _check_snapshot_data(data: dict) -> None:
    """Refuse snapshot data the state machine could not restore, before the
    replica adopts the snapshot (restoring it then would fail in the ready
    loop).  Snapshots are rare, so checking by restoring costs little."""
    try:
        ReplicatedStateMachine.restore(data)
    except Exception as e:
        raise MessageError(f"snapshot data does not restore: {e!r:.200}") from None
