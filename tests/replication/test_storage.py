"""Tests for twisted_exchange.replication.storage and twisted_exchange.wal.

`StorageContract` holds the contract tests; it runs against MemoryStorage and
FileStorage alike.  FileStorage has its own tests for what only files can
suffer: restarts, torn writes, corrupt records and files, failing disks.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import unittest
import zlib
from pathlib import Path
from unittest import mock

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_exchange.replication.records import empty_hard_state
from twisted_exchange.replication.storage import MemoryStorage, Recovered, StorageError
from twisted_exchange.wal import FileStorage, read_log


def entry(index: int, term: int) -> dict:
    """An entry whose command names its index and term, so a mix-up shows."""
    return {"index": index, "term": term, "command": {"client": "c", "request": f"{index}/{term}"}}


def run(first: int, last: int, term: int) -> list[dict]:
    """Entries ``first``..``last`` inclusive, all of ``term``."""
    return [entry(index, term) for index in range(first, last + 1)]


def snapshot(index: int, term: int) -> dict:
    return {"index": index, "term": term, "data": {"applied": index, "books": {"BTCUSD": [1, 2]}}}


class StorageContract:
    """Contract tests; a concrete class provides ``open()`` and ``restart()``."""

    def open(self):
        """A new, empty storage."""
        raise NotImplementedError

    def restart(self, storage):
        """The storage a restarted process would open in place of ``storage``."""
        raise NotImplementedError

    def setUp(self) -> None:
        self.storage = self.open()

    def recovered(self) -> Recovered:
        """What a node restarting now would load."""
        self.storage = self.restart(self.storage)
        return self.storage.load()

    def indexes(self, recovered: Recovered) -> list[tuple[int, int]]:
        return [(e["index"], e["term"]) for e in recovered.entries]

    def test_fresh_storage_loads_empty_state(self) -> None:
        recovered = self.recovered()
        self.assertEqual(recovered, Recovered({"term": 0, "vote": None, "commit": 0}, None, [], None))

    def test_saved_hard_state_and_entries_load_back_equal(self) -> None:
        hard_state = {"term": 2, "vote": "p2", "commit": 3}
        self.storage.save(hard_state, run(1, 3, 1) + [{"index": 4, "term": 2, "command": None}])
        recovered = self.recovered()
        self.assertEqual(recovered.hard_state, hard_state)
        self.assertEqual(recovered.entries, run(1, 3, 1) + [{"index": 4, "term": 2, "command": None}])
        self.assertIsNone(recovered.snapshot)
        self.assertIsNone(recovered.repaired)

    def test_entries_from_a_stored_index_replace_the_rest_of_the_log(self) -> None:
        self.storage.save(None, run(1, 5, 1))
        self.storage.save(None, run(3, 4, 2))
        self.assertEqual(self.indexes(self.recovered()), [(1, 1), (2, 1), (3, 2), (4, 2)])

    def test_entries_appended_in_several_saves_form_one_log(self) -> None:
        self.storage.save(None, run(1, 2, 1))
        self.storage.save(None, run(3, 4, 1))
        self.storage.save(None, [])
        self.assertEqual(self.recovered().entries, run(1, 4, 1))

    def test_entries_after_a_gap_are_rejected_and_change_nothing(self) -> None:
        self.storage.save(None, run(1, 2, 1))
        with self.assertRaises(StorageError) as caught:
            self.storage.save(None, run(4, 5, 1))
        self.assertEqual(caught.exception.code, "ERR_STORAGE")
        self.assertEqual(self.recovered().entries, run(1, 2, 1))

    def test_entries_not_contiguous_within_a_batch_are_rejected(self) -> None:
        with self.assertRaises(StorageError):
            self.storage.save(None, [entry(1, 1), entry(3, 1)])
        self.assertEqual(self.recovered().entries, [])

    def test_installed_snapshot_matching_an_entry_keeps_the_entries_after_it(self) -> None:
        self.storage.save(None, run(1, 6, 2))
        self.storage.save(None, [], snapshot(4, 2))
        recovered = self.recovered()
        self.assertEqual(recovered.snapshot, snapshot(4, 2))
        self.assertEqual(recovered.entries, run(5, 6, 2))

    def test_installed_snapshot_with_another_term_drops_the_whole_log(self) -> None:
        self.storage.save(None, run(1, 6, 1))
        self.storage.save(None, [], snapshot(4, 2))
        recovered = self.recovered()
        self.assertEqual(recovered.snapshot, snapshot(4, 2))
        self.assertEqual(recovered.entries, [])

    def test_installed_snapshot_beyond_the_log_drops_the_whole_log(self) -> None:
        self.storage.save(None, run(1, 3, 1))
        self.storage.save(None, [], snapshot(9, 1))
        self.assertEqual(self.recovered().entries, [])

    def test_snapshot_entries_and_hard_state_in_one_save_apply_in_order(self) -> None:
        self.storage.save(None, run(1, 3, 1))
        self.storage.save({"term": 3, "vote": None, "commit": 7}, run(6, 8, 3), snapshot(5, 3))
        recovered = self.recovered()
        self.assertEqual(recovered.snapshot, snapshot(5, 3))
        self.assertEqual(recovered.entries, run(6, 8, 3))
        self.assertEqual(recovered.hard_state, {"term": 3, "vote": None, "commit": 7})

    def test_entries_covered_by_the_snapshot_are_skipped(self) -> None:
        self.storage.save(None, [], snapshot(5, 1))
        self.storage.save(None, run(4, 7, 1))
        self.assertEqual(self.recovered().entries, run(6, 7, 1))

    def test_compaction_drops_covered_entries_and_the_log_goes_on(self) -> None:
        self.storage.save(None, run(1, 10, 1))
        self.storage.compact(snapshot(7, 1))
        self.storage.save(None, run(10, 12, 2))
        recovered = self.recovered()
        self.assertEqual(recovered.snapshot, snapshot(7, 1))
        self.assertEqual(self.indexes(recovered), [(8, 1), (9, 1), (10, 2), (11, 2), (12, 2)])

    def test_installed_snapshot_at_the_stored_index_keeps_the_log(self) -> None:
        self.storage.save(None, run(1, 4, 1))
        self.storage.compact(snapshot(2, 1))
        self.storage.save(None, [], snapshot(2, 1))
        self.assertEqual(self.recovered().entries, run(3, 4, 1))

    def test_compaction_older_than_the_stored_snapshot_changes_nothing(self) -> None:
        self.storage.save(None, run(1, 6, 1))
        self.storage.save(None, [], snapshot(4, 1))
        self.storage.compact(snapshot(2, 1))
        self.storage.compact(snapshot(4, 1))
        recovered = self.recovered()
        self.assertEqual((recovered.snapshot, recovered.entries), (snapshot(4, 1), run(5, 6, 1)))

    def test_installed_snapshot_older_than_the_stored_one_is_rejected(self) -> None:
        self.storage.save(None, run(1, 4, 1))
        self.storage.compact(snapshot(3, 1))
        with self.assertRaises(StorageError):
            self.storage.save(None, [], snapshot(2, 1))
        self.assertEqual(self.recovered().snapshot, snapshot(3, 1))

    def test_hard_state_update_replaces_the_previous_one(self) -> None:
        self.storage.save({"term": 1, "vote": "p1", "commit": 0}, run(1, 1, 1))
        self.storage.save({"term": 2, "vote": None, "commit": 1}, [])
        recovered = self.recovered()
        self.assertEqual(recovered.hard_state, {"term": 2, "vote": None, "commit": 1})
        self.assertEqual(recovered.entries, run(1, 1, 1))

    def test_snapshot_data_loads_back_with_its_keys_in_order(self) -> None:
        data = {"zeta": 1, "alpha": {"b": 2, "a": 1}}
        self.storage.save(None, run(1, 2, 1))
        self.storage.compact({"index": 2, "term": 1, "data": data})
        loaded = self.recovered().snapshot["data"]
        self.assertEqual(list(loaded), ["zeta", "alpha"])
        self.assertEqual(list(loaded["alpha"]), ["b", "a"])

    def test_changing_saved_or_loaded_values_does_not_change_storage(self) -> None:
        hard_state, entries, snap = {"term": 1, "vote": "p1", "commit": 0}, run(3, 4, 1), snapshot(2, 1)
        self.storage.save(hard_state, entries, snap)
        hard_state["term"], entries[0]["command"]["request"], snap["data"]["applied"] = 9, "x", 0
        loaded = self.storage.load()
        loaded.hard_state["vote"], loaded.entries[1]["term"], loaded.snapshot["data"]["books"] = "p9", 9, {}
        recovered = self.recovered()
        self.assertEqual(recovered.hard_state, {"term": 1, "vote": "p1", "commit": 0})
        self.assertEqual(recovered.entries, run(3, 4, 1))
        self.assertEqual(recovered.snapshot, snapshot(2, 1))


class MemoryStorageTests(StorageContract, unittest.TestCase):
    def open(self) -> MemoryStorage:
        return MemoryStorage()

    def restart(self, storage: MemoryStorage) -> MemoryStorage:
        return storage

    def test_failed_write_raises_and_nothing_more_is_written_until_load(self) -> None:
        self.storage.save(None, run(1, 2, 1))
        with mock.patch.object(self.storage, "_store_hard_state", side_effect=OSError("disk gone")):
            with self.assertRaises(OSError):
                self.storage.save({"term": 1, "vote": "p1", "commit": 0}, run(3, 3, 1))
        with self.assertRaises(StorageError):
            self.storage.save(None, run(4, 4, 1))
        recovered = self.storage.load()
        self.assertEqual((recovered.hard_state, recovered.entries), (empty_hard_state(), run(1, 3, 1)))
        self.storage.save(None, run(4, 4, 1))
        self.assertEqual(self.storage.load().entries, run(1, 4, 1))


def temporary_directory(test: unittest.TestCase) -> Path:
    """A directory removed when ``test`` ends."""
    path = Path(tempfile.mkdtemp(prefix="storage-test-"))
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


class FileStorageContractTests(StorageContract, unittest.TestCase):
    """The contract, on disk, with real fsyncs, through restarts."""

    def open(self) -> FileStorage:
        self.directory = temporary_directory(self)
        self.addCleanup(lambda: self.storage.close())
        storage = FileStorage(self.directory)
        storage.load()
        return storage

    def restart(self, storage: FileStorage) -> FileStorage:
        storage.close()
        return FileStorage(self.directory)


def frame(body: bytes) -> bytes:
    """One log record as the file format specifies it: length, CRC32, body."""
    return struct.pack(">II", len(body), zlib.crc32(body)) + body


def record(e: dict) -> bytes:
    return frame(json.dumps(e, separators=(",", ":"), sort_keys=True).encode())


class FileStorageTests(unittest.TestCase):
    """What only a storage on disk can suffer: restarts and damaged files."""

    def setUp(self) -> None:
        self.directory = temporary_directory(self)
        self.log = self.directory / "log"
        self.storage: FileStorage | None = None
        self.addCleanup(lambda: self.storage and self.storage.close())

    def start(self, fsync: str = "never") -> Recovered:
        """(Re)start the storage on the directory, as a restarted peer does."""
        if self.storage is not None:
            self.storage.close()
        self.storage = FileStorage(self.directory, fsync)
        return self.storage.load()

    def damage(self, data: bytes, at: int | None = None) -> None:
        """Write ``data`` into the log at offset ``at``, or append it."""
        with open(self.log, "r+b") as file:
            file.seek(0, os.SEEK_END) if at is None else file.seek(at)
            file.write(data)

    def test_restarted_storage_recovers_and_goes_on_appending(self) -> None:
        self.start("batch")
        self.storage.save({"term": 1, "vote": "p1", "commit": 0}, run(1, 3, 1))
        self.start("batch")
        self.storage.save({"term": 2, "vote": "p1", "commit": 3}, run(3, 4, 2))
        recovered = self.start("batch")
        self.assertEqual(recovered, Recovered({"term": 2, "vote": "p1", "commit": 3}, None,
                                              run(1, 2, 1) + run(3, 4, 2), None))

    def test_every_fsync_is_timed_through_the_hook_and_none_happens_under_never(self) -> None:
        for policy, expect_some in (("batch", True), ("never", False)):
            timings: list[float] = []
            storage = FileStorage(temporary_directory(self), policy, on_fsync=timings.append)
            self.addCleanup(storage.close)
            storage.load()
            storage.save({"term": 1, "vote": "p1", "commit": 0}, run(1, 3, 1))
            self.assertEqual(bool(timings), expect_some, policy)
            self.assertTrue(all(seconds >= 0 for seconds in timings))

    def test_log_file_holds_length_crc_framed_canonical_json_records(self) -> None:
        self.start()
        self.storage.save(None, run(1, 2, 1))
        self.assertEqual(self.log.read_bytes(), record(entry(1, 1)) + record(entry(2, 1)))

    def assertCut(self, recovered: Recovered, reason: str, entries: list[dict]) -> None:
        """The damaged tail was cut, reported, and the file holds only good records."""
        self.assertEqual(recovered.entries, entries)
        self.assertIn(reason, recovered.repaired)
        self.assertEqual(self.log.read_bytes(), b"".join(record(e) for e in entries))
        self.assertIsNone(self.start().repaired)

    def test_torn_record_header_is_cut(self) -> None:
        self.start()
        self.storage.save(None, run(1, 3, 1))
        self.damage(record(entry(4, 1))[:5])
        self.assertCut(self.start(), "torn record header", run(1, 3, 1))

    def test_torn_record_body_is_cut(self) -> None:
        self.start()
        self.storage.save(None, run(1, 3, 1))
        self.damage(record(entry(4, 1))[:-3])
        self.assertCut(self.start(), "torn record body", run(1, 3, 1))

    def test_corrupt_last_record_with_nothing_valid_after_it_is_cut_as_a_torn_tail(self) -> None:
        self.start()
        self.storage.save(None, run(1, 3, 1))
        self.damage(b"X", at=self.log.stat().st_size - 5)
        self.assertCut(self.start(), "CRC32", run(1, 2, 1))

    def test_zero_filled_tail_is_cut_as_a_torn_tail(self) -> None:
        self.start()
        self.storage.save(None, run(1, 2, 1))
        self.damage(bytes(4096))
        self.assertCut(self.start(), "not JSON", run(1, 2, 1))

    def test_garbage_after_the_last_record_is_cut(self) -> None:
        self.start()
        self.storage.save(None, run(1, 2, 1))
        self.damage(bytes(range(7, 250)))
        self.assertCut(self.start(), "offset", run(1, 2, 1))

    def test_record_with_good_crc_but_no_json_is_cut(self) -> None:
        self.start()
        self.storage.save(None, run(1, 2, 1))
        self.damage(frame(b"{not json"))
        self.assertCut(self.start(), "not JSON", run(1, 2, 1))

    def test_record_with_good_crc_but_no_entry_is_cut(self) -> None:
        self.start()
        self.storage.save(None, run(1, 2, 1))
        self.damage(frame(b'{"index":3,"term":0,"command":null}'))
        self.assertCut(self.start(), "not an entry", run(1, 2, 1))

    def test_repair_is_logged(self) -> None:
        self.start()
        self.storage.save(None, run(1, 2, 1))
        self.damage(b"\x00\x01")
        with self.assertLogs("twisted_exchange.wal.file_storage", "WARNING") as logged:
            recovered = self.start()
        self.assertIn(recovered.repaired, logged.output[0])

    def test_storage_appends_cleanly_after_a_cut(self) -> None:
        self.start()
        self.storage.save(None, run(1, 2, 1))
        self.damage(record(entry(3, 1))[:-1])
        self.start()
        self.storage.save(None, run(3, 4, 2))
        self.assertEqual(self.start().entries, run(1, 2, 1) + run(3, 4, 2))

    def test_missing_directory_is_created_and_loads_empty(self) -> None:
        self.directory = self.directory / "peer" / "data"
        recovered = self.start()
        self.assertTrue(self.directory.is_dir())
        self.assertEqual(recovered, Recovered(empty_hard_state(), None, [], None))

    def test_missing_files_load_as_empty_parts(self) -> None:
        self.start()
        self.storage.save({"term": 3, "vote": "p2", "commit": 5}, run(1, 6, 3), snapshot(5, 3))
        self.storage.close()
        (self.directory / "hardstate.json").unlink()
        self.log.unlink()
        recovered = self.start()
        self.assertEqual(recovered, Recovered(empty_hard_state(), snapshot(5, 3), [], None))
        self.storage.save(None, run(6, 6, 3))
        self.assertEqual(self.start().entries, run(6, 6, 3))

    def test_unknown_fsync_policy_is_rejected(self) -> None:
        for policy in ("always", "", "Batch", None):
            with self.subTest(policy=policy), self.assertRaises(ValueError):
                FileStorage(self.directory, policy)

    def test_both_fsync_policies_store_the_same_files(self) -> None:
        contents = []
        for policy in ("batch", "never"):
            self.directory = temporary_directory(self)
            self.start(policy)
            self.storage.save({"term": 1, "vote": None, "commit": 2}, run(1, 4, 1), snapshot(2, 1))
            self.storage.close()
            contents.append({p.name: p.read_bytes() for p in self.directory.iterdir()})
        self.assertEqual(contents[0], contents[1])
        self.assertEqual(sorted(contents[0]), ["hardstate.json", "log", "snapshot.json"])

    def test_compaction_survives_restart_which_drops_the_dead_records(self) -> None:
        self.start("batch")
        self.storage.save(None, run(1, 100, 1))
        full = self.log.stat().st_size
        self.storage.compact(snapshot(90, 1))
        self.assertEqual(self.log.stat().st_size, full)  # compacted records stay, dead, until they outgrow the rest
        self.storage.save(None, run(95, 96, 2))
        recovered = self.start("batch")
        self.assertEqual(recovered.snapshot, snapshot(90, 1))
        self.assertEqual(recovered.entries, run(91, 94, 1) + run(95, 96, 2))
        self.assertEqual(self.log.stat().st_size, sum(len(record(e)) for e in recovered.entries))

    def test_dead_records_are_rewritten_away_once_they_outgrow_the_live_ones(self) -> None:
        self.start("batch")
        self.storage.save(None, run(1, 100, 1))
        live = sum(len(record(e)) for e in run(91, 100, 1))
        with mock.patch("twisted_exchange.wal.file_storage.DEAD_BYTES", live):
            self.storage.compact(snapshot(10, 1))             # 10 dead records, 90 live: kept
            self.assertEqual(self.log.stat().st_size, sum(len(record(e)) for e in run(1, 100, 1)))
            self.storage.compact(snapshot(90, 1))             # 90 dead, 10 live: rewritten
        self.assertEqual(self.log.stat().st_size, live)
        self.storage.save(None, run(101, 101, 1))
        self.storage.save(None, run(99, 99, 2))              # a truncation after the rewrite
        self.assertEqual(self.start("batch").entries, run(91, 98, 1) + run(99, 99, 2))

    def test_an_installed_snapshot_the_log_contradicts_drops_the_dead_records_too(self) -> None:
        self.start("batch")
        self.storage.save(None, run(1, 3, 1))
        self.storage.compact(snapshot(3, 1))                  # records 1-3 dead, none live
        self.storage.save(None, [], snapshot(3, 2))           # installed: term 2 at index 3
        self.storage.save(None, run(4, 4, 2))
        recovered = self.start("batch")
        self.assertEqual((recovered.snapshot, recovered.entries), (snapshot(3, 2), run(4, 4, 2)))

    def test_crash_between_snapshot_and_log_rewrite_recovers_the_installed_state(self) -> None:
        # Simulate the crash: the snapshot file is replaced, the log is not.
        for snap, expected in ((snapshot(3, 1), run(4, 5, 1)), (snapshot(3, 2), [])):
            with self.subTest(snapshot=snap):
                self.directory = temporary_directory(self)
                self.log = self.directory / "log"
                self.start()
                self.storage.save(None, run(1, 5, 1))
                (self.directory / "snapshot.json").write_text(json.dumps(snap))
                recovered = self.start()
                self.assertEqual((recovered.snapshot, recovered.entries, recovered.repaired), (snap, expected, None))
                self.assertEqual(self.log.read_bytes(), b"".join(record(e) for e in expected))

    def test_read_log_holds_the_compacted_records_until_the_file_is_rewritten(self) -> None:
        self.start()
        self.storage.save(None, run(1, 10, 1))
        self.storage.compact(snapshot(8, 1))
        self.storage.save(None, run(11, 12, 1))
        self.assertEqual(read_log(self.log), run(1, 12, 1))   # running: the dead prefix is still there
        self.assertEqual(self.start().entries, run(9, 12, 1))
        self.assertEqual(read_log(self.log), run(9, 12, 1))   # a restart rewrote the file without it

    def test_read_log_after_an_overwrite_holds_the_new_records_only(self) -> None:
        self.start()
        self.storage.save(None, run(1, 6, 1))
        self.storage.compact(snapshot(2, 1))
        self.storage.save(None, run(4, 5, 2))
        self.assertEqual(read_log(self.log), run(1, 3, 1) + run(4, 5, 2))

    def test_read_log_after_an_installed_snapshot_the_log_contradicts_starts_after_it(self) -> None:
        self.start()
        self.storage.save(None, run(1, 5, 1))
        self.storage.compact(snapshot(3, 1))
        self.storage.save(None, run(8, 9, 2), snapshot(7, 2))
        self.assertEqual(read_log(self.log), run(8, 9, 2))

    def test_read_log_stops_before_a_torn_tail_and_changes_nothing(self) -> None:
        self.start()
        self.storage.save(None, run(1, 3, 1))
        self.damage(record(entry(4, 1))[:-3])
        before = self.log.read_bytes()
        self.assertEqual(read_log(self.log), run(1, 3, 1))
        self.assertEqual(self.log.read_bytes(), before)

    def test_read_log_of_a_missing_file_is_empty(self) -> None:
        self.assertEqual(read_log(self.log), [])

    def test_corrupt_hard_state_file_refuses_to_start_and_says_how_to_recover(self) -> None:
        self.start()
        self.storage.save({"term": 4, "vote": "p1", "commit": 0}, [])
        self.storage.close()
        for damaged in (b'{"term": 4, "vo', b'{"term": -1, "vote": null, "commit": 0}', b"[]",
                        b'{"term": 4, "vote": null, "commit": 0, "abstain_until_term": "4"}'):
            with self.subTest(damaged=damaged):
                (self.directory / "hardstate.json").write_bytes(damaged)
                with self.assertRaises(StorageError) as caught:
                    self.start()
                message = str(caught.exception)
                self.assertIn(f"{self.directory}/hardstate.json", message)
                self.assertIn("vote twice", message)
                self.assertIn(f"`mv {self.directory} {self.directory}.damaged`", message)
                self.assertIn("quorum", message)
                self.assertEqual((self.directory / "hardstate.json").read_bytes(), damaged)

    def test_hard_state_without_the_abstention_field_loads_as_not_abstaining(self) -> None:
        self.start()
        self.storage.close()
        (self.directory / "hardstate.json").write_bytes(b'{"term": 4, "vote": "p1", "commit": 2}')
        self.assertEqual(self.start().hard_state, {"term": 4, "vote": "p1", "commit": 2})

    def assertDiscarded(self, recovered: Recovered, reason: str, snap: dict | None, entries: list[dict]) -> None:
        """The damaged data was dropped, the hard state kept and marked
        abstaining at its term, and a restart finds a clean, abstaining store."""
        hard_state = {"term": 4, "vote": "p1", "commit": 6, "abstain_until_term": 4}
        self.assertEqual((recovered.snapshot, recovered.entries, recovered.hard_state), (snap, entries, hard_state))
        self.assertIn(reason, recovered.discarded)
        self.assertIn("abstains from votes", recovered.discarded)
        self.assertIsNone(recovered.repaired)
        self.assertEqual(self.log.read_bytes(), b"".join(record(e) for e in entries))
        self.assertEqual(self.start(), Recovered(hard_state, snap, entries))

    def test_corrupt_record_followed_by_valid_ones_discards_the_log_from_it_and_abstains(self) -> None:
        self.start()
        self.storage.save({"term": 4, "vote": "p1", "commit": 6}, run(1, 6, 1))
        third = len(record(entry(1, 1))) + len(record(entry(2, 1)))
        self.damage(b"X", at=third + 20)
        with self.assertLogs("twisted_exchange.wal.file_storage", "ERROR"):
            self.assertDiscarded(self.start(), "CRC32", None, run(1, 2, 1))

    def test_entry_out_of_sequence_discards_the_log_from_it_and_abstains(self) -> None:
        self.start()
        self.storage.save({"term": 4, "vote": "p1", "commit": 6}, run(1, 2, 1))
        self.damage(record(entry(4, 1)) + record(entry(5, 1)))
        self.assertDiscarded(self.start(), "entry 4 follows entry 2", None, run(1, 2, 1))

    def test_log_starting_after_a_gap_is_discarded_and_abstains(self) -> None:
        self.start()
        self.storage.save({"term": 4, "vote": "p1", "commit": 6}, run(1, 2, 1))
        self.log.write_bytes(record(entry(3, 1)))
        self.assertDiscarded(self.start(), "gap", None, [])

    def test_corrupt_snapshot_file_is_discarded_with_the_log_and_kept_aside(self) -> None:
        for damaged in (b'{"index": 3, "te', b'{"index": 3, "term": "1", "data": {}}', b"null"):
            with self.subTest(damaged=damaged):
                self.directory = temporary_directory(self)
                self.log = self.directory / "log"
                self.start()
                self.storage.save({"term": 4, "vote": "p1", "commit": 6}, run(1, 6, 1), snapshot(3, 1))
                (self.directory / "snapshot.json").write_bytes(damaged)
                self.assertDiscarded(self.start(), "snapshot.json", None, [])
                self.assertEqual((self.directory / "snapshot.json.damaged").read_bytes(), damaged)
                self.assertFalse((self.directory / "snapshot.json").exists())

    def test_storage_saves_normally_after_a_discard(self) -> None:
        self.start()
        self.storage.save({"term": 4, "vote": "p1", "commit": 6}, run(1, 6, 1), snapshot(3, 1))
        (self.directory / "snapshot.json").write_bytes(b"{")
        self.start()
        self.storage.save({"term": 5, "vote": None, "commit": 9}, [], snapshot(8, 5))
        self.storage.save(None, run(9, 10, 5))
        self.assertEqual(self.start(), Recovered({"term": 5, "vote": None, "commit": 9}, snapshot(8, 5),
                                                 run(9, 10, 5)))

    def test_failed_fsync_raises_and_nothing_is_written_until_load(self) -> None:
        self.start("batch")
        self.storage.save({"term": 1, "vote": None, "commit": 0}, run(1, 2, 1))
        with mock.patch("os.fsync", side_effect=OSError(5, "Input/output error")):
            with self.assertRaises(OSError):
                self.storage.save({"term": 2, "vote": None, "commit": 0}, run(3, 4, 2))
        size = self.log.stat().st_size
        for write in (lambda: self.storage.save(None, run(5, 5, 2)), lambda: self.storage.compact(snapshot(2, 1))):
            with self.assertRaises(StorageError) as caught:
                write()
            self.assertIn("an earlier write failed ([Errno 5] Input/output error)", str(caught.exception))
        self.assertEqual(self.log.stat().st_size, size)
        self.storage.load()
        self.storage.save(None, run(5, 5, 2))
        self.assertEqual(self.start().entries, run(1, 2, 1) + run(3, 5, 2))

    def test_failed_hard_state_replace_raises(self) -> None:
        self.start()
        with mock.patch("os.replace", side_effect=OSError(28, "No space left on device")):
            with self.assertRaises(OSError):
                self.storage.save({"term": 1, "vote": "p1", "commit": 0}, run(1, 1, 1))
        with self.assertRaises(StorageError):
            self.storage.save({"term": 1, "vote": "p1", "commit": 0}, [])
        self.assertEqual(self.start(), Recovered(empty_hard_state(), None, run(1, 1, 1)))

    def test_the_stored_snapshot_is_offered_as_a_place_in_its_file(self) -> None:
        """A compacted or installed snapshot, and the one a restart loads, is
        offered as its index and term with the data's place in the file (so a
        replica can drop its parsed copy), reading back the same data."""
        self.start()
        self.assertIsNone(self.storage.stored_snapshot())
        self.storage.save(None, run(1, 4, 1))
        self.storage.compact(snapshot(2, 1))
        self.assert_offered(snapshot(2, 1))
        installed = {"data": {"applied": 9, "books": {}}, "term": 2, "index": 9}  # data first, as a peer may send it
        self.storage.save(None, [], installed)
        self.assert_offered(installed)
        self.assertEqual(self.start().snapshot, installed)
        self.assert_offered(installed)

    def test_a_snapshot_file_of_another_layout_loads_but_is_not_offered(self) -> None:
        """A file written with the data before the other keys (as an older
        version could) still loads; only the place of its data is unknown."""
        self.start()
        self.storage.close()
        (self.directory / "snapshot.json").write_bytes(
            b'{"data":{"applied":3},"index":3,"term":1}')
        self.assertEqual(self.start().snapshot, {"data": {"applied": 3}, "index": 3, "term": 1})
        self.assertIsNone(self.storage.stored_snapshot())

    def assert_offered(self, expected: dict) -> None:
        stored = self.storage.stored_snapshot()
        self.assertEqual((stored["index"], stored["term"]), (expected["index"], expected["term"]))
        self.assertEqual(orjson.loads(orjson.dumps(stored["data"].fragment())), expected["data"])

    def test_directory_is_open_in_one_storage_at_a_time(self) -> None:
        self.start()
        with self.assertRaises(StorageError):
            FileStorage(self.directory)
        self.storage.close()
        self.start()

    def test_save_before_load_or_after_close_is_refused(self) -> None:
        self.storage = FileStorage(self.directory)
        with self.assertRaises(StorageError):
            self.storage.save(None, run(1, 1, 1))
        self.storage.load()
        self.storage.close()
        with self.assertRaises(StorageError):
            self.storage.save(None, run(1, 1, 1))
        with self.assertRaises(StorageError):
            self.storage.load()


class ReferenceStorage:
    """The contract's save/compact rules, as plainly as they can be written."""

    def __init__(self) -> None:
        self.hard_state = empty_hard_state()
        self.snapshot: dict | None = None
        self.log: dict[int, dict] = {}

    def term(self, index: int) -> int | None:
        if self.snapshot and self.snapshot["index"] == index:
            return self.snapshot["term"]
        return self.log[index]["term"] if index in self.log else None

    def install(self, snap: dict) -> None:
        keep = self.term(snap["index"]) == snap["term"]
        self.snapshot = snap
        self.log = {i: e for i, e in self.log.items() if keep and i > snap["index"]}

    def compact(self, snap: dict) -> None:
        if snap["index"] > self.floor():
            self.install(snap)

    def save(self, hard_state: dict | None, entries: list[dict], snap: dict | None) -> None:
        if snap:
            self.install(snap)
        entries = [e for e in entries if e["index"] > self.floor()]
        if entries:
            self.log = {i: e for i, e in self.log.items() if i < entries[0]["index"]}
            self.log.update((e["index"], e) for e in entries)
        if hard_state:
            self.hard_state = hard_state

    def floor(self) -> int:
        return self.snapshot["index"] if self.snapshot else 0

    def last(self) -> int:
        return max(self.log, default=self.floor())

    def recovered(self) -> Recovered:
        return Recovered(self.hard_state, self.snapshot, [self.log[i] for i in sorted(self.log)], None)


