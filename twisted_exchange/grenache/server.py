"""RPCServer: answers Grenache HTTP RPC calls as grenache-nodejs-http does.

A request is any method on any path with the body ``[rid, key, payload]``
(raw gzip of it when the header ``grc-compress`` says ``gzip``; a ``_gr``
header ``[rid, key]`` overrides the body's).  The reply is HTTP 200
``[rid, err_or_null, result]`` with the rid echoed, gzipped when the request
was.  Unlike Node's server, bad input always gets an answer: 400 for a body
that is not ``[rid, key, payload]`` JSON, 413 for a body over ``max_body``
bytes after decompression, and, as Node does, 500
``[null,"ERR_HEADER_PARSE_GR",null]`` for a bad ``_gr``.

Memory stays bounded however many clients upload, however slowly.  Bodies
are buffered whole (a Raft snapshot is one message), and refused, with a
coded reply and the connection closed, as soon as they cannot be kept:
413 ``ERR_REQUEST_TOO_LARGE`` when a Content-Length or the bytes received
pass ``max_body`` (before the rest is read); 503 ``ERR_BUSY`` when the
bodies of all requests in flight would pass ``max_buffered`` together; 408
``ERR_TIMEOUT`` when a body stops arriving for ``body_timeout`` seconds.
A body's bytes count until its reply is sent or its connection is lost, so
they also stand for the payload the handler is still holding.  Idle
keep-alive connections hold no body and are closed after the same
``body_timeout`` of silence (Node's server: 5 s).

File descriptors stay bounded however many connect: a server made with
``max_connections`` or ``max_connections_per_address`` counts its
connections against them (:mod:`twisted_exchange.connections`: past the
per-address cap a new one is closed unread; at the total it takes the
place of the oldest silent one, which behind TLS is one whose client has
not finished a handshake with a certificate of the cluster).

Secure mode (``tls=``, see tls.py) serves HTTPS with mutual TLS.  As Node
hands ``meta.cert`` to its handlers, a server made ``with_caller=True``
calls ``handler(key, payload, caller)`` with the ``Caller`` (verified
certificate, identity, address) of the connection; handlers of
``(key, payload)`` are unchanged.

HTTP/1.1 is read by ``_Channel``, made for Grenache's one shape (a POST in,
one reply out) rather than by ``twisted.web``: less CPU per call,
which is most of what a peer does (figures in grenache/bench.py).
"""
from __future__ import annotations

import re
import zlib
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.web import http

from twisted_exchange.connections import ConnectionCaps
from twisted_exchange.grenache import wire
from twisted_exchange.grenache.errors import (
    ERR_BUSY, ERR_HEADER_PARSE_GR, ERR_INTERNAL, ERR_REQUEST_INVALID,
    ERR_REQUEST_TOO_LARGE, ERR_TIMEOUT, ERR_TLS_REQUIRED, GrenacheError, wire_of)
from twisted_exchange.grenache.tls import TLS_HANDSHAKE, Caller, caller_of, context as tls_context
from twisted_exchange.grenache.tlsbio import TLSFactory, TLSProtocol
from twisted_exchange.grenache.writenow import write_now
from twisted_exchange.pki import Credential

#: ``handler(key, payload)``, or ``handler(key, payload, caller)`` with_caller.
Handler = Callable[..., Any]

#: Seconds a stopping server waits for a connection to close before aborting it.
STOP_GRACE = 1.0

#: HTTP status of the refusals made before a handler runs; one place.
_REFUSAL_STATUS = {
    ERR_BUSY: http.SERVICE_UNAVAILABLE,
    ERR_HEADER_PARSE_GR: http.INTERNAL_SERVER_ERROR,
    ERR_REQUEST_INVALID: http.BAD_REQUEST,
    ERR_TLS_REQUIRED: http.BAD_REQUEST,
    ERR_REQUEST_TOO_LARGE: http.REQUEST_ENTITY_TOO_LARGE,
    ERR_TIMEOUT: http.REQUEST_TIMEOUT,
}


#: Reason phrases, read once: attributes of twisted.web.http go through a
#: deprecation proxy, slow enough to show in a call's profile.
_REASONS: dict[int, bytes] = dict(http.RESPONSES)
_OK = http.OK


def _refusal(refusal: GrenacheError) -> tuple[int, bytes]:
    """(HTTP status, body) of a refusal: ``[null, "ERR_...", null]``."""
    return _REFUSAL_STATUS[refusal.code], wire.encode([None, refusal.wire, None])


