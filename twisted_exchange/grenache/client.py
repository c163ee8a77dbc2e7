"""RPCClient: calls Grenache RPC services found through a Link.

``request`` looks the key up, calls one random destination and, on a
transport failure only (``ERR_REQUEST_GENERIC``: refused, reset, not ready
within the pool's connect timeout, non-2xx), tries another; an error
answered by the service is final.  A destination whose last call failed so
is passed over for :data:`SUSPECT_SECONDS` while the key has others (anyone
may announce: a dead or fake address should cost one retry, not one per
request).  ``map`` calls
every destination and reports each one's result or error instead of failing
on the first.  Every call ends within its timeout (default 5 s; up to 50 ms
more under load, see deadlines.py) with the result or a GrenacheError.
Connections are kept alive in a pool.

Secure mode (``tls=``, a ``pki.Credential``; see tls.py) calls over mutual
TLS, so every server reached has a certificate from the cluster CA good for
serving (a peer's).  ``expect=Identity(...)`` on a call goes further: only a
server whose certificate names that identity gets the payload; any other
fails with ``ERR_TLS_IDENTITY``, which ``request`` treats as a transport
failure and retries elsewhere, so a fake address announced under the key
costs a retry and never sees the payload.
"""
from __future__ import annotations

import random
import zlib
from typing import Any, Literal

from twisted.internet import defer

from twisted_exchange.grenache import wire
from twisted_exchange.grenache.errors import (
    ERR_REPLY_EMPTY, ERR_REPLY_ENCODING_COMPRESSION, ERR_REQUEST_GENERIC, RETRYABLE,
    GrenacheError)
from twisted_exchange.grenache.pool import ConnectionPool
from twisted_exchange.grenache.deadlines import deadlines
from twisted_exchange.grenache.transport import Poster, deadline, post_head
from twisted_exchange.pki import Credential, Identity

Outcome = tuple[Literal["ok"], Any] | tuple[Literal["error"], GrenacheError]

_PLAIN = b"grc-compress: none\r\nContent-Type: text/plain;charset=UTF-8\r\n"
_GZIP = b"grc-compress: gzip\r\n"
_MAX_REPLY = 64 << 20
#: Seconds a destination that failed a call is passed over while others answer.
SUSPECT_SECONDS = 30.0
#: Suspects remembered before the expired ones are forgotten.
_SUSPECTS_KEPT = 256