class StorageModelTests(unittest.TestCase):
    """Any sequence of valid saves, compactions and restarts loads back what
    the reference holds, from either storage; and after every step the log
    file holds the reference's entries after the snapshot (``read_log``),
    and before it only entries once saved (the dead prefix)."""

    @settings(max_examples=60)
    @given(st.data())
    def test_random_saves_and_compactions_load_back_the_reference_state(self, data) -> None:
        dead_bytes = data.draw(st.sampled_from([0, 300, 1 << 30]), label="dead_bytes")  # rewrite at once, sometimes, never
        patch = mock.patch("twisted_exchange.wal.file_storage.DEAD_BYTES", dead_bytes)
        patch.start()
        self.addCleanup(patch.stop)
        directory = temporary_directory(self)
        file_storage = FileStorage(directory, "never")
        self.addCleanup(lambda: file_storage.close())
        file_storage.load()
        storages = [MemoryStorage(), file_storage]
        reference = ReferenceStorage()
        saved: set = set()
        term = 1
        for step in range(data.draw(st.integers(1, 12), label="steps")):
            action = data.draw(st.sampled_from(["save", "save", "compact", "restart"]), label=f"{step}")
            if action == "restart":
                file_storage.close()
                file_storage = storages[1] = FileStorage(directory, "never")
                self.assertEqual(file_storage.load(), reference.recovered())
                continue
            if action == "compact":
                if reference.last() == 0:
                    continue
                index = data.draw(st.integers(max(reference.floor(), 1), reference.last()))
                args = (snapshot(index, reference.term(index)),)
            else:
                term += data.draw(st.integers(0, 1))
                snap = None
                if data.draw(st.booleans()):
                    index = data.draw(st.integers(max(reference.floor(), 1), reference.last() + 3))
                    snap = snapshot(index, data.draw(st.sampled_from([reference.term(index) or term, term + 1])))
                    term = max(term, snap["term"])
                floor = max(reference.floor(), snap["index"] if snap else 0)
                last = max(reference.last(), floor) if not snap or reference.term(snap["index"]) == snap["term"] else floor
                first = data.draw(st.integers(max(floor - 2, 1), last + 1))
                entries = run(first, first + data.draw(st.integers(0, 4)) - 1, term)
                hard_state = data.draw(st.none() | st.builds(
                    lambda vote, commit: {"term": term, "vote": vote, "commit": commit},
                    st.none() | st.sampled_from(["p1", "p2"]), st.integers(0, 20)))
                args = (hard_state, entries, snap)
            for storage in [reference] + storages:
                getattr(storage, action)(*args)
            saved.update(_key(e) for e in (args[1] if action == "save" else []))
            on_file = read_log(directory / "log")
            self.assertEqual([e for e in on_file if e["index"] > reference.floor()], reference.recovered().entries)
            self.assertLessEqual({_key(e) for e in on_file}, saved)  # the dead prefix: entries once saved
        for storage in storages:
            self.assertEqual(storage.load(), reference.recovered())


def _key(e: dict) -> tuple:
    return e["index"], e["term"], e["command"]["request"]
