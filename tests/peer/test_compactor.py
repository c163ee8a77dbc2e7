"""The background snapshot: a forked child writes it, the storage moves it into place."""
import json
import os
import shutil
import tempfile
import time
import unittest
from pathlib import Path

import orjson

from twisted_exchange.peer.compactor import BackgroundSnapshot
from twisted_exchange.replication.state_machine import ReplicatedStateMachine
from twisted_exchange.wal import FileStorage, codec
from twisted_exchange.wal.file_storage import BACKGROUND, SNAPSHOT, WrittenData


def entry(index: int) -> dict:
    return {"index": index, "term": 1, "command": {
        "action": "submit", "client": "alice", "request": f"r{index}", "symbol": "BTCUSD",
        "side": "buy", "type": "limit", "price": str(100 + index), "quantity": "1"}}


def state_machine(entries: int) -> ReplicatedStateMachine:
    machine = ReplicatedStateMachine()
    for index in range(1, entries + 1):
        machine.apply(entry(index))
    return machine


class Failing:
    """A state machine whose snapshot fails (in the child)."""

    def snapshot(self):
        raise RuntimeError("no snapshot today")


class Sleeping:
    """A state machine whose snapshot never ends (in the child)."""

    def snapshot(self):
        time.sleep(3600)


class BackgroundSnapshotTests(unittest.TestCase):
    def setUp(self):
        self.directory = Path(tempfile.mkdtemp(prefix="compactor-"))
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = self.directory / BACKGROUND
        self.writer = BackgroundSnapshot(self.path)
        self.addCleanup(self.writer.stop)

    def finished(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = self.writer.poll()
            if done is not None:
                return done
            time.sleep(0.01)
        self.fail("the child did not finish in 30 s")

    def test_the_child_writes_the_state_as_it_was_at_the_fork(self):
        machine = state_machine(5)
        expected = machine.snapshot()
        self.writer.start({"index": 5, "term": 1, "config": {"voters": ["a"], "learners": []}}, machine)
        self.assertTrue(self.writer.running)
        machine.apply(entry(6))                                    # the parent goes on
        snapshot, failure = self.finished()
        self.assertIsNone(failure)
        self.assertFalse(self.writer.running)
        self.assertEqual(json.loads(self.path.read_bytes()),
                         {"index": 5, "term": 1, "config": {"voters": ["a"], "learners": []}, "data": expected})
        self.assertIsInstance(snapshot["data"], WrittenData)
        self.assertEqual(orjson.dumps(snapshot["data"].fragment()), codec.compact_json(expected))

    def test_a_failed_child_is_reported_and_leaves_no_file(self):
        self.writer.start({"index": 1, "term": 1, "config": {}}, Failing())
        snapshot, failure = self.finished()
        self.assertIsNone(snapshot)
        self.assertEqual(failure, "exit code 1")
        self.assertFalse(self.path.exists())

    def test_stop_kills_a_running_child_and_removes_its_file(self):
        self.writer.start({"index": 1, "term": 1, "config": {}}, Sleeping())
        child = self.writer._child
        self.assertIsNone(self.writer.poll())
        with self.assertRaises(RuntimeError):                      # one at a time
            self.writer.start({"index": 2, "term": 1, "config": {}}, Sleeping())
        self.writer.stop()
        self.assertFalse(self.writer.running)
        self.assertFalse(self.path.exists())
        with self.assertRaises(ChildProcessError):                 # reaped: no zombie left
            os.waitpid(child, os.WNOHANG)

    def test_storage_moves_the_written_snapshot_into_place_and_loads_it_back(self):
        storage = FileStorage(self.directory)
        self.addCleanup(storage.close)
        storage.load()
        storage.save(None, [entry(i) for i in range(1, 8)])
        machine = state_machine(5)
        self.writer.start({"index": 5, "term": 1, "config": {"voters": ["a"], "learners": []}}, machine)
        snapshot, _ = self.finished()
        storage.compact(snapshot)
        self.assertFalse(self.path.exists())
        self.assertEqual(snapshot["data"].path, self.directory / SNAPSHOT)
        self.assertEqual(orjson.dumps(snapshot["data"].fragment()), codec.compact_json(machine.snapshot()))
        storage.close()
        reopened = FileStorage(self.directory)
        self.addCleanup(reopened.close)
        recovered = reopened.load()
        self.assertEqual(recovered.snapshot["data"], machine.snapshot())
        self.assertEqual([e["index"] for e in recovered.entries], [6, 7])

    def test_a_file_left_by_a_stopped_peer_is_removed_on_load(self):
        self.path.write_bytes(b'{"index": 9, "term"')
        storage = FileStorage(self.directory)
        self.addCleanup(storage.close)
        storage.load()
        self.assertFalse(self.path.exists())
