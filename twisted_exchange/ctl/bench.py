"""``exchangectl bench``: concurrent clients placing crossing orders on every peer.

``Workload`` makes the orders (seeded, so a run can be repeated): buys priced
from ``mid`` up and sells from ``mid`` down, so nearly every order trades;
or, ``resting``, buys below and sells above ``mid``, so none does and the
book grows by every order (what a big book costs: snapshots, memory).
``Recorder`` keeps each committed order's latency in an HdrHistogram
(microseconds, 3 significant digits) plus the (time, latency) points of the
plot, and counts failures by error code; and each order's latency under
the peer it was sent to (a follower's orders take two hops more than the
leader's: see ctl/BENCHMARKS.md).  ``load`` is the Twisted part: N
clients, each with one order in flight, sent round-robin over the peers;
bench-cluster runs the same clients on ctl/loadgen.py, which costs the
machine less CPU per order but does not look a moved peer up again.
"""
from __future__ import annotations

import math
import random
import re
from typing import Any, Callable, Sequence

from hdrh.histogram import HdrHistogram
from twisted.internet import defer, task

from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.ids import new_request_id

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
MAX_LATENCY_US = 60_000_000
_CODE = re.compile(r"ERR_[A-Z0-9_]+")


class Workload:
    """Crossing (or ``resting``) limit orders for client ``client``, reproducible from ``seed``."""

    def __init__(self, client: str, seed: int, symbol: str = "BTCUSD", mid: int = 100,
                 resting: bool = False) -> None:
        self.client = client
        self._random = random.Random(seed)
        self._symbol = symbol
        self._mid = mid
        self._resting = resting

    def next_order(self) -> dict:
        """The next ``submit`` payload: a buy at mid..mid+2 or a sell at mid-2..mid;
        ``resting``: a buy at 0.25..mid-2.25 or a sell at mid+2.25..2*mid-0.25."""
        side = self._random.choice(("buy", "sell"))
        if self._resting:
            offset = -self._random.randint(9, self._mid * 4 - 1)
        else:
            offset = self._random.randint(0, 8)
        ticks = self._mid * 4 + (offset if side == "buy" else -offset)
        return {"action": "submit", "client": self.client, "request": new_request_id(),
                "symbol": self._symbol, "side": side, "type": "limit",
                "price": _quarter(ticks), "quantity": str(self._random.randint(1, 5)),
                "tif": "gtc", "post_only": False}


def bench_clients(clients: int, seed: int, symbol: str = "BTCUSD", resting: bool = False) -> list[Workload]:
    """The workloads of clients ``bench0``..: the same orders for the same seed,
    whichever load generator sends them (``load`` here, or ctl/loadgen.py)."""
    return [Workload(f"bench{number}", seed * 1_000_003 + number, symbol, resting=resting)
            for number in range(clients)]


def _quarter(quarters: int) -> str:
    whole, part = divmod(quarters, 4)
    return str(whole) if not part else f"{whole}.{part * 25:02d}".rstrip("0")