class RPCClient:
    """Grenache RPC calls to the services a ``link`` finds.

    ``link`` needs only ``lookup(key) -> Deferred[list["host:port"]]``.
    ``rng`` picks destinations (inject a seeded one in tests); ``compress``
    sends gzip bodies, as Node's ``{compress: true}``; ``tls`` calls over
    mutual TLS with that credential (Node's ``secure: {key, cert, ca}``).
    """

    def __init__(self, link: Any, reactor: Any = None, timeout: float = 5.0,
                 pool: ConnectionPool | None = None, rng: random.Random | None = None,
                 compress: bool = False, tls: Credential | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._link = link
        self._reactor = reactor
        self._deadlines = deadlines(reactor)
        self._timeout = timeout
        self._rng = rng if rng is not None else random.Random()
        self._compress = compress
        self._poster = Poster(reactor, pool, per_host=64, tls=tls)
        self._suspects: dict[str, float] = {}  # destination -> when its last call failed

    def request(self, key: str, payload: Any, timeout: float | None = None,
                retry: int = 2, expect: Identity | None = None) -> defer.Deferred[Any]:
        """The result of ``key`` on one destination, trying up to ``retry`` others.

        ``timeout`` bounds the whole call, lookup and retries included;
        ``expect`` (TLS only) is the identity the destination must prove.
        """
        d = self._link.lookup(key).addCallback(self._attempt, key, payload, retry, expect, set())
        return self._within(d, timeout, f"request {key!r}")

    def _attempt(self, dests: list[str], key: str, payload: Any, retry: int,
                 expect: Identity | None, tried: set[str]) -> defer.Deferred[Any]:
        """One call to a destination not ``tried`` yet (any, once all were);
        on a retryable failure, the next attempt while ``retry`` lasts.
        (Callbacks, not a coroutine: this is every request's path.)"""
        untried = [d for d in dests if d not in tried] if tried else dests
        if self._suspects:
            since = self._reactor.seconds() - SUSPECT_SECONDS
            trusted = [d for d in untried if self._suspects.get(d, since) <= since]
            untried = trusted or untried
        dest = self._rng.choice(untried or dests)
        d = self._call(dest, key, payload, expect).addErrback(self._suspect, dest)
        if retry:
            d.addErrback(self._again, dest, dests, key, payload, retry - 1, expect, tried)
        return d

    def _again(self, failure: Any, dest: str, dests: list[str], key: str, payload: Any,
               retry: int, expect: Identity | None, tried: set[str]) -> Any:
        if not (failure.check(GrenacheError) and failure.value.code in RETRYABLE):
            return failure
        tried.add(dest)
        return self._attempt(dests, key, payload, retry, expect, tried)

    def request_to(self, dest: str, key: str, payload: Any, timeout: float | None = None,
                   expect: Identity | None = None) -> defer.Deferred[Any]:
        """The result of ``key`` on the known address ``dest`` ("host:port")."""
        return self._within(self._call(dest, key, payload, expect), timeout, f"{dest} {key!r}")

    def map(self, key: str, payload: Any, limit: int | None = None,
            timeout: float | None = None,
            expect: Identity | None = None) -> defer.Deferred[dict[str, Outcome]]:
        """Call every destination of ``key`` (or ``limit`` random ones).

        Fires with ``{dest: ("ok", result) | ("error", GrenacheError)}``;
        fails only if the lookup does.
        """
        def call_all(dests: list[str]) -> defer.Deferred[dict[str, Outcome]]:
            if limit is not None and limit < len(dests):
                dests = self._rng.sample(dests, limit)
            calls = [self.request_to(dest, key, payload, timeout, expect) for dest in dests]
            return defer.DeferredList(calls, consumeErrors=True).addCallback(
                lambda outcomes: {dest: ("ok", value) if ok else ("error", value.value)
                                  for dest, (ok, value) in zip(dests, outcomes)})
        return self._link.lookup(key).addCallback(call_all)

    def _suspect(self, failure: Any, dest: str) -> Any:
        """Remember that ``dest`` failed, if the failure is the transport's; pass it on."""
        if failure.check(GrenacheError) and failure.value.code in RETRYABLE:
            now = self._reactor.seconds()
            suspects = self._suspects
            if len(suspects) >= _SUSPECTS_KEPT:
                self._suspects = suspects = {d: t for d, t in suspects.items() if t > now - SUSPECT_SECONDS}
            suspects[dest] = now
        return failure

    def close(self) -> defer.Deferred[None]:
        """Close the idle connections of an owned pool."""
        return self._poster.close()

    def _within(self, d: defer.Deferred[Any], timeout: float | None,
                what: str) -> defer.Deferred[Any]:
        seconds = self._timeout if timeout is None else timeout
        return deadline(d, seconds, self._deadlines, what)

    def _call(self, dest: str, key: str, payload: Any,
              expect: Identity | None) -> defer.Deferred[Any]:
        rid = wire.request_id()
        body = wire.encode([rid, key, payload])
        if self._compress:
            body = wire.gzip(body)
        d = self._poster.post(f"{self._poster.scheme}://{dest}/", body,
                              _GZIP if self._compress else _PLAIN, expect)
        return d.addCallback(self._result_of, dest, rid)

    def _result_of(self, response: tuple[int, bytes], dest: str, rid: str) -> Any:
        """The result in a reply (unzipped first if gzipped), or the GrenacheError it carries."""
        status, body = response
        if self._suspects:
            self._suspects.pop(dest, None)  # it answered
        if self._compress and 200 <= status < 300:
            try:
                body = wire.gunzip(body, _MAX_REPLY)
            except (ValueError, zlib.error):
                raise GrenacheError(ERR_REPLY_ENCODING_COMPRESSION, dest) from None
        return result_of(status, body, dest, rid)


def request_bytes(address: str, rid: str, key: str, payload: Any) -> bytes:
    """One uncompressed call as the bytes of its HTTP request (ctl/loadgen.py
    writes them to its own sockets; RPCClient's go through a Poster)."""
    body = wire.encode([rid, key, payload])
    return post_head(f"http://{address}/", _PLAIN, len(body))[1] + body


def result_of(status: int, body: bytes, dest: str, rid: str) -> Any:
    """The result in an uncompressed reply to call ``rid``, or the GrenacheError it carries."""
    if not 200 <= status < 300:
        text = body[:200].decode("utf-8", "replace")
        raise GrenacheError(ERR_REQUEST_GENERIC, f"{dest}: HTTP {status} {text}".rstrip())
    try:
        reply = wire.decode(body)
    except ValueError:
        reply = None
    if not isinstance(reply, list) or len(reply) != 3:
        raise GrenacheError(ERR_REPLY_EMPTY, f"{dest}: reply is not [rid, err, result]")
    reply_rid, error, result = reply
    if reply_rid != rid:
        raise GrenacheError(ERR_REPLY_EMPTY, f"{dest}: reply is for another request")
    if error:
        raise GrenacheError.from_wire(error if isinstance(error, str) else wire.encode(error).decode())
    return result
