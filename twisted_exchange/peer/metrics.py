"""A peer's Prometheus metrics, in a registry of its own.

Cheap on the hot path (thousands of requests a second): a request costs one
counter increment and one histogram observation on label children bound
once; everything that is state (Raft term, commit and applied index,
leadership, resting orders per symbol, health) is read by a collector at
scrape time, so it costs nothing between scrapes.  The WAL reports each
fsync's duration through FileStorage's ``on_fsync`` hook (the storage knows
nothing of Prometheus), trades are counted as entries are applied
(Replica's ``on_apply``), and the peer reports each background snapshot.

Label values are bounded, whatever clients send: ``action`` is one of the
protocol's actions (else ``invalid``); ``outcome`` is ``ok`` or an ``ERR_``
code of ours (a failure without one is ``ERR_INTERNAL``); ``symbol`` takes
the first :data:`MAX_SYMBOLS` symbols seen (for resting orders: the
busiest), the rest summed as ``other``, since any client can open a book.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_exchange.peer.protocol import ACTIONS
from twisted_exchange.replication.raft import LEADER
from twisted_exchange.replication.replica import Replica

PREFIX = "twisted_exchange"
#: Symbols with a label of their own; the others are summed as "other".
MAX_SYMBOLS = 100
OTHER = "other"
REQUEST_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
FSYNC_BUCKETS = (.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1)
SNAPSHOT_BUCKETS = (.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60)
#: Outcomes of a background snapshot (peer/compactor.py).
SNAPSHOT_OUTCOMES = ("compacted", "stale", "failed")

Handler = Callable[..., Any]


class Observed(Protocol):
    """What the scrape-time collector reads from the peer service."""

    replica: Replica

    def health(self) -> dict: ...


class PeerMetrics:
    """The registry of one peer, and the hooks that feed it."""

    def __init__(self, peer: Observed, now: Callable[[], float] = time.perf_counter) -> None:
        self.registry = CollectorRegistry()
        self._now = now
        self._requests = Counter(f"{PREFIX}_requests", "Grenache RPC requests answered, by action and outcome.",
                                 ["action", "outcome"], registry=self.registry)
        self._request_seconds = Histogram(f"{PREFIX}_request_seconds",
                                          "Seconds from receiving a request to its answer (commands: "
                                          "until applied here).", ["action"], buckets=REQUEST_BUCKETS,
                                          registry=self.registry)
        self._trades = Counter(f"{PREFIX}_trades", "Trades applied by this peer since it started, by symbol.",
                               ["symbol"], registry=self.registry)
        self._fsync_seconds = Histogram(f"{PREFIX}_fsync_seconds", "Seconds per fsync of the Raft log "
                                        "and its atomically replaced files.", buckets=FSYNC_BUCKETS,
                                        registry=self.registry)
        self._snapshots = Counter(f"{PREFIX}_snapshots", "Background snapshots by outcome: compacted "
                                  "the log, stale (a snapshot installed meanwhile covered it) or failed.",
                                  ["outcome"], registry=self.registry)
        self._snapshot_seconds = Histogram(f"{PREFIX}_snapshot_seconds", "Seconds from forking a "
                                           "snapshot writer to compacting to its snapshot.",
                                           buckets=SNAPSHOT_BUCKETS, registry=self.registry)
        for outcome in SNAPSHOT_OUTCOMES:
            self._snapshots.labels(outcome)
        self.registry.register(_StateCollector(peer))
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}
        self._symbols: dict[str, Any] = {}

    # -- hooks -------------------------------------------------------------------

    def metered(self, handler: Handler) -> Handler:
        """``handler`` (an RPC handler), counting and timing every call."""
        def call(key: str, payload: Any, *caller: Any) -> Any:
            started = self._now()
            action = payload.get("action") if type(payload) is dict else None
            if action not in ACTIONS:
                action = "invalid"
            try:
                result = handler(key, payload, *caller)
            except Exception as error:
                self._answered(action, started, _outcome(error))
                raise
            if isinstance(result, Deferred):
                return result.addBoth(self._settled, action, started)
            self._answered(action, started, "ok")
            return result
        return call

    def applied(self, index: int, command: dict | None, result: dict | None) -> None:
        """Replica's ``on_apply``: count the trades of an applied entry."""
        if result is not None and result.get("fills"):
            for fill in result["fills"]:
                self._symbol_trades(fill["symbol"]).inc()

    def fsynced(self, seconds: float) -> None:
        """FileStorage's ``on_fsync``."""
        self._fsync_seconds.observe(seconds)

    def snapshotted(self, outcome: str, seconds: float | None = None) -> None:
        """A background snapshot ended (one of SNAPSHOT_OUTCOMES); ``seconds`` if it compacted."""
        self._snapshots.labels(outcome).inc()
        if seconds is not None:
            self._snapshot_seconds.observe(seconds)

    # -- label children, bound once -------------------------------------------------

    def _settled(self, result: Any, action: str, started: float) -> Any:
        self._answered(action, started, _outcome(result.value) if isinstance(result, Failure) else "ok")
        return result

    def _answered(self, action: str, started: float, outcome: str) -> None:
        key = (action, outcome)
        counter = self._outcomes.get(key)
        if counter is None:
            counter = self._outcomes[key] = self._requests.labels(action, outcome)
        counter.inc()
        duration = self._durations.get(action)
        if duration is None:
            duration = self._durations[action] = self._request_seconds.labels(action)
        duration.observe(self._now() - started)

    def _symbol_trades(self, symbol: str) -> Any:
        counter = self._symbols.get(symbol)
        if counter is None:
            if len(self._symbols) >= MAX_SYMBOLS:
                symbol = OTHER
            counter = self._symbols.get(symbol) or self._trades.labels(symbol)
            self._symbols[symbol] = counter
        return counter


