"""The peer's RPC surface: one Grenache payload in, one reply or error out.

Payloads are JSON objects with an ``action`` (see README, "RPC protocol").
Client commands go through Raft and are answered after this peer applied
them; queries are answered from this peer's own book, whose own checks
(``ERR_INVALID_QUERY``) cover their parameters.  Every refusal is an
exception with an ERR_ ``code`` that the RPC server sends as
``ERR_<CODE>: reason``.
"""
from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

COMMANDS = frozenset({"submit", "cancel", "amend"})
DEFAULT_SYMBOL = "BTCUSD"
MAX_ID_LENGTH = 128


class RequestError(Exception):
    """A refused request; ``str()`` is the Grenache error string."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code


class Node(Protocol):
    """What the API needs from the peer service."""

    node_id: str

    def propose(self, command: dict) -> Deferred: ...
    def deliver(self, sender: str, messages: list) -> None: ...
    def status(self) -> dict: ...
    @property
    def exchange(self) -> Any: ...
    @property
    def applied(self) -> int: ...


class PeerAPI:
    """Dispatches RPC payloads to ``node``: ``api(key, payload)`` is the RPC handler."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def __call__(self, key: str, payload: Any) -> Any:
        if not isinstance(payload, dict):
            raise RequestError("ERR_BAD_REQUEST", "payload must be a JSON object with an action")
        action = payload.get("action")
        if action in COMMANDS:
            return self._command(payload)
        handler = self._QUERIES.get(action)
        if handler is None:
            raise RequestError("ERR_UNKNOWN_ACTION", f"unknown action {action!r}")
        return handler(self, payload)

    def _command(self, payload: dict) -> Deferred:
        for field in ("client", "request"):
            value = payload.get(field)
            if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
                raise RequestError("ERR_INVALID_ORDER",
                                   f"{field} must be a string of 1 to {MAX_ID_LENGTH} characters")
        return self._node.propose(dict(payload)).addCallback(_result_or_error)

    def _raft_batch(self, payload: dict) -> dict:
        if payload.get("to") != self._node.node_id:
            raise RequestError("ERR_WRONG_PEER", f"this is {self._node.node_id}, not {payload.get('to')!r}")
        messages = payload.get("messages")
        if not isinstance(messages, list):
            raise RequestError("ERR_BAD_REQUEST", "messages must be a list")
        self._node.deliver(payload.get("from"), messages)
        return {"ok": True, "id": self._node.node_id}

    def _book(self, payload: dict) -> dict:
        symbol = payload.get("symbol", DEFAULT_SYMBOL)
        book = self._node.exchange.book(symbol, depth=payload.get("depth", 10))
        return {**self._stamp(), "symbol": symbol, "bids": book["bids"], "asks": book["asks"]}

    def _orders(self, payload: dict) -> dict:
        orders = self._node.exchange.open_orders(symbol=payload.get("symbol"),
                                                 client=payload.get("client"))
        return {**self._stamp(), "orders": orders}

    def _order(self, payload: dict) -> dict:
        order_id = payload.get("order_id")
        order = self._node.exchange.order(order_id)
        if order is None:
            raise RequestError("ERR_UNKNOWN_ORDER", f"no order {order_id!r}")
        return {**self._stamp(), "order": order}

    def _trades(self, payload: dict) -> dict:
        symbol = payload.get("symbol", DEFAULT_SYMBOL)
        trades = self._node.exchange.trades(symbol, limit=payload.get("limit", 100))
        return {**self._stamp(), "symbol": symbol, "trades": trades}

    def _status(self, payload: dict) -> dict:
        return self._node.status()

    def _stamp(self) -> dict:
        return {"peer": self._node.node_id, "applied": self._node.applied}

    _QUERIES = {"raft.batch": _raft_batch, "book": _book, "orders": _orders,
                "order": _order, "trades": _trades, "status": _status}


def _result_or_error(result: dict) -> dict:
    if result.get("ok"):
        return result
    code, _, reason = str(result.get("error", "ERR_INTERNAL: no result")).partition(": ")
    raise RequestError(code, reason)
