"""The cluster-wide invariants the simulator checks after every step."""
from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

from twisted_exchange.core import ExchangeError
from twisted_exchange.core.commands import canonical_command
from twisted_exchange.replication.configuration import Configuration, from_json
from twisted_exchange.replication.raft import RaftNode
from twisted_exchange.replication.sessions import REQUEST_REUSED, STALE_REQUEST, TOO_MANY_CLIENTS

SESSION_REFUSALS = (STALE_REQUEST, REQUEST_REUSED, TOO_MANY_CLIENTS)


class Violation(AssertionError):
    """A safety or liveness property failed."""


class Checker:
    """The cluster-wide invariants, checked incrementally as nodes report."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, tuple[int, dict | None, dict | None]] = {}   # index -> (term, command, config)
        self.configurations: dict[int, dict] = {}   # index -> config of each committed configuration entry
        self.links: dict[tuple[int, int], tuple[dict | None, int | None]] = {}  # (index, term) -> (command, prev term)
        self.applied: dict[int, tuple[dict | None, dict | None]] = {}   # index -> (command, result)
        self.hashes: dict[int, str] = {}
        self.quantity: dict[str, Decimal] = {}
        self.filled: Counter = Counter()
        self.executed: set[tuple[str, str]] = set()
        self.complete: set[int] = set()   # terms whose leader was checked for completeness

    def leader(self, node: RaftNode) -> None:
        """At most one leader per term; a new leader's log holds every committed entry."""
        known = self.leaders.setdefault(node.term, node.id)
        if known != node.id:
            raise Violation(f"two leaders in term {node.term}: {known} and {node.id}")
        if node.term in self.complete:
            return
        self.complete.add(node.term)
        for index, (term, _, _) in self.committed.items():
            if index > node.snap_index and node.term_at(index) != term:
                raise Violation(f"leader {node.id} of term {node.term} lacks committed entry {index}")

    def persisted(self, node: RaftNode, entries: list[dict]) -> None:
        """Log matching: an (index, term) names one entry with one predecessor term."""
        for entry in entries:
            link = ((entry["command"], entry.get("config")), node.term_at(entry["index"] - 1))
            known = self.links.setdefault((entry["index"], entry["term"]), link)
            if known[0] != link[0] or (None not in (known[1], link[1]) and known[1] != link[1]):
                raise Violation(f"log matching: {node.id} has a different entry at "
                                f"index {entry['index']} term {entry['term']}")

    def durable(self, message: dict, hard_state: dict, last_index: int) -> None:
        """Stable storage rule: what a message promises is stored before it leaves.

        A granted vote is covered by the stored hard state (that vote in its
        term, or a later term), an acknowledgement by the stored log, and so
        is the commit index an append carries (a leader's appends may leave
        before its own write: RaftReady.send_first).
        """
        kind, sender = message["type"], message["from"]
        if kind == "raft.vote_reply" and message["granted"]:
            term, vote = hard_state["term"], hard_state["vote"]
            if term < message["term"] or (term == message["term"] and vote != message["to"]):
                raise Violation(f"{sender} granted its vote in term {message['term']} "
                                f"but stored term {term}, vote {vote}")
        elif (kind == "raft.append_reply" and message["success"]) or kind == "raft.snapshot_reply":
            if last_index < message["match"]:
                raise Violation(f"{sender} acknowledged entry {message['match']} but stored up to {last_index}")
        elif kind == "raft.append" and last_index < message["commit"]:
            raise Violation(f"{sender} sent commit index {message['commit']} but stored up to {last_index}")

    def commit(self, node: RaftNode, start: int) -> None:
        """Entries committed at ``node`` from ``start`` on agree with every commit seen,
        and each holds a command that was admissible."""
        for index in range(max(start, node.snap_index + 1), node.commit + 1):
            entry = node.entries(index, index + 1)[0]
            seen = (entry["term"], entry["command"], entry.get("config"))
            known = self.committed.get(index)
            if known is None:
                _admissible(index, entry["command"])
                known = self.committed[index] = seen
                if "config" in entry:
                    self.configurations[index] = entry["config"]
            if known != seen:
                raise Violation(f"committed entry {index} changed at {node.id}: "
                                f"term {known[0]} became {entry['term']}")

    def configuration(self, initial: list[str]) -> Configuration:
        """The latest committed configuration (``initial`` before any)."""
        if not self.configurations:
            return Configuration.of(initial)
        return from_json(self.configurations[max(self.configurations)])

    def apply(self, node_id: str, index: int, command: dict | None, result: dict | None) -> None:
        """Every node applies the same command with the same result at each index."""
        known = self.applied.get(index)
        if known is None:
            self.applied[index] = (command, result)
            if command is not None and (command["client"], command["request"]) not in self.executed:
                self.executed.add((command["client"], command["request"]))
                self._exchange_invariants(result)
        elif known != (command, result):
            raise Violation(f"{node_id} applied a different entry or result at index {index}")

    def state(self, node_id: str, index: int, state_hash: str) -> None:
        known = self.hashes.setdefault(index, state_hash)
        if known != state_hash:
            raise Violation(f"{node_id} has a different state_hash at applied index {index}")

    def _exchange_invariants(self, result: dict | None) -> None:
        if not result or not result.get("ok"):
            return
        order = result["order"]
        quantity = Decimal(order["quantity"])
        self.quantity.setdefault(order["id"], quantity)
        if Decimal(order["filled"]) + Decimal(order["remaining"]) + Decimal(order["cancelled"]) != quantity:
            raise Violation(f"order {order['id']}: filled + remaining + cancelled != quantity")
        for fill in result["fills"]:
            for order_id in (fill["maker_order"], fill["taker_order"]):
                self.filled[order_id] += Decimal(fill["quantity"])
                if self.filled[order_id] > self.quantity.get(order_id, self.filled[order_id]):
                    raise Violation(f"order {order_id} filled beyond its quantity")

    def exactly_once(self, acknowledged: dict[tuple[str, str], dict]) -> None:
        """Every acknowledged command is in the log, executed once: each copy
        carries that execution's result, or a session refusal (a copy so late
        that its result is no longer kept is refused, never executed)."""
        executions: dict[tuple[str, str], list[dict]] = {}
        for command, result in self.applied.values():
            if command is not None:
                key = (command["client"], command["request"])
                kept = executions.setdefault(key, [])
                if not _session_refusal(result):
                    kept.append(result)
        for key, results in executions.items():
            if any(result != results[0] for result in results):
                raise Violation(f"command {key} was executed more than once")
        for key, result in acknowledged.items():
            if key not in executions:
                raise Violation(f"acknowledged command {key} is not in the committed log")
            if executions[key][:1] != [result]:
                raise Violation(f"acknowledged command {key} got a result other than its execution's")


def _session_refusal(result: dict | None) -> bool:
    return bool(result) and not result.get("ok") and str(result.get("error")).startswith(SESSION_REFUSALS)


def _admissible(index: int, command: dict | None) -> None:
    """A committed command is None (a no-op) or canonical and strict JSON:
    what every peer can encode, send and apply."""
    if command is None:
        return
    try:
        canonical = canonical_command(command)
        json.dumps(command, allow_nan=False)
    except (ExchangeError, ValueError, TypeError) as error:
        raise Violation(f"committed entry {index} holds a command never admissible: {error}"[:300]) from None
    if canonical != command:
        raise Violation(f"committed entry {index} holds a command that is not canonical")
