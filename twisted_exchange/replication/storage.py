"""Stable storage for one Raft node: hard state, log entries and snapshot.

The Raft node (replica.py) is pure: it hands its shell a ready batch, and the
shell persists it here *before* sending any message, which is what lets a
node promise a vote or acknowledge an entry and keep that promise across a
crash.  Two storages share one contract (``save``, ``compact``, ``load``,
``close``) and one implementation of its rules, in `_Storage`:

- `MemoryStorage` holds deep copies in memory; the simulator keeps the object
  across a simulated crash and rebuilds the node from ``load()``.
- `FileStorage` keeps one data directory per peer (see its docstring).

All values are plain JSON-able dicts (see notes/replication-contract.md)::

    Entry     = {"index": int >= 1, "term": int >= 1, "command": dict | None}
    HardState = {"term": int, "vote": str | None, "commit": int}
    Snapshot  = {"index": int, "term": int, "data": <JSON-able>}
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

Entry = dict[str, Any]
HardState = dict[str, Any]
Snapshot = dict[str, Any]


def empty_hard_state() -> HardState:
    """The hard state of a node that never saved one."""
    return {"term": 0, "vote": None, "commit": 0}


class StorageError(Exception):
    """Storage refused an operation or cannot trust its files.

    Raised for programming errors (a gap in the log, a stale snapshot) and for
    damage that must not be repaired silently (a corrupt hard-state or
    snapshot file).  ``code`` is stable for callers that report it.
    """

    code = "ERR_STORAGE"

    def __str__(self) -> str:
        return f"{self.code}: {super().__str__()}"


@dataclass
class Recovered:
    """What a node restarts from.

    ``entries`` are contiguous and start right after the snapshot (or at 1);
    ``repaired`` describes a torn or corrupt log tail that was cut, else None.
    """

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]
    repaired: str | None = None


class _Storage:
    """The save/compact rules of the contract, over a few storage primitives.

    Subclasses keep the entries and implement the primitives; this class
    decides what to drop, truncate and append, so both storages behave
    identically by construction.
    """

    _snapshot: Snapshot | None

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
        """Store ``snapshot`` taken by the state machine; drop the entries it covers."""
        self._install(snapshot)

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


class MemoryStorage(_Storage):
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
