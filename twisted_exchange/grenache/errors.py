"""The one error type of the Grenache layer, and its wire form.

Grenache carries errors as plain strings: a grape answers HTTP 200 with a
JSON string (``"ERR_GRAPE_LOOKUP"``), an RPC server puts a message in the
second slot of ``[rid, err, result]``.  Ours always start with a stable code,
``ERR_<NAME>`` optionally followed by ``": <detail>"``, so callers branch on
``GrenacheError.code`` and never on prose.  Strings from other software that
carry no code (``"No nodes to query"``) keep their text and get the code
``ERR_REMOTE``.  Parsing (``from_wire``) and formatting (``wire_of``) live
here and nowhere else.
"""
from __future__ import annotations

import re

ERR_TIMEOUT = "ERR_TIMEOUT"
ERR_REQUEST_GENERIC = "ERR_REQUEST_GENERIC"
ERR_REPLY_EMPTY = "ERR_REPLY_EMPTY"
ERR_REPLY_ENCODING_COMPRESSION = "ERR_REPLY_ENCODING_COMPRESSION"
ERR_GRAPE_LOOKUP_EMPTY = "ERR_GRAPE_LOOKUP_EMPTY"
ERR_HEADER_PARSE_GR = "ERR_HEADER_PARSE_GR"
ERR_REQUEST_INVALID = "ERR_REQUEST_INVALID"
ERR_REQUEST_TOO_LARGE = "ERR_REQUEST_TOO_LARGE"
ERR_BUSY = "ERR_BUSY"
ERR_INTERNAL = "ERR_INTERNAL"
ERR_REMOTE = "ERR_REMOTE"
#: Secure mode (tls.py): a plain-HTTP request to a TLS server; a TLS server
#: whose certificate is not the identity the caller expected.
ERR_TLS_REQUIRED = "ERR_TLS_REQUIRED"
ERR_TLS_IDENTITY = "ERR_TLS_IDENTITY"

#: The request did not reach a handler (transport failures; a server that
#: is not who the caller expected, its payload unsent), so a client may try
#: another destination.
RETRYABLE = frozenset({ERR_REQUEST_GENERIC, ERR_TLS_IDENTITY})

_CODE = re.compile(r"ERR_[A-Z0-9_]+")
_CODED = re.compile(r"(ERR_[A-Z0-9_]+)(?::\s?(.*))?", re.DOTALL)


class GrenacheError(Exception):
    """A Grenache failure with a stable ``code`` such as ``ERR_TIMEOUT``.

    ``wire`` is the exact string sent or received; ``str(error)`` is the same.
    """

    def __init__(self, code: str, detail: str = "", *, wire: str | None = None) -> None:
        self.code = code
        self.detail = detail
        self.wire = wire if wire is not None else (f"{code}: {detail}" if detail else code)
        super().__init__(self.wire)

    @classmethod
    def from_wire(cls, text: str) -> GrenacheError:
        """The error an error string from a grape or an RPC server stands for."""
        coded = _CODED.fullmatch(text)
        if coded is None:
            return cls(ERR_REMOTE, text, wire=text)
        return cls(coded[1], coded[2] or "", wire=text)

    def __repr__(self) -> str:
        return f"GrenacheError({self.wire!r})"


def wire_of(error: BaseException) -> str | None:
    """The error string to send for ``error``, or None if it has no ERR_ code.

    Besides GrenacheError, any exception with a ``code`` attribute such as
    ``"ERR_INVALID_ORDER"`` (the error types of other layers) is sent as
    ``"ERR_INVALID_ORDER: <message>"``.
    """
    if isinstance(error, GrenacheError):
        return error.wire
    code = getattr(error, "code", None)
    if not isinstance(code, str) or _CODE.fullmatch(code) is None:
        return None
    text = str(error)
    if text.startswith(code):
        return text
    return f"{code}: {text}" if text else code
