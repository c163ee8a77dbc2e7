"""One replica of the exchange: a Raft node, the replicated state machine, and
the bookkeeping that turns client proposals into results.

This is the pure object the peer shell (twisted_exchange.peer.service) drives:
``tick``, ``step`` and ``propose`` as events arrive, then ``ready()``, whose
``Ready`` says what to persist and send, then ``apply(ready)``, which applies
its committed entries and adds what to compact and answer.  Client semantics
(Raft thesis 6.3):

- A proposal made at a follower is forwarded to the leader as a
  ``raft.forward`` message, and forwarded again every
  ``RaftConfig.forward_ticks`` (or at once when the leader changes) until its
  entry is applied here.  Duplicates this creates are harmless: the state
  machine executes a (client, request) once and remembers the result.
- Every command, proposed here or forwarded, passes :meth:`Replica._admit`
  (the core's ``canonical_command``) before it can enter the log, and one the
  session table would refuse or answer (a retry, a stale or reused request id)
  is answered at once without entering the log.
- The caller gets its result only once the entry is committed *and applied
  on this replica*, so the answer is read from this replica's own book.
- A proposal that waits ``RaftConfig.no_leader_ticks`` ticks with no known
  leader is answered ``ERR_NO_LEADER``; the command may still have been
  committed, and a retry with the same request id returns its result.

Every ``RaftConfig.compact_every`` applied entries, or every quarter as many
entries as the exchange knows orders if that is more (:data:`LOG_PER_ORDERS`),
the replica snapshots the state machine and compacts the Raft log;
``Ready.compaction`` tells the shell to do the same on disk.  With ``background_snapshots`` the replica asks
instead (``Ready.snapshot_due``: index, term and configuration, no data) and
goes on; the shell takes the state machine's snapshot as it is after that
``apply(ready)`` (peer/compactor.py forks) and hands it back later to
:meth:`Replica.snapshot_taken`, which compacts then, unless a snapshot
installed meanwhile already covers it.  One is asked for at a time.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted_exchange.core import ExchangeError
from twisted_exchange.core.commands import canonical_command
from twisted_exchange.replication.configuration import ConfigurationError
from twisted_exchange.replication.raft import (
    LEADER, Entry, HardState, Message, RaftConfig, RaftNode, Snapshot,
)
from twisted_exchange.replication.state_machine import ReplicatedStateMachine
from twisted_exchange.replication.storage import Recovered

Key = tuple[str, str]

#: No leader known for RaftConfig.no_leader_ticks: outcome unknown, retry with the same id.
NO_LEADER = "ERR_NO_LEADER"
#: A membership change asked of a replica that does not lead; the reason names the leader.
NOT_LEADER = "ERR_NOT_LEADER"
#: A membership change the rules refuse now (one pending, a learner not caught up...).
MEMBERSHIP = "ERR_MEMBERSHIP"
#: A snapshot costs about 1.5 us of CPU per order the exchange knows (rows, JSON, file), so
#: the log grows to at least that many orders over this between snapshots: at most ~6 us per
#: entry however big the book, for a log of a quarter as many entries as orders.
LOG_PER_ORDERS = 4


class ReplicationError(Exception):
    """A proposal the replication layer cannot carry out; ``code`` is stable."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code

    def reply(self) -> dict:
        """The result dict a client receives for this error."""
        return {"ok": False, "error": str(self)}


@dataclass
class Ready:
    """What the shell must do, in this order: persist, send, ``Replica.apply``,
    compact, answer; with ``send_first`` (RaftReady's), send before persisting.
    ``compaction``, ``snapshot_due`` and ``results`` are filled in by ``apply``."""

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    send_first: bool = False
    committed: list[Entry] = field(default_factory=list)
    compaction: Snapshot | None = None
    snapshot_due: Snapshot | None = None  # background_snapshots: take this one (no data yet)
    results: list[tuple[int, dict]] = field(default_factory=list)


@dataclass
class _Pending:
    command: dict
    sent_to: str | None = None   # the leader it was last forwarded (or proposed) to
    sent_at: int = 0             # tick of that
    leaderless: int = 0          # ticks waited with no known leader


