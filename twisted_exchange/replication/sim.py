"""Deterministic, seeded fault simulator for the replicated exchange.

One seed fixes everything: 3 or 5 ``Replica`` objects on ``MemoryStorage``, a
simulated network that delays, drops, duplicates and reorders messages and
partitions nodes, crashes (everything not persisted is lost; the node is
rebuilt from its storage's ``load()``) and restarts, and clients that submit
and cancel crossing orders at every node concurrently and retry.  Virtual time
is an event queue; a step is one event.  Node input (tick, message) and the
node's ``ready()`` are separate events, so a crash can fall between them.

After every step the ``Checker`` verifies: at most one leader per term, and
that leader holds every committed entry; log matching (same index and term
means same entry and same previous term); committed entries never change;
every node applies the same entries with the same results (so applied
sequences are prefixes of one another); equal ``state_hash`` at equal applied
index; exchange invariants (no order filled beyond its quantity, filled +
remaining + cancelled == quantity).  At the end it heals everything and
checks liveness (every client's last command completes within a bounded
virtual time) and that every acknowledged command was executed exactly once:
each of its copies in the committed log carries the acknowledged result.

    python -m twisted_exchange.replication.sim --seeds 200 [--nodes 3|5] [--seed S] [--steps K]
"""
from __future__ import annotations

import heapq
import json
import multiprocessing
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import click

from twisted_exchange.replication.raft import LEADER, RaftConfig, RaftNode
from twisted_exchange.replication.replica import Replica
from twisted_exchange.replication.storage import MemoryStorage

TICK = 10                 # virtual time units per Raft tick
MAX_DELAY = 3 * TICK      # a message arrives 1..MAX_DELAY units after it is sent
RETRY_BACKOFF = MAX_DELAY + 2 * TICK   # a client waits this long before retrying elsewhere
LIVENESS_TICKS = 400      # after healing, every client must finish within this many ticks
DEFAULT_STEPS = 4000
CLIENTS_PER_NODE = 2
SIM_CONFIG = RaftConfig(election_ticks=10, heartbeat_ticks=2, max_entries_per_message=64,
                        forward_ticks=4, no_leader_ticks=30, compact_every=40)


class Violation(AssertionError):
    """A safety or liveness property failed."""


@dataclass
class Outcome:
    """What one seed did."""

    seed: int
    nodes: int
    steps: int
    violation: str | None = None
    faults: Counter = field(default_factory=Counter)
    commits: int = 0
    elections: int = 0
    acknowledged: int = 0

    def reproduce(self) -> str:
        return (f"python -m twisted_exchange.replication.sim --seeds 1 --seed {self.seed}"
                f" --nodes {self.nodes} --steps {self.steps}")


class Checker:
    """The cluster-wide invariants, checked incrementally as nodes report."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, tuple[int, dict | None]] = {}   # index -> (term, command)
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
        for index, (term, _) in self.committed.items():
            if index > node.snap_index and node.term_at(index) != term:
                raise Violation(f"leader {node.id} of term {node.term} lacks committed entry {index}")

    def persisted(self, node: RaftNode, entries: list[dict]) -> None:
        """Log matching: an (index, term) names one entry with one predecessor term."""
        for entry in entries:
            link = (entry["command"], node.term_at(entry["index"] - 1))
            known = self.links.setdefault((entry["index"], entry["term"]), link)
            if known[0] != link[0] or (None not in (known[1], link[1]) and known[1] != link[1]):
                raise Violation(f"log matching: {node.id} has a different entry at "
                                f"index {entry['index']} term {entry['term']}")

    def commit(self, node: RaftNode, start: int) -> None:
        """Entries committed at ``node`` from ``start`` on agree with every commit seen."""
        for index in range(max(start, node.snap_index + 1), node.commit + 1):
            entry = node.entries(index, index + 1)[0]
            known = self.committed.setdefault(index, (entry["term"], entry["command"]))
            if known != (entry["term"], entry["command"]):
                raise Violation(f"committed entry {index} changed at {node.id}: "
                                f"term {known[0]} became {entry['term']}")

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
        """Every acknowledged command is in the log, and each copy carries its one result."""
        copies: dict[tuple[str, str], list[dict]] = {}
        for command, result in self.applied.values():
            if command is not None:
                copies.setdefault((command["client"], command["request"]), []).append(result)
        for key, results in copies.items():
            if any(result != results[0] for result in results):
                raise Violation(f"command {key} was executed more than once")
        for key, result in acknowledged.items():
            if key not in copies:
                raise Violation(f"acknowledged command {key} is not in the committed log")
            if copies[key][0] != result:
                raise Violation(f"acknowledged command {key} got a result other than its execution's")


class Client:
    """One exchange client: one outstanding command at a time, retried until answered."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        self.rng = rng
        self.requests = 0
        self.command: dict | None = None
        self.open_orders: list[str] = []

    def next_command(self) -> dict:
        self.requests += 1
        request = f"{self.name}-{self.requests}"
        rng = self.rng
        if self.open_orders and rng.random() < 0.25:
            order_id = self.open_orders.pop(rng.randrange(len(self.open_orders)))
            self.command = {"action": "cancel", "client": self.name, "request": request,
                            "order_id": order_id}
            return self.command
        command = {"action": "submit", "client": self.name, "request": request, "symbol": "BTCUSD",
                   "side": rng.choice(("buy", "sell")), "quantity": str(rng.randint(1, 5))}
        kind = rng.random()
        if kind < 0.1:
            command.update(type="market")
        else:
            command.update(type="limit", price=str(100 + rng.randint(-3, 3)),
                           tif="ioc" if kind < 0.2 else "gtc")
        self.command = command
        return command

    def answered(self, result: dict) -> None:
        if result.get("ok") and result["order"]["status"] in ("open", "partially_filled"):
            self.open_orders.append(result["order"]["id"])
        self.command = None


