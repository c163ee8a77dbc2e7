"""A grape's Prometheus metrics and health, for its admin port.

API requests are counted as they are answered (one counter increment on a
child bound once); the DHT's state (nodes in the routing table,
announcements stored) and the HTTP API's connections (open, refused and
evicted at its caps, :mod:`twisted_exchange.connections`) are read at
scrape time.  ``endpoint`` is one of the
four Grape API endpoints or ``unknown``, so no request can add a label.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from twisted_exchange.adminport import process_registry
from twisted_exchange.connections import ConnectionCaps, connection_families
from twisted_exchange.grape.dht import DHTNode

PREFIX = "twisted_exchange_grape"
API = f"{PREFIX}_api"  # the HTTP API's connection families
ENDPOINTS = frozenset({"announce", "lookup", "put", "get"})


class GrapeMetrics:
    """The registry of one grape, the API's request hook, and its health."""

    def __init__(self, dht: DHTNode, caps: ConnectionCaps) -> None:
        self.registry = process_registry()
        self._dht = dht
        self._requests = Counter(f"{PREFIX}_requests", "Grape HTTP API requests answered, by endpoint and outcome.",
                                 ["endpoint", "outcome"], registry=self.registry)
        self._children: dict[tuple[str, str], Any] = {}
        self.registry.register(_Collector(dht, caps))

    def count(self, endpoint: str, ok: bool) -> None:
        """GrapeAPI's hook: one request to ``endpoint`` was answered."""
        key = (endpoint if endpoint in ENDPOINTS else "unknown", "ok" if ok else "error")
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._requests.labels(*key)
        child.inc()

    def health(self) -> dict:
        """``ok`` unless a grape told to bootstrap knows no other DHT node (it
        then serves only what is announced on itself)."""
        problems = []
        if self._dht.bootstrap and not len(self._dht.routing):
            problems.append("no other DHT node known (bootstrap nodes unreachable?)")
        return {"ok": not problems, "problems": problems}


class _Collector:
    """Families read from the DHT node and the API's connection caps at scrape time."""

    def __init__(self, dht: DHTNode, caps: ConnectionCaps) -> None:
        self._dht = dht
        self._caps = caps

    def describe(self) -> Iterator[Metric]:
        yield from self._dht_families(None, None)
        yield from connection_families(API, "Grape HTTP API")

    def collect(self) -> Iterator[Metric]:
        yield from self._dht_families(len(self._dht.routing), len(self._dht.peers))
        yield from connection_families(API, "Grape HTTP API", self._caps.counts())

    @staticmethod
    def _dht_families(nodes: int | None, announcements: int | None) -> Iterator[Metric]:
        yield GaugeMetricFamily(f"{PREFIX}_routing_nodes", "Other DHT nodes in this grape's routing table.",
                                value=nodes)
        yield GaugeMetricFamily(f"{PREFIX}_announcements", "Announced (service, address) pairs this grape "
                                "stores, expired ones until they are swept.", value=announcements)
