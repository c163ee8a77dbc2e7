"""HTTP POST over a keep-alive connection pool, failing only with GrenacheError.

Link (to a grape) and RPCClient (to peers) both speak HTTP/1.1 POST to
``host:port``; this module is the single place where Twisted's transport
failures become ``ERR_REQUEST_GENERIC`` and where deadlines become
``ERR_TIMEOUT``.
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer, error as netError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.internet.abstract import isIPAddress
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.protocol import Protocol, connectionDone
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from twisted_exchange.grenache.errors import ERR_REQUEST_GENERIC, ERR_TIMEOUT, GrenacheError


@implementer(IBodyProducer)
class BytesBody:
    """A request body that is already in memory: written in one go."""

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


class _Body(Protocol):
    """Collects a response body; cancelling stops the connection."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.done: defer.Deferred[bytes] = defer.Deferred(lambda _: self.transport.stopProducing())

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):  # complete, or ended by close
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


def read_body(response: IResponse) -> defer.Deferred[bytes]:
    """The whole body of ``response``; cancelling closes its connection."""
    body = _Body()
    response.deliverBody(body)
    return body.done


def _status_and_body(response: IResponse) -> defer.Deferred[tuple[int, bytes]]:
    return read_body(response).addCallback(lambda data: (response.code, data))


def _reason(failure: Failure) -> str:
    """A one-line reason for a transport failure, e.g. 'connection refused'."""
    value = failure.value
    if isinstance(value, ResponseFailed) and value.reasons:
        return _reason(value.reasons[0])
    if isinstance(value, netError.ConnectionRefusedError):
        return "connection refused"
    if isinstance(value, netError.ConnectionDone):
        return "connection closed"
    if isinstance(value, netError.ConnectionLost):
        return "connection lost"
    text = str(value).strip()
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


def _cancelled(failure: Failure) -> bool:
    """Whether a failure only reports that the caller cancelled the request."""
    if failure.check(defer.CancelledError, netError.ConnectingCancelledError):
        return True
    value = failure.value
    return isinstance(value, ResponseFailed) and any(map(_cancelled, value.reasons))


def _as_grenache_error(failure: Failure, url: str) -> Failure:
    if failure.check(GrenacheError):
        return failure
    if _cancelled(failure):
        return Failure(defer.CancelledError())
    return Failure(GrenacheError(ERR_REQUEST_GENERIC, f"{url}: {_reason(failure)}"))


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """Plain TCP straight to IP addresses: no resolver thread, no attempt delay.

    (Agent's default HostnameEndpoint takes ~0.3 s to report a refused
    connection, which a client retrying a dead peer would pay every time.)
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def endpointForURI(self, uri: URI) -> Any:
        host = uri.host.decode("ascii")
        if isIPAddress(host):
            return TCP4ClientEndpoint(self._reactor, host, uri.port)
        return HostnameEndpoint(self._reactor, uri.host, uri.port)


class Poster:
    """POSTs bodies to URLs over persistent connections.

    The pool is created here (and closed by ``close``) unless one is given;
    a given pool belongs to the caller.
    """

    def __init__(self, reactor: Any, pool: HTTPConnectionPool | None, per_host: int) -> None:
        self._owned = pool is None
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = per_host
            pool.retryAutomatically = False
        self._pool = pool
        self._agent = Agent.usingEndpointFactory(reactor, _Endpoints(reactor), pool=pool)

    def post(self, url: str, body: bytes, headers: Headers) -> defer.Deferred[tuple[int, bytes]]:
        """(HTTP status, body) of a POST; GrenacheError on transport failure."""
        d = self._agent.request(b"POST", url.encode("ascii"), headers, BytesBody(body))
        d.addCallback(_status_and_body)
        d.addErrback(_as_grenache_error, url)
        return d

    def close(self) -> defer.Deferred[None]:
        """Close the idle pooled connections of an owned pool."""
        if self._owned:
            return self._pool.closeCachedConnections()
        return defer.succeed(None)


def deadline(d: defer.Deferred[Any], seconds: float, clock: IReactorTime,
             what: str) -> defer.Deferred[Any]:
    """Cancel ``d`` after ``seconds`` and fail it with ERR_TIMEOUT instead."""
    def timed_out(result: Any, timeout: float) -> Any:
        raise GrenacheError(ERR_TIMEOUT, f"{what}: no reply within {timeout:g} s")
    return d.addTimeout(seconds, clock, onTimeoutCancel=timed_out)