class Simulation:
    """One seeded run; ``run()`` returns its Outcome."""

    def __init__(self, seed: int, nodes: int = 3, steps: int = DEFAULT_STEPS,
                 node_factory: Callable[..., RaftNode] = RaftNode,
                 config: RaftConfig = SIM_CONFIG, wire: bool = False) -> None:
        self.outcome = Outcome(seed, nodes, steps)
        self.rng = random.Random(seed)
        self.steps = steps
        self.config = config
        self.node_factory = node_factory
        self.wire = wire
        self.ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.check = Checker()
        self.storage = {i: MemoryStorage() for i in self.ids}
        self.replicas: dict[str, Replica | None] = {}
        self.incarnation = Counter()
        self.checked_commit: dict[str, int] = {}
        self.ready_due: set[str] = set()
        self.queue: list[tuple] = []
        self.now = 0
        self.sequence = 0
        self.groups: dict[str, int] = {}      # partition: node -> group; empty when healed
        self.drop = self.duplicate = 0.02
        self.faulty = True
        self.clients = [Client(f"c{j}", random.Random(self.rng.random()))
                        for j in range(CLIENTS_PER_NODE * nodes)]
        self.tokens: dict[tuple[str, int], tuple[Client, str]] = {}  # (node, token) -> client, request
        self.acknowledged: dict[tuple[str, str], dict] = {}
        for node_id in self.ids:
            self._start(node_id)
        for client in self.clients:
            self._at(self.rng.randint(0, 5 * TICK), self._client_send, client)
        self._at(self.rng.randint(20, 60) * TICK, self._fault)

    # -- event queue --------------------------------------------------------

    def _at(self, time: int, action: Callable, *args) -> None:
        self.sequence += 1
        heapq.heappush(self.queue, (time, self.sequence, action, args))

    def _step(self) -> None:
        self.now, _, action, args = heapq.heappop(self.queue)
        action(*args)

    def run(self) -> Outcome:
        try:
            for _ in range(self.steps):
                self._step()
            self._heal_and_finish()
        except Violation as violation:
            self.outcome.violation = f"t={self.now / TICK:.1f} ticks: {violation}"
        except Exception as error:  # a node or replica failing its own assertions
            self.outcome.violation = f"t={self.now / TICK:.1f} ticks: {type(error).__name__}: {error}"
        self.outcome.acknowledged = len(self.acknowledged)
        self.outcome.commits = max(self.check.committed, default=0)
        self.outcome.elections = len(self.check.leaders)
        return self.outcome

    def _heal_and_finish(self) -> None:
        self.faulty = False
        self.groups = {}
        self.drop = self.duplicate = 0.0
        for node_id in self.ids:
            if self.replicas[node_id] is None:
                self._start(node_id)
        for client in self.clients:   # every client proves that commits resume
            if client.command is None:
                self._at(self.now, self._client_send, client)
        deadline = self.now + LIVENESS_TICKS * TICK
        while any(client.command is not None for client in self.clients):
            if self.now > deadline:
                waiting = [c.name for c in self.clients if c.command is not None]
                raise Violation(f"liveness: clients {waiting} still waiting {LIVENESS_TICKS} ticks after healing")
            self._step()
        self.check.exactly_once(self.acknowledged)

    # -- nodes --------------------------------------------------------------

    def _start(self, node_id: str) -> None:
        self.incarnation[node_id] += 1
        recovered = self.storage[node_id].load()
        replica = Replica(node_id, self.ids, recovered, random.Random(self.rng.random()), self.config,
                          node_factory=self.node_factory,
                          on_apply=lambda index, command, result: self.check.apply(node_id, index, command, result))
        self.replicas[node_id] = replica
        self.checked_commit[node_id] = replica.node.snap_index + 1
        self._at(self.now + self.rng.randint(1, TICK), self._tick, node_id, self.incarnation[node_id])
        self._wake(node_id)

    def _crash(self, node_id: str) -> None:
        self.replicas[node_id] = None
        self.incarnation[node_id] += 1
        self.ready_due.discard(node_id)
        for (owner, token), (client, _) in list(self.tokens.items()):
            if owner == node_id:
                del self.tokens[owner, token]
                self._at(self.now + RETRY_BACKOFF, self._client_send, client)

    def _alive(self, node_id: str, incarnation: int) -> Replica | None:
        return self.replicas[node_id] if incarnation == self.incarnation[node_id] else None

    def _tick(self, node_id: str, incarnation: int) -> None:
        replica = self._alive(node_id, incarnation)
        if replica is not None:
            replica.tick()
            self._after_input(node_id, replica)
            self._at(self.now + TICK, self._tick, node_id, incarnation)

    def _deliver(self, message: dict) -> None:
        replica = self.replicas[message["to"]]
        if replica is not None and self._connected(message["from"], message["to"]):
            replica.step(message)
            self._after_input(message["to"], replica)

    def _after_input(self, node_id: str, replica: Replica) -> None:
        node = replica.node
        if node.role == LEADER:
            self.check.leader(node)
        if node.commit >= self.checked_commit[node_id]:
            self.check.commit(node, self.checked_commit[node_id])
            self.checked_commit[node_id] = node.commit + 1
        self._wake(node_id)

    def _wake(self, node_id: str) -> None:
        """Schedule the node's ready() a little later: a crash may fall in between."""
        if node_id not in self.ready_due:
            self.ready_due.add(node_id)
            self._at(self.now + self.rng.randint(0, 2), self._ready, node_id, self.incarnation[node_id])

    def _ready(self, node_id: str, incarnation: int) -> None:
        replica = self._alive(node_id, incarnation)
        if replica is None:
            return
        self.ready_due.discard(node_id)
        applied = replica.state_machine.applied
        ready = replica.ready()
        storage = self.storage[node_id]
        self.check.persisted(replica.node, ready.entries)
        storage.save(ready.hard_state, ready.entries, ready.snapshot)
        if ready.compaction is not None:
            storage.compact(ready.compaction)
        if replica.state_machine.applied != applied:
            self.check.state(node_id, replica.state_machine.applied, replica.state_machine.state_hash())
        for message in ready.messages:
            self._send(message)
        for token, result in ready.results:
            client, request = self.tokens.pop((node_id, token))
            self._client_answer(client, request, result)

    # -- network ------------------------------------------------------------

    def _connected(self, a: str, b: str) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def _send(self, message: dict) -> None:
        if self.wire:
            message = json.loads(json.dumps(message))
        if not self._connected(message["from"], message["to"]) or self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self._at(self.now + self.rng.randint(1, MAX_DELAY), self._deliver, message)

    # -- faults -------------------------------------------------------------

    def _fault(self) -> None:
        if not self.faulty:
            return
        rng = self.rng
        kind = rng.choice(("crash", "crash", "partition", "isolate", "lossy"))
        self.outcome.faults[kind] += 1
        if kind == "crash":
            node_id = rng.choice(self.ids)
            if self.replicas[node_id] is not None:
                self._crash(node_id)
                self._at(self.now + rng.randint(5, 60) * TICK, self._restart, node_id)
        elif kind in ("partition", "isolate"):
            shuffled = rng.sample(self.ids, len(self.ids))
            cut = 1 if kind == "isolate" else rng.randint(1, len(self.ids) - 1)
            self.groups = {node_id: int(position < cut) for position, node_id in enumerate(shuffled)}
            self._at(self.now + rng.randint(10, 80) * TICK, self._heal_partition)
        else:
            self.drop, self.duplicate = rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.2)
            self._at(self.now + rng.randint(10, 60) * TICK, self._calm)
        self._at(self.now + rng.randint(10, 50) * TICK, self._fault)

    def _restart(self, node_id: str) -> None:
        if self.replicas[node_id] is None:
            self._start(node_id)

    def _heal_partition(self) -> None:
        self.groups = {}

    def _calm(self) -> None:
        if self.faulty:
            self.drop = self.duplicate = 0.02

    # -- clients ------------------------------------------------------------

    def _client_send(self, client: Client) -> None:
        if client.command is None:
            client.next_command()
        up = [node_id for node_id in self.ids if self.replicas[node_id] is not None]
        if not up:
            self._at(self.now + RETRY_BACKOFF, self._client_send, client)
            return
        node_id = self.rng.choice(up)
        replica = self.replicas[node_id]
        token = replica.propose(client.command)
        self.tokens[node_id, token] = (client, client.command["request"])
        self._wake(node_id)

    def _client_answer(self, client: Client, request: str, result: dict) -> None:
        if result.get("error", "").startswith("ERR_NO_LEADER"):
            if client.command is not None and client.command["request"] == request:
                self._at(self.now + self.rng.randint(1, 3) * TICK, self._client_send, client)
            return
        key = (client.name, request)
        if self.acknowledged.setdefault(key, result) != result:
            raise Violation(f"command {key} answered with two different results")
        if client.command is None or client.command["request"] != request:
            return  # a late answer to a retry already answered elsewhere
        client.answered(result)
        if self.faulty:
            self._at(self.now + self.rng.randint(0, 3 * TICK), self._client_send, client)