def _outcome(error: BaseException) -> str:
    code = getattr(error, "code", None)
    return code if isinstance(code, str) and code.startswith("ERR_") else "ERR_INTERNAL"


class _StateCollector:
    """Gauges read from the peer at scrape time."""

    _GAUGES = (
        ("raft_term", "The Raft term this peer is in."),
        ("raft_commit_index", "The highest log index this peer knows is committed."),
        ("raft_applied_index", "The highest log index applied to this peer's book."),
        ("raft_last_index", "The index of the last entry in this peer's log."),
        ("raft_is_leader", "1 while this peer is the Raft leader, else 0."),
        ("healthy", "1 while this peer is healthy as `status` and /healthz say, else 0."),
    )

    def __init__(self, peer: Observed) -> None:
        self._peer = peer

    def describe(self) -> Iterator[Metric]:
        """The families without reading the peer (registration happens before it runs)."""
        for name, text in self._GAUGES:
            yield GaugeMetricFamily(f"{PREFIX}_{name}", text)
        yield _resting()

    def collect(self) -> Iterator[Metric]:
        replica = self._peer.replica
        node = replica.node
        values = (node.term, node.commit, replica.state_machine.applied, node.last_index,
                  int(node.role == LEADER), int(self._peer.health()["ok"]))
        for (name, text), value in zip(self._GAUGES, values):
            yield GaugeMetricFamily(f"{PREFIX}_{name}", text, value=value)
        resting = _resting()
        counts = sorted(replica.exchange.resting_by_symbol().items(), key=lambda item: (-item[1], item[0]))
        for symbol, count in counts[:MAX_SYMBOLS]:
            resting.add_metric([symbol], count)
        if len(counts) > MAX_SYMBOLS:
            resting.add_metric([OTHER], sum(count for _, count in counts[MAX_SYMBOLS:]))
        yield resting


def _resting() -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_resting_orders", "Orders resting in this peer's books, by symbol.",
                             labels=["symbol"])
