"""Tests for twisted_exchange.replication.storage.

`StorageContract` holds the contract tests; it runs against MemoryStorage and
FileStorage alike.  FileStorage has its own tests for what only files can
suffer: restarts, torn writes, corrupt records and files.
"""
from __future__ import annotations

import unittest

from twisted_exchange.replication.storage import MemoryStorage, Recovered, StorageError


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

    def test_compaction_twice_at_the_same_index_keeps_the_log(self) -> None:
        self.storage.save(None, run(1, 4, 1))
        self.storage.compact(snapshot(2, 1))
        self.storage.compact(snapshot(2, 1))
        self.assertEqual(self.recovered().entries, run(3, 4, 1))

    def test_snapshot_older_than_the_stored_one_is_rejected(self) -> None:
        self.storage.save(None, run(1, 4, 1))
        self.storage.compact(snapshot(3, 1))
        with self.assertRaises(StorageError):
            self.storage.compact(snapshot(2, 1))
        self.assertEqual(self.recovered().snapshot, snapshot(3, 1))

    def test_hard_state_update_replaces_the_previous_one(self) -> None:
        self.storage.save({"term": 1, "vote": "p1", "commit": 0}, run(1, 1, 1))
        self.storage.save({"term": 2, "vote": None, "commit": 1}, [])
        recovered = self.recovered()
        self.assertEqual(recovered.hard_state, {"term": 2, "vote": None, "commit": 1})
        self.assertEqual(recovered.entries, run(1, 1, 1))

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