def _closing(refusal: GrenacheError) -> bytes:
    """A whole HTTP response refusing, for a connection about to be closed."""
    status, body = _refusal(refusal)
    return (b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body))


def _wrong_protocol(transport: Any, refusal: GrenacheError) -> None:
    """Answer a client speaking the other protocol (TLS to a plain server, or
    plain HTTP to a TLS one) in plain HTTP, and close: it gets a reason, not a hang."""
    transport.write(_closing(refusal))
    transport.loseConnection()


def _given(value: Any) -> bool:
    """JavaScript truthiness, which decides whether ``_gr`` overrides the body."""
    if isinstance(value, (list, dict)):
        return True
    return bool(value)


class _Budget:
    """Bytes held by the bodies of all requests in flight on one server.

    ``limit`` bounds the total.  Its last eighth is kept for bodies under a
    sixty-fourth of it (2 MiB of the peer's 128 MiB), so uploads, stalled or
    not, can fill the rest but never starve ordinary calls of room.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def for_one_body(self) -> int:
        """The most one large body can ever hold, with nothing else in flight."""
        return self.limit - self.limit // 8

    def take(self, held: int, more: int) -> bool:
        """Count ``more`` bytes for a body holding ``held``; False if no room."""
        small = held + more <= self.limit // 64
        if self.used + more > (self.limit if small else self.for_one_body()):
            return False
        self.used += more
        return True

    def give(self, size: int) -> None:
        self.used -= size


class _Request:
    """One request read whole: what the RPC resource needs to answer it.

    ``headers`` maps lower-case names to values (repeated headers joined by
    ", ").  ``held`` is the number of body bytes it counts in the budget
    until it is answered or its connection is lost.
    """

    __slots__ = ("channel", "method", "headers", "body", "keep_alive", "held")

    def __init__(self, channel: _Channel, method: bytes, headers: dict[bytes, bytes],
                 body: bytes, keep_alive: bool, held: int) -> None:
        self.channel = channel
        self.method = method
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.held = held


class _Body:
    """The request whose body is arriving: its head, and its bytes so far."""

    __slots__ = ("method", "headers", "keep_alive", "chunked", "left", "chunks", "held")

    def __init__(self, method: bytes, headers: dict[bytes, bytes], keep_alive: bool,
                 length: int | None) -> None:
        self.method = method
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = length is None
        self.left: int = _CHUNK_SIZE if length is None else length  # see _Channel._read_chunked
        self.chunks: list[bytes] = []
        self.held = 0


#: Longest request head (request line and headers) read.
MAX_HEAD = 64 * 1024
#: States of a chunked body besides "bytes of data left in this chunk" (> 0).
_CHUNK_SIZE, _CHUNK_END, _TRAILER = -1, -2, -3
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class _BadRequest(Exception):
    """The bytes are not an HTTP/1.x request we read; answered 400, then closed."""


class _Channel(Protocol):
    """One HTTP/1.1 connection, read as Grenache uses it: a POST, its reply.

    Instead of ``twisted.web.http.HTTPChannel``, which parses line by line
    and builds a general request object: the head is split once, only the
    framing headers are read (Content-Length, chunked Transfer-Encoding,
    Connection, Expect), and the reply is one write.  Requests are answered
    in order, one at a time: bytes of a pipelined next request wait until
    the current one is answered (and reading pauses while they pass
    ``max_body``).  Refusals: see the module docstring; a head that is not
    HTTP/1.x is 400 ``ERR_REQUEST_INVALID``, as is a body framed both ways
    or with a Transfer-Encoding other than chunked.

    Silence is timed by one timer per connection that, when it fires, looks
    at when the connection was last heard from and sets itself again for
    the rest (``_silence``), rather than by a timer reset or replaced on
    every request, as TimeoutMixin does: a request costs a clock reading.
    """

    _caller: Caller | None = None
    _max_body: int | None = None
    _first = True

    def __init__(self, site: _Site) -> None:
        self.site = site
        self._clock = site.reactor
        self._buffer = bytearray()
        self._body: _Body | None = None
        self.requests: list[_Request] = []  # the one being answered, if any
        self._closed = False
        self._reading = False  # in _advance: an answer sent meanwhile does not re-enter it
        self._paused = False

    @property
    def caller(self) -> Caller:
        """Who is at the other end: read once, on the first request (after
        the TLS handshake in secure mode)."""
        if self._caller is None:
            self._caller = caller_of(self.transport)
        return self._caller

    @property
    def max_body(self) -> int:
        """The body cap of this connection: the site's, or its caller's own
        (``max_body_for``), known before the first body byte is read."""
        if self._max_body is None:
            limit, of_caller = self.site.max_body, self.site.max_body_for
            self._max_body = limit if of_caller is None else min(limit, of_caller(self.caller))
        return self._max_body

    def connectionMade(self) -> None:
        self.site.channels.add(self)
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._heard = self._clock.seconds()
        self._silent = self._clock.callLater(self.site.timeout, self._silence)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closed = True
        if self._silent.active():
            self._silent.cancel()
        if self._body is not None:
            self._let_go(self._body)
            self._body = None
        for request in self.requests:
            self._let_go(request)
        self.requests = []
        self.site.channels.discard(self)
        self.site.caps.closed(self)
        self.lost.callback(None)

    def dataReceived(self, data: bytes) -> None:
        if self._first:
            self._first = False
            self.site.caps.heard_from(self)
            if data[:1] == TLS_HANDSHAKE:
                # answer a TLS handshake on a plain-HTTP server at once (400),
                # rather than wait for a request line that never comes
                self._closed = True
                _wrong_protocol(self.transport, GrenacheError(
                    ERR_REQUEST_INVALID, "this server speaks plain HTTP, not TLS"))
                return
        if self._closed:
            return  # the rest of what was in flight when a refusal closed it
        self._heard = self._clock.seconds()
        self._buffer += data
        if self.requests:
            if len(self._buffer) > self.max_body + MAX_HEAD and not self._paused:
                self._paused = True
                self.transport.pauseProducing()
            return
        self._advance()

    def _silence(self) -> None:
        """The timer: while a handler answers, check again in ``body_timeout``
        (silence counts from the reply); else time out if nothing was heard
        for that long, or check again when it will have been that long."""
        wait = self.site.timeout
        if not self.requests:
            wait += self._heard - self._clock.seconds()
            if wait <= 0:
                self._timed_out()
                return
        self._silent = self._clock.callLater(wait, self._silence)

    def _timed_out(self) -> None:
        """Nothing arrived for the site's ``body_timeout`` seconds: refuse a
        body that stopped arriving, or close an idle connection."""
        if self._body is not None:
            self._refuse(GrenacheError(ERR_TIMEOUT, f"no body bytes for {self.site.timeout:g} s"))
        else:
            self._closed = True
            self.transport.loseConnection()

    def respond(self, request: _Request, status: int, body: bytes) -> None:
        """Send the reply to ``request`` (nothing if its connection is gone), then
        read the next request, if one is waiting."""
        if request not in self.requests:
            return
        self.requests.remove(request)
        self._let_go(request)
        head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (
            status, _REASONS.get(status, b"Unknown"), len(body))
        if not request.keep_alive:
            head += b"Connection: close\r\n"
        write_now(self.transport, head + b"\r\n" + (b"" if request.method == b"HEAD" else body))
        if not request.keep_alive:
            self._closed = True
            self.transport.loseConnection()
            return
        self._heard = self._clock.seconds()
        if self._paused:
            self._paused = False
            self.transport.resumeProducing()
        if not self._reading:
            self._advance()

    def _advance(self) -> None:
        """Read requests from the buffer, answering each before the next."""
        self._reading = True
        try:
            while not self._closed and not self.requests:
                if self._body is None and not self._read_head():
                    return
                if not (self._read_chunked() if self._body.chunked else self._read_length()):
                    return
                self._dispatch()
        except _BadRequest as e:
            self._refuse(GrenacheError(ERR_REQUEST_INVALID, str(e)))
        finally:
            self._reading = False

    def _read_head(self) -> bool:
        """Start the next request if its whole head has arrived."""
        buffer = self._buffer
        if not buffer:
            return False
        while buffer.startswith(b"\r\n"):  # blank lines before a request line are allowed
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise _BadRequest(f"request head over {MAX_HEAD} bytes")
            return False
        lines = bytes(buffer[:end]).split(b"\r\n")
        del buffer[:end + 4]
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not _TOKEN.fullmatch(parts[0]):
            raise _BadRequest("not an HTTP/1.x request line")
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name):
                raise _BadRequest("malformed header line")
            name, value = name.lower(), value.strip(b" \t")
            headers[name] = headers[name] + b", " + value if name in headers else value
        version = parts[2]
        connection = headers.get(b"connection", b"").lower()
        keep_alive = (b"close" not in connection if version == b"HTTP/1.1"
                      else b"keep-alive" in connection)
        self._body = body = _Body(parts[0], headers, keep_alive, self._length_of(headers))
        if body.left > self.max_body:
            self._refuse(GrenacheError(ERR_REQUEST_TOO_LARGE,
                                       f"Content-Length over {self.max_body} bytes"))
            return False
        if body.left and version == b"HTTP/1.1" and headers.get(b"expect", b"").lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    @staticmethod
    def _length_of(headers: dict[bytes, bytes]) -> int | None:
        """The declared body length, None for chunked, 0 for no body."""
        coding = headers.get(b"transfer-encoding")
        length = headers.get(b"content-length")
        if coding is not None:
            if length is not None or coding.lower() != b"chunked":
                raise _BadRequest("only a chunked Transfer-Encoding, without Content-Length, is read")
            return None
        if length is None:
            return 0
        if not length.isdigit():
            raise _BadRequest("bad Content-Length")
        return int(length)

    def _read_length(self) -> bool:
        """Take body bytes up to the declared length; True once all are here."""
        body = self._body
        if body.left:
            data = bytes(self._buffer[:body.left])
            del self._buffer[:body.left]
            if data and not self._take(data):
                return False
        return body.left == 0

    def _read_chunked(self) -> bool:
        """Take chunked body bytes; True once the last chunk and trailers are here.

        ``_Body.left``: bytes of data left in the current chunk, or one of
        _CHUNK_SIZE (a size line is next), _CHUNK_END (its CRLF), _TRAILER.
        """
        body, buffer = self._body, self._buffer
        while True:
            if body.left > 0:
                data = bytes(buffer[:body.left])
                del buffer[:body.left]
                if not data:
                    return False
                if not self._take(data):
                    return False
                if body.left == 0:
                    body.left = _CHUNK_END
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise _BadRequest("chunk framing line too long")
                return False
            line = bytes(buffer[:end])
            del buffer[:end + 2]
            if body.left == _CHUNK_END:
                if line:
                    raise _BadRequest("chunk data longer than its size")
                body.left = _CHUNK_SIZE
            elif body.left == _CHUNK_SIZE:
                size = line.split(b";", 1)[0].strip()
                if not _HEX.fullmatch(size):
                    raise _BadRequest("bad chunk size")
                body.left = int(size, 16) or _TRAILER
            elif not line:  # the empty line that ends the trailers
                body.left = 0
                return True

    def _take(self, data: bytes) -> bool:
        """Count ``data`` against the limits, or refuse the request."""
        body, max_body = self._body, self.max_body
        if body.held + len(data) > max_body:
            self._refuse(GrenacheError(ERR_REQUEST_TOO_LARGE, f"body over {max_body} bytes"))
            return False
        if not self.site.budget.take(body.held, len(data)):
            self._refuse(GrenacheError(ERR_BUSY, "too many bytes in flight, try later"))
            return False
        body.held += len(data)
        body.chunks.append(data)
        body.left -= len(data)
        return True

    def _dispatch(self) -> None:
        body, self._body = self._body, None
        request = _Request(self, body.method, body.headers, b"".join(body.chunks),
                           body.keep_alive, body.held)
        body.chunks = []
        self.requests.append(request)  # a handler may take its time: see _silence
        self.site.resource.call(request)

    def _refuse(self, refusal: GrenacheError) -> None:
        """Answer ``refusal`` now, without reading the rest, and close the connection."""
        if self._body is not None:
            self._let_go(self._body)
            self._body = None
        self._closed = True
        self.transport.write(_closing(refusal))
        self.transport.loseConnection()

    def _let_go(self, held: _Body | _Request) -> None:
        """Return a body's bytes to the budget (once)."""
        self.site.budget.give(held.held)
        held.held = 0


