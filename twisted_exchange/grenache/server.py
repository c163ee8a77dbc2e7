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

Secure mode (``tls=``, see tls.py) serves HTTPS with mutual TLS.  As Node
hands ``meta.cert`` to its handlers, a server made ``with_caller=True``
calls ``handler(key, payload, caller)`` with the ``Caller`` (verified
certificate, identity, address) of the connection; handlers of
``(key, payload)`` are unchanged.
"""
from __future__ import annotations

import zlib
from io import BytesIO
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.web import http, server
from twisted.web.resource import Resource

from twisted_exchange.grenache import wire
from twisted_exchange.grenache.errors import (
    ERR_BUSY, ERR_HEADER_PARSE_GR, ERR_INTERNAL, ERR_REQUEST_INVALID,
    ERR_REQUEST_TOO_LARGE, ERR_TIMEOUT, ERR_TLS_REQUIRED, GrenacheError, wire_of)
from twisted_exchange.grenache.tls import TLS_HANDSHAKE, Caller, caller_of, options as tls_options
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


def _refusal(refusal: GrenacheError) -> tuple[int, bytes]:
    """(HTTP status, body) of a refusal: ``[null, "ERR_...", null]``."""
    return _REFUSAL_STATUS[refusal.code], wire.encode([None, refusal.wire, None])


def _closing(refusal: GrenacheError) -> bytes:
    """A whole HTTP response refusing, for a connection about to be closed."""
    status, body = _refusal(refusal)
    return (b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, http.RESPONSES[status], len(body), body))


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


class _BoundedRequest(http.Request):
    """A request whose body counts against its site's budget while it is held.

    Refused (see the module docstring) as soon as the body is known not to
    fit; its bytes go back to the budget when it is refused, answered, or its
    connection is lost, whichever comes first.

    An ``http.Request``, not a ``server.Request``: every method and path is
    the same call, so it goes straight to the site's RPCResource, without a
    resource tree to walk, a path to unquote, or Server and Date headers to
    format; replies carry no Content-Type, as Node's.
    """

    held = 0
    receiving = False
    refused = False
    _budget: _Budget | None = None

    def __init__(self, channel: http.HTTPChannel, *args: Any) -> None:
        # No form parsing: besides being useless here, it parses every
        # Content-Type (Node sends text/plain) with the email package, which
        # halves the server's throughput.  (Twisted >= 25.5.)
        super().__init__(channel, *args, parsePOSTFormSubmission=False)

    def process(self) -> None:
        self.channel.site.resource.render(self)

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()
        self.receiving = True
        self._budget = self.channel.site.budget

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:  # the rest of a chunk read before the refusal
            return
        max_body = self.channel.site.max_body
        if self.held + len(data) > max_body:
            self.refuse(GrenacheError(ERR_REQUEST_TOO_LARGE, f"body over {max_body} bytes"))
        elif not self._budget.take(self.held, len(data)):
            self.refuse(GrenacheError(ERR_BUSY, "too many bytes in flight, try later"))
        else:
            self.held += len(data)
            self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            return
        self.receiving = False
        super().requestReceived(command, path, version)

    def refuse(self, refusal: GrenacheError) -> None:
        """Answer ``refusal`` now, without reading the rest, and close the connection."""
        self.refused, self.receiving = True, False
        self._let_go()
        self.channel.transport.write(_closing(refusal))
        self.channel.loseConnection()

    def finish(self) -> None:
        super().finish()
        self._let_go()

    def connectionLost(self, reason: Failure) -> None:
        self._let_go()
        super().connectionLost(reason)

    def _let_go(self) -> None:
        """Return the body's bytes to the budget (once) and drop them."""
        if self._budget is not None:
            self._budget.give(self.held)
            self.held = 0
        if self.content is not None:
            self.content.close()


class _Channel(http.HTTPChannel):
    """An HTTP connection that its site can close when the server stops."""

    _caller: Caller | None = None
    _first = True

    @property
    def caller(self) -> Caller:
        """Who is at the other end: read once, on the first request (after
        the TLS handshake in secure mode)."""
        if self._caller is None:
            self._caller = caller_of(self.transport)
        return self._caller

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.site.channels.discard(self)
        self.lost.callback(None)

    def timeoutConnection(self) -> None:
        """Nothing arrived for ``timeOut`` (the site's ``body_timeout``) seconds:
        refuse a body that stopped arriving, or close an idle connection."""
        if self.requests and self.requests[-1].receiving:
            self.requests[-1].refuse(GrenacheError(
                ERR_TIMEOUT, f"no body bytes for {self.timeOut:g} s"))
        else:
            super().timeoutConnection()

    def dataReceived(self, data: bytes) -> None:
        """Answer a TLS handshake on a plain-HTTP server at once (400), rather
        than wait for a request line that never comes."""
        if self._first and data[:1] == TLS_HANDSHAKE:
            _wrong_protocol(self.transport, GrenacheError(
                ERR_REQUEST_INVALID, "this server speaks plain HTTP, not TLS"))
            return
        self._first = False
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        """Refuse a declared body over ``max_body`` before any of it arrives."""
        if self.length is not None and self.length > self.site.max_body:
            self.requests[-1].refuse(GrenacheError(
                ERR_REQUEST_TOO_LARGE, f"Content-Length over {self.site.max_body} bytes"))
        else:
            super().allHeadersReceived()


