"""FileStorage: a Raft node's stable storage in one data directory.

It follows the rules of ``replication.storage.StorageRules`` (shared with
MemoryStorage, so both behave identically) over files, and decides on load
what damage may be repaired, what must be discarded, and what must stop the
peer.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from twisted_exchange.replication.records import (
    Entry, HardState, Snapshot, abstaining, empty_hard_state, is_hard_state, is_snapshot,
)
from twisted_exchange.replication.storage import Recovered, StorageError, StorageRules
from twisted_exchange.wal import codec

LOG = "log"
HARD_STATE = "hardstate.json"
SNAPSHOT = "snapshot.json"
BACKGROUND = SNAPSHOT + ".background"  # + ".<pid>": snapshots written off the reactor (peer/compactor.py)
DAMAGED = ".damaged"   # suffix of a damaged snapshot moved aside for inspection
#: The log file keeps compacted records (a dead prefix) until they are this many
#: bytes and more than the live ones: then it is rewritten without them.
DEAD_BYTES = 64 << 20
FSYNC_POLICIES = ("batch", "never")

logger = logging.getLogger(__name__)


class FileStorage(StorageRules):
    """Storage in one data directory per peer.

    Files:

    ``log``
        Append-only records (``codec``: length, CRC32, canonical JSON).  An
        in-memory index of entry index -> file offset makes overwriting from
        an index one truncate, and a batch of entries is one write.
    ``hardstate.json``, ``snapshot.json``
        Replaced atomically: temp file, fsync, rename, fsync the directory.
        Object keys keep their order, so a snapshot loads back exactly as
        MemoryStorage would return it.
        Compaction leaves the records it drops in ``log``, a dead prefix
        that ``load()`` skips (the snapshot covers it; :func:`read_log`
        reads it), until it is
        :data:`DEAD_BYTES` and more than the live records: then ``log`` is
        replaced the same way, with only the entries after the snapshot.
        So most compactions cost no copy and no fsync, and the copies cost
        O(1) per entry.

    What ``load()`` does with damage (see README "Recovering a damaged peer"):

    - a torn log tail (``codec``): cut, reported in ``Recovered.repaired``;
    - a corrupt log record followed by valid ones, a log that starts after a
      gap, or a snapshot file that does not parse or validate: that data
      (the snapshot with the whole log, or the log from the damage on) is
      dropped, the hard state is kept and marked abstaining (see RaftNode:
      no votes until a leader has caught the node up), and it is reported
      in ``Recovered.discarded``.  A damaged snapshot is kept aside as
      ``snapshot.json.damaged``;
    - ``snapshot.json.background.<pid>``, a snapshot a forked child was
      writing when the peer stopped, is removed (the log still holds what
      it covers).
    - a damaged hard-state file: StorageError, the peer does not start.
      Atomic replacement never leaves it half-written, and without its term
      and vote the peer could vote twice in one term.  The message says how
      to recover by hand.

    Writes: ``save()`` and ``compact()`` raise OSError when the disk does,
    and then StorageError on every later write until ``load()`` (the rule
    of ``StorageRules``): the peer must stop, not run on unpersisted.

    ``fsync`` is the durability policy:

    - ``"batch"`` (default): one fsync of the log per save() that appends,
      plus the fsyncs of every atomic replacement.  What save() returned from
      survives a crash of the machine.
    - ``"never"``: no fsync at all.  FOR TESTS AND BENCHMARKS ONLY: a crash
      of the machine can lose acknowledged entries and votes, which breaks
      Raft's safety.

    ``on_fsync(seconds)``, if given, is told how long each fsync took, so
    the peer can export it (the storage itself knows nothing of metrics).

    The directory is locked (flock) while open: one FileStorage per
    directory, until close().  Call load() before save() or compact().
    """

    def __init__(self, directory: str | os.PathLike, fsync: str = "batch",
                 on_fsync: Callable[[float], None] | None = None) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync policy must be one of {FSYNC_POLICIES}, not {fsync!r}")
        self._directory = Path(directory)
        self._fsync = fsync == "batch"
        self._on_fsync = on_fsync
        self._log: BinaryIO | None = None
        self._snapshot = None
        self._first = 1
        # per live record, in machine ints (no object per entry: dropping a
        # compacted prefix is a memmove, not 2 x 30,000 reference counts)
        self._terms = array("q")
        self._offsets = array("q")
        self._end = 0
        self._dead = 0  # bytes of compacted records at the start of the log file
        self._snapshot_data: WrittenData | None = None  # see stored_snapshot()
        self._directory.mkdir(parents=True, exist_ok=True)
        self._directory_fd: int | None = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(self._directory_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise StorageError(f"{self._directory} is already open in another FileStorage") from None

    def load(self) -> Recovered:
        """Read the directory, repair or discard damage, and get ready to save."""
        if self._directory_fd is None:
            raise StorageError(f"{self._directory}: storage is closed")
        hard_state = self._read_hard_state()
        snapshot, snapshot_damage = self._read_json(SNAPSHOT, is_snapshot)
        self._snapshot_data = self._data_in_file(snapshot)
        for name in (LOG + ".tmp", HARD_STATE + ".tmp", SNAPSHOT + ".tmp"):
            self._path(name).unlink(missing_ok=True)
        for left in self._directory.glob(BACKGROUND + ".*"):
            left.unlink(missing_ok=True)
        try:
            data = self._path(LOG).read_bytes()
        except FileNotFoundError:
            data = b""
        log = codec.scan(data)
        entries, offsets, end = log.entries, log.offsets, log.end
        repaired, lost = None, []
        if log.damage is not None:
            cut = f"{log.damage}: cut {len(data) - end} bytes"
            if log.torn:
                repaired = cut
            else:
                lost.append(f"{cut}, a corrupt record, not a torn write")
        floor = snapshot["index"] if snapshot is not None else 0
        if snapshot_damage is not None:
            lost.append(f"{self._path(SNAPSHOT)} {snapshot_damage}: dropped it and the {len(entries)} entries "
                        f"of the log after it (kept as {SNAPSHOT + DAMAGED})")
            keep = len(entries)
        elif entries and entries[0]["index"] > floor + 1:
            lost.append(f"log starts at entry {entries[0]['index']}, after a gap from {floor}: dropped it")
            keep = len(entries)
        else:
            keep = _kept_after(entries, snapshot)
        if lost:  # the abstention is durable before anything is dropped: a crash finds the damage again
            hard_state = abstaining(hard_state)
            self._store_hard_state(hard_state)
        if snapshot_damage is not None:
            os.replace(self._path(SNAPSHOT), self._path(SNAPSHOT + DAMAGED))
            self._sync_directory()
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
        self._terms = array("q", [entry["term"] for entry in entries])
        self._offsets = array("q", [offset - start for offset in offsets[keep:]])
        self._end = end - start
        self._dead = 0
        self._failed = None
        recovered = Recovered(hard_state, snapshot, entries)
        if repaired:
            recovered.repaired = f"{self._path(LOG)}: {repaired}; kept entries up to {self._last_index()}"
            logger.warning("repaired %s", recovered.repaired)
        if lost:
            recovered.discarded = (
                f"{self._directory}: " + "; ".join(lost) + f"; kept entries up to {self._last_index()}. "
                f"This peer catches up from the leader and abstains from votes until a leader of a term "
                f"after {hard_state['term']} has caught it up"
            )
            logger.error("discarded damaged data: %s", recovered.discarded)
        return recovered

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
        """Refuse to write unless loaded, then the shared rule: after an I/O
        error, refuse until load() brings the offset index and the files
        back together."""
        if self._log is None:
            raise StorageError(f"{self._directory}: load() before saving (or storage is closed)")
        with super()._writing():
            yield

    def _path(self, name: str) -> Path:
        return self._directory / name

    def _read_hard_state(self) -> HardState:
        """The stored hard state; StorageError saying how to recover if damaged."""
        hard_state, damage = self._read_json(HARD_STATE, is_hard_state)
        if damage is None:
            return hard_state or empty_hard_state()
        path = self._path(HARD_STATE)
        raise StorageError(
            f"{path} {damage}. It holds this peer's Raft term and vote: starting without them could let "
            f"it vote twice in one term and elect two leaders, so it refuses to start. To recover, and "
            f"only while the other peers have a quorum and a leader (exchangectl status): move the whole "
            f"data directory aside, `mv {self._directory} {self._directory}.damaged`, and replace this "
            f"peer, `exchangectl member replace THIS_PEER NEW_NAME`: the new peer catches up from the "
            f"leader (this one, empty under its old id, would be refused). Risk: entries that only this "
            f"peer held are lost. Never delete {HARD_STATE} alone."
        )

    def _read_json(self, name: str, valid: Callable[[Any], bool]) -> tuple[Any, str | None]:
        """The value in file ``name`` (None if missing), or None and what is wrong with it.

        Files are replaced atomically, so a bad one is damage, never a torn write.
        """
        try:
            raw = self._path(name).read_bytes()
        except FileNotFoundError:
            return None, None
        try:
            value = json.loads(raw)
        except ValueError as error:
            return None, f"is not valid JSON ({error})"
        if not valid(value):
            return None, f"does not hold what it should: {value!r:.200}"
        return value, None

    def _replace(self, name: str, data: bytes) -> None:
        """Replace file ``name`` by ``data`` atomically (durably under "batch")."""
        replace_file(self._path(name), data, self._sync if self._fsync else None, self._directory_fd)

    def _sync_directory(self) -> None:
        if self._fsync:
            self._sync(self._directory_fd)

    def _sync(self, fd: int) -> None:
        started = time.perf_counter()
        os.fsync(fd)
        if self._on_fsync is not None:
            self._on_fsync(time.perf_counter() - started)

    def _open_log(self) -> None:
        if self._log is not None:
            self._log.close()
        created = not self._path(LOG).exists()
        self._log = open(self._path(LOG), "ab")
        if created:
            self._sync_directory()

    def _last_index(self) -> int:
        return self._first + len(self._terms) - 1

    def _term_at(self, index: int) -> int | None:
        position = index - self._first
        return self._terms[position] if 0 <= position < len(self._terms) else None

    def background_path(self) -> Path:
        """Where (+ ``.<pid>``) :func:`write_snapshot` may write a snapshot for
        :meth:`compact` to move into place; ``load`` removes what it finds there."""
        return self._path(BACKGROUND)

    def stored_snapshot(self) -> Snapshot | None:
        """The stored snapshot's index and term, its data a place in its file.

        A parsed snapshot is as big in memory as the state it restores (76 MB
        at 10^5 resting orders), and the replica keeps its snapshot only to
        send it to a peer; holding this instead lets the copy go.  None when
        no snapshot is stored, or its file predates this layout.
        """
        if self._snapshot is None or self._snapshot_data is None:
            return None
        return {**self._snapshot, "data": self._snapshot_data}

    def _data_in_file(self, snapshot: Snapshot | None) -> WrittenData | None:
        """The place of ``snapshot``'s data in snapshot.json, if the file has
        :func:`write_snapshot`'s layout (the data last), else None."""
        if snapshot is None:
            return None
        path, head = self._path(SNAPSHOT), _head(snapshot)
        with open(path, "rb") as file:
            if file.read(len(head)) != head:
                return None
            end = file.seek(-1, os.SEEK_END)
            if file.read() != b"}":
                return None
        return WrittenData(path, len(head), end)

    def _store_snapshot(self, snapshot: Snapshot) -> None:
        data = snapshot["data"]
        if isinstance(data, WrittenData):  # durable (the directory synced) before the log loses a record
            os.replace(data.path, self._path(SNAPSHOT))
            data.path = self._path(SNAPSHOT)
            self._snapshot_data = data
        else:
            head, body = _head(snapshot), codec.compact_json(data)
            self._replace(SNAPSHOT, head + body + b"}")
            self._snapshot_data = WrittenData(self._path(SNAPSHOT), len(head), len(head) + len(body))
        self._snapshot = {"index": snapshot["index"], "term": snapshot["term"]}

    def _drop_through(self, index: int, keep_rest: bool) -> None:
        drop = min(index + 1 - self._first, len(self._terms)) if keep_rest else len(self._terms)
        if drop > 0:
            self._dead = self._offsets[drop] if drop < len(self._offsets) else self._end
            del self._terms[:drop], self._offsets[:drop]
        # a snapshot the log does not hold (installed) may contradict dead records: they go at once
        if self._dead and (not keep_rest or self._dead >= max(DEAD_BYTES, self._end - self._dead)):
            self._rewrite()
        self._first = max(self._first, index + 1)  # the log never starts before the snapshot

    def _rewrite(self) -> None:
        """Replace the log file by its live records."""
        self._sync_directory()  # the snapshot that covers the dead records is durable first
        start = self._dead
        with open(self._path(LOG), "rb") as file:
            file.seek(start)
            rest = file.read()
        self._replace(LOG, rest)
        self._open_log()
        self._offsets = array("q", [offset - start for offset in self._offsets])
        self._end -= start
        self._dead = 0

    def _truncate_from(self, index: int) -> None:
        position = index - self._first
        self._log.truncate(self._offsets[position])
        self._end = self._offsets[position]
        del self._terms[position:], self._offsets[position:]

    def _append(self, entries: list[Entry]) -> None:
        records = [codec.encode(entry) for entry in entries]
        self._log.write(b"".join(records))
        self._log.flush()
        for entry, record in zip(entries, records):
            self._terms.append(entry["term"])
            self._offsets.append(self._end)
            self._end += len(record)

    def _sync_log(self) -> None:
        if self._fsync:
            self._sync(self._log.fileno())

    def _store_hard_state(self, hard_state: HardState) -> None:
        self._replace(HARD_STATE, codec.compact_json(hard_state))