class _TLSOnly(TLSProtocol):
    """Server-side TLS that answers a client speaking plain HTTP in plain
    HTTP (400 ERR_TLS_REQUIRED), rather than with a TLS alert it cannot read."""

    _sniffed = False

    def dataReceived(self, data: bytes) -> None:
        if not self._sniffed:
            self._sniffed = True
            if data[:1] != TLS_HANDSHAKE:
                _wrong_protocol(self.transport, GrenacheError(
                    ERR_TLS_REQUIRED, "this server speaks HTTPS and requires a client certificate"))
                return
        super().dataReceived(data)


class _TLSFactory(TLSFactory):
    """A site's factory wrapped in server-side mutual TLS."""

    protocol = _TLSOnly

    def __init__(self, credential: Credential, site: _Site) -> None:
        super().__init__(tls_context(credential, server_side=True), site, server_side=True)

    def buildProtocol(self, addr: Any) -> _TLSOnly | None:
        channel = self.wrappedFactory.buildProtocol(addr)
        return None if channel is None else self.protocol(self, channel)


class _Site(Factory):
    """The server's connections, its limits and its budget."""

    noisy = False

    def __init__(self, resource: RPCResource, max_body: int, max_buffered: int,
                 body_timeout: float, reactor: Any, max_body_for: Callable[[Caller], int] | None,
                 caps: ConnectionCaps) -> None:
        self.resource = resource
        self.max_body = max_body
        self.max_body_for = max_body_for
        self.budget = _Budget(max_buffered)
        self.timeout = body_timeout
        self.reactor = reactor
        self.channels: set[_Channel] = set()
        self.caps = caps

    def buildProtocol(self, addr: Any) -> _Channel | None:
        """A channel for a new connection, or None (Twisted closes it) past the caps."""
        return self.caps.connect(addr, lambda: _Channel(self))


