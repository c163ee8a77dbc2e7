"""Is a recorded history what a correct exchange could have answered? Pure.

Inputs: the clients' history (``workload.Op``: invoke time, then ok with
the reply, fail, or info), one replica's committed log replayed (``{"index",
"command", "result", "digest"}`` per entry), and every replica's final
``(applied, digest)`` (as each peer reported it, and as each peer's own log
replays).

Linearizability, checked against a witness instead of searched for.
Porcupine and Knossos search for a total order of the operations that a
sequential model accepts and that respects real time (an operation that
completed before another was invoked comes first); the search is
exponential in the worst case.  A Raft state machine *claims* its order: the
committed log.  So this checker verifies the claim, in O(n log n):

1. the order exists: every acknowledged command (a submit, or a cancel
   or an amend of one of the client's orders) is executed in the log
   (else **lost**), exactly once (a (client, request) whose entries carry
   two different order ids is **duplicated**); a definite refusal is never
   executed (**failed-executed**); an ``info`` may or may not be;
2. the model accepts it: the log's result at the executing entry is the
   deterministic matching core's answer at that point (the replay computes
   it), and each acknowledgement must be exactly that answer (else
   **contradicted**: the client read something the order does not give);
3. it respects real time: if ``a`` completed before ``b`` was invoked, ``a``
   executes at a lower index (else **reordered**); an ``info`` never
   completes, so it only constrains what follows its invocation.

If all three hold, the log is a linearization of the history (the check is
complete for *this* witness; a history that fails might have another
linearization, but then the replicas would have agreed on an order that is
not one, which is the bug).  On top, bank-style conservation over the
executed fills: no order filled beyond its quantity (**overfilled**), every
trade between a buy and a sell at the maker's price within the taker's
limit (**bad trades**), prices and quantities as the log's amends left
them; and **divergent** replicas: any final state other
than the log's own ``(applied, digest)``, the hash chain over every command
and result, so equal digests mean equal logs and equal answers.

A *replay* (``Op.replay``: a client sent an acknowledged submit again,
late, on purpose) takes no part in 1-3 as an op of its own: it must be
answered with exactly the reply of the execution (else **contradicted**)
or, if it may be older than the session window (``Op.stale_ok``), refused
as ERR_STALE_REQUEST; any other refusal is **forgotten**; a second
execution shows in the log as **duplicated**, or on a replica as
**divergent**.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from tests.netns.workload import Op


@dataclass
class Verdict:
    """Each list holds the (client, request) keys or names that broke a rule."""

    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    failed_executed: list = field(default_factory=list)
    contradicted: list = field(default_factory=list)
    reordered: list = field(default_factory=list)
    overfilled: list = field(default_factory=list)
    bad_trades: list = field(default_factory=list)
    divergent: list = field(default_factory=list)
    forgotten: list = field(default_factory=list)
    info_executed: int = 0

    @property
    def ok(self) -> bool:
        return not any((self.lost, self.duplicated, self.failed_executed, self.contradicted,
                        self.reordered, self.overfilled, self.bad_trades, self.divergent,
                        self.forgotten))


def check(history: list[Op], log: list[dict], finals: dict[str, tuple[int, str] | None]) -> Verdict:
    """The rules above, over ``history``, the replayed ``log`` and each replica's final state."""
    verdict = Verdict()
    executed = _executions(log, verdict)
    head = (log[-1]["index"], log[-1]["digest"]) if log else (0, "")
    verdict.divergent = sorted(name for name, state in finals.items()
                               if state is None or tuple(state) != head)
    placed: list[tuple[Op, int]] = []
    for op in history:
        key = (op.process, op.request)
        entry = executed.get(key)
        if op.replay:
            _check_replay(op, entry, verdict)
        elif op.outcome == "ok":
            if entry is None:
                verdict.lost.append(key)
                continue
            if op.result != entry["result"]:
                verdict.contradicted.append(key)
            placed.append((op, entry["index"]))
        elif entry is not None and op.outcome == "fail":
            verdict.failed_executed.append(key)
        elif entry is not None and op.outcome == "info":
            verdict.info_executed += 1
            placed.append((op, entry["index"]))
    verdict.reordered = _real_time_violations(placed)
    _conserve(executed.values(), verdict)
    return verdict


