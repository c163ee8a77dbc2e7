"""``bench-cluster``'s load: N clients, one order in flight each, on
blocking-free sockets and one epoll, in a thread, without the reactor.

Why not ``bench.load``: the benchmark shares the machine's two cores with
the peers it measures, so every microsecond a client spends on an order is
one the peers lack.  Through the reactor, Deferreds and the connection pool
an order cost the bench client 0.13-0.15 ms of CPU (a quarter of the
machine at 64 in flight); here 0.075-0.10 ms (0.04-0.05 in December
2026, its thread under SCHED_BATCH), for the same wire: a Grenache
POST of ``[rid, key, payload]`` per order over mutual TLS, each client on
its own connections with its own credential, to the addresses
``peers.route`` found, a server proving the identity the route expects.
The same ``Workload`` (same seeds) and ``Recorder``.

A call that fails (the connection lost or refused, no answer within
``timeout``, an error reply) is counted by its code, and that client sends
to that peer no more in the run; a client left with no peer stops.  That is
all a run on a healthy cluster needs; ``exchangectl bench``, which looks a
peer up again when it moves, stays on ``bench.load``.
"""
from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from typing import Any, Callable, Sequence

from twisted.internet import threads

from twisted_exchange import scheduling
from twisted_exchange.ctl.bench import Recorder, Workload, bench_clients
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.peers import ctl_error
from twisted_exchange.grenache import GrenacheError, wire
from twisted_exchange.grenache.client import request_bytes, result_of
from twisted_exchange.grenache.errors import ERR_REQUEST_GENERIC, ERR_TIMEOUT, ERR_TLS_IDENTITY
from twisted_exchange.grenache.pool import BadResponse, Reply
from twisted_exchange.grenache.tls import context, peer_certificate
from twisted_exchange.pki import identity_of

#: Seconds between checks for calls past their timeout.
SWEEP_SECONDS = 0.1


async def load(peers: Any, names: Sequence[str], clients: int, *, duration: float | None,
               count: int | None, reactor: Any, seed: int = 1, symbol: str = "BTCUSD",
               credential_of: Callable[[str], Any] | None = None, timeout: float = 5.0,
               on_start: Callable[[], None] = lambda: None) -> Recorder:
    """``bench.load``'s run (its arguments but ``progress``, ``interval``
    and ``resting``; the same clients and orders) on this module's sockets,
    plus ``timeout`` per call; ``peers.route`` is asked in the reactor, then
    the run holds a thread of the reactor's pool until it ends."""
    workloads = bench_clients(clients, seed, symbol)
    routes = []
    for workload in workloads:
        send_as = {"credential": credential_of(workload.client)} if credential_of else {}
        found = {}
        for peer in names:
            try:
                found[peer] = await peers.route(peer, **send_as)
            except CtlError:
                continue  # no route: this client does without that peer
        routes.append((found, send_as.get("credential")))
    stop = threading.Event()  # the reactor shutting down (^C) ends the run at once
    trigger = reactor.addSystemEventTrigger("before", "shutdown", stop.set)
    try:
        return await threads.deferToThreadPool(reactor, reactor.getThreadPool(), run, names, workloads,
                                               routes, duration, count, timeout, on_start, stop)
    finally:
        if not stop.is_set():  # else the trigger has fired, and is gone
            reactor.removeSystemEventTrigger(trigger)


def run(names: Sequence[str], workloads: Sequence[Workload], routes: Sequence[tuple[dict[str, Any], Any]],
        duration: float | None, count: int | None, timeout: float = 5.0,
        on_start: Callable[[], None] = lambda: None, stop: threading.Event | None = None) -> Recorder:
    """Connect every client to its routes (TLS with its credential if it has
    one), start the clock, and send until ``duration`` seconds passed,
    ``count`` orders were sent or ``stop`` is set (then within
    SWEEP_SECONDS, the calls in flight left uncounted); the finished
    Recorder.  Blocks."""
    clients = [_Client(names, workload, found, credential, timeout, turn)
               for turn, (workload, (found, credential)) in enumerate(zip(workloads, routes))]
    by_fd = {connection.socket.fileno(): connection
             for client in clients for connection in client.connections.values()}
    poll = select.epoll()
    try:
        for fd in by_fd:
            poll.register(fd, select.EPOLLIN)
        with scheduling.batch_scheduled():  # the peers' turns first (scheduling.py)
            on_start()
            return _Run(clients, by_fd, duration, count, timeout, stop or threading.Event()).until_done(poll)
    finally:
        poll.close()
        for connection in by_fd.values():
            connection.socket.close()