class RPCResource:
    """Every request of the server: parse the call, run the handler, reply."""

    log = Logger()

    def __init__(self, handler: Handler, utf8_only: bool = False, with_caller: bool = False) -> None:
        self._handler = handler
        self._utf8_only = utf8_only
        self._with_caller = with_caller

    def call(self, request: _Request) -> None:
        """Answer ``request``: now for a refusal, once the handler's result is there otherwise."""
        compress = b"gzip" in request.headers.get(b"grc-compress", b"")
        try:
            rid, key, payload = self._call_of(request, compress)
        except GrenacheError as refusal:
            request.channel.respond(request, *_refusal(refusal))
            return
        args = (key, payload, request.channel.caller) if self._with_caller else (key, payload)
        try:
            result = self._handler(*args)
        except Exception:
            reply = self._error_reply(Failure(), rid, key)
        else:
            if isinstance(result, defer.Deferred):
                result.addCallbacks(lambda value: [rid, None, value],
                                    self._error_reply, errbackArgs=(rid, key))
                result.addCallback(self._send, request, compress, rid, key)
                return
            reply = [rid, None, result]
        self._send(reply, request, compress, rid, key)

    def _call_of(self, request: _Request, compress: bool) -> tuple[Any, str, Any]:
        """(rid, key, payload) of a request, or the GrenacheError refusing it."""
        header = request.headers.get(b"_gr")
        info: list = []
        if header is not None:
            try:
                info = wire.decode(header)
            except ValueError:
                info = None
            if not isinstance(info, list):
                raise GrenacheError(ERR_HEADER_PARSE_GR)
        body, request.body = request.body, b""  # the handler may run long; the bytes need not
        if compress:
            try:
                body = wire.gunzip(body, request.channel.max_body)
            except wire.TooLarge:
                raise GrenacheError(ERR_REQUEST_TOO_LARGE,
                                    f"body inflates over {request.channel.max_body} bytes") from None
            except zlib.error:
                pass  # as Node: a body that is not gzip is read as it is
        try:
            call = wire.decode(body, self._utf8_only)
        except UnicodeDecodeError:
            raise GrenacheError(ERR_REQUEST_INVALID, "body is not UTF-8") from None
        except ValueError:
            raise GrenacheError(ERR_REQUEST_INVALID, "body is not JSON") from None
        if not isinstance(call, list) or len(call) != 3:
            raise GrenacheError(ERR_REQUEST_INVALID, "body is not [rid, key, payload]")
        rid = info[0] if info and _given(info[0]) else call[0]
        key = info[1] if len(info) > 1 and _given(info[1]) else call[1]
        if not isinstance(key, str):
            raise GrenacheError(ERR_REQUEST_INVALID, "key is not a string")
        return rid, key, call[2]

    def _error_reply(self, failure: Failure, rid: Any, key: str) -> list:
        message = wire_of(failure.value)
        if message is None:
            self.log.failure("RPC handler for {key!r} failed", failure, key=key)
            message = f"{ERR_INTERNAL}: {failure.type.__name__}"
        return [rid, message, None]

    def _send(self, reply: list, request: _Request, compress: bool, rid: Any, key: str) -> None:
        try:
            body = self._body(reply, compress)
        except (TypeError, ValueError):
            self.log.failure("RPC handler for {key!r} returned a value that is not JSON",
                             key=key)
            body = self._body([rid, f"{ERR_INTERNAL}: result is not JSON", None], compress)
        request.channel.respond(request, _OK, body)

    @staticmethod
    def _body(reply: list, compress: bool) -> bytes:
        body = wire.encode(reply)
        return wire.gzip(body) if compress else body