class WrittenData:
    """The ``data`` of a snapshot :func:`write_snapshot` wrote: a place in a file.

    :meth:`FileStorage.compact` moves that file into place instead of
    encoding the data again, and the bytes are read back only to send the
    snapshot to a peer (:meth:`fragment`), so the peer holds no copy of it.
    """

    def __init__(self, path: Path, start: int, end: int) -> None:
        self.path = path
        self.start = start
        self.end = end

    def fragment(self) -> orjson.Fragment:
        """The data's JSON, to splice into a message unchanged (orjson)."""
        with open(self.path, "rb") as file:
            file.seek(self.start)
            return orjson.Fragment(file.read(self.end - self.start))


def write_snapshot(path: Path, snapshot: Snapshot, data: object, sync: bool = True) -> None:
    """Write ``snapshot`` (index, term, config) with ``data`` to ``path``,
    durably unless not ``sync``, in the form :func:`written_snapshot` reads.
    A forked child runs it (peer/compactor.py)."""
    with open(path, "xb") as file:  # exclusively: never into another writer's file
        file.write(_head(snapshot))
        file.write(codec.compact_json(data))
        file.write(b"}")
        if sync:
            file.flush()
            os.fsync(file.fileno())


def written_snapshot(path: Path, snapshot: Snapshot) -> Snapshot:
    """``snapshot`` with the data :func:`write_snapshot` wrote to ``path``."""
    return {**snapshot, "data": WrittenData(path, len(_head(snapshot)), os.path.getsize(path) - 1)}


