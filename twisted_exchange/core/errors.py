"""The core's one error type and its stable codes.

Validation and rule checks raise :class:`ExchangeError` deep inside the core;
:meth:`twisted_exchange.core.Exchange.apply` turns it into the wire reply
``{"ok": False, "error": "ERR_<CODE>: <reason>"}`` in exactly one place.
Every check runs before any mutation, so a raised error means "nothing
changed".
"""
from __future__ import annotations

from typing import Final

INVALID_ORDER: Final = "ERR_INVALID_ORDER"
UNKNOWN_ORDER: Final = "ERR_UNKNOWN_ORDER"
NOT_OWNER: Final = "ERR_NOT_OWNER"
ORDER_CLOSED: Final = "ERR_ORDER_CLOSED"
POST_ONLY_WOULD_TAKE: Final = "ERR_POST_ONLY_WOULD_TAKE"
FOK_UNFILLABLE: Final = "ERR_FOK_UNFILLABLE"
INVALID_QUERY: Final = "ERR_INVALID_QUERY"
INVALID_SNAPSHOT: Final = "ERR_INVALID_SNAPSHOT"


class ExchangeError(Exception):
    """A command or query the core refuses; ``str(error)`` is the wire text."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.code}: {self.reason}"
