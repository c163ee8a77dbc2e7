"""Link: the client of a grape's HTTP API (announce, lookup, put, get).

Each call is ``POST <grape>/<type>`` with ``{"rid": uuid4, "data": ...}``
and always ends: with the grape's answer, a GrenacheError carrying the
grape's error string (a grape answers errors as HTTP 200 + JSON string), or
``ERR_REQUEST_GENERIC`` / ``ERR_TIMEOUT`` after at most ``timeout`` seconds.

Lookups that found someone are cached for ``lookup_cache`` seconds (Node
caches 10 s, empty answers included; we cache briefly and never cache "no
one", so a new peer is found at once), and identical lookups in flight share
one grape request.

A grape is untrusted (anyone may announce anything), so its lookup answer is
parsed, not believed: only well-formed ``host:port`` strings are kept, at
most :data:`MAX_ADDRESSES` of them, duplicates once; the rest is dropped,
so one junk announcement cannot hide the real ones.  Who is really behind an
address is for the caller to check end to end.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.logger import Logger

from twisted_exchange.grenache import wire
from twisted_exchange.grenache.errors import (
    ERR_GRAPE_LOOKUP_EMPTY, ERR_REPLY_EMPTY, ERR_REQUEST_GENERIC, GrenacheError)
from twisted_exchange.grenache.pool import ConnectionPool
from twisted_exchange.grenache.deadlines import deadlines
from twisted_exchange.grenache.transport import Poster, deadline

_HEADERS = b"Content-Type: application/json\r\n"
_HASH = re.compile(r"[0-9a-f]{40}")
_ADDRESS = re.compile(r"([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]{1,5})")
#: Addresses kept from one lookup answer.
MAX_ADDRESSES = 64


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_list(value: Any) -> bool:
    return isinstance(value, list)


def addresses_in(answer: list) -> list[str]:
    """The well-formed ``host:port`` strings of a lookup answer, in order, once each."""
    found: dict[str, None] = {}
    for item in answer:
        match = _ADDRESS.fullmatch(item) if isinstance(item, str) else None
        if match is not None and 0 < int(match[2]) < 65536:
            found[item] = None
            if len(found) == MAX_ADDRESSES:
                break
    return list(found)


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and _HASH.fullmatch(value) is not None


def _is_item(value: Any) -> bool:
    return value is None or isinstance(value, dict)


class Link:
    """A grape's HTTP API at ``grape_url`` (e.g. ``http://127.0.0.1:30001``)."""

    log = Logger()

    def __init__(self, grape_url: str, reactor: Any = None, timeout: float = 2.5,
                 pool: ConnectionPool | None = None, lookup_cache: float = 1.0) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.grape_url = grape_url.rstrip("/")
        self._reactor = reactor
        self._deadlines = deadlines(reactor)
        self._timeout = timeout
        self._lookup_cache = lookup_cache
        self._poster = Poster(reactor, pool, per_host=4)
        self._found: dict[str, tuple[float, list[str]]] = {}
        self._asking: dict[str, list[defer.Deferred[list[str]]]] = {}
        self._announcing: dict[tuple[str, int], task.LoopingCall] = {}

    def announce(self, name: str, port: int) -> defer.Deferred[int]:
        """Announce ``name`` at ``port`` of this host; the grape's node count."""
        return self._call("announce", [name, port], _is_count)

    def start_announcing(self, name: str, port: int, interval: float = 1.0) -> None:
        """Announce now and every ``interval`` seconds; failures are logged."""
        if (name, port) in self._announcing:
            return
        loop = task.LoopingCall(self._announce_logged, name, port)
        loop.clock = self._reactor
        self._announcing[(name, port)] = loop
        loop.start(interval, now=True)

    def stop_announcing(self, name: str | None = None) -> None:
        """Stop re-announcing ``name`` (at every port), or everything."""
        for key in [k for k in self._announcing if name is None or k[0] == name]:
            self._announcing.pop(key).stop()

    def _announce_logged(self, name: str, port: int) -> defer.Deferred[None]:
        def failed(failure: Any) -> None:
            self.log.warn("announcing {name} at {port} on {grape} failed: {reason}",
                          name=name, port=port, grape=self.grape_url,
                          reason=failure.getErrorMessage())
        return self.announce(name, port).addCallbacks(lambda _: None, failed)

    def knows(self, name: str) -> bool:
        """Whether ``lookup(name)`` would answer from its cache, at once."""
        return self._cached(name) is not None

    def _cached(self, name: str) -> list[str] | None:
        """The addresses found for ``name`` while they are fresh, else None."""
        cached = self._found.get(name)
        return cached[1] if cached is not None and cached[0] > self._reactor.seconds() else None

    def lookup(self, name: str) -> defer.Deferred[list[str]]:
        """The ``"host:port"`` addresses announcing ``name``.

        ERR_GRAPE_LOOKUP_EMPTY when there are none.
        """
        cached = self._cached(name)
        if cached is not None:
            return defer.succeed(list(cached))
        waiter: defer.Deferred[list[str]] = defer.Deferred()
        waiters = self._asking.setdefault(name, [])
        waiters.append(waiter)
        if len(waiters) == 1:
            self._call("lookup", name, _is_list).addBoth(self._found_by_grape, name)
        return waiter

    def _found_by_grape(self, result: Any, name: str) -> None:
        if isinstance(result, list):
            result = addresses_in(result)
            if not result:
                result = GrenacheError(ERR_GRAPE_LOOKUP_EMPTY, f"no one announces {name!r}")
            else:
                self._found[name] = (self._reactor.seconds() + self._lookup_cache, result)
        for waiter in self._asking.pop(name):
            if waiter.called:  # cancelled by its caller
                continue
            if isinstance(result, list):
                waiter.callback(list(result))
            else:
                waiter.errback(result)

    def put(self, value: str) -> defer.Deferred[str]:
        """Store ``value`` in the DHT (BEP44 immutable); its 40-hex hash."""
        return self._call("put", {"v": value}, _is_hash)

    def get(self, key: str) -> defer.Deferred[dict | None]:
        """``{"id", "token", "v"}`` stored under hash ``key``, or None."""
        return self._call("get", key, _is_item)

    def _call(self, kind: str, data: Any, expected: Callable[[Any], bool]) -> defer.Deferred[Any]:
        url = f"{self.grape_url}/{kind}"
        body = wire.encode({"rid": wire.request_id(), "data": data})
        d = self._poster.post(url, body, _HEADERS)
        d.addCallback(_grape_answer, url, expected)
        return deadline(d, self._timeout, self._deadlines, f"grape {url}")

    def close(self) -> defer.Deferred[None]:
        """Stop announcing and close the connections of an owned pool."""
        self.stop_announcing()
        return self._poster.close()


def _grape_answer(reply: tuple[int, bytes], url: str, expected: Callable[[Any], bool]) -> Any:
    """A grape reply's value, or the GrenacheError it stands for."""
    status, body = reply
    if not 200 <= status < 300:
        text = body[:200].decode("utf-8", "replace")
        raise GrenacheError(ERR_REQUEST_GENERIC, f"{url}: HTTP {status} {text}".rstrip())
    try:
        value = wire.decode(body) if body else None
    except ValueError:
        raise GrenacheError(ERR_REPLY_EMPTY, f"{url}: reply is not JSON") from None
    if expected(value):
        return value
    if isinstance(value, str):
        raise GrenacheError.from_wire(value)
    raise GrenacheError(ERR_REPLY_EMPTY, f"{url}: unexpected reply {body[:100]!r}")