class Replica:
    """RaftNode + ReplicatedStateMachine + client proposals.

    ``node_factory`` exists for the tests' fault injection (a RaftNode
    subclass with one rule broken); ``on_apply(index, command, result)`` lets
    the simulator observe every applied entry; ``background_snapshots``: see
    the module docstring.
    """

    def __init__(self, node_id: str, peers: list[str], recovered: Recovered, rng: random.Random,
                 config: RaftConfig = RaftConfig(), *,
                 node_factory: Callable[..., RaftNode] = RaftNode,
                 on_apply: Callable[[int, dict | None, dict | None], None] | None = None,
                 background_snapshots: bool = False) -> None:
        self.config = config
        self._background_snapshots = background_snapshots
        self._snapshot_due: int | None = None  # the index of the snapshot asked for and not yet taken
        self.node = node_factory(node_id, peers, rng, config, recovered.hard_state,
                                 recovered.snapshot, recovered.entries)
        self.state_machine = (ReplicatedStateMachine.restore(recovered.snapshot["data"])
                              if recovered.snapshot else ReplicatedStateMachine())
        self._on_apply = on_apply
        self._tokens = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._waiting: dict[Key, list[int]] = {}
        self._proposed: dict[Key, int] = {}  # key -> term in which this node, as leader, proposed it
        self._outbox: list[Message] = []
        self._results: list[tuple[int, dict]] = []
        self._changes: dict[int, tuple[int, int]] = {}  # log index -> (token, term) of a membership change
        self._ticks = 0
        self._unapplied = False  # a Ready with committed entries or a snapshot is out, not applied

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def exchange(self):
        """The core Exchange as of the last applied entry (for queries only)."""
        return self.state_machine.exchange

    # -- input --------------------------------------------------------------

    def propose(self, command: object) -> int:
        """Submit a client command; its result comes back in a later ``Ready.results``.

        Raises ReplicationError (code ERR_INVALID_ORDER) for a command that
        must not enter the log.
        """
        command = self._admit(command)
        token = next(self._tokens)
        known = self.state_machine.lookup(command)
        if known is not None:
            self._results.append((token, known))
            return token
        pending = self._pending[token] = _Pending(command)
        self._waiting.setdefault(_key(command), []).append(token)
        self._route(pending)
        return token

    def change_membership(self, kind: str, member: str) -> int:
        """Ask the leader for one membership change (configuration.CHANGES);
        the result, ``{"ok": True, "configuration": ...}`` once the change is
        committed and applied here, comes back in a later ``Ready.results``.

        Raises ReplicationError: ERR_NOT_LEADER (the reason names the
        leader), or ERR_MEMBERSHIP when a rule refuses the change now.
        """
        if self.node.role != LEADER:
            raise ReplicationError(NOT_LEADER, f"{self.id} does not lead; the leader is "
                                               f"{self.node.leader or 'not known yet'}")
        try:
            index = self.node.propose_configuration(kind, member)
        except ConfigurationError as error:
            raise ReplicationError(MEMBERSHIP, str(error)) from None
        token = next(self._tokens)
        self._changes[index] = (token, self.node.term)
        return token

    def _change_applied(self, entry: Entry) -> None:
        """Answer the membership change proposed at ``entry``'s index: done,
        or lost to a new leader (then the caller checks and asks again)."""
        token, term = self._changes.pop(entry["index"])
        if entry["term"] == term and "config" in entry:
            self._results.append((token, {"ok": True, "index": entry["index"], "configuration": entry["config"]}))
        else:
            self._results.append((token, ReplicationError(
                NO_LEADER, "leadership changed before the change committed; check the members and retry"
            ).reply()))

    def _admit(self, command: object) -> dict:
        """The one check before the log: a canonical copy of ``command``, or ReplicationError."""
        try:
            return canonical_command(command)
        except ExchangeError as error:
            raise ReplicationError(error.code, error.reason) from None

    def step(self, message: Message) -> None:
        """A message from another replica."""
        if message["type"] == "raft.forward":
            if self.node.role == LEADER:
                try:
                    command = self._admit(message.get("command"))
                except ReplicationError:
                    return  # a follower of another version, or a bug there: never into the log
                self._propose_as_leader(command)
        else:
            self.node.step(message)

    def tick(self) -> None:
        """One logical tick: Raft timers, then forwarding and leader-less waits."""
        self.node.tick()
        self._ticks += 1
        leader = self.node.leader
        for token, pending in list(self._pending.items()):
            if leader is None:
                pending.leaderless += 1
                if pending.leaderless >= self.config.no_leader_ticks:
                    error = ReplicationError(
                        NO_LEADER, f"no leader known for {pending.leaderless} ticks; retry later")
                    self._finish(token, error.reply())
            else:
                pending.leaderless = 0
                if pending.sent_to != leader or self._ticks - pending.sent_at >= self.config.forward_ticks:
                    # the leader drops a forward it would refuse; the answer
                    # then comes from this replica's own state once it has it
                    known = self.state_machine.lookup(pending.command)
                    if known is None:
                        self._route(pending)
                    else:
                        self._finish(token, known)

    def _route(self, pending: _Pending) -> None:
        leader = self.node.leader
        if leader is None:
            return
        if leader == self.id:
            self._propose_as_leader(pending.command, executed=False)
        else:
            self._outbox.append({"type": "raft.forward", "to": leader, "from": self.id,
                                 "term": self.node.term, "command": pending.command})
        pending.sent_to, pending.sent_at = leader, self._ticks

    def _propose_as_leader(self, command: dict, executed: bool | None = None) -> None:
        """Append a command unless it is already executed or already in this term's log.

        ``executed=False``: the caller has just looked it up in the state machine.
        """
        key = _key(command)
        if self._proposed.get(key) == self.node.term:
            return
        if executed is None and self.state_machine.lookup(command) is not None:
            return
        if self.node.propose(command) is not None:
            self._proposed[key] = self.node.term

    def _finish(self, token: int, result: dict) -> None:
        pending = self._pending.pop(token)
        key = _key(pending.command)
        tokens = self._waiting[key]
        tokens.remove(token)
        if not tokens:
            del self._waiting[key]
        self._results.append((token, result))

    # -- output -------------------------------------------------------------

    def ready(self) -> Ready:
        """What to persist and send, accumulated since the last call.  Its
        committed entries (and an installed snapshot) are not applied yet:
        the shell persists and sends first, so that a follower's
        acknowledgement and a leader's appends do not wait for the matching
        (etcd's order), then hands the Ready to :meth:`apply`."""
        if self._unapplied:
            raise RuntimeError("ready() again before apply() of the last Ready: its committed "
                               "entries would never be applied")
        raft = self.node.ready()
        ready = Ready(hard_state=raft.hard_state, entries=raft.entries, snapshot=raft.snapshot,
                      messages=raft.messages + self._outbox, committed=raft.committed,
                      send_first=raft.send_first and not self._outbox)
        self._outbox = []
        self._unapplied = bool(ready.committed) or ready.snapshot is not None
        return ready

    def apply(self, ready: Ready) -> None:
        """Apply what :meth:`ready` handed out, in log order, and fill in
        ``ready``'s results, compaction and snapshot_due."""
        self._unapplied = False
        if ready.snapshot is not None:
            self.state_machine = ReplicatedStateMachine.restore(ready.snapshot["data"])
            for key in list(self._waiting):
                self._answer(key)
            for index in [i for i in self._changes if i <= ready.snapshot["index"]]:
                self._change_applied({"index": index, "term": 0, "command": None})
        for entry in ready.committed:
            if entry["index"] in self._changes:
                self._change_applied(entry)
            result = self.state_machine.apply(entry)
            command = entry["command"]
            if self._on_apply is not None:
                self._on_apply(entry["index"], command, result)
            if command is not None:
                key = _key(command)
                self._proposed.pop(key, None)
                self._answer(key, command, result)
        ready.compaction, ready.snapshot_due = self._compaction()
        ready.results, self._results = self._results, []

    def _answer(self, key: Key, command: dict | None = None, result: dict | None = None) -> None:
        """Answer the proposals of ``key`` that can now be answered.

        A proposal of the ``command`` just applied gets its ``result``; any
        other is looked up with its own payload, so one that reused the
        request id gets ERR_REQUEST_REUSED.
        """
        for token in list(self._waiting.get(key, ())):
            proposed = self._pending[token].command
            known = result if command is not None and proposed == command else self.state_machine.lookup(proposed)
            if known is not None:
                self._finish(token, known)

    def _compaction(self) -> tuple[Snapshot | None, Snapshot | None]:
        """A compaction done now, or (background snapshots) the snapshot to take, if one is due."""
        applied = self.state_machine.applied
        every = self.config.compact_every
        if (not every or self._snapshot_due is not None or applied - self.node.snap_index
                < max(every, self.state_machine.exchange.known_orders() // LOG_PER_ORDERS)):
            return None, None
        snapshot = {"index": applied, "term": self.node.term_at(applied),
                    "config": self.node.configuration_at(applied).to_json()}
        if self._background_snapshots:
            self._snapshot_due = applied
            return None, snapshot
        snapshot["data"] = self.state_machine.snapshot()
        self.node.compact(snapshot)
        return snapshot, None

    def snapshot_taken(self, snapshot: Snapshot) -> list[Entry] | None:
        """The snapshot ``Ready.snapshot_due`` asked for, with its ``data``:
        compact the log to it and return the entries dropped (RaftNode.compact),
        or None if a snapshot installed since covers it (the shell then drops it)."""
        self._snapshot_due = None
        if snapshot["index"] <= self.node.snap_index:
            return None
        return self.node.compact(snapshot)

    def snapshot_stored(self, index: int, data: object) -> None:
        """The snapshot of ``index`` is stored, and ``data`` (opaque here: the
        shell's reference to the stored bytes) stands for its data from now
        on, so that the parsed copy the node holds, as big as the state, can
        be freed.  Ignored if the node holds another snapshot by now."""
        snapshot = self.node.snapshot
        if snapshot is not None and snapshot["index"] == index:
            self.node.snapshot = {**snapshot, "data": data}

    def snapshot_abandoned(self) -> None:
        """The shell could not take the snapshot asked for: ask again when one is due."""
        self._snapshot_due = None

    def status(self) -> dict:
        """A JSON-able summary for operators and tests, O(1) in the size of the state."""
        node = self.node
        return {"id": node.id, "role": node.role, "term": node.term, "leader": node.leader,
                "commit": node.commit, "applied": self.state_machine.applied,
                "last_index": node.last_index, "snapshot_index": node.snap_index,
                "digest": self.state_machine.digest, "peers": list(node.peers),
                "pending": len(self._pending), "configuration": node.configuration.to_json(),
                "configuration_index": node.configuration_index,
                "match": node.progress() if node.role == LEADER else None}


def _key(command: dict) -> Key:
    return (command["client"], command["request"])
