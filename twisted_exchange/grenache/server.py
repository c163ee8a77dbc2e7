"""RPCServer: answers Grenache HTTP RPC calls as grenache-nodejs-http does.

A request is any method on any path with the body ``[rid, key, payload]``
(raw gzip of it when the header ``grc-compress`` says ``gzip``; a ``_gr``
header ``[rid, key]`` overrides the body's).  The reply is HTTP 200
``[rid, err_or_null, result]`` with the rid echoed, gzipped when the request
was.  Unlike Node's server, bad input always gets an answer: 400 for a body
that is not ``[rid, key, payload]`` JSON, 413 past ``max_body`` bytes (also
after decompression), and, as Node does, 500 ``[null,"ERR_HEADER_PARSE_GR",null]``
for a bad ``_gr``.  Bodies are buffered in memory up to ``max_body`` and
discarded beyond it, so no request can exhaust memory.
"""
from __future__ import annotations

import zlib
from io import BytesIO
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import Resource

from twisted_exchange.grenache import wire
from twisted_exchange.grenache.errors import (
    ERR_HEADER_PARSE_GR, ERR_INTERNAL, ERR_REQUEST_INVALID, ERR_REQUEST_TOO_LARGE,
    GrenacheError, wire_of)

Handler = Callable[[str, Any], Any]

#: HTTP status of the refusals made before a handler runs; one place.
_REFUSAL_STATUS = {
    ERR_HEADER_PARSE_GR: http.INTERNAL_SERVER_ERROR,
    ERR_REQUEST_INVALID: http.BAD_REQUEST,
    ERR_REQUEST_TOO_LARGE: http.REQUEST_ENTITY_TOO_LARGE,
}


def _given(value: Any) -> bool:
    """JavaScript truthiness, which decides whether ``_gr`` overrides the body."""
    if isinstance(value, (list, dict)):
        return True
    return bool(value)


class _BoundedRequest(server.Request):
    """Keeps at most ``site.max_body`` bytes of the body, counts the rest."""

    received = 0
    defaultContentType = None  # as Node's server: replies carry no Content-Type

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        keep = self.channel.site.max_body - self.received
        self.received += len(data)
        if keep > 0:
            self.content.write(data[:keep])


class _Channel(http.HTTPChannel):
    """An HTTP connection that its site can close when the server stops."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channels.add(self)
        self.lost: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.site.channels.discard(self)
        self.lost.callback(None)


class _Site(server.Site):
    protocol = _Channel
    noisy = False

    def __init__(self, resource: Resource, max_body: int, reactor: Any) -> None:
        # No form parsing: besides being useless here, it parses every
        # Content-Type (Node sends text/plain) with the email package, which
        # halves the server's throughput.  (Twisted >= 25.5.)
        super().__init__(resource, requestFactory=_BoundedRequest, reactor=reactor,
                         parsePOSTFormSubmission=False)
        self.max_body = max_body
        self.channels: set[_Channel] = set()

    def log(self, request: server.Request) -> None:
        """No access log: one line per RPC would cost more than the RPC."""


class RPCResource(Resource):
    """Every path of the server: parse the call, run the handler, reply."""

    isLeaf = True
    log = Logger()

    def __init__(self, handler: Handler, max_body: int) -> None:
        super().__init__()
        self._handler = handler
        self._max_body = max_body

    def render(self, request: server.Request) -> Any:
        compress = b"gzip" in (request.getHeader(b"grc-compress") or b"")
        try:
            rid, key, payload = self._call_of(request, compress)
        except GrenacheError as refusal:
            request.setResponseCode(_REFUSAL_STATUS[refusal.code])
            return self._body(request, [None, refusal.wire, None], compress=False)
        d = defer.maybeDeferred(self._handler, key, payload)
        d.addCallbacks(lambda result: [rid, None, result],
                       self._error_reply, errbackArgs=(rid, key))
        d.addCallback(self._send, request, compress, rid, key)
        return server.NOT_DONE_YET

    def _call_of(self, request: server.Request, compress: bool) -> tuple[Any, str, Any]:
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
        if request.received > self._max_body:
            raise GrenacheError(ERR_REQUEST_TOO_LARGE, f"body over {self._max_body} bytes")
        body = request.content.getvalue()
        if compress:
            try:
                body = wire.gunzip(body, self._max_body)
            except wire.TooLarge:
                raise GrenacheError(ERR_REQUEST_TOO_LARGE,
                                    f"body inflates over {self._max_body} bytes") from None
            except zlib.error:
                pass  # as Node: a body that is not gzip is read as it is
        try:
            call = wire.decode(body)
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

    def _send(self, reply: list, request: server.Request, compress: bool,
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
    def _body(request: server.Request, reply: list, compress: bool) -> bytes:
        body = wire.encode(reply)
        if compress:
            body = wire.gzip(body)
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


class RPCServer(Service):
    """A Grenache RPC server calling ``handler(key, payload)`` for each request.

    The handler returns the result or a Deferred of it; raising an error with
    an ``ERR_`` code sends that error string, anything else sends
    ``ERR_INTERNAL: <type>`` and is logged.  ``port`` is the bound port once
    started (``port=0`` picks a free one).
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = 1 << 20, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self.host = host
        self.port = port
        self._site = _Site(RPCResource(handler, max_body), max_body, reactor)
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
        self._listening = self._reactor.listenTCP(self.port, self._site, interface=self.host)
        self.port = self._listening.getHost().port

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        listening, self._listening = self._listening, None
        stopped = [defer.maybeDeferred(listening.stopListening)] if listening else []
        for channel in list(self._site.channels):
            stopped.append(channel.lost)
            channel.transport.loseConnection()
        return defer.gatherResults(stopped).addCallback(lambda _: None)
