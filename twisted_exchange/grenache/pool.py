"""A lean HTTP/1.1 client: POST a body, get (status, body), keep the connection.

Grenache RPC is one small POST and one small reply per call, so the client
needs exactly that and nothing of twisted.web.client.Agent's generality,
which costs more CPU per call than the whole twisted.web server does.  A
``ConnectionPool`` keeps idle connections per ``(host, port)`` and runs one
request at a time on each; replies may be framed by Content-Length, chunked
(Node's server) or by closing the connection.

A pool made with a ``tls`` credential speaks HTTPS with mutual TLS (see
tls.py): a connection is used once its handshake is done, and each keeps
the identity its verified certificate names, so a request that ``expect``s
another identity fails with ``WrongIdentity`` before any of it is sent.

A new connection must be ready (connected, and handshaken over TLS) within
``connect_timeout`` (default :data:`CONNECT_TIMEOUT`), or its request fails
with ``twisted.internet.error.TimeoutError`` before a byte of it is sent:
anyone may announce an address, and one that accepts a connection and then
says nothing would otherwise hold the request for its whole deadline
instead of letting the caller try another destination.

Contract: ``ConnectionPool.post`` fires with ``(status, body)`` or fails with
a connection error; cancelling it aborts its connection.  Errors are mapped
to GrenacheError by the caller (transport.py).
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer, error as netError
from twisted.internet.abstract import isIPAddress
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_exchange.grenache import tls as secure
from twisted_exchange.grenache.deadlines import deadlines
from twisted_exchange.grenache.tlsbio import TLSFactory, TLSProtocol
from twisted_exchange.grenache.writenow import write_now
from twisted_exchange.pki import Credential, Identity, identity_of

Address = tuple[str, int]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
#: Seconds a new connection may take to be ready for its request: a TCP
#: connect and a TLS handshake are 2-3 round trips, under a second even
#: between continents or under the nemesis's delays (up to 400 ms each
#: way); half the default 5 s call deadline leaves time for a retry.
CONNECT_TIMEOUT = 2.5


class BadResponse(Exception):
    """The server's bytes are not an HTTP/1.x response we can read."""


class WrongIdentity(Exception):
    """The server is not the identity the request expected; nothing was sent."""


class Reply:
    """Incremental parser of one HTTP/1.x response (also ctl/loadgen.py's, outside the reactor)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.status = 0
        self.body = bytearray()
        self.keep_alive = True
        self._length: int | None = None  # None: until close; -1: chunked
        self._in_head = True
        self._chunk: int | None = None  # chunked: bytes left in the current chunk

    def feed(self, data: bytes) -> bool:
        """Add bytes; True once the response is complete."""
        self.buffer += data
        if self._in_head and not self._read_head():
            return False
        if self._length == -1:
            return self._read_chunks()
        if self._length is None:
            self.body += self.buffer
            del self.buffer[:]
            self._check_size()
            return False
        need = self._length - len(self.body)
        self.body += self.buffer[:need]
        del self.buffer[:need]
        return len(self.body) == self._length

    def _read_head(self) -> bool:
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    raise BadResponse("response head too long")
                return False
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            del self.buffer[:end + 4]
            version, _, rest = lines[0].partition(b" ")
            if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
                raise BadResponse(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
            self.status = int(rest[:3])
            if 100 <= self.status < 200:
                continue  # e.g. 100 Continue: the real response follows
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip().lower()
            connection = headers.get(b"connection", b"")
            self.keep_alive = (b"close" not in connection
                               and (version == b"HTTP/1.1" or b"keep-alive" in connection))
            if b"chunked" in headers.get(b"transfer-encoding", b""):
                self._length = -1
            elif b"content-length" in headers:
                try:
                    self._length = int(headers[b"content-length"])
                except ValueError:
                    raise BadResponse("bad Content-Length") from None
                if not 0 <= self._length <= _MAX_BODY:
                    raise BadResponse("bad Content-Length")
            else:
                self._length, self.keep_alive = None, False
            self._in_head = False
            return True

    def _read_chunks(self) -> bool:
        buffer = self.buffer
        while True:
            if self._chunk is None:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                size = bytes(buffer[:end]).split(b";")[0].strip()
                try:
                    self._chunk = int(size, 16)
                except ValueError:
                    raise BadResponse("bad chunk size") from None
                del buffer[:end + 2]
                if self._chunk == 0:
                    self._chunk = -1  # trailers until an empty line
            if self._chunk == -1:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                del buffer[:end + 2]
                if end == 0:
                    return True
                continue
            if len(buffer) < self._chunk + 2:
                return False
            self.body += buffer[:self._chunk]
            del buffer[:self._chunk + 2]
            self._chunk = None
            self._check_size()

    def _check_size(self) -> None:
        if len(self.body) > _MAX_BODY:
            raise BadResponse("response body too large")

    def finish_at_close(self) -> bool:
        """Whether closing the connection completes the response."""
        return not self._in_head and self._length is None


@implementer(IHandshakeListener)
class _Connection(Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time.

    ``ready`` fires with it once it can carry requests: at once over plain
    HTTP, after the handshake over TLS (then ``identity`` is what the
    server's verified certificate names).
    """

    identity: Identity | None = None

    def __init__(self, pool: ConnectionPool, address: Address, secure: bool) -> None:
        self._pool = pool
        self.address = address
        self._secure = secure
        self._waiting: defer.Deferred[tuple[int, bytes]] | None = None
        self._reply: Reply | None = None
        self.ready: defer.Deferred[_Connection] = defer.Deferred(
            lambda _: self.transport.abortConnection())
        self.closed: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self._pool._open.add(self)
        if not self._secure:
            self.ready.callback(self)

    def handshakeCompleted(self) -> None:
        certificate = secure.certificate_of(self.transport)
        self.identity = identity_of(certificate) if certificate is not None else None
        self.ready.callback(self)

    def request(self, head: bytes, body: bytes) -> defer.Deferred[tuple[int, bytes]]:
        self._reply = Reply()
        self._waiting = defer.Deferred(lambda _: self.transport.abortConnection())
        write_now(self.transport, head + body)
        return self._waiting

    def dataReceived(self, data: bytes) -> None:
        if self._reply is None:  # nothing asked: the server is confused
            self.transport.abortConnection()
            return
        try:
            done = self._reply.feed(data)
        except BadResponse as e:
            self._fail(Failure(e))
            self.transport.abortConnection()
            return
        if done:
            self._complete()

    def _complete(self) -> None:
        reply, waiting = self._reply, self._waiting
        self._reply = self._waiting = None
        if reply.keep_alive and not reply.buffer:
            self._pool._idle_again(self)
        else:
            self.transport.loseConnection()
        waiting.callback((reply.status, bytes(reply.body)))

    def _fail(self, failure: Failure) -> None:
        waiting, self._reply, self._waiting = self._waiting, None, None
        if waiting is not None and not waiting.called:
            waiting.errback(failure)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._pool._forget(self)
        if not self.ready.called:
            self.ready.errback(reason)
        elif self._reply is not None and self._reply.finish_at_close():
            self._complete()
        else:
            self._fail(reason)
        self.closed.callback(None)


