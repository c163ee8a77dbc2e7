"""One seeded run of the fault simulator: ``Simulation`` and ``simulate``.

One seed fixes everything: 3 or 5 ``Replica`` objects on ``FaultyStorage``, a
simulated network that delays, drops, duplicates and reorders messages and
partitions nodes, crashes (everything not persisted is lost; the node is
rebuilt from its storage's ``load()``) and restarts, storage faults (a
failed or torn write makes the node fail-stop: it is crashed at once and
restarted later; a corrupt read on restart discards data and leaves the
node abstaining from votes), and clients that submit and cancel crossing
orders at every node concurrently and retry, and now and then send a
poison command that must be refused.  Membership changes run among the
faults: the leader is asked to add a new node as a learner, promote a
learner, or remove a member (the leader itself too); now and then two at
once (promote, then remove another voter; the second must be refused)
with a split right after between the leader plus the promoted node and
the rest; a removed node is stopped for good a while later, once its
removal is committed.  Odd-numbered nodes take their snapshots in the
background, as the peers do (``Ready.snapshot_due``): the state is captured
when asked for and handed back 1-40 ticks later, lost if the node crashed
meanwhile, now and then failed (the replica asks again), and stale if a
snapshot was installed in between.  Virtual time is an event queue; a
step is one event.  Node input (tick, message) and the node's ``ready()``
are separate events, so a crash can fall between them.

After every step the ``Checker`` verifies: at most one leader per term, and
that leader holds every committed entry; log matching (same index and term
means same entry and same previous term); committed entries never change
and hold only admissible commands; every node applies the same entries
with the same results (so applied sequences are prefixes of one another);
equal ``state_hash`` at equal applied index; exchange invariants (no order
filled beyond its quantity, filled + remaining + cancelled == quantity).
At the end it heals everything and checks liveness (every client's last
command completes within a bounded virtual time) and that every
acknowledged command was executed exactly once: each of its copies in the
committed log carries the acknowledged result.
"""
from __future__ import annotations

import heapq
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted_exchange.replication.configuration import ADD, PROMOTE, REMOVE
from twisted_exchange.replication.messages import MessageError, parse_message
from twisted_exchange.replication.raft import LEADER, RaftConfig, RaftNode
from twisted_exchange.replication.replica import Replica, ReplicationError
from twisted_exchange.replication.sim.checker import Checker, Violation
from twisted_exchange.replication.sim.clients import Client, poison_command
from twisted_exchange.replication.sim.faulty_storage import (
    CORRUPT_READ, FAILED_WRITE, TORN_WRITE, DiskFault, FaultyStorage,
)

TICK = 10                 # virtual time units per Raft tick
MAX_DELAY = 3 * TICK      # a message arrives 1..MAX_DELAY units after it is sent
RETRY_BACKOFF = MAX_DELAY + 2 * TICK   # a client waits this long before retrying elsewhere
LIVENESS_TICKS = 400      # after healing, every client must finish within this many ticks
DEFAULT_STEPS = 4000
CLIENTS_PER_NODE = 2
POISON_RATE = 0.03        # share of client sends that first try a poison command
CORRUPT_READ_RATE = 0.3   # share of restarts that find damaged data (while few nodes abstain)
HOLD_RATE = 0.5           # share of messages to a crashed node held and delivered after its restart
MAX_HELD = 256            # per node, as the peer transport's queue (peer/transport.py MAX_QUEUED)
HELD_FOR_RESTART = "held for restart"
MIN_VOTERS = 3            # membership changes never leave fewer voters
EXTRA_NODES = 2           # nodes beyond the initial ones that may be members at once
MEMBERSHIP_REFUSED = "membership refused"
MEMBERSHIP_TICKS = (10, 40)   # a membership change is asked for every so many ticks
SPLIT_AFTER_CHANGE = 0.3      # share of membership changes right after which the network splits
BACK_TO_BACK = 0.25           # share of them that are two changes at once, then a split within a tick
SNAPSHOT_TICKS = (1, 40)  # a background snapshot is handed back this many ticks after it was asked for
SNAPSHOT_FAILS = 0.1      # share of background snapshots whose writer fails (the replica asks again)
SIM_CONFIG = RaftConfig(election_ticks=10, heartbeat_ticks=2, max_entries_per_message=64,
                        forward_ticks=4, no_leader_ticks=30, compact_every=40)


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