class Recorder:
    """Latencies and failures of one benchmark run (pure: times are given to it)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.histogram = HdrHistogram(1, MAX_LATENCY_US, 3)
        self.points: list[tuple[float, float]] = []
        self.by_peer: dict[str, list[float]] = {}  # the latencies (ms) of the orders sent to each peer
        self.errors: dict[str, int] = {}
        self.ended = started

    def committed(self, sent: float, done: float, peer: str | None = None) -> None:
        latency_us = max(1, min(MAX_LATENCY_US, round((done - sent) * 1e6)))
        self.histogram.record_value(latency_us)
        self.points.append((sent - self.started, latency_us / 1000))
        if peer is not None:
            self.by_peer.setdefault(peer, []).append(latency_us / 1000)
        self.ended = max(self.ended, done)

    def failed(self, error: BaseException, done: float) -> None:
        found = _CODE.search(str(error))
        code = found[0] if found else "ERR_OTHER"
        self.errors[code] = self.errors.get(code, 0) + 1
        self.ended = max(self.ended, done)

    @property
    def count(self) -> int:
        return self.histogram.get_total_count()

    def summary(self) -> dict[str, Any]:
        """Throughput and latency figures (milliseconds) as JSON-able data."""
        elapsed = max(self.ended - self.started, 1e-9)
        latency = {f"p{p:g}": self.histogram.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
        latency["max"] = self.histogram.get_max_value() / 1000 if self.count else 0.0
        latency["mean"] = round(self.histogram.get_mean_value() / 1000, 3) if self.count else 0.0
        return {"committed": self.count, "failed": sum(self.errors.values()), "errors": dict(self.errors),
                "seconds": round(elapsed, 3), "orders_per_second": round(self.count / elapsed, 1),
                "latency_ms": latency,
                "latency_ms_by_peer": {peer: _p50_p99(latencies) for peer, latencies in sorted(self.by_peer.items())}}


def _p50_p99(values: list[float]) -> dict[str, float]:
    """The nearest-rank p50 and p99 of ``values`` (after the run: it sorts them, once)."""
    ordered = sorted(values)
    return {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in (50, 99)}


def report(summary: dict[str, Any]) -> str:
    """The human form of ``Recorder.summary()``."""
    latency = summary["latency_ms"]
    lines = [f"committed {summary['committed']} orders in {summary['seconds']:.2f}s:"
             f" {summary['orders_per_second']:.0f} orders/s",
             "latency ms: " + "  ".join(f"{k} {v:.2f}" for k, v in latency.items())]
    if summary.get("latency_ms_by_peer"):
        lines.append(by_peer(summary["latency_ms_by_peer"]))
    if summary["failed"]:
        lines.append(f"failed {summary['failed']}: " + ", ".join(
            f"{code} x{n}" for code, n in sorted(summary["errors"].items())))
    return "\n".join(lines)


def by_peer(latencies: dict[str, dict[str, float]], marked: str | None = None, mark: str = "") -> str:
    """One line of each peer's p50 and p99 (ms), ``marked`` followed by ``mark``."""
    return "by peer sent to: " + ", ".join(
        f"{peer}{mark if peer == marked else ''} p50 {figures['p50']:.2f} p99 {figures['p99']:.2f}"
        for peer, figures in latencies.items())


def require_plotting() -> None:
    """CtlError unless matplotlib can be imported: checked before a run, not after it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CtlError("--plot needs matplotlib (pip install 'twisted-exchange[plot]')") from None


def plot(recorder: Recorder, path: str, parameters: str) -> None:
    """Latency over time with its percentile lines, and throughput per second,
    as a PNG titled with the run's ``parameters`` (Agg backend: no display needed)."""
    require_plotting()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (latency, throughput) = plt.subplots(2, 1, figsize=(10, 7), sharex=True,
                                                 gridspec_kw={"height_ratios": [3, 1]})
    if recorder.points:
        times, latencies = zip(*recorder.points)
        latency.scatter(times, latencies, s=2, alpha=0.4, color="tab:blue")
        for percentile, color in zip(PERCENTILES, ("tab:green", "tab:orange", "tab:red", "tab:purple")):
            value = recorder.histogram.get_value_at_percentile(percentile) / 1000
            latency.axhline(value, color=color, linewidth=1, label=f"p{percentile:g} {value:.2f} ms")
        latency.legend(loc="upper right")
        seconds = [int(t) for t in times]
        counts = [seconds.count(second) for second in range(max(seconds) + 1)]
        throughput.bar(range(len(counts)), counts, width=1.0, align="edge", color="tab:gray")
    latency.set_ylabel("latency (ms)")
    throughput.set_ylabel("orders/s")
    throughput.set_xlabel("seconds since start")
    summary = recorder.summary()
    latency.set_title(f"exchangectl bench: {parameters}\n{summary['committed']} committed,"
                      f" {summary['failed']} failed, {summary['orders_per_second']:.0f} orders/s")
    try:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    except OSError as e:
        raise CtlError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        plt.close(figure)


