"""Every version of every peer's log file, kept for the checker.

The checker needs the committed log from entry 1, and with compaction on no
peer keeps it: FileStorage leaves compacted records in ``log`` (a dead
prefix) but rewrites the file without them, as a new file renamed over the
old one, at every restart once a snapshot covers a record, whenever a
snapshot installed from the leader contradicts the log (a lagging follower),
and past ``DEAD_BYTES``.  Under the nemesis that happens every few seconds.
So :class:`LogArchive`, polled a few times a second, hard-links each new
*generation* of each peer's ``log`` into the archive directory: the rename
then leaves the old file to the link, with every record it held, and what
the peer appends to the file later lands in it too.

Which archived records are committed, by Raft's Log Matching property: a
generation's content is a log its peer held (compacted records are
committed, and the peer never truncates at or below its commit index), so
if it holds a committed entry, same index and same term, every record before
that one is committed too.  Committed entries known to start from: the last
entry of every snapshot a peer took or installed (``known``: the peers log
each one), and each peer's last file up to the index it applied.  Every
record found committed is known in turn, for the other generations.  The
committed log is then the union of those records over every generation of
every peer; two different ones at one index are two committed entries at one
index (Raft's State Machine Safety broken): :meth:`LogArchive.committed`
reports them.  And the run checks this reasoning too: the union, replayed
from entry 1, must reach the very digest (a hash chain over every command and
result) that every peer reports.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from twisted_exchange.replication.records import Entry
from twisted_exchange.wal import read_log
from twisted_exchange.wal.file_storage import LOG


@dataclass
class Generation:
    """One version of a peer's log file, hard-linked at ``path``."""

    peer: str
    number: int
    path: Path
    inode: int


class LogArchive:
    """The log files of peers whose data directories are ``data_dirs``
    (peer -> directory), hard-linked into ``directory`` as they appear."""

    def __init__(self, data_dirs: dict[str, Path], directory: Path) -> None:
        self.data_dirs = data_dirs
        self.directory = directory
        self.generations: dict[str, list[Generation]] = {peer: [] for peer in data_dirs}
        directory.mkdir(parents=True, exist_ok=True)

    def poll(self) -> None:
        """Link every peer's log file that is new since the last poll."""
        for peer, data in self.data_dirs.items():
            generations = self.generations[peer]
            try:
                if generations and os.stat(data / LOG).st_ino == generations[-1].inode:
                    continue
                link = self.directory / f"{peer}.{len(generations) + 1}.log"
                os.link(data / LOG, link)
            except FileNotFoundError:  # not created yet, or replaced between the stat and the link
                continue
            generations.append(Generation(peer, len(generations) + 1, link, os.stat(link).st_ino))

    def committed(self, known: Iterable[tuple[int, int]],
                  applied: dict[str, int]) -> tuple[dict[int, Entry], list[str]]:
        """The committed entries by index, and the conflicts: indexes at which
        two generations hold different committed records.  ``known``: (index,
        term) of entries known to be committed; ``applied``: the index each
        peer applied, which its last file holds committed up to."""
        logs = {(g.peer, g.number): read_log(g.path) for gens in self.generations.values() for g in gens}
        bounds = {(peer, gens[-1].number): applied.get(peer, 0) for peer, gens in self.generations.items() if gens}
        known = set(known)
        grown = True
        while grown:  # committed records are known entries for the other generations
            grown = False
            for key, log in logs.items():
                bound = _highest_known(log, known, bounds.get(key, 0))
                if bound > bounds.get(key, 0):
                    bounds[key], grown = bound, True
                    known.update((e["index"], e["term"]) for e in log if e["index"] <= bound)
        found: dict[int, tuple[Entry, tuple[str, int]]] = {}
        conflicts = []
        for key, log in logs.items():
            for entry in log:
                if entry["index"] > bounds.get(key, 0):
                    break
                other, source = found.setdefault(entry["index"], (entry, key))
                if other != entry:
                    conflicts.append(f"entry {entry['index']}: {_name(key)} holds {entry!r:.300}, "
                                     f"{_name(source)} holds {other!r:.300}")
        return {index: entry for index, (entry, _) in found.items()}, conflicts

    def rewrites(self) -> dict[str, int]:
        """How many times each peer's log file was replaced (that the polls saw)."""
        return {peer: max(len(generations) - 1, 0) for peer, generations in self.generations.items()}


def contiguous(log: dict[int, Entry], head: int) -> list[Entry]:
    """Entries 1..``head`` of ``log``; AssertionError naming the gaps if any is missing."""
    missing = [index for index in range(1, head + 1) if index not in log]
    if missing:
        gaps, start = [], missing[0]
        for before, after in zip(missing, missing[1:] + [None]):
            if after != before + 1:
                gaps.append(f"{start}-{before}" if before != start else f"{start}")
                start = after
        raise AssertionError(f"no archived log file holds committed entries {', '.join(gaps[:20])} "
                             f"(of 1-{head}): the checker has no witness")
    return [log[index] for index in range(1, head + 1)]


def _highest_known(log: list[Entry], known: set[tuple[int, int]], floor: int) -> int:
    """The index of the last record of ``log`` above ``floor`` that is a known entry, else ``floor``."""
    for entry in reversed(log):
        if entry["index"] <= floor:
            break
        if (entry["index"], entry["term"]) in known:
            return entry["index"]
    return floor


def _name(key: tuple[str, int]) -> str:
    return f"{key[0]}'s log file #{key[1]}"
