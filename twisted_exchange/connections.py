"""Caps on the connections a server holds: in all, and from one IP address.

A process out of file descriptors cannot open its files or call out, and
anyone may connect to our servers (clients, the network and whoever calls
a grape are untrusted: before the caps, 23,000 idle connections made a
peer fail-stop on EMFILE).  So a server holds at most ``total``
connections and ``per_address`` from one IP address.  Past the
per-address cap a new connection is closed unread: a host holding slow
connections, as Slowloris does, uses up its own share.  At the total, a
new connection takes the place of the *quietest* evictable one, else it
is closed unread.  Behind TLS (the peers' RPC) a connection is evictable
until its first byte, which needs a handshake with a certificate of the
cluster: connections that never say anything cannot shut out those that
do, and those that have spoken keep their place.  On plain HTTP (the
grape's API, the admin port) a byte proves nothing, so every connection
stays evictable and the one that has sent and been sent nothing for the
longest goes: hosts holding connections at their share cannot shut out
a lookup (before, one byte each did).

:class:`ConnectionCaps` counts; the Grenache server calls it from its own
factory (no wrapper on its hot path), :class:`CappedFactory` wraps any
other (the admin port, the grape's HTTP API).  :func:`raise_descriptor_limit`
and :func:`connection_cap` size a process's total from ``ulimit -n``;
:func:`connection_families` shows the counts on a server's /metrics.
"""
from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

#: Descriptors a process keeps for its own use beside the connections it
#: takes in: its files, its calls out (a peer pools up to 64 to another).
RESERVED_FDS = 256
#: The fewest connections a server is started with: its peers' and a few clients'.
MIN_CONNECTIONS = 64
#: Connections a peer's or grape's server holds at once, at most (``--max-connections``).
MAX_CONNECTIONS = 8192
#: Connections one IP address may hold on it at once (``--max-connections-per-address``):
#: a whole loopback cluster's peers and benchmark clients share 127.0.0.1.
MAX_CONNECTIONS_PER_ADDRESS = 1024
#: Seconds between two warnings that a cap closed connections.
WARN_EVERY = 10.0

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")


class ConnectionCaps:
    """The connections of one server, counted against its caps (None: no cap).

    A connection is any object with a ``transport`` (to abort it): the
    server's factory makes it through :meth:`connect`, and it calls
    :meth:`heard_from` at its first bytes (behind TLS) or :meth:`active` at
    every exchange of bytes (plain HTTP), and :meth:`closed` when it is lost.
    """

    log = Logger()

    def __init__(self, reactor: Any, total: int | None = None, per_address: int | None = None,
                 name: str = "server") -> None:
        self.total = total
        self.per_address = per_address
        self.name = name
        self.refused = 0  # closed unread at a cap, since the start
        self.evicted = 0  # quiet ones closed for newer ones, since the start
        self.by_address: dict[str, int] = {}
        self._reactor = reactor
        self._hosts: dict[Any, str] = {}  # every counted connection -> its address
        self._evictable: dict[Any, None] = {}  # counted and evictable; the quietest first
        self._warned = float("-inf")

    @property
    def open(self) -> int:
        """Connections counted now."""
        return len(self._hosts)

    @property
    def evictable(self) -> int:
        """Connections counted now that may give their place to a newer one."""
        return len(self._evictable)

    def counts(self) -> tuple[int, int, int]:
        """Connections open now, and those refused and evicted since the start."""
        return len(self._hosts), self.refused, self.evicted

    def connect(self, addr: Any, make: Callable[[], C]) -> C | None:
        """``make()``, counted, for a new connection from ``addr``; None (the
        factory's answer that closes it unread) past the caps."""
        host = getattr(addr, "host", "")
        if not self._admit(host):
            return None
        connection = make()
        self._hosts[connection] = host
        self._evictable[connection] = None
        self.by_address[host] = self.by_address.get(host, 0) + 1
        return connection

    def _admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may be made: within the
        caps, or once the quietest evictable connection is closed for it."""
        count = self.by_address.get(host, 0)
        if self.per_address is not None and count >= self.per_address:
            return self._refuse(host, count)
        if self.total is not None and len(self._hosts) >= self.total:
            if not self._evictable:
                return self._refuse(host, count)
            quietest = next(iter(self._evictable))
            self.closed(quietest)  # now: the abort's connectionLost comes later
            self.evicted += 1
            self._warn("closing quiet connections for newer ones", host, count)
            quietest.transport.abortConnection()
        return True

    def heard_from(self, connection: Any) -> None:
        """``connection``'s first bytes arrived behind TLS: it keeps its place."""
        self._evictable.pop(connection, None)

    def active(self, connection: Any) -> None:
        """Bytes went either way on plain HTTP ``connection``: still
        evictable, but now the last to go."""
        if self._evictable.pop(connection, False) is None:
            self._evictable[connection] = None

    def closed(self, connection: Any) -> None:
        """``connection`` is gone (once; again is a no-op)."""
        host = self._hosts.pop(connection, None)
        if host is None:
            return
        self._evictable.pop(connection, None)
        left = self.by_address[host] - 1
        if left:
            self.by_address[host] = left
        else:
            del self.by_address[host]

    def _refuse(self, host: str, count: int) -> bool:
        self.refused += 1
        self._warn("refusing connections", host, count)
        return False

    def _warn(self, what: str, host: str, count: int) -> None:
        """Say ``what`` happens at a cap, at most every WARN_EVERY seconds."""
        now = self._reactor.seconds()
        if now - self._warned >= WARN_EVERY:
            self._warned = now
            self.log.warn("{name}: {what}: {open} open, {count} from {host} (caps {total} and {per_address} "
                          "per address; {refused} refused and {evicted} evicted so far)",
                          name=self.name, what=what, open=self.open, count=count, host=host,
                          total=self.total, per_address=self.per_address, refused=self.refused,
                          evicted=self.evicted)