def _head(snapshot: Snapshot) -> bytes:
    """What a written snapshot's file holds before its data (and ``}`` after it)."""
    return codec.compact_json({key: value for key, value in snapshot.items() if key != "data"})[:-1] + b',"data":'


def read_log(path: str | os.PathLike) -> list[Entry]:
    """Every entry the log file at ``path`` holds, in file order, from its
    first record: the compacted ones too (the dead prefix that ``load()``
    skips, see FileStorage).  They stay until the file is rewritten: by
    ``load()`` when a snapshot covers any record, by an installed snapshot
    the log contradicts, or past :data:`DEAD_BYTES`.

    Read-only and without the directory's lock: it may read the file of a
    running peer, or a copy or hard link of one.  It stops before the first
    record that cannot be trusted (a torn tail, a record still being
    written; ``codec.scan``) and returns [] for a missing file.  A file
    never holds two records for one index: an overwrite truncates the file
    first.  So, of a file ``load()`` finds undamaged, the entries after a
    snapshot that matches the log are exactly those ``load()`` returns.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return codec.scan(data).entries


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


def replace_file(path: Path, data: bytes, sync: Callable[[int], None] | None = os.fsync,
                 directory_fd: int | None = None) -> None:
    """Replace ``path`` by ``data`` atomically: a temporary file beside it,
    synced, renamed over it, then the directory synced (``directory_fd`` if
    it is open already).  ``sync=None`` syncs nothing (fsync "never")."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        if sync is not None:
            file.flush()
            sync(file.fileno())
    os.replace(temporary, path)
    if sync is None:
        return
    directory = directory_fd if directory_fd is not None else os.open(path.parent, os.O_RDONLY)
    try:
        sync(directory)
    finally:
        if directory_fd is None:
            os.close(directory)