class _Connection:
    """One client's connection to one peer, one call at a time."""

    def __init__(self, client: _Client, peer: str, route: Any, tls: ssl.SSLContext | None,
                 timeout: float) -> None:
        self.client = client
        self.peer = peer
        self.key = route.key
        self.address = route.address
        host, _, port = route.address.rpartition(":")
        connected = socket.create_connection((host, int(port)), timeout=timeout)
        try:
            connected.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                connected = tls.wrap_socket(connected)  # a failed handshake closes it
                certificate = peer_certificate(connected)
                if route.expect is not None and (
                        certificate is None or identity_of(certificate) != route.expect):
                    raise GrenacheError(ERR_TLS_IDENTITY, f"{route.address}: not {route.expect}")
        except BaseException:
            connected.close()
            raise
        self.socket = connected
        self.socket.setblocking(False)
        self.rid = ""
        self.sent = 0.0
        self.reply: Reply | None = None

    def send(self, order: dict, now: float) -> None:
        self.rid = wire.request_id()
        self.reply = Reply()
        self.sent = now
        data = request_bytes(self.address, self.rid, self.key, order)
        if self.socket.send(data) != len(data):  # a few hundred bytes into an empty buffer
            raise GrenacheError(ERR_REQUEST_GENERIC, f"{self.address}: the request did not fit the send buffer")

    def receive(self) -> bool:
        """Read what came: True once the reply is complete and carries a result
        (not checked further, as ``bench.load`` does not); GrenacheError if the call failed."""
        while True:
            try:
                data = self.socket.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                return False
            except OSError as error:
                raise GrenacheError(ERR_REQUEST_GENERIC, f"{self.address}: {error}") from None
            if not data:
                raise GrenacheError(ERR_REQUEST_GENERIC, f"{self.address}: connection closed before the reply")
            try:
                done = self.reply.feed(data)
            except BadResponse as error:
                raise GrenacheError(ERR_REQUEST_GENERIC, f"{self.address}: {error}") from None
            if done:
                reply, self.reply = self.reply, None
                result_of(reply.status, bytes(reply.body), self.address, self.rid)
                return True


class _Client:
    """One bench client: its orders go to its peers in turn, as in ``bench.load``."""

    def __init__(self, names: Sequence[str], workload: Workload, routes: dict[str, Any],
                 credential: Any, timeout: float, turn: int) -> None:
        self.workload = workload
        self._names = names
        self._turn = turn
        tls = context(credential, server_side=False) if credential is not None else None
        self.connections: dict[str, _Connection] = {}
        for peer, route in routes.items():
            try:
                self.connections[peer] = _Connection(self, peer, route, tls, timeout)
            except (OSError, GrenacheError):
                continue  # as bench.load: a peer that does not answer now is not used
        self.calling: _Connection | None = None

    def next_connection(self) -> _Connection | None:
        """The connection to the next peer in turn that this client still uses."""
        for _ in self._names:
            peer = self._names[self._turn % len(self._names)]
            self._turn += 1
            connection = self.connections.get(peer)
            if connection is not None:
                return connection
        return None

    def drop(self, connection: _Connection) -> None:
        del self.connections[connection.peer]
        connection.socket.close()


class _Run:
    """The send-receive loop over every client's connections."""

    def __init__(self, clients: list[_Client], by_fd: dict[int, _Connection],
                 duration: float | None, count: int | None, timeout: float, stop: threading.Event) -> None:
        self._clients = clients
        self._stop = stop
        self._by_fd = by_fd
        self._count = count
        self._timeout = timeout
        self._sent = 0
        self.recorder = Recorder(time.perf_counter())
        self._deadline = self.recorder.started + duration if duration is not None else None

    def until_done(self, poll: select.epoll) -> Recorder:
        active = sum(self._send(client) for client in self._clients)
        swept = self.recorder.started
        while active and not self._stop.is_set():
            ready = [self._by_fd[fd] for fd, _ in poll.poll(SWEEP_SECONDS) if fd in self._by_fd]
            for connection in ready:  # idle ones first: one the server closed is not sent on next
                if connection.client.calling is not connection:
                    self._idle_readable(connection)
            for connection in ready:
                if connection.client.calling is not connection:
                    continue
                try:
                    answered = connection.receive()
                except GrenacheError as error:
                    active -= self._failed(connection, error)
                    continue
                if answered:
                    self.recorder.committed(connection.sent, time.perf_counter(), connection.peer)
                    active -= not self._send(connection.client)
            now = time.perf_counter()
            if now - swept >= SWEEP_SECONDS:
                swept = now
                for connection in [c.calling for c in self._clients if c.calling is not None]:
                    if now - connection.sent > self._timeout:
                        active -= self._failed(connection, GrenacheError(
                            ERR_TIMEOUT, f"{connection.address}: no reply within {self._timeout:g} s"))
        return self.recorder

    def _send(self, client: _Client) -> bool:
        """Send ``client``'s next order if the run wants one and it has a peer; did it?"""
        client.calling = None
        while True:
            if self._count is not None and self._sent >= self._count:
                return False
            now = time.perf_counter()
            if self._deadline is not None and now >= self._deadline:
                return False
            connection = client.next_connection()
            if connection is None:
                return False
            self._sent += 1
            try:
                connection.send(client.workload.next_order(), now)
            except (OSError, GrenacheError) as error:
                self._record_failure(connection, error)
                continue
            client.calling = connection
            return True

    def _idle_readable(self, connection: _Connection) -> None:
        """Bytes on a connection with no call on it: TLS's own (a session
        ticket) are read and that is all; else the server closed it (an
        idle timeout) or is out of step, and it is dropped, with no order lost."""
        try:
            connection.socket.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return
        except OSError:
            pass
        self._drop(connection)

    def _failed(self, connection: _Connection, error: GrenacheError) -> bool:
        """Count the failed call and drop its connection; did its client stop?"""
        self._record_failure(connection, error)
        return not self._send(connection.client)

    def _record_failure(self, connection: _Connection, error: Exception) -> None:
        if not isinstance(error, GrenacheError):
            error = GrenacheError(ERR_REQUEST_GENERIC, f"{connection.address}: {error}")
        self.recorder.failed(ctl_error(error, connection.peer), time.perf_counter())
        self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        self._by_fd.pop(connection.socket.fileno(), None)
        connection.client.drop(connection)
