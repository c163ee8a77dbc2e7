"""The log archive: every generation of a peer's log file kept, and the
committed log rebuilt from them (no namespaces needed: FileStorage plays
the peers)."""
from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path

from twisted_exchange.wal import FileStorage

from tests.netns.archive import LogArchive, contiguous


def run(first: int, last: int, term: int, tag: str = "") -> list[dict]:
    return [{"index": i, "term": term, "command": {"client": "c", "request": f"{i}/{term}{tag}"}}
            for i in range(first, last + 1)]


def snapshot(index: int, term: int) -> dict:
    return {"index": index, "term": term, "data": {}}


class LogArchiveTests(unittest.TestCase):
    def setUp(self) -> None:
        root = Path(tempfile.mkdtemp(prefix="archive-test-"))
        self.addCleanup(shutil.rmtree, root, True)
        self.dirs = {peer: root / peer for peer in ("peer1", "peer2")}
        self.archive = LogArchive(self.dirs, root / "archive")
        self.storages: dict[str, FileStorage] = {}
        self.addCleanup(lambda: [s.close() for s in self.storages.values()])

    def start(self, peer: str) -> FileStorage:
        """(Re)start ``peer``'s storage, as a restarted peer's load() does."""
        if peer in self.storages:
            self.storages[peer].close()
        storage = self.storages[peer] = FileStorage(self.dirs[peer], "never")
        storage.load()
        return storage

    def test_records_a_restart_rewrote_away_stay_in_the_archive(self) -> None:
        peer = self.start("peer1")
        peer.save(None, run(1, 10, 1))
        peer.compact(snapshot(8, 1))
        self.archive.poll()
        self.start("peer1").save(None, run(11, 12, 1))  # the restart dropped 1-8 from the file
        self.archive.poll()
        log, conflicts = self.archive.committed([(8, 1)], {"peer1": 12})
        self.assertEqual((contiguous(log, 12), conflicts), (run(1, 12, 1), []))
        self.assertEqual(self.archive.rewrites(), {"peer1": 1, "peer2": 0})

    def test_records_after_the_last_known_committed_entry_of_a_replaced_file_are_not_taken(self) -> None:
        peer = self.start("peer1")
        peer.save(None, run(1, 6, 1))
        self.archive.poll()
        peer.save(None, run(10, 10, 2), snapshot(9, 2))   # installed: 4-6 were never committed
        self.archive.poll()
        log, _ = self.archive.committed([(3, 1), (9, 2)], {"peer1": 10})
        self.assertEqual(sorted(log), [1, 2, 3, 10])

    def test_a_known_entry_of_another_term_at_that_index_vouches_for_nothing(self) -> None:
        peer = self.start("peer1")
        peer.save(None, run(1, 6, 1))
        self.archive.poll()
        peer.save(None, [], snapshot(6, 2))
        self.archive.poll()
        log, _ = self.archive.committed([(6, 2)], {})
        self.assertEqual(log, {})

    def test_a_file_holding_an_entry_found_committed_in_another_file_is_committed_before_it(self) -> None:
        self.start("peer1").save(None, run(1, 6, 1))
        self.start("peer2").save(None, run(1, 4, 1) + run(5, 5, 2))
        self.archive.poll()
        log, _ = self.archive.committed([], {"peer1": 3})   # peer2's file holds entry 3 of term 1
        self.assertEqual(sorted(log), [1, 2, 3])
        log, _ = self.archive.committed([(6, 1)], {})       # peer2's file does not hold entry 6 of term 1
        self.assertEqual(sorted(log), [1, 2, 3, 4, 5, 6])
        self.assertEqual(log[5], run(5, 5, 1)[0])

    def test_two_peers_committing_different_entries_at_one_index_is_a_conflict(self) -> None:
        self.start("peer1").save(None, run(1, 3, 1))
        self.start("peer2").save(None, run(1, 1, 1) + run(2, 3, 1, tag="x"))
        self.archive.poll()
        _, conflicts = self.archive.committed([], {"peer1": 3, "peer2": 3})
        self.assertEqual([c.split(":")[0] for c in conflicts], ["entry 2", "entry 3"])
        self.assertIn("peer2's log file #1", conflicts[0])

    def test_a_missing_committed_entry_is_named(self) -> None:
        with self.assertRaisesRegex(AssertionError, r"entries 2-3, 5 \(of 1-5\)"):
            contiguous({1: {}, 4: {}}, 5)