class RPCServer(Service):
    """A Grenache RPC server calling ``handler(key, payload)`` for each request
    (``handler(key, payload, caller)`` if ``with_caller``, see the module).

    The handler returns the result or a Deferred of it; raising an error with
    an ``ERR_`` code sends that error string, anything else sends
    ``ERR_INTERNAL: <type>`` and is logged.  ``port`` is the bound port once
    started (``port=0`` picks a free one).

    Memory: one body holds at most ``max_body`` bytes, all bodies in flight
    at most ``max_buffered`` (default ``2 * max_body``, 128 MiB for the
    peer's 64 MiB snapshots: a largest body always fits, a second large one
    up to three quarters beside it, and an eighth stays kept for ordinary
    calls).  A connection silent for ``body_timeout`` seconds (default 15:
    far above any pause of a live sender on a LAN, short enough that
    stalled uploads cannot hold the budget for long) is closed, with a 408
    if a body was arriving.

    ``utf8_only`` refuses a body that is not valid UTF-8 (400); by default,
    as Node, its bad bytes are read as U+FFFD.

    ``tls``, a ``pki.Credential``, serves HTTPS only, requiring a client
    certificate from its CA (Node's ``secure: {key, cert, ca}``).
    ``max_body_for(caller)`` gives each connection its own cap (at most
    ``max_body``), from the ``Caller`` known before any body byte: in secure
    mode, from the identity its certificate names.

    ``max_connections`` and ``max_connections_per_address`` (default: no
    cap) bound the connections open at once, in all and from one IP
    address (see the module for which connection goes at a cap).
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = 1 << 20, max_buffered: int | None = None,
                 body_timeout: float = 15.0, utf8_only: bool = False, reactor: Any = None,
                 tls: Credential | None = None, with_caller: bool = False,
                 max_body_for: Callable[[Caller], int] | None = None,
                 max_connections: int | None = None, max_connections_per_address: int | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.host = host
        self.port = port
        self._site = _Site(RPCResource(handler, utf8_only, with_caller), max_body,
                           2 * max_body if max_buffered is None else max_buffered,
                           body_timeout, reactor, max_body_for,
                           ConnectionCaps(reactor, max_connections, max_connections_per_address, "Grenache RPC"))
        if self._site.budget.for_one_body() < max_body:
            raise ValueError(f"max_buffered {max_buffered} leaves no room for one "
                             f"body of max_body {max_body} bytes")
        self._factory = _TLSFactory(tls, self._site) if tls is not None else self._site
        self._listening: Any = None

    @property
    def caps(self) -> ConnectionCaps:
        """Its connections, counted: open now, refused and evicted since the start."""
        return self._site.caps

    def start(self) -> defer.Deferred[None]:
        """Listen; the Deferred fires once ``port`` is the bound port."""
        self.startService()
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        """Stop listening and close every open connection."""
        return defer.maybeDeferred(self.stopService)

    def startService(self) -> None:
        super().startService()
        self._listening = self._reactor.listenTCP(self.port, self._factory, interface=self.host)
        self.port = self._listening.getHost().port

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        listening, self._listening = self._listening, None
        stopped = [defer.maybeDeferred(listening.stopListening)] if listening else []
        for channel in list(self._site.channels):
            stopped.append(channel.lost)
            channel.transport.loseConnection()
            # A TLS close waits for the other side's close_notify, which an
            # idle keep-alive client may never send: abort after a grace.
            abort = self._reactor.callLater(STOP_GRACE, channel.transport.abortConnection)
            channel.lost.addBoth(lambda result, call=abort: call.cancel() if call.active() else None)
        return defer.gatherResults(stopped).addCallback(lambda _: None)
