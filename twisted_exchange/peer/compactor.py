"""Log compaction off the reactor: the state machine's snapshot taken by a forked child.

A snapshot is the whole state: its rows (0.6 us per order), their JSON and
its file took 2 s at 10^6 resting orders and 0.25 s at 10^5, all on the
reactor.  Every peer reached the compaction point together and stopped for
that long; a leader stopped past the election timeout (0.5-1 s) lost its
leadership.  So the replica only asks for a snapshot
(``Ready.snapshot_due``, see replication/replica.py), and
:class:`BackgroundSnapshot` forks: the child sees the state machine exactly
as it was at that ``apply(ready)`` (copy-on-write), writes the snapshot
(wal/file_storage.py :func:`write_snapshot`) and exits, while the parent
goes on serving; the parent's tick polls for the child's end and hands the
snapshot back to the replica, and the storage moves the file into place.

The child runs no reactor and no Twisted code: it asks the kernel to kill
it when the parent dies, runs at idle priority (SCHED_IDLE: the peers come
first on a busy machine; at nice 0 the children cost the peers' p99 more
than the pauses they saved, and at nice 19 still some; ``hurry`` lifts a
child that a saturated machine starved, while the log grows), closes
every inherited descriptor (a listening socket or the data directory's
lock held by an orphan would keep a restarted peer from starting),
restores the default signal handlers, switches the cyclic collector off
(a collection would write to every object's header and copy the whole
heap) and leaves with ``os._exit``.
Each child writes a file of its own, named after its pid and created
exclusively, so a child outliving its parent can never write into the file
of the restarted peer's child.  A crash of either side loses nothing:
until the parent moves the file into place the log still holds every
entry, and ``FileStorage.load`` removes files left behind.
"""
from __future__ import annotations

import ctypes
import gc
import os
import signal
from pathlib import Path
from typing import Any

from twisted_exchange import scheduling
from twisted_exchange.replication.records import Snapshot
from twisted_exchange.replication.state_machine import ReplicatedStateMachine
from twisted_exchange.wal.file_storage import write_snapshot, written_snapshot


#: prctl(2) option: the signal the kernel sends a process when its parent dies.
_PR_SET_PDEATHSIG = 1


class BackgroundSnapshot:
    """At most one child writing a snapshot, to ``path`` + ``.<its pid>``."""

    def __init__(self, path: Path, sync: bool = True) -> None:
        self._base = path
        self._sync = sync
        self._child: int | None = None
        self._snapshot: Snapshot | None = None

    @property
    def running(self) -> bool:
        """Is a child writing?"""
        return self._child is not None

    def start(self, snapshot: Snapshot, state_machine: ReplicatedStateMachine) -> None:
        """Fork a child that writes ``snapshot`` (no data yet) with the state
        machine's snapshot as its data; one child at a time."""
        if self._child is not None:
            raise RuntimeError("a snapshot is being written already")
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _child(parent, self._file(os.getpid()), snapshot, state_machine, self._sync)
        self._child, self._snapshot = pid, snapshot

    def _file(self, pid: int) -> Path:
        return self._base.with_name(f"{self._base.name}.{pid}")

    def hurry(self) -> None:
        """Raise a running child from idle priority to nice 19: on a machine
        the peers keep busy, an idle-priority child may wait indefinitely."""
        if self._child is not None:
            scheduling.switch("SCHED_OTHER", self._child)  # if it has just ended, poll reaps it

    def poll(self) -> tuple[Snapshot | None, str | None] | None:
        """None while the child runs (or none does); else ``(snapshot, None)``,
        the snapshot with its data written, or ``(None, why it failed)``."""
        if self._child is None:
            return None
        pid, status = os.waitpid(self._child, os.WNOHANG)
        if pid == 0:
            return None
        snapshot, path = self._snapshot, self._file(pid)
        self._child = self._snapshot = None
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            path.unlink(missing_ok=True)
            return None, f"exit code {code}" if code > 0 else f"killed by signal {-code}"
        assert snapshot is not None
        return written_snapshot(path, snapshot), None

    def stop(self) -> None:
        """Kill a child still writing, wait for it and remove its file."""
        if self._child is not None:
            os.kill(self._child, signal.SIGKILL)
            os.waitpid(self._child, 0)
            self._file(self._child).unlink(missing_ok=True)
            self._child = self._snapshot = None


def _child(parent: int, path: Path, snapshot: Snapshot, state_machine: Any, sync: bool) -> None:
    """The forked child: write the snapshot and leave, never returning."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(number, signal.SIG_DFL)
        # Before it may wait for the CPU at idle priority: the parent's files,
        # sockets and the data directory's flock, which a restart of the peer
        # must be able to take again at once (seen in tests that run three
        # peers in one process, under load).
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before that
            return
        _yield_the_cpu()
        gc.disable()
        write_snapshot(path, snapshot, state_machine.snapshot(), sync)
        code = 0
    except BaseException as error:  # stderr (fd 2) is still open: the peer's log
        os.write(2, f"background snapshot failed: {error!r}\n".encode())
    finally:
        os._exit(code)


def _yield_the_cpu() -> None:
    """The peers' own work first: the child runs on what CPU is left over.
    Linux's SCHED_IDLE: any runnable peer preempts it at once (at nice 19
    alone, the children of every peer, which snapshot at the same index,
    still held both cores for tens of milliseconds: the cluster's p99.9 at
    64 in flight went from ~40 to 60-80 ms); elsewhere, or where a sandbox
    forbids the call, nice 19 only."""
    os.nice(19)
    scheduling.switch("SCHED_IDLE")


def _die_with_parent() -> None:
    """SIGKILL when the parent dies (Linux's prctl); elsewhere an orphan may
    outlive its peer, harmlessly: its file is its own."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:
        return
    prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
