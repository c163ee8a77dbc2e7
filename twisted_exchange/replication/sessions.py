"""The client session table: exactly-once execution however late the retry.

Raft delivers a command at least once (a client or a follower retries when a
reply is lost), so the replicated state decides, per (client, request), whether
a command in the log executes (Raft thesis 6.3).  The decision must never be
"execute again", whatever the delay or the traffic in between, so it rests on
an order of request ids rather than on remembering every id:

- A client's request ids increase.  They compare by (length, text), so
  decimal counters, zero-padded timestamps, ULIDs and UUIDv7 all order
  correctly (``"r10"`` > ``"r9"``).
- Per client the table keeps a *window*: the fingerprints and results of its
  ``window`` highest executed ids, and a *floor*: the highest id ever dropped
  from the window.  An id in the window is answered from it; an id at or below
  the floor is ERR_STALE_REQUEST (never executed); an id above the floor and
  not in the window is new.  So concurrent requests may arrive out of order
  as long as they stay within the window.
- Results are kept as canonical JSON text beside a 16-byte fingerprint of the
  canonical command: a reused id with another payload is ERR_REQUEST_REUSED.
  A result longer than ``result_bytes`` is not kept (its id and fingerprint
  are): a retry of it is ERR_STALE_REQUEST.
- Memory: windows cost their text plus a fixed overhead per entry and per
  client, and all windows together stay within ``kept_bytes``; beyond that the
  least recently active client (in log order, the same on every replica) loses
  its window first and keeps only its floor, so its late retries are refused,
  never executed.  Floors are kept for at most ``clients`` clients; past that a
  new client is refused with ERR_TOO_MANY_CLIENTS.

Everything is a pure function of the applied log (no clock), and part of the
snapshot.  Clients are keyed by the command's ``client`` string, which the
next issue (authenticated clients) derives from a credential: the table does
not care where the name comes from.

Structures: ``_active`` is a dict of client -> :class:`Session` in recency
order (least recent first: eviction pops the front, O(1)); a window is a dict
of request -> fingerprint + result text in ascending id order, so its lowest
id is the first key (O(1)) and the common in-order insert is an append; an
out-of-order insert re-sorts at most ``window`` keys.  ``_dormant`` maps a
client without a window to its floor.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

WINDOW = 64                   # results kept per client
RESULT_BYTES = 64 * 1024      # a longer result is not kept (about 250 fills)
KEPT_BYTES = 256 * 1024 ** 2  # all windows together, overheads included
CLIENTS = 1_000_000           # clients whose floor is kept
ENTRY_COST = 200              # bytes charged per kept result beyond its text
SESSION_COST = 400            # bytes charged per client with a window

STALE_REQUEST = "ERR_STALE_REQUEST"
REQUEST_REUSED = "ERR_REQUEST_REUSED"
TOO_MANY_CLIENTS = "ERR_TOO_MANY_CLIENTS"

FINGERPRINT_CHARS = 32  # hex of a 16-byte blake2b


def canonical_bytes(value: Any) -> bytes:
    """The one JSON text of ``value``, UTF-8: sorted keys, no spaces.

    Only for values that are JSON by construction (admitted commands and the
    core's results: strings, ints, bools, None), which every replica then
    encodes byte for byte alike.
    """
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def canonical_json(value: Any) -> str:
    """:func:`canonical_bytes` as text."""
    return canonical_bytes(value).decode()


def fingerprint(command_json: bytes) -> str:
    """The fingerprint kept beside a result: blake2b-128 of the canonical command."""
    return hashlib.blake2b(command_json, digest_size=16).hexdigest()


def request_order(request: str) -> tuple[int, str]:
    """The sort key of request ids: longer is later, then by text."""
    return len(request), request


class Session:
    """One client's window of kept results and its floor."""

    __slots__ = ("floor", "window", "cost")

    def __init__(self, floor: str | None = None, window: dict[str, str] | None = None) -> None:
        self.floor = floor
        self.window: dict[str, str] = window or {}  # request -> fingerprint + result text, ascending
        self.cost = SESSION_COST + sum(_entry_cost(value) for value in self.window.values())

    def newest(self) -> str | None:
        """The highest request id executed (kept or dropped), or None."""
        return next(reversed(self.window), self.floor)


class SessionTable:
    """Decides, for each command in the log, to execute it or answer without executing."""

    def __init__(self, *, window: int = WINDOW, result_bytes: int = RESULT_BYTES,
                 kept_bytes: int = KEPT_BYTES, clients: int = CLIENTS) -> None:
        if kept_bytes < SESSION_COST + window * (ENTRY_COST + FINGERPRINT_CHARS + result_bytes):
            raise ValueError("kept_bytes must hold at least one full window")
        self._window = window
        self._result_bytes = result_bytes
        self._kept_bytes = kept_bytes
        self._clients = clients
        self._active: dict[str, Session] = {}   # least recently active first
        self._dormant: dict[str, str] = {}      # client -> floor
        self._cost = 0

    def check(self, command: dict, print_: str | None = None) -> dict | None:
        """The reply for ``command`` if it must not execute, or None if it is new.

        ``print_`` is its :func:`fingerprint` if the caller has it (computed
        here only when the request id is in the window).  Pure: changes nothing.
        """
        client, request = command["client"], command["request"]
        session = self._active.get(client)
        if session is not None:
            value = session.window.get(request)
            if value is not None:
                return _kept_reply(request, value, print_ or fingerprint(canonical_bytes(command)))
            floor = session.floor
        elif client in self._dormant:
            floor = self._dormant[client]
        else:
            floor = None
            if len(self._active) + len(self._dormant) >= self._clients:
                return _refusal(TOO_MANY_CLIENTS, f"{self._clients} clients are known; no new client"
                                " is accepted, so that no retry can ever execute twice")
        if floor is not None and request_order(request) <= request_order(floor):
            return _refusal(STALE_REQUEST, f"request {request!r} is not above {floor!r}, the"
                            " highest request whose result was dropped; not executed")
        return None

    def record(self, client: str, request: str, print_: str, result_text: str) -> None:
        """Remember an executed command (one that :meth:`check` found new) and its result."""
        session = self._active.pop(client, None)
        if session is None:
            session = Session(self._dormant.pop(client, None))
            self._cost += session.cost
        self._active[client] = session  # now the most recently active
        value = print_ + (result_text if len(result_text) <= self._result_bytes else "")
        window = session.window
        newest = next(reversed(window), None)
        window[request] = value
        if newest is not None and request_order(request) < request_order(newest):
            session.window = window = dict(sorted(window.items(), key=lambda item: request_order(item[0])))
        added = _entry_cost(value)
        session.cost += added
        self._cost += added
        if len(window) > self._window:
            self._drop_lowest(session)
        while self._cost > self._kept_bytes:
            self._forget_window(next(iter(self._active)))

    def _drop_lowest(self, session: Session) -> None:
        request = next(iter(session.window))
        dropped = _entry_cost(session.window.pop(request))
        session.cost -= dropped
        self._cost -= dropped
        session.floor = request

    def _forget_window(self, client: str) -> None:
        session = self._active.pop(client)
        self._cost -= session.cost
        self._dormant[client] = session.newest()

    # -- state --------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able rows in the orders that decide eviction (recency, ids)."""
        return {"active": [[client, session.floor, list(map(list, session.window.items()))]
                           for client, session in self._active.items()],
                "dormant": list(map(list, self._dormant.items()))}

    def restore(self, data: dict[str, Any]) -> None:
        """Replace the table with the one ``snapshot`` described."""
        self._active = {client: Session(floor, dict(map(tuple, rows)))
                        for client, floor, rows in data["active"]}
        self._dormant = dict(map(tuple, data["dormant"]))
        self._cost = sum(session.cost for session in self._active.values())

    def stats(self) -> dict[str, int]:
        """Sizes for status pages: O(1)."""
        return {"active_clients": len(self._active), "dormant_clients": len(self._dormant),
                "kept_bytes": self._cost}


def _entry_cost(value: str) -> int:
    return ENTRY_COST + len(value)


def _kept_reply(request: str, value: str, print_: str) -> dict:
    if value[:FINGERPRINT_CHARS] != print_:
        return _refusal(REQUEST_REUSED, f"request {request!r} was used for another command")
    if len(value) == FINGERPRINT_CHARS:
        return _refusal(STALE_REQUEST, f"request {request!r} was executed; its result was too"
                        " large to keep")
    return json.loads(value[FINGERPRINT_CHARS:])


def _refusal(code: str, reason: str) -> dict:
    return {"ok": False, "error": f"{code}: {reason}"}
