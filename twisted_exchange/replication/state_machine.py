"""The replicated state: the core ``Exchange`` plus a client session table.

Raft delivers a command at least once: a client or a follower retries when a
reply is lost, and the retry may land in the log a second time.  Raft thesis
section 6.3 makes that exactly-once execution: the replicated state remembers,
per client, the last request ids it executed and their results, and a command
whose (client, request) is remembered returns the remembered result without
executing again.  Because the table is part of the state (snapshot, hash),
every replica makes the same decision at the same log index.

Contract for clients: one outstanding request at a time, retried with the same
``request`` id until a result comes back.  The table keeps the last
``SESSION_WINDOW`` requests of each client (not only the last one) so that a
copy delayed in the network that reaches the log after the client moved on to
newer requests is still recognised.

Memory is bounded: at most ``SESSION_CLIENTS`` clients are remembered, the
least recently active one forgotten first (thesis 6.3 expires sessions by
time; the log has no clock, so recency in log order stands in for it, which
every replica computes identically).  A forgotten client's late retry would
execute again, so the bound is far above the clients a cluster serves at once.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from twisted_exchange.core import Exchange

SESSION_WINDOW = 16
SESSION_CLIENTS = 100_000


class ReplicatedStateMachine:
    """Applies committed log entries; identical on every replica at every index."""

    def __init__(self, exchange: Exchange | None = None,
                 sessions: dict[str, dict[str, dict]] | None = None, applied: int = 0,
                 max_clients: int = SESSION_CLIENTS) -> None:
        self.exchange = exchange if exchange is not None else Exchange()
        # client -> {request: result}; clients least recently active first,
        # each client's requests oldest first (dicts keep insertion order)
        self._sessions: dict[str, dict[str, dict]] = sessions or {}
        self._max_clients = max_clients
        self.applied = applied

    def lookup(self, command: dict) -> dict | None:
        """The remembered result of this (client, request), or None if not executed."""
        session = self._sessions.get(command.get("client"))
        return None if session is None else session.get(command.get("request"))

    def apply(self, entry: dict) -> dict | None:
        """Apply the next committed entry; return its result (None for a no-op)."""
        if entry["index"] != self.applied + 1:
            raise ValueError(f"entry {entry['index']} applied after {self.applied}")
        self.applied = entry["index"]
        command = entry["command"]
        if command is None:
            return None
        client, request = command.get("client"), command.get("request")
        session = self._sessions.pop(client, None)
        if session is None:
            session = {}
            if len(self._sessions) >= self._max_clients:
                del self._sessions[next(iter(self._sessions))]
        self._sessions[client] = session  # now the most recently active
        result = session.get(request)
        if result is not None:
            return result
        result = session[request] = self.exchange.apply(command)
        if len(session) > SESSION_WINDOW:
            del session[next(iter(session))]
        return result

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able data; ``restore`` of it behaves identically."""
        return {"applied": self.applied, "exchange": self.exchange.snapshot(),
                "sessions": self._session_rows()}

    def _session_rows(self) -> list[list]:
        """The session table as ``[client, [[request, result], ...]]`` rows, in
        recency order and each client's requests in age order: both orders
        decide eviction, so both are part of the state."""
        return [[client, list(map(list, session.items()))] for client, session in self._sessions.items()]

    @classmethod
    def restore(cls, data: dict[str, Any], max_clients: int = SESSION_CLIENTS) -> ReplicatedStateMachine:
        sessions = {client: dict(map(tuple, pairs)) for client, pairs in data["sessions"]}
        return cls(Exchange.restore(data["exchange"]), sessions, data["applied"], max_clients)

    def state_hash(self) -> str:
        """Hex digest of the exchange state and the session table."""
        sessions = json.dumps(self._session_rows(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(f"{self.exchange.state_hash()}:{sessions}".encode()).hexdigest()
