"""The core's one error type and its stable codes.

Validation and rule checks raise :class:`ExchangeError` deep inside the core;
:meth:`twisted_exchange.core.Exchange.apply` turns it into the wire reply
``{"ok": False, "error": "ERR_<CODE>: <reason>"}`` in exactly one place.
Every check runs before any mutation, so a raised error means "nothing
changed".
"""
from __future__ import annotations

INVALID_ORDER = "ERR_INVALID_ORDER"
UNKNOWN_ORDER = "ERR_UNKNOWN_ORDER"
NOT_OWNER = "ERR_NOT_OWNER"
ORDER_CLOSED = "ERR_ORDER_CLOSED"
POST_ONLY_WOULD_TAKE = "ERR_POST_ONLY_WOULD_TAKE"
FOK_UNFILLABLE = "ERR_FOK_UNFILLABLE"
INVALID_QUERY = "ERR_INVALID_QUERY"
INVALID_SNAPSHOT = "ERR_INVALID_SNAPSHOT"


class ExchangeError(Exception):
    """A command or query the core refuses; ``str(error)`` is the wire text."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"