def connection_families(prefix: str, server: str,
                        counts: tuple[int, int, int] | None = None) -> tuple[Metric, ...]:
    """``{prefix}_connections`` open now and ``{prefix}_connections_refused``
    and ``_evicted`` since the start, of the ``server`` counted by
    :meth:`ConnectionCaps.counts`; without ``counts``, the families alone
    (a collector's ``describe``)."""
    open_now, refused, evicted = counts if counts is not None else (None, None, None)
    return (GaugeMetricFamily(f"{prefix}_connections", f"{server} connections open.", value=open_now),
            CounterMetricFamily(f"{prefix}_connections_refused", f"{server} connections closed unread "
                                "since the start: the server held its cap of them, in all or from that address.",
                                value=refused),
            CounterMetricFamily(f"{prefix}_connections_evicted", f"Quiet {server} connections closed since "
                                "the start to make room for newer ones.", value=evicted))


class _Counted(ProtocolWrapper):
    """A plain-HTTP connection of a :class:`CappedFactory`: tells the caps
    whenever bytes go either way."""

    def dataReceived(self, data: bytes) -> None:
        self.factory.caps.active(self)
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        self.factory.caps.active(self)
        super().write(data)

    def writeSequence(self, data: Any) -> None:
        self.factory.caps.active(self)
        super().writeSequence(data)


class CappedFactory(WrappingFactory):
    """``wrapped``'s connections, counted against ``caps``; past them a new one is closed unread."""

    protocol = _Counted
    noisy = False

    def __init__(self, wrapped: Factory, caps: ConnectionCaps) -> None:
        super().__init__(wrapped)
        self.caps = caps

    def buildProtocol(self, addr: Any) -> _Counted | None:
        return self.caps.connect(addr, lambda: super(CappedFactory, self).buildProtocol(addr))

    def unregisterProtocol(self, connection: ProtocolWrapper) -> None:
        super().unregisterProtocol(connection)
        self.caps.closed(connection)


def raise_descriptor_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit if allowed (as Go's
    runtime does); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(wanted: int, descriptors: int) -> int:
    """``wanted`` connections, or fewer if ``descriptors`` (RLIMIT_NOFILE;
    RLIM_INFINITY for none) would leave less than RESERVED_FDS."""
    if descriptors == resource.RLIM_INFINITY:
        return wanted
    return max(0, min(wanted, descriptors - RESERVED_FDS))


def connection_options(command: F) -> F:
    """``--max-connections`` and ``--max-connections-per-address`` for a server's command line."""
    command = click.option(
        "--max-connections-per-address", default=MAX_CONNECTIONS_PER_ADDRESS, show_default=True,
        type=click.IntRange(1), help="Connections one IP address may hold open at once; past it a new "
                                     "one is closed unread.")(command)
    return click.option(
        "--max-connections", default=MAX_CONNECTIONS, show_default=True, type=click.IntRange(1),
        help="Connections held open at once, at most; fewer if the descriptor limit (raised to the hard "
             f"`ulimit -n`) would leave less than {RESERVED_FDS} for the process's own files and calls. At "
             "it a new connection takes the place of the quietest one it may close (TLS: one that has not "
             "finished its handshake; plain HTTP: any), else is closed unread.")(command)


def total_within_descriptors(wanted: int) -> int:
    """``wanted`` connections, or what the descriptor limit, raised to the
    hard one, leaves beside RESERVED_FDS; exit 1 with one line if that is
    under MIN_CONNECTIONS."""
    descriptors = raise_descriptor_limit()
    total = connection_cap(wanted, descriptors)
    if total < MIN_CONNECTIONS:
        click.echo(f"error: {descriptors} file descriptors (ulimit -n) leave room for {total} connections; "
                   f"at least {RESERVED_FDS + MIN_CONNECTIONS} are needed", err=True)
        sys.exit(1)
    return total
