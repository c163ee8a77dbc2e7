"""Helpers for the grape tests: an in-process grape and an HTTP client for it."""
from __future__ import annotations

import json

from twisted.internet import defer, reactor, task
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from twisted_exchange.grape.service import GrapeConfig, GrapeService
from tests.support import Collect

class _Body:
    """A fixed request body (IBodyProducer)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self._data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def stopProducing(self):
        pass


def start_grape(test: unittest.TestCase, **options) -> GrapeService:
    """A grape on free loopback ports, stopped at test cleanup."""
    config = GrapeConfig(**{"dht_port": 0, "api_port": 0, **options})
    grape = GrapeService(config, reactor)
    grape.startService()
    test.addCleanup(grape.stopService)
    return grape


@defer.inlineCallbacks
def request(port: int, path: str, body: bytes, method: bytes = b"POST"):
    """Send one request; fires with (status, body bytes). No connection is kept."""
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    response = yield agent.request(method, f"http://127.0.0.1:{port}{path}".encode(),
                                   Headers({b"content-type": [b"application/json"]}), _Body(body))
    content = defer.Deferred()
    response.deliverBody(Collect(content))
    content = yield content
    return response.code, content


def call(grape: GrapeService, path: str, data: object) -> defer.Deferred:
    """POST ``{"rid": .., "data": data}`` to ``grape``; fires with (status, parsed JSON or None)."""
    body = json.dumps({"rid": "test", "data": data}).encode()
    d = request(grape.api_port, path, body)
    return d.addCallback(lambda reply: (reply[0], json.loads(reply[1]) if reply[1] else None))


@defer.inlineCallbacks
def poll(check, timeout: float = 1.0, interval: float = 0.02):
    """Call ``check`` (returning a Deferred of a bool) until true or the deadline."""
    deadline = reactor.seconds() + timeout
    while True:
        ok = yield check()
        if ok:
            return True
        if reactor.seconds() >= deadline:
            return False
        yield task.deferLater(reactor, interval, lambda: None)
