"""HTTP POST to a grape or a peer, failing only with GrenacheError.

Link (to a grape) and RPCClient (to peers) both POST small bodies over the
keep-alive connections of a ``ConnectionPool``; this module is the single
place where connection failures become ``ERR_REQUEST_GENERIC`` and where
deadlines become ``ERR_TIMEOUT``, and where a TLS server that is not the
expected identity becomes ``ERR_TLS_IDENTITY``.
"""
from __future__ import annotations

import ssl
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, error as netError
from twisted.python.failure import Failure

from twisted_exchange.grenache.deadlines import Deadlines
from twisted_exchange.grenache.errors import (
    ERR_REQUEST_GENERIC, ERR_TIMEOUT, ERR_TLS_IDENTITY, GrenacheError)
from twisted_exchange.grenache.pool import BadResponse, ConnectionPool, WrongIdentity
from twisted_exchange.pki import Credential, Identity

_REASONS = {
    netError.ConnectionRefusedError: "connection refused",
    netError.ConnectionDone: "connection closed before the reply",
    netError.ConnectionLost: "connection lost before the reply",
    netError.TimeoutError: "not connected (and handshaken) within the connect timeout",
}


@lru_cache(maxsize=1024)
def _target(url: str) -> tuple[tuple[str, int], bytes]:
    """((host, port), request line start) of an http:// or https:// URL."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    if default is None or not parts.hostname:
        raise ValueError(f"not an http:// or https:// URL: {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    port = parts.port or default
    host = parts.hostname if port == default else f"{parts.hostname}:{port}"
    return (parts.hostname, port), f"POST {path} HTTP/1.1\r\nHost: {host}\r\n".encode()


def post_head(url: str, headers: bytes, length: int) -> tuple[tuple[str, int], bytes]:
    """((host, port) of ``url``, the head of a POST of ``length`` bytes to it);
    ``headers`` are complete ``Name: value\\r\\n`` lines."""
    address, start = _target(url)
    return address, b"%s%sContent-Length: %d\r\n\r\n" % (start, headers, length)


def _reason(failure: Failure) -> str:
    """A one-line reason for a connection failure, e.g. 'connection refused'."""
    for kind, reason in _REASONS.items():
        if failure.check(kind):
            return reason
    value = failure.value
    if isinstance(value, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {value.verify_message}"
    if isinstance(value, ssl.SSLError):
        return "TLS: " + (value.reason or "handshake failed").lower().replace("_", " ")
    text = str(value).strip()
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


def _as_grenache_error(failure: Failure, url: str) -> Failure:
    if failure.check(GrenacheError):
        return failure
    if failure.check(defer.CancelledError, netError.ConnectingCancelledError):
        return Failure(defer.CancelledError())
    if failure.check(BadResponse):
        return Failure(GrenacheError(ERR_REQUEST_GENERIC, f"{url}: {failure.value}"))
    if failure.check(WrongIdentity):
        return Failure(GrenacheError(ERR_TLS_IDENTITY, f"{url}: {failure.value}"))
    return Failure(GrenacheError(ERR_REQUEST_GENERIC, f"{url}: {_reason(failure)}"))


class Poster:
    """POSTs bodies to http(s):// URLs over a pool of keep-alive connections.

    The pool is created here (and closed by ``close``), with mutual TLS if
    ``tls`` is given, unless one is given; a given pool belongs to the
    caller and has its own TLS setting.
    """

    def __init__(self, reactor: Any, pool: ConnectionPool | None, per_host: int,
                 tls: Credential | None = None) -> None:
        if pool is not None and tls is not None:
            raise ValueError("give tls to the ConnectionPool, not beside it")
        self._owned = pool is None
        self._pool = pool if pool is not None else ConnectionPool(reactor, per_host, tls)

    @property
    def scheme(self) -> str:
        return "https" if self._pool.secure else "http"

    def post(self, url: str, body: bytes, headers: bytes,
             expect: Identity | None = None) -> defer.Deferred[tuple[int, bytes]]:
        """(HTTP status, body) of a POST; GrenacheError on connection failure.

        ``headers`` are complete ``Name: value\\r\\n`` lines.  With ``expect``,
        only to a TLS server proving that identity (else ERR_TLS_IDENTITY).
        """
        address, head = post_head(url, headers, len(body))
        return self._pool.post(address, head, body, expect).addErrback(_as_grenache_error, url)

    def close(self) -> defer.Deferred[None]:
        """Close the connections of an owned pool."""
        return self._pool.close() if self._owned else defer.succeed(None)


def deadline(d: defer.Deferred[Any], seconds: float, due: Deadlines,
             what: str) -> defer.Deferred[Any]:
    """Cancel ``d`` after ``seconds`` (``due``: its reactor's ``deadlines``)
    and fail it with ERR_TIMEOUT instead."""
    return due.add(d, seconds, lambda: GrenacheError(ERR_TIMEOUT, f"{what}: no reply within {seconds:g} s"))