class Simulation:
    """One seeded run; ``run()`` returns its Outcome."""

    def __init__(self, seed: int, nodes: int = 3, steps: int = DEFAULT_STEPS,
                 node_factory: Callable[..., RaftNode] = RaftNode,
                 replica_factory: Callable[..., Replica] = Replica,
                 config: RaftConfig = SIM_CONFIG, wire: bool = False,
                 membership_ticks: tuple[int, int] | None = MEMBERSHIP_TICKS) -> None:
        self.outcome = Outcome(seed, nodes, steps)
        self.rng = random.Random(seed)
        self.snapshot_rng = random.Random(seed ^ 0x5EED)  # background snapshots: leaves self.rng's sequence alone
        self.steps = steps
        self.config = config
        self.node_factory = node_factory
        self.replica_factory = replica_factory
        self.wire = wire
        self.initial = [f"n{i}" for i in range(1, nodes + 1)]
        self.ids = list(self.initial)   # every node ever started, the gone ones too
        self.gone: set[str] = set()     # removed and stopped for good
        self.leaving: set[str] = set()  # removal asked for: never added back
        self.changes: dict[tuple[str, int], str] = {}  # (node, token) -> kind of a membership change
        self.check = Checker()
        self.storage = {i: FaultyStorage(random.Random(self.rng.random())) for i in self.ids}
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
        self.held: dict[str, list[dict]] = {i: [] for i in self.ids}
        for node_id in self.ids:
            self._start(node_id)
        for client in self.clients:
            self._at(self.rng.randint(0, 5 * TICK), self._client_send, client)
        self._at(self.rng.randint(20, 60) * TICK, self._fault)
        self.membership_ticks = membership_ticks   # None: fixed membership
        if membership_ticks is not None:
            self._at(self.rng.randint(*membership_ticks) * TICK, self._membership_event)

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
        for node_id in self._present():
            self.storage[node_id].armed = None
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
        replica = self.replica_factory(
            node_id, self.initial, recovered, random.Random(self.rng.random()), self.config,
            node_factory=self.node_factory,
            on_apply=lambda index, command, result: self.check.apply(node_id, index, command, result),
            background_snapshots=_background(node_id))
        self.replicas[node_id] = replica
        self.checked_commit[node_id] = replica.node.snap_index + 1
        self._at(self.now + self.rng.randint(1, TICK), self._tick, node_id, self.incarnation[node_id])
        self._wake(node_id)
        held, self.held[node_id] = self.held[node_id], []
        for message in held:
            self._at(self.now + 1, self._deliver, message)

    def _crash(self, node_id: str) -> None:
        self.replicas[node_id] = None
        self.incarnation[node_id] += 1
        self.ready_due.discard(node_id)
        for owner, token in [key for key in self.changes if key[0] == node_id]:
            del self.changes[owner, token]
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
        if not self._connected(message["from"], message["to"]):
            return
        if replica is not None:
            replica.step(message)
            self._after_input(message["to"], replica)
        elif self.faulty and self.rng.random() < HOLD_RATE:
            # As a sender's transport queues for a peer that is down: the
            # restarted node gets messages its previous incarnation was sent.
            held = self.held[message["to"]]
            held.append(message)
            del held[:-MAX_HELD]
            self.outcome.faults[HELD_FOR_RESTART] += 1

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
        ready = replica.ready()
        self.check.persisted(replica.node, ready.entries)
        if ready.send_first:  # a failed write below then crashes the node after they left
            for message in ready.messages:
                self._send(message)
        if not self._persisted(node_id, ready):
            return
        if not ready.send_first:
            for message in ready.messages:
                self._send(message)
        applied = replica.state_machine.applied
        replica.apply(ready)  # after sending, as the peer does
        if replica.state_machine.applied != applied:
            self.check.state(node_id, replica.state_machine.applied, replica.state_machine.state_hash())
        compaction = ready.compaction
        if compaction is not None and not self._stored(node_id, lambda storage: storage.compact(compaction)):
            return
        if ready.snapshot_due is not None:  # taken now, as the peer's fork does; handed back later
            snapshot = dict(ready.snapshot_due, data=replica.state_machine.snapshot())
            self._at(self.now + self.snapshot_rng.randint(*SNAPSHOT_TICKS) * TICK, self._snapshot_taken,
                     node_id, self.incarnation[node_id], snapshot)
        for token, result in ready.results:
            if self.changes.pop((node_id, token), None) is not None:
                self.outcome.faults["member change committed" if result["ok"] else "member change lost"] += 1
                continue
            client, request = self.tokens.pop((node_id, token))
            self._client_answer(client, request, result)

    def _snapshot_taken(self, node_id: str, incarnation: int, snapshot: dict) -> None:
        """A background snapshot's writer is done (lost if its node crashed meanwhile)."""
        replica = self._alive(node_id, incarnation)
        if replica is None:
            return
        if self.snapshot_rng.random() < SNAPSHOT_FAILS:
            self.outcome.faults["background snapshot failed"] += 1
            replica.snapshot_abandoned()
        elif replica.snapshot_taken(snapshot):
            self._stored(node_id, lambda storage: storage.compact(snapshot))
        else:
            self.outcome.faults["background snapshot stale"] += 1

    def _persisted(self, node_id: str, ready) -> bool:
        """Persist the batch (see :meth:`_stored`)."""
        return self._stored(node_id, lambda storage: storage.save(ready.hard_state, ready.entries, ready.snapshot))

    def _stored(self, node_id: str, write: Callable[[FaultyStorage], None]) -> bool:
        """``write`` to the node's storage; on a write failure fail-stop (crash
        now, restart later from what was stored) and say so, as the peer shell does."""
        try:
            write(self.storage[node_id])
        except DiskFault as fault:
            self.outcome.faults[fault.kind] += 1
            self._crash(node_id)
            self._at(self.now + self.rng.randint(5, 60) * TICK, self._restart, node_id)
            return False
        return True

    # -- network ------------------------------------------------------------

    def _connected(self, a: str, b: str) -> bool:
        return self.groups.get(a, 0) == self.groups.get(b, 0)

    def _send(self, message: dict) -> None:
        storage = self.storage[message["from"]]
        self.check.durable(message, storage.hard_state, storage.last_index)
        if self.wire:
            message = json.loads(json.dumps(message))
        try:  # what a node sends must pass the peers' edge parser
            parse_message(message, message["from"], message["to"])
        except MessageError as error:
            raise Violation(f"{message['from']} sent a message the edge refuses: {error}") from None
        if not self._connected(message["from"], message["to"]) or self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            self._at(self.now + self.rng.randint(1, MAX_DELAY), self._deliver, message)

    # -- faults -------------------------------------------------------------

    def _present(self) -> list[str]:
        """The nodes not stopped for good."""
        return [node_id for node_id in self.ids if node_id not in self.gone]

    def _fault(self) -> None:
        if not self.faulty:
            return
        rng = self.rng
        kind = rng.choice(("crash", "crash", "partition", "isolate", "lossy", FAILED_WRITE, TORN_WRITE))
        present = self._present()
        if kind in (FAILED_WRITE, TORN_WRITE):
            self.storage[rng.choice(present)].armed = kind   # counted when it strikes
        else:
            self.outcome.faults[kind] += 1
        if kind == "crash":
            node_id = rng.choice(present)
            if self.replicas[node_id] is not None:
                self._crash(node_id)
                self._at(self.now + rng.randint(5, 60) * TICK, self._restart, node_id)
        elif kind in ("partition", "isolate"):
            self._partition(isolate=kind == "isolate")
        else:
            self.drop, self.duplicate = rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.2)
            self._at(self.now + rng.randint(10, 60) * TICK, self._calm)
        self._at(self.now + rng.randint(10, 50) * TICK, self._fault)

    def _partition(self, isolate: bool) -> None:
        present = self._present()
        shuffled = self.rng.sample(present, len(present))
        cut = 1 if isolate else self.rng.randint(1, len(present) - 1)
        self.groups = {node_id: int(position < cut) for position, node_id in enumerate(shuffled)}
        self._at(self.now + self.rng.randint(10, 80) * TICK, self._heal_partition)

    def _membership_event(self) -> None:
        """On its own schedule while faults run: an operator asks for one to
        three changes a tick or two apart (all but the first are refused
        while the first is uncommitted), and now and then the network
        splits right after; or (BACK_TO_BACK) see ``_back_to_back``."""
        if not self.faulty:
            return
        rng = self.rng
        self._at(self.now + rng.randint(*self.membership_ticks) * TICK, self._membership_event)
        if rng.random() < BACK_TO_BACK:
            self._back_to_back()
            return
        for burst in range(rng.randint(1, 3)):
            self._at(self.now + burst * rng.randint(1, 2) * TICK, self._change_membership)
        if rng.random() < SPLIT_AFTER_CHANGE:
            self.outcome.faults["partition after change"] += 1
            self._at(self.now + rng.randint(1, 6) * TICK, self._partition, rng.random() < 0.5)

    def _back_to_back(self) -> None:
        """Two changes asked for at once (the second must be refused while the
        first is uncommitted), then, before the entries can reach everyone,
        a split: the leader and the members the changes added or promoted on
        one side, the others on the other.  Were both appended, the leader's
        side could commit with a majority of the second configuration and
        the other side elect a leader with a majority of the first."""
        first = self._change_membership(prefer=PROMOTE)
        second = self._change_membership(prefer=REMOVE if first and first[0] == PROMOTE else PROMOTE,
                                         spare=set(first or ()))
        made = [first, second]
        leader = self._leader()
        if leader is None or made[0] is None:
            return
        side = {leader.id} | {member for kind, member in filter(None, made) if kind in (ADD, PROMOTE)}
        self.outcome.faults["partition after two changes"] += 1
        self._at(self.now + self.rng.randint(1, TICK), self._split, side)

    def _split(self, side: set[str]) -> None:
        if not self.faulty:
            return
        self.groups = {node_id: int(node_id in side) for node_id in self._present()}
        self._at(self.now + self.rng.randint(10, 80) * TICK, self._heal_partition)

    def _leader(self) -> Replica | None:
        """The leader of the highest term, if any node leads."""
        leaders = [r for r in self.replicas.values() if r is not None and r.node.role == LEADER]
        return max(leaders, key=lambda replica: replica.node.term) if leaders else None

    def _change_membership(self, prefer: str | None = None, spare: set[str] = frozenset()) -> tuple[str, str] | None:
        """Ask the leader of the highest term for one change, as an operator
        would: add a new node (started now, as a learner), promote a
        learner, or remove a member (the leader itself half the time it may).
        ``prefer``: that kind of change if one is possible, then not of the
        leader nor of a member in ``spare`` if another is; the change made,
        or None."""
        leader = self._leader()
        if leader is None:
            self.outcome.faults[MEMBERSHIP_REFUSED] += 1
            return None
        configuration = leader.node.configuration
        options = [(PROMOTE, m) for m in configuration.learners]
        options += [(REMOVE, m) for m in configuration.members
                    if m in configuration.learners or len(configuration.voters) > MIN_VOTERS]
        idle = [n for n in self._present() if n not in configuration.members and n not in self.leaving]
        if idle or len(self._present()) < len(self.initial) + EXTRA_NODES:
            options.append((ADD, idle[0] if idle else f"n{len(self.ids) + 1}"))
        if not options:
            return None
        kinds = sorted({kind for kind, _ in options})
        kind = prefer if prefer in kinds else self.rng.choice(kinds)
        members = [member for k, member in options if k == kind]
        if prefer is not None:
            members = [m for m in members if m != leader.id and m not in spare] or members
            member = self.rng.choice(members)
        else:
            member = (leader.id if (REMOVE, leader.id) in options and self.rng.random() < 0.5
                      and kind == REMOVE else self.rng.choice(members))
        if member not in self.ids:
            self.ids.append(member)
            self.storage[member] = FaultyStorage(random.Random(self.rng.random()))
            self.held[member] = []
            self._start(member)
        try:
            self.changes[leader.id, leader.change_membership(kind, member)] = kind
        except ReplicationError:
            self.outcome.faults[MEMBERSHIP_REFUSED] += 1
            return None
        self._wake(leader.id)
        self.outcome.faults[f"member {kind}"] += 1
        if kind == REMOVE:
            self.leaving.add(member)
            self._at(self.now + self.rng.randint(20, 80) * TICK, self._decommission, member)
        return kind, member

    def _decommission(self, node_id: str) -> None:
        """Stop a removed node for good once its removal is committed; try
        again later while not (the change may also have been lost)."""
        if node_id in self.gone:
            return
        if node_id in self.check.configuration(self.initial).members:
            if self.faulty:
                self._at(self.now + 50 * TICK, self._decommission, node_id)
            return
        if self.replicas[node_id] is not None:
            self._crash(node_id)
        self.gone.add(node_id)

    def _restart(self, node_id: str) -> None:
        if node_id in self.gone:
            return
        if self.replicas[node_id] is None:
            parts = self.storage[node_id].damageable()
            if parts and self.faulty and self.rng.random() < CORRUPT_READ_RATE and self._may_abstain(node_id):
                self.storage[node_id].corrupt(self.rng.choice(parts))
                self.outcome.faults[CORRUPT_READ] += 1
            self._start(node_id)

    def _may_abstain(self, node_id: str) -> bool:
        """Damage a node only while the nodes that vote can still elect a
        leader without a minority: abstainers stay within (n - 1) // 2."""
        others = sum(self.storage[other].abstaining or other in self.leaving   # a voter leaving may not campaign
                     for other in self._present() if other != node_id)
        voters = min([len(self.check.configuration(self.initial).voters)]
                     + [len(r.node.configuration.voters) for r in self.replicas.values() if r is not None])
        return others + 1 <= (voters - 1) // 2

    def _heal_partition(self) -> None:
        self.groups = {}

    def _calm(self) -> None:
        if self.faulty:
            self.drop = self.duplicate = 0.02

    # -- clients ------------------------------------------------------------

    def _client_send(self, client: Client) -> None:
        if client.command is None:
            client.next_command()
        up = [node_id for node_id in self._present() if self.replicas[node_id] is not None]
        if not up:
            self._at(self.now + RETRY_BACKOFF, self._client_send, client)
            return
        node_id = self.rng.choice(up)
        replica = self.replicas[node_id]
        if self.faulty and self.rng.random() < POISON_RATE:
            self._poison(client, replica)
        token = replica.propose(client.command)
        self.tokens[node_id, token] = (client, client.command["request"])
        self._wake(node_id)

    def _poison(self, client: Client, replica: Replica) -> None:
        """A malformed command must be refused before it reaches the log."""
        kind, command = poison_command(client.name, self.rng)
        try:
            replica.propose(command)
        except ReplicationError:
            self.outcome.faults["poison command"] += 1
            return
        raise Violation(f"{replica.id} accepted a poison command ({kind})")

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


def _background(node_id: str) -> bool:
    """Odd-numbered nodes take their snapshots in the background, the others
    at once: every run mixes both (and the seed's RNG sequence is unchanged)."""
    return int(node_id[1:]) % 2 == 1