def _cancelled(failure: Failure) -> Failure:
    """A connect cancelled before the TCP connection was made fails as any
    cancelled Deferred does (``Deadlines`` tells a timeout by that)."""
    failure.trap(netError.ConnectingCancelledError)
    return Failure(defer.CancelledError())


def _inner(connected: Any) -> _Connection:
    """The ``_Connection`` an endpoint connected: itself, or inside its TLS layer."""
    return connected.wrappedProtocol if isinstance(connected, TLSProtocol) else connected


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: ConnectionPool, address: Address) -> None:
        self._pool = pool
        self._address = address

    def buildProtocol(self, addr: Any) -> _Connection:
        return _Connection(self._pool, self._address, self._pool.secure)


class ConnectionPool:
    """Idle keep-alive connections per (host, port), at most ``per_host`` each.

    With ``tls`` (a ``pki.Credential``) every connection is mutual TLS.
    """

    def __init__(self, reactor: Any, per_host: int = 32, tls: Credential | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self._reactor = reactor
        self._deadlines = deadlines(reactor)
        self._connect_timeout = connect_timeout
        self.per_host = per_host
        self._tls = secure.context(tls, server_side=False) if tls is not None else None
        self._idle: dict[Address, list[_Connection]] = {}
        self._open: set[_Connection] = set()

    @property
    def secure(self) -> bool:
        return self._tls is not None

    def post(self, address: Address, head: bytes, body: bytes,
             expect: Identity | None = None) -> defer.Deferred[tuple[int, bytes]]:
        """Send ``head`` (request line and headers) and ``body``; (status, body).

        With ``expect``, only to a server whose certificate names it
        (``WrongIdentity`` otherwise).
        """
        idle = self._idle.get(address)
        if idle:
            return defer.maybeDeferred(self._send, idle.pop(), head, body, expect)
        factory: Any = _ConnectionFactory(self, address)
        if self._tls is not None:
            factory = TLSFactory(self._tls, factory, server_side=False)
        connecting = self._endpoint(address).connect(factory).addCallback(
            lambda connected: _inner(connected).ready).addErrback(_cancelled)
        ready = self._deadlines.add(connecting, self._connect_timeout, netError.TimeoutError)
        return ready.addCallback(self._send, head, body, expect)

    def _send(self, connection: _Connection, head: bytes, body: bytes,
              expect: Identity | None) -> defer.Deferred[tuple[int, bytes]]:
        if expect is not None and connection.identity != expect:
            self._idle_again(connection)
            raise WrongIdentity(f"its certificate names {connection.identity or 'nobody'}, "
                                f"not {expect}")
        return connection.request(head, body)

    def _endpoint(self, address: Address) -> Any:
        host, port = address
        if isIPAddress(host):  # no resolver thread, refusals reported at once
            return TCP4ClientEndpoint(self._reactor, host, port)
        return HostnameEndpoint(self._reactor, host.encode("idna"), port)

    def _idle_again(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.address, [])
        if len(idle) < self.per_host:
            idle.append(connection)
        else:
            connection.transport.loseConnection()

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.address, [])
        if connection in idle:
            idle.remove(connection)

    def close(self) -> defer.Deferred[None]:
        """Close every connection (requests in flight fail); fires once closed."""
        closing = [c.closed for c in self._open]
        for connection in list(self._open):
            connection.transport.loseConnection()
        return defer.gatherResults(closing).addCallback(lambda _: None)

