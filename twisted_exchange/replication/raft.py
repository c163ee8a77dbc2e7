"""A Raft node as a pure state machine, in the style of etcd/raft.

``RaftNode`` follows Figure 2 of the Raft paper (Ongaro & Ousterhout, "In
Search of an Understandable Consensus Algorithm") and adds the extensions the
thesis recommends: pre-vote and a leader lease (4.2.3, 9.6) so that a
rejoining node does not depose a healthy leader, check-quorum so that a
leader cut off from a majority steps down, fast conflict backtracking with
(term, index) hints (5.3), a no-op entry appended by every new leader (so that
entries of earlier terms commit, 5.4.2), and InstallSnapshot for followers
behind the compacted log (chapter 5; one message here, streamed in chunks by
the peer's transport, peer/snapshots.py).

The node does no I/O and reads no clock: time is ``tick()``, input is
``step(message)`` and ``propose(command)``, and everything the caller must do
comes back from ``ready()``, in this order: persist ``hard_state``,
``entries`` and ``snapshot``; then send ``messages``; then apply
``committed``.  One exception (``RaftReady.send_first``): a leader's
appends may leave before its own write of the same batch, so that the
write overlaps the followers' (thesis 10.2.1).  Randomness (election
timeouts) comes only from the injected ``random.Random``.  Messages are
plain JSON-able dicts whose ``type`` starts with ``raft.`` (they travel as
Grenache RPC actions)::

    raft.prevote / raft.vote           last_index, last_term
    raft.prevote_reply / vote_reply    granted
    raft.append                        prev_index, prev_term, entries, commit,
                                       last_index (the leader's), epoch (echoed)
    raft.append_reply                  success, match | reject_index, hint_index, hint_term;
                                       epoch (set while abstaining)
    raft.snapshot                      snapshot
    raft.snapshot_reply                match

Batching: ``propose`` only appends to the leader's log; ``ready()`` sends one
AppendEntries per follower carrying every entry proposed since the previous
``ready()`` (up to ``RaftConfig.max_entries_per_message``).

The rules are small methods (``_log_is_up_to_date``, ``_can_vote``,
``_commit_candidate``, ``_apply_limit``...) so that the tests can break one
rule at a time in a subclass and show that the simulator notices.

Membership changes are single-server (thesis 4.1; the rules of the data are
in ``configuration``): ``propose_configuration`` appends a configuration
entry that adds a learner, promotes a caught-up learner, or removes one
member.  The latest configuration in the log is in effect from the moment
its entry is appended (``configuration``), committed or not; at most one
change is uncommitted at a time (``_change_in_progress``), and a leader
appends one only once an entry of its own term is committed (the thesis'
fix, ``_committed_in_term``).  Only voters' votes and acknowledgements
count (``_counts``).  Voters campaign, and so, while they may be needed, do
a voter whose removal is not yet committed and a learner that a candidate
counting it as a voter could not win over (``_may_campaign``); a leader
that is no voter steps down once its configuration and an entry of its
term commit.  Any server accepts appends from any
leader and judges vote requests from any candidate, so a new one catches up before its configuration names it.  The
snapshot carries the configuration as of its index; the ``peers`` given to
the constructor are only the initial configuration.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from twisted_exchange.replication.configuration import (
    PROMOTE, Configuration, ConfigurationError, from_json,
)
from twisted_exchange.replication.messages import Message
from twisted_exchange.replication.records import ABSTAIN, Entry, HardState, Snapshot, empty_hard_state

FOLLOWER = "follower"
PRE_CANDIDATE = "pre-candidate"
CANDIDATE = "candidate"
LEADER = "leader"


@dataclass(frozen=True)
class RaftConfig:
    """Timing and sizes, in ticks and entries.

    An election timeout is drawn uniformly from
    ``[election_ticks, 2 * election_ticks)``; a leader sends heartbeats every
    ``heartbeat_ticks``.  The last three fields are used by ``Replica``.
    """

    election_ticks: int = 10
    heartbeat_ticks: int = 2
    pre_vote: bool = True
    max_entries_per_message: int = 4096
    forward_ticks: int = 4          # re-forward a pending proposal this often
    no_leader_ticks: int = 30       # ERR_NO_LEADER after this long without a leader
    compact_every: int = 100_000    # snapshot + compact after this many applied entries (0: never)


@dataclass
class RaftReady:
    """What the caller must do, in order: persist, send, apply.

    ``send_first``: the messages may be sent before the persisting, which
    the caller then finishes before it steps anything else (see
    ``RaftNode._may_send_first``).
    """

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    send_first: bool = False


class RaftNode:
    """One member of a Raft group; see the module docstring.

    ``peers`` is the initial configuration (every voter, this node included
    or not): it is in effect until the snapshot or the log holds one.
    """

    def __init__(self, node_id: str, peers: list[str], rng: random.Random,
                 config: RaftConfig = RaftConfig(), hard_state: HardState | None = None,
                 snapshot: Snapshot | None = None, entries: list[Entry] = ()) -> None:
        self.id = node_id
        self.initial = Configuration.of(peers)
        self.config = config
        self._rng = rng
        hard_state = hard_state or empty_hard_state()
        self.term: int = hard_state["term"]
        self.vote: str | None = hard_state["vote"]
        self.abstain_until_term: int | None = hard_state.get(ABSTAIN)
        self.snapshot: Snapshot | None = snapshot
        self.snap_index = snapshot["index"] if snapshot else 0
        self.snap_term = snapshot["term"] if snapshot else 0
        self.log: list[Entry] = list(entries)
        self._snap_config = self._snapshot_configuration(snapshot)
        self._configs: list[tuple[int, Configuration]] = []  # configuration entries after the snapshot
        self._note_configurations(self.log)
        # A repaired torn tail can only have cut entries this node never acknowledged.
        self.commit = min(max(hard_state["commit"], self.snap_index), self.last_index)
        self.applied = self.snap_index        # last index handed out in ready().committed
        self.role = FOLLOWER
        self.leader: str | None = None
        self._saved = self._hard()
        self._end_abstention()
        self._unstable = self.last_index + 1  # first entry not yet handed out to persist
        self._received: Snapshot | None = None
        self._outbox: list[Message] = []
        self._votes: dict[str, bool] = {}
        self._refused_candidate = False   # since a leader was last heard from; see _may_campaign
        self._next: dict[str, int] = {}
        self._match: dict[str, int] = {}
        self._snapshot_paused: dict[str, int] = {}
        self._active: set[str] = set()
        self._heartbeat_due = False
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        self._ticks = 0
        self._timeout = self._random_timeout()
        # Drawn per incarnation while abstaining; see _abstains.
        self.epoch: int | None = self._rng.getrandbits(62) if self._abstains() else None
        self._epochs: dict[str, int | None] = {}  # leader: the epoch each follower last sent

    # -- log ----------------------------------------------------------------

    @property
    def last_index(self) -> int:
        return self.snap_index + len(self.log)

    @property
    def last_term(self) -> int:
        return self.log[-1]["term"] if self.log else self.snap_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``, or None if compacted or absent."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index:
            return None
        return self.log[index - self.snap_index - 1]["term"]

    def entries(self, start: int, stop: int) -> list[Entry]:
        """Entries with ``start <= index < stop`` (all still in the log)."""
        return self.log[start - self.snap_index - 1:stop - self.snap_index - 1]

    def _truncate(self, index: int) -> None:
        """Drop the entries from ``index`` on (an uncommitted, conflicting suffix)."""
        del self.log[index - self.snap_index - 1:]
        self._unstable = min(self._unstable, index)
        self._configs = [(i, c) for i, c in self._configs if i < index]
        self._unsend_acknowledgements(index)

    def _unsend_acknowledgements(self, index: int) -> None:
        """Drop the queued acknowledgements of entries from ``index`` on: they
        were dropped before ``ready()`` persisted them, and would otherwise
        promise an older leader entries this node never stored (messages
        leave only after the batch is persisted, so none has left yet)."""
        self._outbox = [m for m in self._outbox
                        if not (m["type"] == "raft.append_reply" and m["success"] and m["match"] >= index)]

    # -- membership -----------------------------------------------------------

    @property
    def configuration(self) -> Configuration:
        """The configuration in effect: the latest in the log, committed or not."""
        return self._configs[-1][1] if self._configs else self._snap_config

    @property
    def peers(self) -> list[str]:
        """Every other member (voters and learners): where a leader replicates to."""
        return [m for m in self.configuration.members if m != self.id]

    @property
    def configuration_index(self) -> int:
        """The index of the latest configuration entry still in the log, else 0."""
        return self._configs[-1][0] if self._configs else 0

    def configuration_at(self, index: int) -> Configuration:
        """The configuration as of entry ``index`` (>= the snapshot's)."""
        found = self._snap_config
        for at, configuration in self._configs:
            if at <= index:
                found = configuration
        return found

    def progress(self) -> dict[str, int]:
        """Leader: the highest index known to be stored on each other member."""
        return dict(self._match)

    def propose_configuration(self, kind: str, member: str) -> int:
        """Append the configuration after ``kind`` (configuration.CHANGES) of
        ``member``; its index.  ConfigurationError when not leader or a rule
        refuses (see the module docstring)."""
        if self.role != LEADER:
            raise ConfigurationError(f"{self.id} is not the leader")
        if self._change_in_progress():
            raise ConfigurationError(f"the change at index {self.configuration_index} is not committed yet")
        if not self._committed_in_term():
            raise ConfigurationError(f"no entry of term {self.term} is committed yet")
        new = self.configuration.change(kind, member)
        if kind == PROMOTE and not self._caught_up(member):
            raise ConfigurationError(f"{member} has entries up to {self._match.get(member, 0)} "
                                     f"of {self.last_index}: not caught up yet")
        entry = {"index": self.last_index + 1, "term": self.term, "command": None, "config": new.to_json()}
        self.log.append(entry)
        self._note_configurations([entry])
        self._sync_progress()
        return entry["index"]

    def _change_in_progress(self) -> bool:
        """One uncommitted configuration at a time: a second change could
        otherwise differ by two voters from a configuration still in use."""
        return self.configuration_index > self.commit

    def _committed_in_term(self) -> bool:
        """Thesis 4.1 (the fix of 2015): a leader changes the configuration
        only once an entry of its own term is committed, so it holds every
        configuration committed before its term."""
        return self.term_at(self.commit) == self.term

    def _caught_up(self, learner: str) -> bool:
        """A learner is promoted once one message would bring it up to date."""
        match = self._match.get(learner, 0)
        return match > 0 and match + self.config.max_entries_per_message >= self.last_index

    def _may_campaign(self) -> bool:
        """A voter campaigns, and so does a server that is not one in its
        latest configuration while it may be needed (thesis 4.2.2); it never
        counts its own vote (``_counts``).  Who campaigns is no part of
        Election Safety or Leader Completeness: those rest on one vote per
        voter and term, the log comparison, and a majority of the
        candidate's latest configuration, whoever the candidate is.  It is
        liveness (a log that every quorum needs must be able to stand)
        against disruption (kept down by pre-vote and the lease).

        - A voter whose removal is in its log but not committed (as a
          removed leader keeps leading until then).  Its log may be the only
          one holding that removal, and the voters of the old configuration
          refuse anyone else whose log is behind it.  It wins only with a
          majority of the new voters; once the removal commits it steps
          down and stops campaigning.
        - A learner that has refused a candidate on the log comparison since
          it last heard from a leader (sim seed 7663).  The candidate asked
          for its vote, so the candidate's configuration counts it as a
          voter: a promotion this log lacks, and may never receive, as this
          log is the more up to date.  That candidate cannot win without
          this vote; the learner, counting by its own configuration, can win
          with a majority of those voters and bring them its log.  It leads
          until an entry of its term commits (``_step_down_if_removed``) and
          stops campaigning once it has led or heard from a leader.  Other
          learners, and servers their configuration does not name, never
          campaign.
        """
        configuration = self.configuration
        if self.id in configuration.voters:
            return True
        if self.id in configuration.learners:
            return self._refused_candidate
        index = self.configuration_index
        return index > self.commit and self.id in self.configuration_at(index - 1).voters

    def _counts(self, member: str) -> bool:
        """Does ``member``'s vote or acknowledgement count toward a majority?"""
        return member in self.configuration.voters

    def _majority(self, members) -> bool:
        return sum(1 for m in members if self._counts(m)) >= self.configuration.quorum

    def _note_configurations(self, entries: list[Entry]) -> None:
        for entry in entries:
            if "config" in entry:
                self._configs.append((entry["index"], from_json(entry["config"])))

    def _snapshot_configuration(self, snapshot: Snapshot | None) -> Configuration:
        """The snapshot's configuration; a snapshot without one (written before
        they existed) means the initial configuration."""
        if snapshot is not None and "config" in snapshot:
            return from_json(snapshot["config"])
        return self.initial

    def _sync_progress(self) -> None:
        """Leader: one progress (next, match) per member, none for others."""
        if self.role != LEADER:
            return
        peers = self.peers
        for peer in peers:
            if peer not in self._next:
                self._next[peer], self._match[peer] = self.last_index + 1, 0
        for peer in [p for p in self._next if p not in peers]:
            del self._next[peer], self._match[peer]
            self._snapshot_paused.pop(peer, None)
            self._epochs.pop(peer, None)

    # -- input --------------------------------------------------------------

    def tick(self) -> None:
        """One unit of logical time: heartbeats, election timeouts, check-quorum."""
        self._ticks += 1
        self._election_elapsed += 1
        if self.role == LEADER:
            self._heartbeat_elapsed += 1
            if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
                self._heartbeat_elapsed = 0
                self._heartbeat_due = True
            if self._election_elapsed >= self.config.election_ticks:
                self._election_elapsed = 0
                if not self._majority(self._active | {self.id}):
                    self._become_follower(self.term, None)
                self._active = set()
        elif self._election_elapsed >= self._timeout:
            if self._abstains() or not self._may_campaign():
                self._reset_timers()
                self.leader = None  # heard from no leader for a timeout: stop routing to it
            else:
                self._campaign(pre_vote=self.config.pre_vote)

    def propose(self, command: dict | None) -> int | None:
        """Append ``command`` if leader; return its index, or None if not leader."""
        if self.role != LEADER:
            return None
        entry = {"index": self.last_index + 1, "term": self.term, "command": command}
        self.log.append(entry)
        return entry["index"]

    def compact(self, snapshot: Snapshot) -> list[Entry]:
        """Replace the log up to ``snapshot["index"]`` (<= applied) by
        ``snapshot``; the entries dropped, which the caller may free when it
        suits it (peer/service.py frees them a slice per reactor turn)."""
        index = snapshot["index"]
        if not self.snap_index < index <= self.applied:
            raise ValueError(f"cannot compact to {index}: snapshot {self.snap_index}, applied {self.applied}")
        if snapshot["term"] != self.term_at(index):
            raise ValueError(f"snapshot term {snapshot['term']} != log term at {index}")
        self._snap_config = self.configuration_at(index)
        self._configs = [(i, c) for i, c in self._configs if i > index]
        # Copy the few entries kept rather than the many dropped: a slice of the
        # dropped prefix touches every entry's reference count, so every page of
        # the log, which a forked snapshot writer has just made copy-on-write.
        dropped, self.log = self.log, self.log[index - self.snap_index:]
        del dropped[index - self.snap_index:]
        self.snapshot, self.snap_index, self.snap_term = snapshot, index, snapshot["term"]
        return dropped

    def step(self, message: Message) -> None:
        """Handle one message from another node (Figure 2, "Rules for Servers")."""
        kind, term = message["type"], message["term"]
        if message.get("from") == self.id:
            return
        # A vote request is judged whether or not its candidate is in our
        # configuration (thesis 4.1): a server behind a change that added the
        # candidate may hold the vote the candidate needs.  A removed server
        # is kept from disrupting by the lease below and pre-vote, and from
        # winning by the log comparison (its log lacks the committed removal).
        if term > self.term:
            if kind in ("raft.vote", "raft.prevote") and self._in_lease():
                return  # thesis 4.2.3: a server that hears from a leader ignores disruptors
            if kind == "raft.prevote" or (kind == "raft.prevote_reply" and message["granted"]):
                pass  # pre-vote never changes terms
            elif kind in ("raft.append", "raft.snapshot"):
                self._become_follower(term, message["from"])
            else:
                self._become_follower(term, None)
        elif term < self.term:
            if kind in ("raft.append", "raft.snapshot"):
                # Tell a stale leader about the newer term so that it steps down.
                self._reply_append(message["from"], success=False,
                                   reject_index=message.get("prev_index", 0), hint_index=0, hint_term=None)
            elif kind in ("raft.prevote", "raft.vote"):
                self._send(message["from"], kind + "_reply", granted=False)
            return
        handler = self._handlers.get(kind)
        if handler is not None:
            handler(self, message)

    # -- elections ----------------------------------------------------------

    def _random_timeout(self) -> int:
        return self.config.election_ticks + self._rng.randrange(self.config.election_ticks)

    def _reset_timers(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = self._random_timeout()

    def _in_lease(self) -> bool:
        """True while this node has heard from a live leader within the minimum timeout."""
        return self.leader is not None and self._election_elapsed < self.config.election_ticks

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self.term:
            self.term, self.vote = term, None
        self.role, self.leader = FOLLOWER, leader
        self._reset_timers()

    def _campaign(self, pre_vote: bool) -> None:
        self._reset_timers()
        self.leader = None
        if pre_vote:
            self.role = PRE_CANDIDATE
            term, kind = self.term + 1, "raft.prevote"
        else:
            self.role = CANDIDATE
            self.term, self.vote = self.term + 1, self.id
            term, kind = self.term, "raft.vote"
        self._votes = {self.id: True}
        for peer in self.configuration.voters:
            if peer != self.id:
                self._send(peer, kind, term=term, last_index=self.last_index, last_term=self.last_term)
        self._count_votes()

    def _log_is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Figure 2 / 5.4.1: the candidate's log is at least as up-to-date as ours."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def _can_vote(self, message: Message) -> bool:
        """At most one vote per term (a pre-vote for a later term promises nothing)."""
        if message["type"] == "raft.prevote":
            return message["term"] > self.term
        return self.vote == message["from"] or (self.vote is None and self.leader is None)

    def _abstains(self) -> bool:
        """No vote (for itself or others, pre-votes too) after losing stored data.

        A node that discarded damaged data (``Recovered.discarded``) may have
        lost entries it acknowledged, so the log comparison of 5.4.1 no
        longer speaks for them: its vote could elect a leader that lacks a
        committed entry.  Storage marks its hard state with T, its term at
        the loss (``abstain_until_term``); the node abstains until its log
        holds an entry of a term greater than T.  Why that is enough:

        - every entry it acknowledged, it acknowledged in a term <= T (acks
          leave only after the hard state of their term is durable), so if
          committed with its help, it was committed in a term <= T;
        - by Leader Completeness every leader of a term > T holds those
          entries, and appends its own entries only after them;
        - an entry of term U > T in this log came from the leader of U
          through the consistency check (a node that abstains never leads),
          so by Log Matching this log also holds everything before it, in
          particular every entry committed in a term <= T.  From then on
          its log speaks for what it acknowledged again;
        - the same holds once its log matches the whole log of the leader of
          its current term (a term >= T) as that leader sent it (an append
          whose entries reach the leader's ``last_index``) after this
          restart: that leader holds every entry committed before its term
          (Leader Completeness) and every entry it had sent before the
          restart, so every entry acknowledged to it (a leader never drops
          its own entries).  "After this restart" is the ``epoch``: a random
          number drawn per incarnation while abstaining, sent in append
          replies and echoed by the leader in appends.  An append sent
          before the restart (queued or delayed) echoes no epoch of this
          incarnation, and could end before entries acknowledged later.  So
          a stable cluster need not wait for an election to have the vote back.

        While it abstains, every election is won by a majority of the other
        nodes alone, so its vote cannot make a leader that lacks them.
        """
        return self.abstain_until_term is not None

    def _end_abstention(self, holds_leader_log: bool = False) -> None:
        """Vote again once caught up (see ``_abstains``): past the abstention
        term, or holding all of the current leader's log as it was after
        this restart."""
        if self.abstain_until_term is not None and (holds_leader_log
                                                    or self.last_term > self.abstain_until_term):
            self.abstain_until_term = self.epoch = None

    def _on_vote(self, message: Message) -> None:
        up_to_date = self._log_is_up_to_date(message["last_index"], message["last_term"])
        self._refused_candidate |= not up_to_date
        granted = not self._abstains() and self._can_vote(message) and up_to_date
        if granted and message["type"] == "raft.vote":
            self.vote = message["from"]
            self._reset_timers()
        self._send(message["from"], message["type"] + "_reply",
                   term=message["term"] if granted else self.term, granted=granted)

    def _on_vote_reply(self, message: Message) -> None:
        if self.role == PRE_CANDIDATE and message["type"] == "raft.prevote_reply":
            # A grant names the pre-vote term; a refusal names the refuser's term (<= ours here).
            if message["granted"] and message["term"] != self.term + 1:
                return
        elif not (self.role == CANDIDATE and message["type"] == "raft.vote_reply"):
            return
        self._votes[message["from"]] = message["granted"]
        self._count_votes()

    def _count_votes(self) -> None:
        if self._majority(peer for peer, granted in self._votes.items() if granted):
            if self.role == PRE_CANDIDATE:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
        elif self._majority(peer for peer, granted in self._votes.items() if not granted):
            self._become_follower(self.term, None)

    def _become_leader(self) -> None:
        self.role, self.leader = LEADER, self.id
        self._refused_candidate = False
        self._reset_timers()
        self._next, self._match = {}, {}
        self._epochs = {}
        self._snapshot_paused = {}
        self._sync_progress()
        self._active = set()
        self.propose(None)  # 5.4.2: commit earlier terms' entries through one of ours

    # -- replication: follower side -------------------------------------------

    def _on_append(self, message: Message) -> None:
        self._follow(message["from"])
        prev_index, prev_term = message["prev_index"], message["prev_term"]
        entries = message["entries"]
        if prev_index < self.commit:
            # Everything up to our commit index matches the leader (Log Matching).
            entries = entries[self.commit - prev_index:]
            prev_index, prev_term = self.commit, self.term_at(self.commit)
        ours = self.term_at(prev_index)
        if ours != prev_term:
            if ours is None:
                hint_index, hint_term = self.last_index + 1, None
            else:
                hint_index, hint_term = prev_index, ours
                while hint_index - 1 > self.snap_index and self.term_at(hint_index - 1) == ours:
                    hint_index -= 1
            self._reply_append(message["from"], success=False,
                               reject_index=message["prev_index"], hint_index=hint_index, hint_term=hint_term)
            return
        for offset, entry in enumerate(entries):
            index = entry["index"]
            existing = self.term_at(index)
            if existing != entry["term"]:
                if existing is not None:
                    self._truncate(index)
                self.log.extend(entries[offset:])
                self._note_configurations(entries[offset:])
                break
        last_new = prev_index + len(entries)
        self._advance_commit(min(message["commit"], last_new))
        self._end_abstention(holds_leader_log=self._holds_leader_log(message, last_new))
        self._reply_append(message["from"], success=True, match=max(last_new, self.commit))

    def _follow(self, leader: str) -> None:
        """Heard from the leader of our term: follow it (no learner is needed to stand now)."""
        self.role, self.leader = FOLLOWER, leader
        self._refused_candidate = False
        self._reset_timers()

    def _holds_leader_log(self, message: Message, last_new: int) -> bool:
        """This log now ends no earlier than the leader's did when it sent
        ``message``, sent after this restart (it echoes our epoch)."""
        return message["epoch"] is not None and message["epoch"] == self.epoch and last_new >= message["last_index"]

    def _reply_append(self, to: str, **fields: Any) -> None:
        """An append reply; while abstaining it carries this incarnation's epoch."""
        self._send(to, "raft.append_reply", epoch=self.epoch, **fields)

    def _on_snapshot(self, message: Message) -> None:
        self._follow(message["from"])
        snapshot = message["snapshot"]
        index = snapshot["index"]
        if index > self.commit:
            if self.term_at(index) == snapshot["term"]:
                del self.log[:index - self.snap_index]
                self._configs = [(i, c) for i, c in self._configs if i > index]
                self._unstable = max(self._unstable, index + 1)
            else:
                self.log, self._configs = [], []
                self._unsend_acknowledgements(index + 1)
                # Storage drops its whole log too: nothing after the snapshot is stored any more.
                self._unstable = index + 1
            self._snap_config = self._snapshot_configuration(snapshot)
            self.snapshot, self.snap_index, self.snap_term = snapshot, index, snapshot["term"]
            self.commit = self.applied = index
            self._received = snapshot
            self._end_abstention()
        self._send(message["from"], "raft.snapshot_reply", match=self.commit)

    def _advance_commit(self, index: int) -> None:
        if index > self.commit:
            self.commit = index

    # -- replication: leader side ---------------------------------------------

    def _on_append_reply(self, message: Message) -> None:
        peer = message["from"]
        if self.role != LEADER or peer not in self._match:
            return
        self._active.add(peer)
        self._epochs[peer] = message["epoch"]
        if message["success"]:
            self._record_match(peer, message["match"])
            return
        if message["reject_index"] < self._match[peer]:
            return  # stale: that position is already known to match
        if message["hint_index"] == 0:
            # The refusal of an append from an older term (see step) that
            # arrives once this node leads the refuser's term: it says
            # nothing about the follower's log, and read as "log ends at 0"
            # it would move next below 1.
            return
        if message["hint_term"] is None and message["hint_index"] <= self._match[peer]:
            # The follower's log ends below what it acknowledged: it lost its
            # disk (a wiped data directory).  Forget its match so that it is
            # caught up again, by snapshot if the log was compacted.  Commit
            # never moves back, so a lower match only costs a resend.
            self._match[peer] = message["hint_index"] - 1
        next_index = message["hint_index"]
        if message["hint_term"] is not None:
            index = min(message["reject_index"], self.last_index)
            while index > self.snap_index and self.term_at(index) != message["hint_term"]:
                index -= 1
            if index > self.snap_index:
                next_index = index + 1
        self._next[peer] = max(self._match[peer] + 1, min(next_index, message["reject_index"]))

    def _on_snapshot_reply(self, message: Message) -> None:
        if self.role != LEADER or message["from"] not in self._match:
            return
        self._active.add(message["from"])
        self._snapshot_paused.pop(message["from"], None)
        self._record_match(message["from"], message["match"])

    def _record_match(self, peer: str, match: int) -> None:
        if match > self._match[peer]:
            self._match[peer] = match
        self._next[peer] = max(self._next[peer], self._match[peer] + 1)
        self._commit_what_a_majority_holds()

    def _commit_what_a_majority_holds(self) -> None:
        """Leader: advance the commit index to ``_commit_candidate``, if higher."""
        commit = self._commit_candidate()
        if commit > self.commit:
            self._advance_commit(commit)
            self._heartbeat_due = True  # tell followers now: their clients wait for it

    def _commit_candidate(self) -> int:
        """The highest index a majority of the voters holds, if it is from the
        current term (5.4.2).  A leader that removed itself does not count."""
        matched = sorted((match for peer, match in [(self.id, self.last_index), *self._match.items()]
                          if self._counts(peer)), reverse=True)
        quorum = self.configuration.quorum
        if len(matched) < quorum:
            return self.commit
        index = matched[quorum - 1]
        return index if self.term_at(index) == self.term else self.commit

    def _send_append(self, peer: str) -> None:
        prev = self._next[peer] - 1
        prev_term = self.term_at(prev)
        if prev_term is None:  # behind our compacted log: InstallSnapshot
            paused = self._snapshot_paused.get(peer)
            if paused is None or self._ticks - paused >= self.config.election_ticks:
                self._snapshot_paused[peer] = self._ticks
                self._send(peer, "raft.snapshot", snapshot=self.snapshot)
            return
        stop = min(self.last_index + 1, prev + 1 + self.config.max_entries_per_message)
        self._send(peer, "raft.append", prev_index=prev, prev_term=prev_term,
                   entries=self.entries(prev + 1, stop), commit=self.commit, last_index=self.last_index,
                   epoch=self._epochs.get(peer))
        self._next[peer] = stop

    # -- output -------------------------------------------------------------

    def _send(self, to: str, kind: str, term: int | None = None, **fields: Any) -> None:
        fields.update(type=kind, to=to, term=self.term if term is None else term)
        fields["from"] = self.id
        self._outbox.append(fields)

    def _step_down_if_removed(self) -> None:
        """A leader that is no voter in its configuration steps down once that
        configuration and an entry of its own term are committed (and the
        appends just sent tell the others).  The second matters to a learner
        elected by ``_may_campaign``, whose configuration may be committed
        already: stepping down before a majority of the voters holds its
        log would leave them behind it, to be refused by it again."""
        if (self.id not in self.configuration.voters and self.commit >= self.configuration_index
                and self._committed_in_term()):
            self._become_follower(self.term, None)

    def _apply_limit(self) -> int:
        """The last index that may be handed out for applying: the commit index."""
        return self.commit

    def _hard(self) -> tuple[int, str | None, int | None]:
        """What must be durable before a message leaves (Figure 2's persistent
        state besides the log, and the abstention).  The commit index is
        volatile in Raft: it rides along whenever the hard state is written,
        but a commit advance alone costs no write, which would otherwise be
        one atomic file replace per batch."""
        return (self.term, self.vote, self.abstain_until_term)

    def ready(self) -> RaftReady:
        """Collect and clear everything to persist, send and apply since the last call."""
        if self.role == LEADER:
            self._sync_progress()
            self._commit_what_a_majority_holds()  # a lone voter has no reply to wait for
            for peer in self.peers:
                if self._heartbeat_due or self._next[peer] <= self.last_index:
                    self._send_append(peer)
            self._heartbeat_due = False
            self._step_down_if_removed()
        ready = RaftReady(messages=self._outbox, snapshot=self._received)
        self._outbox, self._received = [], None
        if self._saved != self._hard():
            self._saved = self._hard()
            ready.hard_state = {"term": self.term, "vote": self.vote, "commit": self.commit}
            if self.abstain_until_term is not None:
                ready.hard_state[ABSTAIN] = self.abstain_until_term
        if self._unstable <= self.last_index:
            ready.entries = self.entries(self._unstable, self.last_index + 1)
        self._unstable = self.last_index + 1
        limit = self._apply_limit()
        if self.applied < limit:
            ready.committed = self.entries(self.applied + 1, limit + 1)
            self.applied = limit
        ready.send_first = self._may_send_first(ready)
        return ready

    def _may_send_first(self, ready: RaftReady) -> bool:
        """Whether ``ready``'s messages may leave before it is persisted.

        Only a leader's appends, with its term and vote already durable and
        a commit index no higher than the log stored before this batch: they
        promise nothing about this node's disk.  The leader counts its own
        new entries toward a commit, but only once another voter
        acknowledges them, which the caller steps after this write; so a
        committed entry is still on a majority's disks.  A single voter
        commits its new entries at once: its commit index then covers them,
        and its appends (to learners) wait for the write.
        """
        if self.role != LEADER or ready.hard_state is not None or ready.snapshot is not None:
            return False
        stored = ready.entries[0]["index"] - 1 if ready.entries else self.last_index
        return all(m["type"] == "raft.append" and m["commit"] <= stored for m in ready.messages)

    _handlers = {
        "raft.prevote": _on_vote,
        "raft.vote": _on_vote,
        "raft.prevote_reply": _on_vote_reply,
        "raft.vote_reply": _on_vote_reply,
        "raft.append": _on_append,
        "raft.append_reply": _on_append_reply,
        "raft.snapshot": _on_snapshot,
        "raft.snapshot_reply": _on_snapshot_reply,
    }
