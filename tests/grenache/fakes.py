"""Test doubles and an independent HTTP client for the Grenache tests.

``WireStub`` is the far end of the HTTP connections an Agent opens on a
``MemoryReactorClock``: a test answers each request by hand, and time only
moves when the test advances the clock.  ``FakeGrape`` is a twisted.web
resource that answers grape API calls from a script, for tests over real
loopback sockets.  ``http_post`` calls a server through twisted.web's Agent,
a client independent of ours.  ``Recorder`` keeps what a real connection
receives and says when its connection is handshaken and lost.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web import resource, server
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

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

    def answer(self, status: int, body: Body) -> dict:
        """Answer the oldest waiting request; return it as a dict.

        ``body`` may be a function of that request (to echo its rid).
        """
        def response(request: dict) -> bytes:
            data = body(request) if callable(body) else body
            return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(data), data)
        return self.answer_raw(response)

    def answer_raw(self, response: bytes | Callable[[dict], bytes], *parts: bytes) -> dict:
        """Answer the oldest waiting request with raw bytes, sent in ``parts`` too."""
        self._accept()
        for client, transport in zip(self._protocols, self.transports):
            raw = transport.value()
            if raw and not transport.disconnecting:
                transport.clear()
                head, _, content = raw.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                request = {"line": lines[0], "body": content, "transport": transport,
                           "protocol": client,
                           "headers": {k.lower(): v for k, _, v in
                                       (line.partition(": ") for line in lines[1:])}}
                for data in (response(request) if callable(response) else response, *parts):
                    client.dataReceived(data)
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


@implementer(IBodyProducer)
class _BytesBody:
    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> defer.Deferred[None]:
        consumer.write(self._body)
        return defer.succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Collect(protocol.Protocol):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


async def http_post(agent: Agent, url: bytes, body: bytes, headers: dict[bytes, bytes],
                    method: bytes = b"POST") -> tuple[int, Headers, bytes]:
    """(status, headers, body) of one request made with twisted.web's Agent."""
    response = await agent.request(method, url, Headers({k: [v] for k, v in headers.items()}),
                                   _BytesBody(body))
    collect = _Collect()
    response.deliverBody(collect)
    return response.code, response.headers, await collect.done


@implementer(IHandshakeListener)
class Recorder(Protocol):
    """Keeps what it receives; says when its connection is up, handshaken and lost."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.handshaken: defer.Deferred[None] = defer.Deferred()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.reason: Any = None
        self._until: list[tuple[int, defer.Deferred[None]]] = []

    def handshakeCompleted(self) -> None:
        self.handshaken.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        arrived = [d for size, d in self._until if len(self.received) >= size]
        self._until = [(size, d) for size, d in self._until if d not in arrived]
        for d in arrived:
            d.callback(None)

    def until(self, size: int) -> defer.Deferred[None]:
        """Fires once ``size`` bytes have arrived in all."""
        self._until.append((size, defer.Deferred()))
        d = self._until[-1][1]
        self.dataReceived(b"")
        return d

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason  # a Failure: the Deferred would take it for an error
        self.lost.callback(None)