def simulate(seed: int, nodes: int = 3, steps: int = DEFAULT_STEPS, **options) -> Outcome:
    """Run one seed and return its Outcome (``options`` go to Simulation)."""
    return Simulation(seed, nodes, steps, **options).run()


def _run_seed(arguments: tuple[int, int, int]) -> Outcome:
    return simulate(*arguments)


@click.command()
@click.option("--seeds", default=100, show_default=True, help="How many seeds to run.")
@click.option("--seed", "first", default=0, show_default=True, help="The first seed.")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, help="Events per seed before healing.")
@click.option("--jobs", default=os.cpu_count() or 1, show_default=True, help="Worker processes.")
def main(seeds: int, first: int, nodes: str, steps: int, jobs: int) -> None:
    """Run the deterministic fault simulator over a range of seeds."""
    work = [(seed, int(nodes), steps) for seed in range(first, first + seeds)]
    outcomes: list[Outcome] = []
    with multiprocessing.Pool(jobs) if jobs > 1 and seeds > 1 else _Serial() as pool:
        results = pool.imap_unordered(_run_seed, work, chunksize=max(1, seeds // (jobs * 20)))
        with click.progressbar(results, length=seeds, label=f"{nodes} nodes", file=sys.stderr) as bar:
            outcomes.extend(bar)
    outcomes.sort(key=lambda outcome: outcome.seed)
    faults = sum((outcome.faults for outcome in outcomes), Counter())
    failed = [outcome for outcome in outcomes if outcome.violation]
    click.echo(f"seeds run: {len(outcomes)}, nodes: {nodes}, steps per seed: {steps}")
    click.echo(f"faults injected: {sum(faults.values())} ({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))})")
    click.echo(f"commits: {sum(o.commits for o in outcomes)}, elections: {sum(o.elections for o in outcomes)}, "
               f"acknowledged commands: {sum(o.acknowledged for o in outcomes)}")
    click.echo(f"violations: {len(failed)}")
    for outcome in failed:
        click.echo(f"seed {outcome.seed}: {outcome.violation}\n  reproduce: {outcome.reproduce()}")
    sys.exit(1 if failed else 0)


class _Serial:
    """The Pool interface, in this process (one job, or one seed)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def imap_unordered(self, function, iterable, chunksize: int = 1):
        return map(function, iterable)


if __name__ == "__main__":
    main()