async def load(peers: Any, names: Sequence[str], clients: int, *, duration: float | None,
               count: int | None, reactor: Any, seed: int = 1, symbol: str = "BTCUSD",
               progress: Callable[[Recorder, float, bool], None] = lambda recorder, done, final: None,
               interval: float = 0.5, credential_of: Callable[[str], Any] | None = None,
               on_start: Callable[[], None] = lambda: None, resting: bool = False) -> Recorder:
    """Run ``clients`` clients, one order in flight each, until ``duration``
    seconds passed or ``count`` orders were sent; the finished Recorder.
    The clock starts once every client has its connections (``_connect``);
    ``on_start()`` is called then.

    ``peers.route(peer, **send_as)`` gives a client its way to a peer (see
    ``Peers.route``); a client keeps it until a call over it fails, then
    looks the peer up again for its next order there.

    ``credential_of(name)`` (secure mode) is client ``name``'s credential: each
    client sends as itself, as only its own credential may.

    ``progress(recorder, fraction_done, final)`` is called every ``interval``
    seconds, and once with ``final`` true at the end.  ``resting``: see Workload.
    """
    workloads = bench_clients(clients, seed, symbol, resting)
    senders = [{"credential": credential_of(w.client)} if credential_of else {} for w in workloads]
    routes = await defer.gatherResults([defer.ensureDeferred(_connect(peers, names, send_as))
                                        for send_as in senders], consumeErrors=True)
    on_start()
    recorder = Recorder(reactor.seconds())
    deadline = recorder.started + duration if duration is not None else None
    sent = [0]

    def fraction() -> float:
        if count is not None:
            return min(1.0, sent[0] / count)
        return min(1.0, (reactor.seconds() - recorder.started) / duration)

    def more() -> bool:
        if count is not None and sent[0] >= count:
            return False
        if deadline is not None and reactor.seconds() >= deadline:
            return False
        sent[0] += 1
        return True

    ticker = task.LoopingCall(lambda: progress(recorder, fraction(), False))
    ticker.clock = reactor
    ticker.start(interval, now=False)
    try:
        await defer.gatherResults(
            [_Client(peers, names, routes[n], workloads[n], senders[n], recorder, reactor, more, n).run()
             for n in range(clients)], consumeErrors=True)
    finally:
        ticker.stop()
    progress(recorder, 1.0, True)
    return recorder


class _Client:
    """One bench client: its next order goes out when the last one is
    answered, to the next peer in turn.  Callbacks, not a coroutine: the
    CPU a client spends per order is CPU the peers on the machine lack."""

    def __init__(self, peers: Any, names: Sequence[str], routes: dict[str, Any], workload: Workload,
                 send_as: dict, recorder: Recorder, reactor: Any, more: Callable[[], bool],
                 turn: int) -> None:
        self._peers = peers
        self._names = names
        self._routes = routes
        self._workload = workload
        self._send_as = send_as
        self._recorder = recorder
        self._reactor = reactor
        self._more = more
        self._turn = turn
        self._done: defer.Deferred[None] = defer.Deferred()

    def run(self) -> defer.Deferred[None]:
        """Send until ``more()`` says stop; fires then (fails on a bug's exception)."""
        self._next()
        return self._done

    def _next(self, _: Any = None) -> None:
        while not self._done.called and self._more():
            d = self._send()
            if not d.called:
                d.addCallbacks(self._next, self._done.errback)
                return
            d.addErrback(self._done.errback)  # answered at once: loop rather than recurse
        if not self._done.called:
            self._done.callback(None)

    def _send(self) -> defer.Deferred[None]:
        peer = self._names[self._turn % len(self._names)]
        self._turn += 1
        order = self._workload.next_order()
        started = self._reactor.seconds()
        route = self._routes.get(peer)
        d = route.call(order) if route is not None else defer.ensureDeferred(self._rerouted(peer, order))
        return d.addCallbacks(self._committed, self._failed, callbackArgs=(started, peer),
                              errbackArgs=(peer,))

    async def _rerouted(self, peer: str, order: dict) -> Any:
        route = self._routes[peer] = await self._peers.route(peer, **self._send_as)
        return await route.call(order)

    def _committed(self, _: Any, started: float, peer: str) -> None:
        self._recorder.committed(started, self._reactor.seconds(), peer)

    def _failed(self, failure: Any, peer: str) -> None:
        failure.trap(CtlError)
        self._routes[peer] = None  # whatever went wrong (a peer moved, or another took its address)
        self._recorder.failed(failure.value, self._reactor.seconds())


async def _connect(peers: Any, names: Sequence[str], send_as: dict) -> dict[str, Any]:
    """Each peer's route for this client, used once (a ``status`` call) before
    the clock starts: a client keeps its connections, so their set-up (a TLS
    handshake each, hundreds at once at the start of a run) is not part of an
    order's latency.  A peer that does not answer now has no route yet."""
    routes: dict[str, Any] = {}
    for peer in names:
        try:
            route = await peers.route(peer, **send_as)
            await route.call({"action": "status"})
        except CtlError:
            continue
        routes[peer] = route
    return routes
