"""The grape as a Twisted service: DHT on UDP, Grape API on TCP, upkeep timers,
and with ``admin_port`` an admin HTTP port (metrics and /healthz, see
``grape.metrics``).

``startService`` binds every port synchronously, so a port in use raises
``CannotListenError`` there and then; ``stopService`` closes them all and
stops the timers, leaving nothing behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.server import Site

from twisted_exchange.adminport import AdminPort, admin_root
from twisted_exchange.connections import CappedFactory, ConnectionCaps
from twisted_exchange.grape.api import GrapeAPI
from twisted_exchange.grape.dht import CONCURRENCY, DHTNode
from twisted_exchange.grape.krpc import DEFAULT_TIMEOUT, Address
from twisted_exchange.grape.metrics import GrapeMetrics

SECRET_ROTATION = 5 * 60.0
REFRESH_INTERVAL = 60.0


@dataclass
class GrapeConfig:
    """What grenache-grape's flags configure (times in seconds here)."""

    dht_port: int
    api_port: int
    bind: str = "127.0.0.1"
    bootstrap: list[Address] = field(default_factory=list)
    peer_max_age: float = 120.0
    max_payload_size: int | None = None
    query_timeout: float = DEFAULT_TIMEOUT
    admin_port: int | None = None
    concurrency: int = CONCURRENCY
    max_connections: int | None = None  # on the HTTP API (twisted_exchange.connections); None: no cap
    max_connections_per_address: int | None = None


class _QuietSite(Site):
    """No access log: the grape logs events, not every request."""

    noisy = False

    def log(self, request: object) -> None:
        pass


class GrapeService(Service):
    """A running grape; ``dht`` and the bound ports are public once started."""

    log = Logger()

    def __init__(self, config: GrapeConfig, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self._reactor = reactor
        self.dht = DHTNode(host=config.bind, bootstrap=config.bootstrap,
                           peer_max_age=config.peer_max_age, clock=reactor,
                           query_timeout=config.query_timeout, concurrency=config.concurrency)
        self.caps = ConnectionCaps(reactor, config.max_connections, config.max_connections_per_address, "grape API")
        self.metrics = GrapeMetrics(self.dht, self.caps)
        self._admin = (AdminPort(admin_root(self.metrics.registry, self.metrics.health), config.bind,
                                 config.admin_port, reactor)
                       if config.admin_port is not None else None)
        self._udp: IListeningPort | None = None
        self._tcp: IListeningPort | None = None
        self._timers = [task.LoopingCall(self.dht.tokens.rotate), task.LoopingCall(self.dht.refresh)]

    @property
    def dht_port(self) -> int:
        return self._udp.getHost().port

    @property
    def api_port(self) -> int:
        return self._tcp.getHost().port

    @property
    def admin_url(self) -> str | None:
        """The admin port's URL while it listens, else None."""
        return self._admin.url if self._admin is not None else None

    def startService(self) -> None:
        config = self.config
        self._udp = self._reactor.listenUDP(config.dht_port, self.dht.protocol, interface=config.bind)
        try:
            site = _QuietSite(GrapeAPI(self.dht, config.max_payload_size, count=self.metrics.count))
            self._tcp = self._reactor.listenTCP(config.api_port, CappedFactory(site, self.caps),
                                                interface=config.bind)
            if self._admin is not None:
                self._admin.start()
        except Exception:
            if self._tcp is not None:
                self._tcp.stopListening()
                self._tcp = None
            self._udp.stopListening()
            raise
        super().startService()
        for timer, interval in zip(self._timers, (SECRET_ROTATION, REFRESH_INTERVAL)):
            timer.clock = self._reactor
            timer.start(interval, now=False)
        self.log.info("grape {node} listening: DHT udp {bind}:{dht}, API http {bind}:{api}, bootstrap {bootstrap}",
                      node=self.dht.id.hex(), bind=config.bind, dht=self.dht_port, api=self.api_port,
                      bootstrap=",".join(f"{h}:{p}" for h, p in config.bootstrap) or "none")
        if self._admin is not None:
            self.log.info("grape metrics and /healthz on {url}", url=self.admin_url)
        if config.bootstrap:
            self.dht.join().addCallback(
                lambda size: self.log.info("bootstrap done: {size} DHT nodes known", size=size))

    def stopService(self) -> defer.Deferred:
        super().stopService()
        for timer in self._timers:
            if timer.running:
                timer.stop()
        closing = [defer.maybeDeferred(port.stopListening) for port in (self._tcp, self._udp) if port is not None]
        if self._admin is not None:
            closing.append(self._admin.stop())
        self._tcp = self._udp = None
        self.log.info("grape stopped")
        return defer.gatherResults(closing)
