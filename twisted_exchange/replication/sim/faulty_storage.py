"""FaultyStorage: MemoryStorage on a disk that fails when the simulator says.

Three faults, each what FileStorage can suffer and must report:

- *failed write*: the next write raises OSError before it stores anything;
- *torn write*: the next append stores only a prefix of its entries, then
  raises OSError (the hard state of that batch is not stored);
- *corrupt read*: stored data is damaged while the node is down, and the
  next ``load()`` finds the snapshot (and the log after it) or a log suffix
  unreadable.  It drops them, marks the hard state abstaining, and reports
  them in ``Recovered.discarded``, as FileStorage does.

After a failed or torn write the shared rule of ``StorageRules`` refuses
every write until ``load()``: the node must fail-stop.
"""
from __future__ import annotations

import random

from twisted_exchange.replication.records import ABSTAIN, Entry, HardState, Snapshot, abstaining
from twisted_exchange.replication.storage import MemoryStorage, Recovered

FAILED_WRITE = "failed write"
TORN_WRITE = "torn write"
CORRUPT_READ = "corrupt read"


class DiskFault(OSError):
    """An injected I/O error; ``kind`` names the fault."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"injected {kind}")
        self.kind = kind


class FaultyStorage(MemoryStorage):
    """MemoryStorage with one armed write fault at a time, and damage on demand."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self._rng = rng
        self.armed: str | None = None
        self._discarded: str | None = None

    @property
    def abstaining(self) -> bool:
        """Does the stored hard state say the node abstains from votes?"""
        return ABSTAIN in self._hard_state

    @property
    def hard_state(self) -> HardState:
        """The stored hard state (for the checker: do not change it)."""
        return self._hard_state

    @property
    def last_index(self) -> int:
        """The index of the last stored entry, else of the snapshot, else 0."""
        return self._last_index()

    def damageable(self) -> list[str]:
        """What a corrupt read can hit now: "snapshot" and/or "log"."""
        return (["snapshot"] if self._snapshot is not None else []) + (["log"] if self._entries else [])

    def corrupt(self, part: str) -> str:
        """Damage the stored snapshot (and so the log after it) or a log
        suffix; return what the next ``load()`` reports discarded."""
        self._hard_state = abstaining(self._hard_state)
        if part == "snapshot":
            lost = f"snapshot at {self._snapshot['index']} and {len(self._entries)} entries after it"
            self._snapshot, self._entries = None, []
        else:
            cut = self._rng.randrange(len(self._entries))
            lost = f"entries from {self._entries[cut]['index']} to {self._entries[-1]['index']}"
            del self._entries[cut:]
        self._discarded = f"{CORRUPT_READ}: {lost}"
        return self._discarded

    def load(self) -> Recovered:
        recovered = super().load()
        recovered.discarded, self._discarded = self._discarded, None
        return recovered

    def _strike(self, kind: str) -> None:
        if self.armed == kind:
            self.armed = None
            raise DiskFault(kind)

    def _store_snapshot(self, snapshot: Snapshot) -> None:
        self._strike(FAILED_WRITE)
        super()._store_snapshot(snapshot)

    def _append(self, entries: list[Entry]) -> None:
        self._strike(FAILED_WRITE)
        if self.armed == TORN_WRITE:
            super()._append(entries[:self._rng.randrange(len(entries))])
        self._strike(TORN_WRITE)
        super()._append(entries)

    def _store_hard_state(self, hard_state: HardState) -> None:
        self._strike(FAILED_WRITE)
        super()._store_hard_state(hard_state)
