"""Stable storage for one Raft node: hard state, log entries and snapshot.

The Raft node (replica.py) is pure: it hands its shell a ready batch, and the
shell persists it here *before* sending any message, which is what lets a
node promise a vote or acknowledge an entry and keep that promise across a
crash.  Two storages share one contract (``save``, ``compact``, ``load``,
``close``) and one implementation of its rules, in `_Storage`:

- `MemoryStorage` holds deep copies in memory; the simulator keeps the object
  across a simulated crash and rebuilds the node from ``load()``.
- `FileStorage` keeps one data directory per peer (see its docstring).

All values are plain JSON-able dicts (the contract between storage, replica and the peer shell)::

    Entry     = {"index": int >= 1, "term": int >= 1, "command": dict | None}
    HardState = {"term": int, "vote": str | None, "commit": int}
    Snapshot  = {"index": int, "term": int, "data": <JSON-able>}
"""
from __future__ import annotations

import copy
import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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

    _snapshot: Snapshot | None  # the stored snapshot, or at least its index and term

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

    def _writing(self) -> AbstractContextManager[None]:
        """Context of one save() or compact(): where a storage refuses or fails."""
        return nullcontext()

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


LOG = "log"
HARD_STATE = "hardstate.json"
SNAPSHOT = "snapshot.json"
FSYNC_POLICIES = ("batch", "never")

_HEADER = struct.Struct(">II")  # body length, CRC32 of the body

logger = logging.getLogger(__name__)


