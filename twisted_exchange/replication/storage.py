"""Stable storage for one Raft node: the contract, its rules, and a memory copy.

The Raft node is pure: it hands its shell a ready batch, and the shell
persists it through a `Storage` *before* sending any message, which is what
lets a node promise a vote or acknowledge an entry and keep that promise
across a crash (a leader's appends, which promise nothing about its disk,
may go first: ``RaftReady.send_first``).  This module does no I/O: the
contract (`Storage`, `Recovered`, `StorageError`), the rules every storage
follows (`StorageRules`), and `MemoryStorage` for the simulator and tests.  The file
storage lives in its own layer, ``twisted_exchange.wal``, as etcd keeps its
WAL outside its raft package.

Values are the TypedDicts of ``records``: Entry, HardState, Snapshot.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from twisted_exchange.replication.records import Entry, HardState, Snapshot, empty_hard_state


class StorageError(Exception):
    """Storage refused an operation or cannot trust its files.

    Raised for programming errors (a gap in the log, a stale snapshot), for
    a write after an earlier one failed, and for damage that must not be
    repaired (a corrupt hard state).  ``code`` is stable for callers.
    """

    code = "ERR_STORAGE"

    def __str__(self) -> str:
        return f"{self.code}: {super().__str__()}"


@dataclass
class Recovered:
    """What a node restarts from.

    ``entries`` are contiguous and start right after the snapshot (or at 1).
    ``repaired`` describes a torn log tail that was cut: a write that never
    completed, so never acknowledged.  ``discarded`` describes damaged data
    that was dropped although it may have been acknowledged (a corrupt
    snapshot and the log after it, or the log from a corrupt record on); the
    hard state then says the node abstains from votes (``records.abstaining``)
    until a leader has caught it up.  Both are None when nothing happened.
    """

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]
    repaired: str | None = None
    discarded: str | None = None


class Storage(Protocol):
    """The contract between a Raft node's shell and its stable storage.

    ``load()`` first, then any number of ``save()`` and ``compact()``, then
    ``close()``.  A write that fails raises OSError (or StorageError); the
    storage may then hold part of the batch, and refuses every later
    ``save()`` and ``compact()`` with StorageError until ``load()``: the
    caller must stop (fail-stop) and restart from what ``load()`` returns,
    never carry on as if the batch were durable.
    """

    def save(self, hard_state: HardState | None, entries: list[Entry],
             snapshot: Snapshot | None = None) -> None:
        """Persist one ready batch (see `StorageRules.save`)."""

    def compact(self, snapshot: Snapshot) -> None:
        """Store a snapshot taken by the state machine; drop the entries it covers."""

    def load(self) -> Recovered:
        """What the node restarts from; repairs or discards damage first."""

    def close(self) -> None:
        """Release what the storage holds; idempotent."""


class StorageRules:
    """The save/compact rules of the contract, over a few storage primitives.

    Subclasses keep the entries and implement the primitives; this class
    decides what to drop, truncate and append, and when to refuse, so every
    storage behaves identically by construction.
    """

    _snapshot: Snapshot | None  # the stored snapshot, or at least its index and term
    _failed: str | None = None  # why an earlier write failed; cleared by load()

    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Persist one ready batch, in the contract's order.

        1. ``snapshot`` (received by InstallSnapshot) replaces the stored one;
           entries it covers are dropped, the whole log if it does not hold
           the snapshot's last entry with the same term.
        2. ``entries`` overwrite the log from ``entries[0]["index"]``; entries
           already covered by the snapshot are committed, hence identical,
           and skipped.  A gap after the last stored entry is a StorageError.
        3. ``hard_state`` replaces the stored one.

        The log is made durable before the hard state, so a durable commit
        index never points past the durable log.
        """
        with self._writing():
            if snapshot is not None:
                self._install(snapshot)
            entries = self._new_entries(entries)
            if entries:
                first = entries[0]["index"]
                if first <= self._last_index():
                    self._truncate_from(first)
                self._append(entries)
                self._sync_log()
            if hard_state is not None:
                self._store_hard_state(hard_state)

    def compact(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` taken by the state machine; drop the entries it covers.

        A snapshot no newer than the stored one (say, one installed from the
        leader in the same batch) already covers it: nothing changes.
        """
        if self._snapshot is not None and snapshot["index"] <= self._snapshot["index"]:
            return
        with self._writing():
            self._install(snapshot)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One save() or compact(): after an OSError, refuse until load().

        A failed write may have stored part of a batch; whatever the caller
        does next, nothing more is written on top of it.
        """
        if self._failed is not None:
            raise StorageError(f"an earlier write failed ({self._failed}); load() again")
        try:
            yield
        except OSError as error:
            self._failed = str(error) or type(error).__name__
            raise

    def _install(self, snapshot: Snapshot) -> None:
        index = snapshot["index"]
        if self._snapshot is not None and index < self._snapshot["index"]:
            raise StorageError(
                f"snapshot at index {index} is older than the stored one at {self._snapshot['index']}"
            )
        keep_rest = self._term(index) == snapshot["term"]
        self._store_snapshot(snapshot)
        self._drop_through(index, keep_rest)

    def _term(self, index: int) -> int | None:
        """Term of the entry at ``index``, in the log or as the snapshot's last."""
        if self._snapshot is not None and index == self._snapshot["index"]:
            return self._snapshot["term"]
        return self._term_at(index)

    def _new_entries(self, entries: list[Entry]) -> list[Entry]:
        """The entries to write, after checking that they can follow the log."""
        for before, after in zip(entries, entries[1:]):
            if after["index"] != before["index"] + 1:
                raise StorageError(f"entries are not contiguous: {before['index']} then {after['index']}")
        floor = self._snapshot["index"] if self._snapshot is not None else 0
        entries = [entry for entry in entries if entry["index"] > floor]
        if entries and entries[0]["index"] > self._last_index() + 1:
            raise StorageError(
                f"entry {entries[0]['index']} would leave a gap after the last stored entry {self._last_index()}"
            )
        return entries

    def _last_index(self) -> int:
        """Index of the last stored entry, else of the snapshot, else 0."""
        raise NotImplementedError

    def _term_at(self, index: int) -> int | None:
        """Term of the stored entry at ``index``, None when there is none."""
        raise NotImplementedError

    def _store_snapshot(self, snapshot: Snapshot) -> None:
        raise NotImplementedError

    def _drop_through(self, index: int, keep_rest: bool) -> None:
        """Drop entries up to ``index``; drop all when not ``keep_rest``."""
        raise NotImplementedError

    def _truncate_from(self, index: int) -> None:
        raise NotImplementedError

    def _append(self, entries: list[Entry]) -> None:
        raise NotImplementedError

    def _sync_log(self) -> None:
        """Make the appended entries durable (per the fsync policy)."""

    def _store_hard_state(self, hard_state: HardState) -> None:
        raise NotImplementedError


class MemoryStorage(StorageRules):
    """Storage in memory, for the simulator and tests.

    What it holds is what "survives" a simulated crash.  It stores and
    returns deep copies, so a node cannot change persisted data through a
    reference it kept.
    """

    def __init__(self) -> None:
        self._hard_state = empty_hard_state()
        self._snapshot = None
        self._entries: list[Entry] = []

    def load(self) -> Recovered:
        self._failed = None
        return Recovered(
            hard_state=copy.deepcopy(self._hard_state),
            snapshot=copy.deepcopy(self._snapshot),
            entries=copy.deepcopy(self._entries),
        )

    def close(self) -> None:
        """Nothing to release; here for the shared interface."""

    def _last_index(self) -> int:
        if self._entries:
            return self._entries[-1]["index"]
        return self._snapshot["index"] if self._snapshot is not None else 0

    def _position(self, index: int) -> int:
        """Position of ``index`` in ``_entries`` (may be out of range)."""
        return index - self._last_index() + len(self._entries) - 1

    def _term_at(self, index: int) -> int | None:
        position = self._position(index)
        if 0 <= position < len(self._entries):
            return self._entries[position]["term"]
        return None

    def _store_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshot = copy.deepcopy(snapshot)

    def _drop_through(self, index: int, keep_rest: bool) -> None:
        self._entries = self._entries[max(self._position(index) + 1, 0):] if keep_rest else []

    def _truncate_from(self, index: int) -> None:
        del self._entries[self._position(index):]

    def _append(self, entries: list[Entry]) -> None:
        self._entries.extend(copy.deepcopy(entries))

    def _store_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = copy.deepcopy(hard_state)
