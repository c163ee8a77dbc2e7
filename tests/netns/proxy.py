"""A userspace TCP proxy with faults on demand, in the manner of Toxiproxy.

``python -m tests.netns.proxy --control SOCK --link LISTEN=TARGET ...``
forwards each ``LISTEN`` address (``ip:port``) to its ``TARGET``, and takes
orders as JSON lines on the Unix socket ``SOCK`` (a file, so the nemesis
reaches it from any network namespace):

- ``{"latency": s, "jitter": s}``: every chunk waits ``latency`` plus a
  uniform ``[0, jitter)``.  Chunks of one direction of one connection stay
  in order (TCP's order is not ours to break: a swapped TLS record is a
  corrupt stream, not a reordered message); with jitter above the time
  between messages, messages on *different* connections overtake each
  other, which is the reordering Raft and the clients can actually see.
- ``{"drop": p}``: each chunk, with probability ``p``, is lost with its
  connection (both sides reset): a message lost in flight.
- ``{"cut": [ip, ...]}``: connections from those sources are reset, new
  ones refused at once (``"*"``: from anyone).  The proxy sees the real
  source address, so a cut can be one-way and between two hosts only.
- ``{"reset": true}``: no faults.
Each order may name ``"ports"`` (listen ports) to apply to; default all.
A side that closes closes both directions once what is queued is delivered
(no half-close: HTTP, all that crosses these links, never uses it).
Replies ``ok`` or ``error: ...``.  :class:`Control` is the caller's side.
"""
from __future__ import annotations

import json
import random
import socket
import sys
from collections import deque
from dataclasses import dataclass, field

from twisted.internet import protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineReceiver


@dataclass
class Faults:
    """What one listen port does to the traffic through it."""

    latency: float = 0.0
    jitter: float = 0.0
    drop: float = 0.0
    cut: frozenset[str] = field(default_factory=frozenset)

    def cuts(self, source: str) -> bool:
        return "*" in self.cut or source in self.cut


class Pipe:
    """One direction of one connection: chunks delivered in order, each after its delay."""

    def __init__(self, faults: Faults, rng: random.Random, deliver, abort) -> None:
        self._faults = faults
        self._rng = rng
        self._deliver = deliver
        self._abort = abort
        self._queue: deque[tuple[float, bytes]] = deque()
        self._call = None
        self._closing = None

    def send(self, data: bytes) -> None:
        if self._faults.drop and self._rng.random() < self._faults.drop:
            self._abort()
            return
        delay = self._faults.latency + self._rng.uniform(0, self._faults.jitter)
        last = self._queue[-1][0] if self._queue else 0.0
        self._queue.append((max(reactor.seconds() + delay, last), data))
        self._schedule()

    def close(self, then) -> None:
        """Run ``then`` once every queued chunk is delivered."""
        self._closing = then
        self._schedule()

    def _schedule(self) -> None:
        if self._call is not None and self._call.active():
            return
        if self._queue:
            self._call = reactor.callLater(max(0.0, self._queue[0][0] - reactor.seconds()), self._due)
        elif self._closing is not None:
            closing, self._closing = self._closing, None
            closing()

    def _due(self) -> None:
        now = reactor.seconds()
        while self._queue and self._queue[0][0] <= now:
            self._deliver(self._queue.popleft()[1])
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._queue.clear()
        self._closing = None


class Upstream(protocol.Protocol):
    """The proxy's connection to the target, owned by a :class:`Downstream`."""

    def __init__(self, downstream: Downstream) -> None:
        self.downstream = downstream

    def dataReceived(self, data: bytes) -> None:
        self.downstream.to_client.send(data)

    def connectionLost(self, reason) -> None:
        self.downstream.upstream_lost()