class FileStorage(_Storage):
    """Storage in one data directory per peer.

    Files:

    ``log``
        Append-only.  Each entry is one record: an 8-byte header (big-endian
        body length, CRC32 of the body) then the entry as canonical JSON.
        An in-memory index of entry index -> file offset makes overwriting
        from an index one truncate, and a batch of entries is one write.
    ``hardstate.json``, ``snapshot.json``
        Replaced atomically: temp file, fsync, rename, fsync the directory.
        Object keys keep their order, so a snapshot loads back exactly as
        MemoryStorage would return it.
        Compaction replaces ``log`` the same way, with only the entries
        after the snapshot.

    ``load()`` cuts a torn or corrupt log tail: a short header or body, a
    CRC mismatch, an undecodable record or an index out of sequence, and
    everything after it, since nothing after damage can be trusted.  It
    reports the cut in ``Recovered.repaired`` and in the log.  A damaged
    hard-state or snapshot file is different: atomic replacement never
    leaves one half-written, so it raises StorageError rather than forget
    a vote or committed state.

    ``fsync`` is the durability policy:

    - ``"batch"`` (default): one fsync of the log per save() that appends,
      plus the fsyncs of every atomic replacement.  What save() returned from
      survives a crash of the machine.
    - ``"never"``: no fsync at all.  FOR TESTS AND BENCHMARKS ONLY: a crash
      of the machine can lose acknowledged entries and votes, which breaks
      Raft's safety.

    The directory is locked (flock) while open: one FileStorage per
    directory, until close().  Call load() before save() or compact().
    """

    def __init__(self, directory: str | os.PathLike, fsync: str = "batch") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self._directory = Path(directory)
        self._fsync = fsync == "batch"
        self._log: BinaryIO | None = None
        self._failed: str | None = None
        self._snapshot = None
        self._first = 1
        self._terms: list[int] = []
        self._offsets: list[int] = []
        self._end = 0
        self._directory.mkdir(parents=True, exist_ok=True)
        self._directory_fd: int | None = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._directory_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise StorageError(f"{self._directory} is already open in another FileStorage") from None

    def load(self) -> Recovered:
        """Read the directory, cut a damaged log tail, and get ready to save."""
        if self._directory_fd is None:
            raise StorageError(f"{self._directory}: storage is closed")
        hard_state = self._read_json(HARD_STATE, _is_hard_state) or empty_hard_state()
        snapshot = self._read_json(SNAPSHOT, _is_snapshot)
        for name in (LOG, HARD_STATE, SNAPSHOT):
            self._path(name + ".tmp").unlink(missing_ok=True)
        try:
            data = self._path(LOG).read_bytes()
        except FileNotFoundError:
            data = b""
        entries, offsets, end, damage = _scan(data)
        problems = [f"{damage}: cut {len(data) - end} bytes"] if damage else []
        floor = snapshot["index"] if snapshot is not None else 0
        if entries and entries[0]["index"] > floor + 1:
            problems.append(f"log starts at entry {entries[0]['index']}, after a gap from {floor}: dropped it")
            keep = len(entries)
        else:
            keep = _kept_after(entries, snapshot)
        start = offsets[keep] if keep < len(offsets) else end
        if start > 0:
            self._replace(LOG, data[start:end])
        self._open_log()
        if start == 0 and end < len(data):
            self._log.truncate(end)
            self._sync_log()
        self._snapshot = None if snapshot is None else {"index": floor, "term": snapshot["term"]}
        entries = entries[keep:]
        self._first = entries[0]["index"] if entries else floor + 1
        self._terms = [entry["term"] for entry in entries]
        self._offsets = [offset - start for offset in offsets[keep:]]
        self._end = end - start
        self._failed = None
        repaired = None
        if problems:
            repaired = f"{self._path(LOG)}: " + "; ".join(problems) + f"; kept entries up to {self._last_index()}"
            logger.warning("repaired %s", repaired)
        return Recovered(hard_state, snapshot, entries, repaired)

    def close(self) -> None:
        """Close the files and unlock the directory; idempotent."""
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._directory_fd is not None:
            os.close(self._directory_fd)
            self._directory_fd = None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Refuse to write unless loaded; after an I/O error, refuse until load().

        A failed write may leave the file and the offset index apart; load()
        brings them back together from what is on disk.
        """
        if self._log is None:
            raise StorageError(f"{self._directory}: load() before saving (or storage is closed)")
        if self._failed is not None:
            raise StorageError(f"{self._directory}: an earlier write failed ({self._failed}); load() again")
        try:
            yield
        except OSError as error:
            self._failed = str(error)
            raise

    def _path(self, name: str) -> Path:
        return self._directory / name

    def _read_json(self, name: str, valid: Callable[[Any], bool]) -> Any:
        """The value in file ``name``, None if missing; StorageError if damaged."""
        path = self._path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            value = json.loads(raw)
        except ValueError as error:
            raise StorageError(
                f"{path} is not valid JSON ({error}); it is replaced atomically, so this is damage, "
                "not a torn write: refusing to start rather than lose acknowledged state"
            ) from None
        if not valid(value):
            raise StorageError(f"{path} does not hold what it should: {value!r:.200}")
        return value

    def _replace(self, name: str, data: bytes) -> None:
        """Replace file ``name`` by ``data`` atomically (durably under "batch")."""
        temporary = self._path(name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            if self._fsync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, self._path(name))
        if self._fsync:
            os.fsync(self._directory_fd)

    def _open_log(self) -> None:
        if self._log is not None:
            self._log.close()
        created = not self._path(LOG).exists()
        self._log = open(self._path(LOG), "ab")
        if created and self._fsync:
            os.fsync(self._directory_fd)

    def _last_index(self) -> int:
        return self._first + len(self._terms) - 1

    def _term_at(self, index: int) -> int | None:
        position = index - self._first
        return self._terms[position] if 0 <= position < len(self._terms) else None

    def _store_snapshot(self, snapshot: Snapshot) -> None:
        self._replace(SNAPSHOT, _compact_json(snapshot))
        self._snapshot = {"index": snapshot["index"], "term": snapshot["term"]}

    def _drop_through(self, index: int, keep_rest: bool) -> None:
        drop = min(index + 1 - self._first, len(self._terms)) if keep_rest else len(self._terms)
        if drop > 0:
            start = self._offsets[drop] if drop < len(self._offsets) else self._end
            with open(self._path(LOG), "rb") as file:
                file.seek(start)
                rest = file.read()
            self._replace(LOG, rest)
            self._open_log()
            del self._terms[:drop]
            self._offsets = [offset - start for offset in self._offsets[drop:]]
            self._end -= start
        self._first = max(self._first, index + 1)  # the log never starts before the snapshot

    def _truncate_from(self, index: int) -> None:
        position = index - self._first
        self._log.truncate(self._offsets[position])
        self._end = self._offsets[position]
        del self._terms[position:], self._offsets[position:]

    def _append(self, entries: list[Entry]) -> None:
        records = [_record(entry) for entry in entries]
        self._log.write(b"".join(records))
        self._log.flush()
        for entry, record in zip(entries, records):
            self._terms.append(entry["term"])
            self._offsets.append(self._end)
            self._end += len(record)

    def _sync_log(self) -> None:
        if self._fsync:
            os.fsync(self._log.fileno())

    def _store_hard_state(self, hard_state: HardState) -> None:
        self._replace(HARD_STATE, _compact_json(hard_state))


class _Damaged(Exception):
    """A log record that cannot be trusted; the message says why."""


def _compact_json(value: Any, sort_keys: bool = False) -> bytes:
    """JSON without spaces; keys kept in order unless ``sort_keys``."""
    return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys).encode()


def _record(entry: Entry) -> bytes:
    body = _compact_json(entry, sort_keys=True)
    return _HEADER.pack(len(body), zlib.crc32(body)) + body


def _read_record(data: bytes, offset: int) -> tuple[Entry, int]:
    """The entry in the record at ``offset`` and the offset after it."""
    if len(data) - offset < _HEADER.size:
        raise _Damaged(f"torn record header ({len(data) - offset} of {_HEADER.size} bytes)")
    length, crc = _HEADER.unpack_from(data, offset)
    start = offset + _HEADER.size
    body = data[start:start + length]
    if len(body) < length:
        raise _Damaged(f"torn record body ({len(body)} of {length} bytes)")
    if zlib.crc32(body) != crc:
        raise _Damaged("record fails its CRC32")
    try:
        entry = json.loads(body)
    except ValueError:
        raise _Damaged("record is not JSON") from None
    if not _is_entry(entry):
        raise _Damaged("record is not an entry")
    return entry, start + length


def _scan(data: bytes) -> tuple[list[Entry], list[int], int, str | None]:
    """Entries of the undamaged, contiguous prefix of a log file's ``data``,
    their offsets, the offset where that prefix ends, and why it ends there
    if that is not the end of ``data``."""
    entries: list[Entry] = []
    offsets: list[int] = []
    offset = 0
    try:
        while offset < len(data):
            entry, after = _read_record(data, offset)
            if entries and entry["index"] != entries[-1]["index"] + 1:
                raise _Damaged(f"entry {entry['index']} follows entry {entries[-1]['index']}")
            entries.append(entry)
            offsets.append(offset)
            offset = after
    except _Damaged as damage:
        return entries, offsets, offset, f"{damage} at offset {offset}"
    return entries, offsets, offset, None


def _kept_after(entries: list[Entry], snapshot: Snapshot | None) -> int:
    """How many leading ``entries`` the snapshot covers (all of them when it
    does not match the log: a crash cut short the install that replaced it)."""
    if snapshot is None or not entries:
        return 0
    position = snapshot["index"] - entries[0]["index"]
    if position < 0:
        return 0
    if position < len(entries) and entries[position]["term"] == snapshot["term"]:
        return position + 1
    return len(entries)


def _is_count(value: Any, least: int = 0) -> bool:
    return type(value) is int and value >= least


def _is_entry(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _is_count(value.get("index"), 1)
        and _is_count(value.get("term"), 1)
        and "command" in value
        and (value["command"] is None or isinstance(value["command"], dict))
    )


def _is_hard_state(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _is_count(value.get("term"))
        and _is_count(value.get("commit"))
        and "vote" in value
        and (value["vote"] is None or isinstance(value["vote"], str))
    )


def _is_snapshot(value: Any) -> bool:
    return isinstance(value, dict) and _is_count(value.get("index")) and _is_count(value.get("term")) and "data" in value
