"""The nemesis: seeded schedules of real network and process faults.

Two schedules run side by side, as Jepsen composes a partitioner with other
nemeses: *partitions* (a quiet spell of 0.5-2 s, then a partition held
2-5 s, then its heal: a new partition every few seconds) and *chaos* (quiet
1-4 s, then a slow, lossy or reordering network, or a kill, held 2-6 s).
Each fault heals exactly what it did, so the two overlap freely (a peer can
be killed while another is cut off).  Which fault, which target and how long
is a pure function of the seed; only "the leader" is looked up when the
fault happens.  At the end everything is healed and every program runs.

Partitions:

- ``isolate``: a peer's cable out of the switch (``ip link set DEV down``);
  half the time the leader's.
- ``blackhole``: blackhole routes both ways between a peer and one or both
  grape hosts: partial (it still reaches the cluster through the other
  grape host's proxies) or complete.
- ``bridge``: two peers cut from each other at every proxy, both still
  reaching the third: the non-transitive partition in which Raft must not
  elect two leaders (Jepsen's "bridge").
- ``leader-minority``: the leader cut from both followers at the proxies
  while clients still reach it: it must stop acknowledging.

Chaos:

- ``delay``: 50-300 ms plus up to 100 ms of jitter on every link.
- ``reorder``: up to 400 ms of jitter per chunk, so messages on different
  connections overtake each other.
- ``drop``: 5-25 % of chunks lost with their connection.
- ``kill``: SIGKILL a peer (half the time the leader), restarted at the
  heal from its own data directory (its snapshot writer, if one runs,
  dies with it; the restart rewrites its log file without the compacted
  records); ``kill-grape`` the same for a grape.

Figures (``make nemesis``: 300 s, seed 1, 6 clients, on 2 cores shared
with other work; ``python -m tests.netns.run --seconds 300 --seed 1``):

    faults      108: 62 partitions (21 bridge, 18 leader-minority,
                15 isolate, 8 blackhole) and 46 chaos (14 kill-grape,
                10 delay, 10 reorder, 7 drop, 5 kill)
    operations  44,380 invoked, 44,380 acknowledged (147/s), 0 failed,
                0 unknown; at most 8 attempts for one submit
    verdict     0 lost, 0 duplicated, 0 divergent; 0 contradicted,
                0 reordered, 0 overfilled, 0 bad trades
    unavailable at most 6.35 s without any acknowledgement
    after heal  all 3 peers at applied index 44,448, same digest, 0.02 s

Seed 1 again after the wiped-peer rule (a new data directory waits for
every member) and the seed 7663 Raft fix (2026-11-29, one other job
running): 109 faults (63 partitions), 68,360 invoked and acknowledged
(227/s), 0 failed, 0 unknown, 0 lost, 0 duplicated, 0 divergent, at most
5.77 s unavailable, all 3 peers at 68,415 with one digest 0.02 s after the
heal.

Seed 1 again after acknowledgements moved into the answers of raft.batch
calls (2026-11-30, quiet machine): 108 faults (16 leader-minority, 21
bridge, 14 isolate, 11 blackhole, 14 kill-grape, 10 delay, 10 reorder, 7
drop, 5 kill), 123,444 invoked and acknowledged (411/s), 0 failed, 0
unknown, 0 lost, 0 duplicated, 0 divergent, no violations, at most 4.66 s
unavailable, all 3 peers at 123,485 with one digest 0.92 s after the heal.

Seed 1 again after TLS moved to Python's ssl (grenache/tlsbio.py;
2026-11-30, quiet machine): 108 faults (the same mix), 133,985 invoked and
acknowledged (445/s), 0 failed, 0 unknown, 0 lost, 0 duplicated, 0
divergent, no violations, at most 4.4 s unavailable, all 3 peers at
134,032 with one digest 1.0 s after the heal.  (A credential-loading
change to grenache/tls.py, the same on the wire, landed while it ran;
peers the nemesis restarted after it may have run it.)

Seed 1 again after messages were sent at once (grenache/writenow.py) and
the TLS layer answered a close_notify by closing (2026-11-30, quiet
machine): 109 faults (21 leader-minority, 20 bridge, 15 isolate, 7
blackhole, 14 kill-grape, 10 delay, 10 reorder, 7 drop, 5 kill), 165,106
invoked and acknowledged (549/s), 0 failed, 0 unknown, 0 lost, 0
duplicated, 0 divergent, no violations, at most 5.03 s unavailable, all 3
peers at 165,165 with one digest 1.66 s after the heal.

Seed 2, the same 300 s: 110 faults (60 partitions), 51,863 invoked and
acknowledged, 0 lost, 0 duplicated, 0 divergent, at most 5.01 s unavailable.

The harness has teeth: with the session table patched to execute a retry
again (a test-only sitecustomize, not kept), 30 s of the same nemesis
(seed 3) ended with 38 duplicated and 30 contradicted operations.

Every run above had compaction off (``--snapshot-every 0``).  With it on
(``cluster.SNAPSHOT_EVERY`` = 500, which the peers stretch to a few
thousand entries as the book grows; the witness rebuilt from every
archived log file, ``archive.py``), 150 s each, 6 clients, 2026-11-30, on
2 cores shared with benchmarks (``python -m tests.netns.run --seconds 150
--seed N``); snapshots are taken/installed per peer, rewrites of each
peer's log file as the archive saw them:

    seed 1  56 faults (10 leader-minority, 10 bridge, 7 isolate, 6
            blackhole, 9 kill-grape, 5 drop, 4 delay, 3 reorder, 2 kill);
            87,506 invoked and acknowledged (579/s), 0 failed, 0 unknown;
            0 lost, 0 duplicated, 0 divergent, 0 conflicting, no
            violations; at most 5.29 s unavailable; all 3 peers at 87,525
            0.11 s after the heal; snapshots 25/4, 25/4, 26/2; log files
            rewritten 5, 4, 3 times
    seed 2  57 faults (13 isolate, 9 blackhole, 6 leader-minority, 5
            bridge, 7 kill-grape, 5 delay, 5 drop, 4 reorder, 3 kill);
            48,794 invoked and acknowledged (323/s), 0 failed, 0 unknown;
            0 lost, 0 duplicated, 0 divergent, 0 conflicting, no
            violations; at most 3.44 s unavailable; all 3 peers at 48,817
            0.01 s after the heal; snapshots 21/0, 15/4, 15/4; log files
            rewritten 0, 5, 5 times (peer1's still held entry 1)
    seed 3  53 faults (10 blackhole, 8 leader-minority, 8 bridge, 5
            isolate, 9 kill, 4 kill-grape, 5 delay, 4 drop); 48,845
            invoked and acknowledged (323/s), 0 failed, 0 unknown; 0 lost,
            0 duplicated, 0 divergent, 0 conflicting, no violations; at
            most 4.13 s unavailable; all 3 peers at 48,884 0.02 s after the
            heal; snapshots 12/4, 15/3, 17/2; log files rewritten 5, 7, 4
            times, and no peer's last file held entry 1 (they began at
            27,048, 45,248 and 37,753): the witness came from the archive

And ``make nemesis``'s 300 s (seed 4, the same day, the machine quieter):
108 faults (20 bridge, 17 leader-minority, 15 isolate, 12 kill-grape, 10
blackhole, 10 drop, 9 reorder, 8 delay, 7 kill); 130,353 invoked and
acknowledged (434/s), 0 failed, 0 unknown; 0 lost, 0 duplicated, 0
divergent, 0 conflicting, no violations; at most 4.48 s unavailable; all
3 peers at 130,400 0.01 s after the heal; snapshots 33/4, 27/9, 30/5; log
files rewritten 4, 11, 9 times.

A limit seen on the way: a snapshot that forgot the session table (a
patched copy of the tree, not kept) went through 90 s of seed 3 clean.
It only shows when a retry's first attempt was committed before a
snapshot and the retry after a replica restored from it, which this
nemesis rarely arranged; the simulator and tests/replication catch it
at once (13 failures).  So the clients now replay acknowledged submits
late, on purpose (workload.py).  Replays of recent submits alone still
missed it (2,287 in 90 s: a client's last 32 acks are a few hundred
entries, a snapshot interval thousands), and so did replays of any of
them (a busy client's window refills from the log within a second of a
restore, and the floor with it).  With the first client sparse (one op a
second), the same patched tree, 90 s of seed 3: 6 of 6 final states
divergent and hundreds of replies contradicted, starting with the sparse
client's replay of its r1.

Then cancels (15% of operations, of the client's own last 20 orders,
racing the other clients' fills), late replays and the sparse client,
150 s of seed 5 (``invoked``, ``acked`` and ``failed`` count submits and
cancels; a failed one here is a cancel of an order already filled or
cancelled): 54 faults (13 leader-minority, 7 isolate, 7 kill, 6 delay, 6
blackhole, 5 bridge, 4 reorder, 3 kill-grape, 3 drop); 64,292 invoked,
56,536 acknowledged, 7,756 refused, 0 unknown; 3,438 replays, 1,793
answered with the original reply, 1,645 refused as stale; 0 lost, 0
duplicated, 0 divergent, 0 conflicting, no violations; at most 5.89 s
unavailable; snapshots 24/4, 19/8, 24/4.

Then amends too (5%: a new price or quantity of one of those orders; the
fills checked against what the amends left), 150 s of seed 6: 56 faults (9
kill-grape, 9 leader-minority, 8 isolate, 8 bridge, 6 drop, 6 blackhole, 4
reorder, 4 kill, 2 delay); 61,025 invoked, 51,046 acknowledged, 9,979
refused, 0 unknown; 9,661 cancels (2,173 acknowledged: most orders had
filled by then) and 3,222 amends (731); 3,246 replays, 1,621 answered
with the original reply, 1,625 stale; 0 lost, 0 duplicated, 0 divergent,
0 conflicting, no violations; at most 5.95 s unavailable; snapshots
25/3, 19/6, 26/2.

``make nemesis``'s 300 s with all of it, seed 7: 109 faults (20 isolate,
17 leader-minority, 16 bridge, 13 reorder, 11 blackhole, 10 kill, 10
drop, 9 kill-grape, 3 delay); 147,829 invoked, 123,828 acknowledged,
24,001 refused, 0 unknown; 23,539 cancels (5,507 acknowledged), 7,734
amends (1,765); 7,939 replays, 4,094 answered with the original reply,
3,845 stale; 0 lost, 0 duplicated, 0 divergent, 0 conflicting, no
violations; at most 4.67 s unavailable; all 3 peers at 147,898 0.02 s
after the heal; snapshots 41/8, 38/10, 42/8.

After request deadlines moved to one timer per reactor and the server's
silence to one timer per connection (the peers' Raft batches time out
through them under every partition), 150 s, seed 11: 55 faults (11
bridge, 8 leader-minority, 7 isolate, 6 blackhole, 6 delay, 5 kill-grape,
4 kill, 4 drop, 4 reorder); 75,672 invoked, 63,419 acknowledged, 12,253
refused, 0 unknown; 0 lost, 0 duplicated, 0 divergent, 0 conflicting, no
violations; at most 3.06 s unavailable; converged 0.01 s after the heal;
snapshots 29/4, 30/3, 22/7.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tests.netns.cluster import GRAPES, PEER_PORTS, PEERS, NetCluster


@dataclass(frozen=True)
class Schedule:
    """Faults drawn from ``kinds``, each after ``quiet`` seconds and held ``hold`` seconds (uniform)."""

    kinds: tuple[str, ...]
    quiet: tuple[float, float]
    hold: tuple[float, float]


PARTITIONS = Schedule(("isolate", "blackhole", "bridge", "leader-minority"), (0.5, 2.0), (2.0, 5.0))
CHAOS = Schedule(("delay", "reorder", "drop", "kill", "kill-grape"), (1.0, 4.0), (2.0, 6.0))


@dataclass
class Fault:
    kind: str
    target: str
    started: float
    healed: float | None = None


class Nemesis:
    """Injects faults into ``cluster`` until the time is up or it is
    stopped; ``leader()`` names the current leader or None (it is called
    from the nemesis's threads)."""

    def __init__(self, cluster: NetCluster, seed: int, leader: Callable[[], str | None],
                 schedules: tuple[Schedule, ...] = (PARTITIONS, CHAOS)) -> None:
        self.cluster = cluster
        self.network = cluster.network
        self.seed = seed
        self.leader = leader
        self.schedules = schedules
        self.faults: list[Fault] = []
        self._stop = threading.Event()
        self._errors: list[Exception] = []

    def run(self, seconds: float) -> None:
        """Every schedule, side by side, for ``seconds`` (blocking: run it in a thread)."""
        end = time.monotonic() + seconds
        threads = [threading.Thread(target=self._follow, args=(schedule, random.Random(f"{self.seed}/{i}"), end))
                   for i, schedule in enumerate(self.schedules)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._errors:
            raise self._errors[0]

    def _follow(self, schedule: Schedule, rng: random.Random, end: float) -> None:
        """Fault, hold, heal, until ``end``; a failure (kept for ``run``) stops every schedule."""
        try:
            while not self._stop.wait(rng.uniform(*schedule.quiet)) and time.monotonic() < end:
                kind = rng.choice(schedule.kinds)
                hold = rng.uniform(*schedule.hold)
                fault = Fault(kind, "", time.monotonic())
                heal = getattr(self, "_" + kind.replace("-", "_"))(fault, rng)
                self.faults.append(fault)
                self._stop.wait(min(hold, max(0.0, end - time.monotonic())))
                heal()
                fault.healed = time.monotonic()
        except Exception as e:  # raised again by run(), in the caller's thread
            self._errors.append(e)
        finally:
            self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    def heal_all(self) -> None:
        """Every cable, route and proxy healed, every program running again."""
        self.network.heal()
        for control in self.cluster.proxies.values():
            control.send(reset=True)
        self.cluster.restart_dead()

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.faults))

    # -- faults: each applies itself and returns what heals exactly it ----------

    def _peer(self, fault: Fault, rng: random.Random, leader_half: bool = True) -> str:
        """A random peer, or (half the time, if asked) the leader."""
        peer = rng.choice(PEERS)
        if leader_half and rng.random() < 0.5:
            peer = self.leader() or peer
        fault.target = peer
        return peer

    def _isolate(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        host = self.cluster.hosts[self._peer(fault, rng)]
        self.network.set_link(host, False)
        return lambda: self.network.set_link(host, True)

    def _blackhole(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        peer = self.cluster.hosts[self._peer(fault, rng, leader_half=False)]
        grapes = [self.cluster.hosts[g] for g in rng.sample(GRAPES, rng.randint(1, len(GRAPES)))]
        fault.target += "|" + ",".join(g.name for g in grapes)
        routes = [route for g in grapes for route in ((peer, g.address), (g, peer.address))]
        for host, address in routes:
            self.network.blackhole(host, address)

        def heal() -> None:
            for host, address in routes:
                self.network.unblackhole(host, address)
        return heal

    def _cut(self, pairs: list[tuple[str, str]]) -> Callable[[], None]:
        """At every proxy, refuse connections from the first peer of each pair to the second."""
        by_port: dict[int, list[str]] = {}
        for source, target in pairs:
            by_port.setdefault(PEER_PORTS[PEERS.index(target)], []).append(self.cluster.hosts[source].address)

        def send(cut: bool) -> None:
            for control in self.cluster.proxies.values():
                for port, sources in by_port.items():
                    control.send(ports=[port], cut=sources if cut else [])
        send(True)
        return lambda: send(False)

    def _bridge(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        a, b = rng.sample(PEERS, 2)
        fault.target = f"{a}|{b}"
        return self._cut([(a, b), (b, a)])

    def _leader_minority(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        leader = self.leader() or rng.choice(PEERS)
        fault.target = leader
        return self._cut([pair for p in PEERS if p != leader for pair in ((leader, p), (p, leader))])

    def _toxic(self, fault: Fault, **order: float) -> Callable[[], None]:
        fault.target = ",".join(f"{k}={v:.2f}" for k, v in order.items())
        for control in self.cluster.proxies.values():
            control.send(**order)

        def heal() -> None:
            for control in self.cluster.proxies.values():
                control.send(latency=0.0, jitter=0.0, drop=0.0)
        return heal

    def _delay(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        return self._toxic(fault, latency=rng.uniform(0.05, 0.3), jitter=rng.uniform(0, 0.1))

    def _reorder(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        return self._toxic(fault, latency=0.0, jitter=rng.uniform(0.1, 0.4))

    def _drop(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        return self._toxic(fault, drop=rng.uniform(0.05, 0.25))

    def _kill(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        return self._kill_program(self._peer(fault, rng))

    def _kill_grape(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        fault.target = rng.choice(GRAPES)
        return self._kill_program(fault.target)

    def _kill_program(self, name: str) -> Callable[[], None]:
        self.cluster.kill(name)
        return lambda: self.cluster.start_program(name)