def _check_replay(op: Op, entry: dict | None, verdict: Verdict) -> None:
    """A late duplicate of an acknowledged submit: the original answer, or nothing."""
    key = (op.process, op.request)
    if op.outcome == "ok" and (entry is None or op.result != entry["result"]):
        verdict.contradicted.append(key)
    elif op.outcome == "fail" and not (op.stale_ok and (op.error or "").startswith("ERR_STALE_REQUEST")):
        verdict.forgotten.append(key)


def _executions(log: list[dict], verdict: Verdict) -> dict:
    """First entry executing each (client, request), in log order."""
    first: dict[tuple[str, str], dict] = {}
    ids: dict[tuple[str, str], set] = defaultdict(set)
    for entry in log:
        command, result = entry["command"], entry["result"]
        if not command or not isinstance(result, dict) or not result.get("ok"):
            continue
        key = (command["client"], command["request"])
        first.setdefault(key, entry)
        ids[key].add(result["order"]["id"])
    verdict.duplicated = sorted(key for key, found in ids.items() if len(found) > 1)
    return first


def _real_time_violations(placed: list[tuple[Op, int]]) -> list:
    """Ops executed at or below an index that completed before they were invoked."""
    done = sorted((op.completed, index) for op, index in placed
                  if op.outcome == "ok" and op.completed is not None)
    times = [t for t, _ in done]
    highest, running = [], 0
    for _, index in done:
        running = max(running, index)
        highest.append(running)
    violations = []
    for op, index in placed:
        before = bisect.bisect_left(times, op.invoked)  # completed strictly before the invoke
        if before and highest[before - 1] >= index:
            violations.append((op.process, op.request))
    return sorted(violations)


def _conserve(executions: Iterable[dict], verdict: Verdict) -> None:
    """No order filled beyond its quantity; every fill a buy against a sell
    at the maker's price, within the taker's limit, each as the commands
    executed before had left them (an amend moves a price or a quantity).
    ``executions``: the first entry executing each (client, request), in
    log order; a later one is the same answer again, from the session table."""
    latest: dict[str, dict] = {}  # each order as the last command executing on it left it
    filled: dict[str, Decimal] = defaultdict(Decimal)
    for entry in executions:
        result = entry["result"]
        order = result["order"]
        for fill in result["fills"]:
            maker = latest.get(fill["maker_order"])
            taker = order if fill["taker_order"] == order["id"] else None
            quantity, price = Decimal(fill["quantity"]), Decimal(fill["price"])
            if maker is None or taker is None or maker["side"] == taker["side"] \
                    or price != Decimal(maker["price"]) \
                    or (price > Decimal(taker["price"]) if taker["side"] == "buy"
                        else price < Decimal(taker["price"])):
                verdict.bad_trades.append(fill["trade_id"])
                continue
            filled[maker["id"]] += quantity
            filled[taker["id"]] += quantity
        latest[order["id"]] = order
    verdict.overfilled = sorted(order_id for order_id, total in filled.items()
                                if total > Decimal(latest[order_id]["quantity"]))


def longest_gap(history: list[Op]) -> float:
    """The longest time, in seconds, in which no operation was acknowledged
    while the workload ran: the worst unavailability a client saw."""
    if not history:
        return 0.0
    acks = sorted(op.completed for op in history if op.outcome == "ok")
    start = min(op.invoked for op in history)
    end = max(op.completed or op.invoked for op in history)
    points = [start, *acks, end]
    return max(b - a for a, b in zip(points, points[1:]))