class _TLSOnly(TLSMemoryBIOProtocol):
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


class _TLSFactory(TLSMemoryBIOFactory):
    """A site's factory wrapped in server-side mutual TLS."""

    protocol = _TLSOnly
    noisy = False

    def __init__(self, credential: Credential, site: server.Site) -> None:
        super().__init__(tls_options(credential), False, site)


class _Site(server.Site):
    protocol = _Channel
    noisy = False

    def __init__(self, resource: Resource, max_body: int, max_buffered: int,
                 body_timeout: float, reactor: Any) -> None:
        super().__init__(resource, requestFactory=_BoundedRequest, reactor=reactor,
                         timeout=body_timeout)
        self.max_body = max_body
        self.budget = _Budget(max_buffered)
        self.channels: set[_Channel] = set()

    def log(self, request: http.Request) -> None:
        """No access log: one line per RPC would cost more than the RPC."""


class RPCResource(Resource):
    """Every path of the server: parse the call, run the handler, reply."""

    isLeaf = True
    log = Logger()

    def __init__(self, handler: Handler, max_body: int, utf8_only: bool = False,
                 with_caller: bool = False) -> None:
        super().__init__()
        self._handler = handler
        self._max_body = max_body
        self._utf8_only = utf8_only
        self._with_caller = with_caller

    def render(self, request: http.Request) -> None:
        """Answer ``request``: now for a refusal, once the handler's result is there otherwise."""
        compress = b"gzip" in (request.getHeader(b"grc-compress") or b"")
        try:
            rid, key, payload = self._call_of(request, compress)
        except GrenacheError as refusal:
            status, body = _refusal(refusal)
            request.setResponseCode(status)
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()
            return
        args = (key, payload, request.channel.caller) if self._with_caller else (key, payload)
        try:
            result = self._handler(*args)
        except Exception:
            reply = self._error_reply(Failure(), rid, key)
        else:
            if not isinstance(result, defer.Deferred):
                reply = [rid, None, result]
            else:
                result.addCallbacks(lambda value: [rid, None, value],
                                    self._error_reply, errbackArgs=(rid, key))
                result.addCallback(self._send, request, compress, rid, key)
                return
        self._send(reply, request, compress, rid, key)

    def _call_of(self, request: http.Request, compress: bool) -> tuple[Any, str, Any]:
        """(rid, key, payload) of a request, or the GrenacheError refusing it."""
        header = request.getHeader(b"_gr")
        info: list = []
        if header is not None:
            try:
                info = wire.decode(header)
            except ValueError:
                info = None
            if not isinstance(info, list):
                raise GrenacheError(ERR_HEADER_PARSE_GR)
        body = request.content.getvalue()  # no copy: BytesIO shares its buffer
        request.content.close()  # the handler may run long; the bytes need not
        if compress:
            try:
                body = wire.gunzip(body, self._max_body)
            except wire.TooLarge:
                raise GrenacheError(ERR_REQUEST_TOO_LARGE,
                                    f"body inflates over {self._max_body} bytes") from None
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

    def _send(self, reply: list, request: http.Request, compress: bool,
              rid: Any, key: str) -> None:
        if request._disconnected:  # the caller left; as twisted.web.server checks
            return
        try:
            body = self._body(request, reply, compress)
        except (TypeError, ValueError):
            self.log.failure("RPC handler for {key!r} returned a value that is not JSON",
                             key=key)
            body = self._body(request, [rid, f"{ERR_INTERNAL}: result is not JSON", None],
                              compress)
        request.write(body)
        request.finish()

    @staticmethod
    def _body(request: http.Request, reply: list, compress: bool) -> bytes:
        body = wire.encode(reply)
        if compress:
            body = wire.gzip(body)
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


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
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = 1 << 20, max_buffered: int | None = None,
                 body_timeout: float = 15.0, utf8_only: bool = False, reactor: Any = None,
                 tls: Credential | None = None, with_caller: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.host = host
        self.port = port
        self._site = _Site(RPCResource(handler, max_body, utf8_only, with_caller), max_body,
                           2 * max_body if max_buffered is None else max_buffered,
                           body_timeout, reactor)
        if self._site.budget.for_one_body() < max_body:
            raise ValueError(f"max_buffered {max_buffered} leaves no room for one "
                             f"body of max_body {max_body} bytes")
        self._factory = _TLSFactory(tls, self._site) if tls is not None else self._site
        self._listening: Any = None

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
