"""Test doubles for the Grenache tests.

``WireStub`` is the far end of the HTTP connections an Agent opens on a
``MemoryReactorClock``: a test answers each request by hand, and time only
moves when the test advances the clock.  ``FakeGrape`` is a twisted.web
resource that answers grape API calls from a script, for tests over real
loopback sockets.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web import resource, server

Body = bytes | Callable[[dict], bytes]


class _Transport(StringTransport):
    """A StringTransport that an HTTP client can abort, as it does on cancel."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class WireStub:
    """Answers HTTP requests made through a MemoryReactorClock by hand."""

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.transports: list[_Transport] = []
        self._protocols: list[Any] = []

    def _accept(self) -> None:
        while self.reactor.tcpClients:
            factory = self.reactor.tcpClients.pop(0)[2]
            protocol = factory.buildProtocol(None)
            transport = _Transport()
            protocol.makeConnection(transport)
            self._protocols.append(protocol)
            self.transports.append(transport)

    def pending(self) -> int:
        """How many requests wait for an answer."""
        self._accept()
        return sum(1 for t in self.transports if t.value() and not t.disconnecting)

    def answer(self, status: int, body: Body, headers: dict[str, str] | None = None) -> dict:
        """Answer the oldest waiting request; return it as a dict.

        ``body`` may be a function of that request (to echo its rid).
        """
        self._accept()
        for protocol, transport in zip(self._protocols, self.transports):
            raw = transport.value()
            if raw and not transport.disconnecting:
                transport.clear()
                head, _, content = raw.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                request = {"line": lines[0], "body": content,
                           "headers": {k.lower(): v for k, _, v in
                                       (line.partition(": ") for line in lines[1:])}}
                data = body(request) if callable(body) else body
                extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                protocol.dataReceived(
                    b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n" % (status, len(data), extra.encode())
                    + data)
                return request
        raise AssertionError("no request is waiting")


class FakeGrape(resource.Resource):
    """A grape API whose replies are scripted: path -> (status, raw body)."""

    isLeaf = True

    def __init__(self, replies: dict[str, tuple[int, bytes]]) -> None:
        super().__init__()
        self.replies = replies
        self.calls: list[tuple[str, Any]] = []

    def render(self, request: server.Request) -> bytes:
        path = request.path.decode()
        self.calls.append((path, json.loads(request.content.read())["data"]))
        status, body = self.replies.get(path, (200, b'"ERR_REQ_NOTFOUND"'))
        request.setResponseCode(status)
        return body
