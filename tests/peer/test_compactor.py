"""The background snapshot: a forked child writes it, the storage moves it into place."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock
from pathlib import Path

import orjson

from twisted_exchange.peer.compactor import BackgroundSnapshot
from twisted_exchange.replication.state_machine import ReplicatedStateMachine
from twisted_exchange.replication.storage import StorageError
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
        self.writer = BackgroundSnapshot(self.directory / BACKGROUND)
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
        self.assertIsInstance(snapshot["data"], WrittenData)
        self.assertEqual(snapshot["data"].path.parent, self.directory)
        self.assertEqual(json.loads(snapshot["data"].path.read_bytes()),
                         {"index": 5, "term": 1, "config": {"voters": ["a"], "learners": []}, "data": expected})
        self.assertEqual(orjson.dumps(snapshot["data"].fragment()), codec.compact_json(expected))

    def test_a_failed_child_is_reported_and_leaves_no_file(self):
        self.writer.start({"index": 1, "term": 1, "config": {}}, Failing())
        snapshot, failure = self.finished()
        self.assertIsNone(snapshot)
        self.assertEqual(failure, "exit code 1")
        self.assertEqual(self.left(), [])

    def test_stop_kills_a_running_child_and_removes_its_file(self):
        self.writer.start({"index": 1, "term": 1, "config": {}}, Sleeping())
        child = self.writer._child
        self.assertIsNone(self.writer.poll())
        with self.assertRaises(RuntimeError):                      # one at a time
            self.writer.start({"index": 2, "term": 1, "config": {}}, Sleeping())
        self.writer.stop()
        self.assertFalse(self.writer.running)
        self.assertEqual(self.left(), [])
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
        self.assertEqual(self.left(), [])
        self.assertEqual(snapshot["data"].path, self.directory / SNAPSHOT)
        self.assertEqual(orjson.dumps(snapshot["data"].fragment()), codec.compact_json(machine.snapshot()))
        storage.close()
        reopened = FileStorage(self.directory)
        self.addCleanup(reopened.close)
        recovered = reopened.load()
        self.assertEqual(recovered.snapshot["data"], machine.snapshot())
        self.assertEqual([e["index"] for e in recovered.entries], [6, 7])

    def test_the_child_lets_go_of_the_data_directory_before_it_waits_for_the_cpu(self):
        """A peer restarted while its child waits at idle priority (for as long
        as the machine is busy) takes its directory's lock again at once."""
        storage = FileStorage(self.directory)
        storage.load()
        with mock.patch("twisted_exchange.peer.compactor._yield_the_cpu", lambda: time.sleep(3600)):
            self.writer.start({"index": 1, "term": 1, "config": {}}, Sleeping())
        storage.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                FileStorage(self.directory).close()
                break
            except StorageError:
                self.assertLess(time.monotonic(), deadline, "the waiting child still holds the lock")
                time.sleep(0.01)
        self.assertTrue(self.writer.running)

    def test_files_left_by_a_stopped_peer_are_removed_on_load(self):
        for pid in (41, 42):
            (self.directory / f"{BACKGROUND}.{pid}").write_bytes(b'{"index": 9, "term"')
        storage = FileStorage(self.directory)
        self.addCleanup(storage.close)
        storage.load()
        self.assertEqual(self.left(), [])

    def test_a_child_dies_with_its_parent(self):
        """A peer killed with SIGKILL takes its writer with it: an orphan could
        otherwise go on writing after the peer restarted."""
        parent = subprocess.Popen([sys.executable, "-c", ORPHANING, str(self.directory / BACKGROUND)],
                                  stdout=subprocess.PIPE, text=True)
        self.addCleanup(parent.wait)
        self.addCleanup(parent.kill)
        child = int(parent.stdout.readline())
        self.addCleanup(_kill, child)  # if it did outlive its parent
        self.assertTrue(_alive(child))
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse(_alive(child), "the writer outlived its parent")

    @unittest.skipUnless(hasattr(os, "SCHED_IDLE"), "SCHED_IDLE is Linux's")
    def test_the_child_runs_at_idle_priority_until_hurried(self):
        """Idle priority: a snapshot never takes a core from a peer; hurried
        (one that starved too long), nice 19 at the normal policy."""
        self.writer.start({"index": 1, "term": 1, "config": {}}, Sleeping())
        child = self.writer._child
        self.assertEqual(self.until(lambda: os.sched_getscheduler(child), os.SCHED_IDLE), os.SCHED_IDLE)
        self.writer.hurry()
        self.assertEqual(os.sched_getscheduler(child), os.SCHED_OTHER)
        self.assertEqual(os.getpriority(os.PRIO_PROCESS, child), 19)
        self.writer.stop()
        self.writer.hurry()                                         # no child: nothing to do

    def test_a_child_refused_idle_priority_writes_its_snapshot_at_nice_19(self):
        """A sandbox that forbids sched_setscheduler costs the priority, not the snapshot."""
        with mock.patch.object(os, "sched_setscheduler", side_effect=PermissionError(1, "refused")):
            self.writer.start({"index": 5, "term": 1, "config": {}}, state_machine(5))
        snapshot, failure = self.finished()
        self.assertIsNone(failure)
        self.assertEqual(snapshot["index"], 5)

    def until(self, read, expected):
        """``read()`` once it returns ``expected``, or its last value after 30 s."""
        deadline = time.monotonic() + 30
        while (value := read()) != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return value

    def left(self):
        return sorted(self.directory.glob(BACKGROUND + "*"))


#: A parent that starts a writer which never finishes, says the writer's pid and waits.
ORPHANING = """
import sys, time
from pathlib import Path
from twisted_exchange.peer.compactor import BackgroundSnapshot
class Sleeping:
    def snapshot(self):
        time.sleep(3600)
writer = BackgroundSnapshot(Path(sys.argv[1]))
writer.start({"index": 1, "term": 1, "config": {}}, Sleeping())
print(writer._child, flush=True)
time.sleep(3600)
"""


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Is ``pid`` a process that has not exited (a zombie has)?"""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
