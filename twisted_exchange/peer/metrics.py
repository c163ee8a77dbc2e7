"""A peer's Prometheus metrics, in a registry of its own.

Cheap on the hot path (thousands of requests a second): what happens per
request, per fsync and per trade is counted in plain numbers
(:class:`_Histogram`, dicts of ints) that a collector turns into metric
families at scrape time, because prometheus_client's Counter and Histogram
take a lock per increment (three per observation), a few percent of a
peer's CPU; everything that is state (Raft term, commit and applied index,
leadership, resting orders per symbol, health) is read at scrape time too,
so it costs nothing between scrapes.  The WAL reports each
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
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twisted_exchange.adminport import process_registry
from twisted_exchange.connections import connection_families
from twisted_exchange.peer.protocol import ACTIONS
from twisted_exchange.replication.raft import LEADER
from twisted_exchange.replication.replica import Replica

PREFIX = "twisted_exchange"
RPC = f"{PREFIX}_rpc"  # the Grenache RPC server's connection families (connections.py)
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

    def connections(self) -> tuple[int, int, int]: ...


class PeerMetrics:
    """The registry of one peer, and the hooks that feed it."""

    def __init__(self, peer: Observed, now: Callable[[], float] = time.perf_counter) -> None:
        self.registry = process_registry()
        self._now = now
        self._requests: dict[tuple[str, str], int] = {}  # (action, outcome) -> answered
        self._request_seconds: dict[str, _Histogram] = {}  # action -> times
        self._trades: dict[str, int] = {}  # symbol (MAX_SYMBOLS of them, then OTHER) -> trades
        self._fsync_seconds = _Histogram(FSYNC_BUCKETS)
        self._snapshots = Counter(f"{PREFIX}_snapshots", "Background snapshots by outcome: compacted "
                                  "the log, stale (a snapshot installed meanwhile covered it) or failed.",
                                  ["outcome"], registry=self.registry)
        self._snapshot_seconds = Histogram(f"{PREFIX}_snapshot_seconds", "Seconds from forking a "
                                           "snapshot writer to compacting to its snapshot.",
                                           buckets=SNAPSHOT_BUCKETS, registry=self.registry)
        for outcome in SNAPSHOT_OUTCOMES:
            self._snapshots.labels(outcome)
        self.registry.register(_StateCollector(peer))
        self.registry.register(self)  # collect(): the counts below, as families

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
            trades = self._trades
            for fill in result["fills"]:
                symbol = fill["symbol"]
                if symbol not in trades and len(trades) >= MAX_SYMBOLS:
                    symbol = OTHER
                trades[symbol] = trades.get(symbol, 0) + 1

    def fsynced(self, seconds: float) -> None:
        """FileStorage's ``on_fsync``."""
        self._fsync_seconds.observe(seconds)

    def snapshotted(self, outcome: str, seconds: float | None = None) -> None:
        """A background snapshot ended (one of SNAPSHOT_OUTCOMES); ``seconds`` if it compacted."""
        self._snapshots.labels(outcome).inc()
        if seconds is not None:
            self._snapshot_seconds.observe(seconds)

    def _settled(self, result: Any, action: str, started: float) -> Any:
        self._answered(action, started, _outcome(result.value) if isinstance(result, Failure) else "ok")
        return result

    def _answered(self, action: str, started: float, outcome: str) -> None:
        key = (action, outcome)
        self._requests[key] = self._requests.get(key, 0) + 1
        times = self._request_seconds.get(action)
        if times is None:
            times = self._request_seconds[action] = _Histogram(REQUEST_BUCKETS)
        times.observe(self._now() - started)

    def collect(self) -> Iterator[Metric]:
        """The counted metrics as families, for the scrape."""
        requests = CounterMetricFamily(f"{PREFIX}_requests", "Grenache RPC requests answered, by action "
                                       "and outcome.", labels=["action", "outcome"])
        for (action, outcome), count in self._requests.items():
            requests.add_metric([action, outcome], count)
        yield requests
        seconds = HistogramMetricFamily(f"{PREFIX}_request_seconds", "Seconds from receiving a request to "
                                        "its answer (commands: until applied here).", labels=["action"])
        for action, times in self._request_seconds.items():
            times.add_to(seconds, [action])
        yield seconds
        trades = CounterMetricFamily(f"{PREFIX}_trades", "Trades applied by this peer since it started, "
                                     "by symbol.", labels=["symbol"])
        for symbol, count in self._trades.items():
            trades.add_metric([symbol], count)
        yield trades
        fsyncs = HistogramMetricFamily(f"{PREFIX}_fsync_seconds", "Seconds per fsync of the Raft log and "
                                       "its atomically replaced files.")
        self._fsync_seconds.add_to(fsyncs, [])
        yield fsyncs


class _Histogram:
    """Observations by bucket (``le`` bounds, then +Inf) and their sum."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # the first bound >= value, as Prometheus's le
        self._sum += value

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), self._counts):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric(labels, buckets, self._sum)


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
        yield from connection_families(RPC, "Grenache RPC")

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
        yield from connection_families(RPC, "Grenache RPC", self._peer.connections())


def _resting() -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_resting_orders", "Orders resting in this peer's books, by symbol.",
                             labels=["symbol"])
