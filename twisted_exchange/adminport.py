"""The admin HTTP port of a process (peer or grape), apart from its Grenache port.

It serves Prometheus ``/metrics`` from the process's own
``CollectorRegistry`` (never prometheus_client's global one: the tests run
several peers in one process), ``/healthz`` (200 while the process is
healthy, 503 otherwise, with the problems as JSON), and whatever else the
process mounts on the same root (the peer's dashboard and its JSON API).

Everything here runs in the reactor thread.  prometheus_client's own
Twisted ``MetricsResource`` is a WSGI resource that runs the collectors in
the reactor's thread pool; ours read state the reactor thread mutates
(the order book, the Raft node), so ``/metrics`` renders in the reactor
thread instead, with prometheus_client's own encoder.

The port is for operators on the same machine: bind it to loopback.  It is
read-only (GET and HEAD only), never shows a traceback, and holds at most
:data:`MAX_CONNECTIONS` connections (:mod:`twisted_exchange.connections`),
so it cannot take the descriptors its process keeps for its files.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client import GC_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from twisted_exchange.connections import CappedFactory, ConnectionCaps

#: Connections an admin port holds open at once: a few scrapers and browsers.
MAX_CONNECTIONS = 64

#: What a health function returns, as ``status`` reports it: ``{"ok": bool, "problems": [str]}``.
Health = Callable[[], dict]


def process_registry() -> CollectorRegistry:
    """A registry of the process's own, with the families every Prometheus
    client exports by default (``process_*``: resident memory, CPU seconds,
    open files; ``python_gc_*``), read at scrape time like ours."""
    registry = CollectorRegistry()
    registry.register(PROCESS_COLLECTOR)
    registry.register(GC_COLLECTOR)
    return registry


class QueryError(Exception):
    """A query string the API refuses: answered 400 with this message."""


class MetricsPage(Resource):
    """``registry`` in the Prometheus text format (or OpenMetrics if asked)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        encoder, content_type = choose_encoder(request.getHeader("accept") or "")
        request.setHeader(b"content-type", content_type.encode())
        return encoder(self._registry)


class JSONResource(Resource):
    """GET answers ``answer(query)`` (a value or a Deferred of one) as JSON.

    ``query`` holds the last value of each query-string argument.
    ``status(value)`` picks the HTTP status of an answer (default 200); a
    QueryError is a 400, any other failure a logged 500 with one line.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, answer: Callable[[dict[str, str]], Any],
                 status: Callable[[Any], int] = lambda value: 200) -> None:
        super().__init__()
        self._answer = answer
        self._status = status

    def render_GET(self, request: Request) -> object:
        query = {key.decode("latin-1"): values[-1].decode("utf-8", "replace")
                 for key, values in request.args.items() if values}
        d = defer.maybeDeferred(self._answer, query)
        d.addCallbacks(lambda value: _reply(request, self._status(value), value),
                       self._failed, errbackArgs=(request,))
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request) -> None:
        if failure.check(QueryError):
            _reply(request, 400, {"error": str(failure.value)})
            return
        self.log.failure("admin request {uri!r} failed", failure, uri=request.uri)
        _reply(request, 500, {"error": f"internal error: {failure.type.__name__}"})


def _reply(request: Request, status: int, value: Any) -> None:
    if request.finished or request._disconnected:
        return
    body = json.dumps(value, separators=(",", ":")).encode()
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def healthz(health: Health) -> JSONResource:
    """``/healthz``: ``health()`` as JSON, 200 when ``ok``, else 503."""
    return JSONResource(lambda query: health(), status=lambda value: 200 if value["ok"] else 503)


def admin_root(registry: CollectorRegistry, health: Health, root: Resource | None = None) -> Resource:
    """``root`` (default: an empty one) with ``/metrics`` and ``/healthz`` mounted."""
    root = root if root is not None else Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    root.putChild(b"healthz", healthz(health))
    return root


class _AdminSite(Site):
    """No access log (a scrape every few seconds is not an event), no tracebacks."""

    noisy = False
    displayTracebacks = False

    def log(self, request: object) -> None:
        pass


class AdminPort:
    """``root`` served over HTTP on ``host``:``port`` (0 picks a free port)."""

    def __init__(self, root: Resource, host: str = "127.0.0.1", port: int = 0, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self._site = CappedFactory(_AdminSite(root), ConnectionCaps(reactor, total=MAX_CONNECTIONS, name="admin port"))
        self._host = host
        self._port = port
        self._reactor = reactor
        self._listening: IListeningPort | None = None

    def start(self) -> None:
        """Listen now; a port in use raises CannotListenError here."""
        self._listening = self._reactor.listenTCP(self._port, self._site, interface=self._host)

    @property
    def url(self) -> str | None:
        """``http://host:port`` while listening, else None."""
        if self._listening is None:
            return None
        host = self._host if ":" not in self._host else f"[{self._host}]"
        return f"http://{host}:{self._listening.getHost().port}"

    def stop(self) -> defer.Deferred:
        listening, self._listening = self._listening, None
        return defer.maybeDeferred(listening.stopListening) if listening is not None else defer.succeed(None)
