"""The peer's admin port: metrics, health, and a live dashboard with its JSON API.

Routes (GET only, on ``--admin-port``, bound to ``--host``):

``/``
    The dashboard: the static files of ``twisted_exchange/peer/dashboard/``,
    which poll the API below once a second.
``/metrics``, ``/healthz``
    See :mod:`twisted_exchange.adminport` and :mod:`twisted_exchange.peer.metrics`.
``/api/book?symbol=BTCUSD&depth=20``, ``/api/trades?symbol=BTCUSD&limit=30``
    This peer's book and latest trades, as the RPC queries answer them.
``/api/symbols``
    Symbols with resting orders, busiest first.
``/api/cluster``
    Every peer's status, with its agreement with this peer's state.

The cluster view is gathered here, over the Grenache calls this peer already
makes to the others (mutual TLS in secure mode), so the browser talks to one
admin port and the dashboard works wherever the peers reach each other.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.static import File

from twisted_exchange.adminport import JSONResource, QueryError, admin_root
from twisted_exchange.core.commands import is_symbol
from twisted_exchange.peer.history import Digests
from twisted_exchange.peer.metrics import PeerMetrics
from twisted_exchange.peer.protocol import DEFAULT_SYMBOL, MAX_DEPTH, MAX_TRADES

#: The dashboard's static files, shipped in the package (setup.py package_data).
DASHBOARD = Path(str(files("twisted_exchange.peer").joinpath("dashboard")))
#: Status fields of each peer that the cluster view shows.
CLUSTER_FIELDS = ("role", "term", "leader", "commit", "applied", "last_index", "digest", "health",
                  "applied_per_second", "admin")

SELF, AGREES, DIVERGED, UNCONFIRMED = "self", "agrees", "diverged", "unconfirmed"


class Peer(Protocol):
    """What the admin port needs from the peer service."""

    node_id: str
    digests: Digests
    metrics: PeerMetrics

    @property
    def exchange(self) -> Any: ...
    def health(self) -> dict: ...
    def cluster_status(self) -> Deferred: ...


def admin_resource(peer: Peer) -> Resource:
    """The whole admin tree of ``peer``."""
    api = Resource()
    dashboard = DashboardAPI(peer)
    for name, answer in (("book", dashboard.book), ("trades", dashboard.trades),
                         ("symbols", dashboard.symbols), ("cluster", dashboard.cluster)):
        api.putChild(name.encode(), JSONResource(answer))
    root = admin_root(peer.metrics.registry, peer.health, File(str(DASHBOARD)))
    root.putChild(b"api", api)
    return root


class DashboardAPI:
    """The JSON the dashboard polls; each method takes the parsed query string."""

    def __init__(self, peer: Peer) -> None:
        self._peer = peer
        self._agreement = Agreement(peer.node_id, peer.digests)

    def book(self, query: dict[str, str]) -> dict:
        symbol = _symbol(query)
        book = self._peer.exchange.book(symbol, depth=_bounded(query, "depth", 20, MAX_DEPTH))
        return {"peer": self._peer.node_id, "symbol": symbol, **book}

    def trades(self, query: dict[str, str]) -> dict:
        symbol = _symbol(query)
        trades = self._peer.exchange.trades(symbol, limit=_bounded(query, "limit", 30, MAX_TRADES))
        return {"peer": self._peer.node_id, "symbol": symbol, "trades": trades}

    def symbols(self, query: dict[str, str]) -> dict:
        counts = self._peer.exchange.resting_by_symbol()
        return {"peer": self._peer.node_id,
                "symbols": sorted(counts, key=lambda symbol: (-counts[symbol], symbol))}

    def cluster(self, query: dict[str, str]) -> Deferred:
        return self._peer.cluster_status().addCallback(self._cluster)

    def _cluster(self, statuses: dict[str, Any]) -> dict:
        own = statuses[self._peer.node_id]
        self._agreement.own = (own["applied"], own["digest"])
        peers = []
        for peer_id, status in statuses.items():
            row: dict[str, Any] = {"id": peer_id}
            if _is_status(status):
                row.update({field: status.get(field) for field in CLUSTER_FIELDS})
                row["agreement"] = self._agreement.judge(peer_id, status["applied"], status["digest"])
            else:
                row["error"] = status if isinstance(status, str) else "unexpected status reply"
            peers.append(row)
        return {"peer": self._peer.node_id, "peers": peers}


class Agreement:
    """Does each peer's digest match this peer's at the same applied index?

    Digests chain every applied command and result, so two peers agree at
    index ``i`` exactly when their digests after ``i`` are equal.  A peer at
    or behind this one is checked against this peer's :class:`Digests`; one
    ahead of it (the leader, seen from a follower under load) cannot be yet,
    so its report is kept and checked at a later poll, once this peer has
    caught up: ``unconfirmed`` until then.
    """

    def __init__(self, node_id: str, digests: Digests) -> None:
        self._node_id = node_id
        self._digests = digests
        self._ahead: dict[str, tuple[int, str]] = {}
        self.own: tuple[int, str] = (0, "")

    def judge(self, peer_id: str, applied: int, digest: str) -> str:
        if peer_id == self._node_id:
            return SELF
        verdict = self._check(applied, digest)
        if verdict is not None:
            self._ahead.pop(peer_id, None)
            return verdict
        earlier = self._ahead.get(peer_id)
        verdict = self._check(*earlier) if earlier is not None else None
        if verdict is not None or earlier is None:
            self._ahead[peer_id] = (applied, digest)
        return verdict or UNCONFIRMED

    def _check(self, applied: int, digest: str) -> str | None:
        ours = self.own[1] if applied == self.own[0] else self._digests.at(applied)
        if ours is None:
            return None
        return AGREES if ours == digest else DIVERGED


def _is_status(status: Any) -> bool:
    return (isinstance(status, dict) and type(status.get("applied")) is int
            and isinstance(status.get("digest"), str))


def _symbol(query: dict[str, str]) -> str:
    symbol = query.get("symbol", DEFAULT_SYMBOL)
    if not is_symbol(symbol):
        raise QueryError("symbol must match [A-Z0-9]{2,12}")
    return symbol


def _bounded(query: dict[str, str], name: str, default: int, most: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and 0 < int(text) <= most):
        raise QueryError(f"{name} must be an integer from 1 to {most}")
    return int(text)