class Downstream(protocol.Protocol):
    """A connection accepted on a listen port, forwarded to the target."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.upstream: Upstream | None = None
        self.source = ""
        self._early: list[bytes] = []
        self._ended = False
        rng = listener.rng
        self.to_target = Pipe(listener.faults, rng, self._to_target, self.abort)
        self.to_client = Pipe(listener.faults, rng, lambda data: self.transport.write(data), self.abort)

    def connectionMade(self) -> None:
        self.source = self.transport.getPeer().host
        if self.listener.faults.cuts(self.source):
            self.transport.abortConnection()
            return
        self.listener.open.add(self)
        host, port = self.listener.target
        d = connectProtocol(TCP4ClientEndpoint(reactor, host, port, timeout=2), Upstream(self))
        d.addCallbacks(self._connected, lambda _: self.abort())

    def _connected(self, upstream: Upstream) -> None:
        if self._ended:
            upstream.transport.abortConnection()
            return
        self.upstream = upstream
        for data in self._early:
            upstream.transport.write(data)
        self._early.clear()

    def _to_target(self, data: bytes) -> None:
        if self.upstream is None:
            self._early.append(data)
        else:
            self.upstream.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        self.to_target.send(data)

    def connectionLost(self, reason) -> None:
        self.listener.open.discard(self)
        self._ended = True
        self.to_client.stop()
        self.to_target.close(self._close_upstream)

    def _close_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

    def upstream_lost(self) -> None:
        self.to_client.close(self.transport.loseConnection)

    def abort(self) -> None:
        """Both sides reset, whatever is queued lost."""
        self._ended = True
        self.to_target.stop()
        self.to_client.stop()
        self.transport.abortConnection()
        if self.upstream is not None:
            self.upstream.transport.abortConnection()


class Listener(protocol.Factory):
    """One listen port and its faults."""

    def __init__(self, target: tuple[str, int], rng: random.Random) -> None:
        self.target = target
        self.rng = rng
        self.faults = Faults()
        self.open: set[Downstream] = set()

    def buildProtocol(self, addr) -> Downstream:
        return Downstream(self)

    def apply(self, order: dict) -> None:
        faults = self.faults
        if order.get("reset"):
            faults.latency = faults.jitter = faults.drop = 0.0
            faults.cut = frozenset()
        faults.latency = float(order.get("latency", faults.latency))
        faults.jitter = float(order.get("jitter", faults.jitter))
        faults.drop = float(order.get("drop", faults.drop))
        if "cut" in order:
            faults.cut = frozenset(order["cut"])
            for connection in [c for c in self.open if faults.cuts(c.source)]:
                connection.abort()


class ControlProtocol(LineReceiver):
    delimiter = b"\n"

    def __init__(self, listeners: dict[int, Listener]) -> None:
        self.listeners = listeners

    def lineReceived(self, line: bytes) -> None:
        try:
            order = json.loads(line)
            ports = order.get("ports") or list(self.listeners)
            for port in ports:
                self.listeners[int(port)].apply(order)
        except (ValueError, KeyError, TypeError) as e:
            self.sendLine(f"error: {e!r}".encode())
        else:
            self.sendLine(b"ok")


class Control:
    """The nemesis's side of one proxy's control socket (blocking, short)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def send(self, **order) -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(self.path)
            s.sendall(json.dumps(order).encode() + b"\n")
            reply = s.makefile().readline().strip()
        if reply != "ok":
            raise RuntimeError(f"proxy {self.path}: {order} -> {reply!r}")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str]) -> None:
    """``--control SOCK [--seed N] --link LISTEN=TARGET ...``"""
    control, seed, links = None, 0, []
    args = iter(argv)
    for arg in args:
        if arg == "--control":
            control = next(args)
        elif arg == "--seed":
            seed = int(next(args))
        elif arg == "--link":
            listen, _, target = next(args).partition("=")
            links.append((_address(listen), _address(target)))
        else:
            raise SystemExit(f"usage: --control SOCK [--seed N] --link LISTEN=TARGET ...; not {arg!r}")
    if control is None or not links:
        raise SystemExit("usage: --control SOCK [--seed N] --link LISTEN=TARGET ...")
    rng = random.Random(seed)
    listeners = {}
    for (host, port), target in links:
        listeners[port] = Listener(target, rng)
        reactor.listenTCP(port, listeners[port], interface=host)
    factory = protocol.Factory.forProtocol(lambda: ControlProtocol(listeners))
    reactor.listenUNIX(control, factory)  # last: the socket appearing means ready
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
