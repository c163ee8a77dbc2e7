"""The replicated state: the core ``Exchange``, the client session table and
a rolling digest of everything applied.

Every committed command passes the session table first (sessions.py): a
retry is answered from it, a stale or reused request id is refused, and only
a new (client, request) reaches the exchange.  Because the table is part of
the state (snapshot, hash), every replica makes the same decision at the same
log index.

``digest`` is a hash chain over the applied entries,
``h_i = blake2b(h_{i-1} || i || command || result)`` with command and result
in canonical JSON, so replicas that applied different commands or got
different results disagree from that index on.  It costs one hash of a few
hundred bytes per entry and makes a health report O(1) in the size of the
state; :meth:`state_hash` (the full state, O(state)) stays for tests and the
simulator.
"""
from __future__ import annotations

import hashlib
from typing import Any

from twisted_exchange.core import Exchange
from twisted_exchange.replication.sessions import SessionTable, canonical_bytes, canonical_json, fingerprint

GENESIS = "0" * 64


class ReplicatedStateMachine:
    """Applies committed log entries; identical on every replica at every index."""

    def __init__(self, exchange: Exchange | None = None, sessions: SessionTable | None = None,
                 applied: int = 0, digest: str = GENESIS) -> None:
        self.exchange = exchange if exchange is not None else Exchange()
        self.sessions = sessions if sessions is not None else SessionTable()
        self.applied = applied
        self.digest = digest

    def lookup(self, command: dict) -> dict | None:
        """The reply ``command`` gets without executing (its kept result, or a
        refusal), or None if applying it now would execute it."""
        return self.sessions.check(command)

    def apply(self, entry: dict) -> dict | None:
        """Apply the next committed entry; return its result (None for a no-op)."""
        index = entry["index"]
        if index != self.applied + 1:
            raise ValueError(f"entry {index} applied after {self.applied}")
        command = entry["command"]
        command_json = canonical_bytes(command)
        if command is None:
            result = None
            result_json = b"null"
        else:
            print_ = fingerprint(command_json)
            result = self.sessions.check(command, print_)
            if result is None:
                result = self.exchange.apply(command)
                result_json = canonical_bytes(result)
                self.sessions.record(command["client"], command["request"], print_, result_json.decode())
            else:
                result_json = canonical_bytes(result)
        self.applied = index
        # the UTF-8 of f"{digest}:{index}:{command}:{result}", built as bytes
        self.digest = hashlib.blake2b(b"%s:%d:%s:%s" % (self.digest.encode(), index, command_json, result_json),
                                      digest_size=32).hexdigest()
        return result

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able data; ``restore`` of it behaves identically."""
        return {"applied": self.applied, "digest": self.digest,
                "exchange": self.exchange.snapshot(), "sessions": self.sessions.snapshot()}

    @classmethod
    def restore(cls, data: dict[str, Any], sessions: SessionTable | None = None) -> ReplicatedStateMachine:
        """The state ``snapshot`` described; ``sessions`` brings non-default bounds."""
        table = sessions if sessions is not None else SessionTable()
        table.restore(data["sessions"])
        return cls(Exchange.restore(data["exchange"]), table, data["applied"], data["digest"])

    def state_hash(self) -> str:
        """Hex digest of the exchange state and the session table (O(state))."""
        sessions = canonical_json(self.sessions.snapshot())
        return hashlib.sha256(f"{self.exchange.state_hash()}:{sessions}".encode()).hexdigest()
