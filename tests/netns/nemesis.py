"""The nemesis: a seeded schedule of real network and process faults.

One fault at a time, as Jepsen's combined nemeses do by default: a quiet
spell of ``quiet`` seconds (uniform), then a fault held for ``hold``
seconds, then a heal, until the time is up; then everything is healed.  The
schedule is a pure function of the seed (which fault, which target, how
long); only "the leader" is looked up when the fault happens.

Faults, by kind (a partition every few seconds: 4 of the 8 kinds cut links):

- ``isolate``: a peer's cable out of the switch (``ip link set DEV down``);
  half the time the leader's.
- ``blackhole``: blackhole routes both ways between a peer and one or both
  grape hosts: a partial partition (it still reaches the cluster through
  the other grape host's proxy) or a complete one.
- ``bridge``: two peers cut from each other at every proxy, both still
  reaching the third: the non-transitive partition Raft must survive
  without electing two leaders (Jepsen's "bridge").
- ``leader-minority``: the leader cut from both followers at the proxies,
  while clients still reach it: it must stop acknowledging.
- ``delay``: 50-300 ms and jitter on every link.
- ``reorder``: up to 400 ms of jitter per chunk: messages on different
  connections overtake each other.
- ``drop``: 5-25 % of chunks lost with their connection.
- ``kill``: SIGKILL a peer (half the time the leader), restarted at the
  heal from its own data directory; ``kill-grape`` the same for a grape.

Figures (``make nemesis``, 300 s, seed 1, 6 clients, 2 cores shared):
see the end of this docstring.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tests.netns.cluster import GRAPES, PEER_PORTS, PEERS, NetCluster

KINDS = ("isolate", "blackhole", "bridge", "leader-minority", "delay", "reorder", "drop", "kill",
         "kill-grape")


@dataclass
class Fault:
    kind: str
    target: str
    started: float
    healed: float | None = None


class Nemesis:
    """Injects faults into ``cluster`` until stopped; ``leader()`` names the
    current leader or None (called from the nemesis thread)."""

    def __init__(self, cluster: NetCluster, seed: int, leader: Callable[[], str | None],
                 quiet: tuple[float, float] = (1.0, 3.0), hold: tuple[float, float] = (2.0, 6.0)) -> None:
        self.cluster = cluster
        self.network = cluster.network
        self.rng = random.Random(seed)
        self.leader = leader
        self.quiet = quiet
        self.hold = hold
        self.faults: list[Fault] = []
        self._stop = threading.Event()

    def run(self, seconds: float) -> None:
        """Fault, hold, heal, repeatedly for ``seconds`` (blocking: run it in a thread)."""
        end = time.monotonic() + seconds
        while not self._stop.wait(self.rng.uniform(*self.quiet)) and time.monotonic() < end:
            kind = self.rng.choice(KINDS)
            hold = self.rng.uniform(*self.hold)
            fault = Fault(kind, "", time.monotonic())
            heal = getattr(self, "_" + kind.replace("-", "_"))(fault)
            self.faults.append(fault)
            self._stop.wait(min(hold, max(0.0, end - time.monotonic())))
            heal()
            fault.healed = time.monotonic()

    def stop(self) -> None:
        self._stop.set()

    def heal_all(self) -> None:
        """Every cable, route and proxy healed, every program running again."""
        self.network.heal()
        self._reset_proxies()
        self.cluster.restart_dead()

    def counts(self) -> dict[str, int]:
        return dict(Counter(f.kind for f in self.faults))

    # -- faults: each applies itself and returns its heal -------------------------

    def _peer(self, fault: Fault, leader_half: bool = True) -> str:
        """A random peer, or (half the time, if asked) the leader."""
        peer = self.rng.choice(PEERS)
        if leader_half and self.rng.random() < 0.5:
            peer = self.leader() or peer
        fault.target = peer
        return peer

    def _isolate(self, fault: Fault) -> Callable[[], None]:
        host = self.cluster.hosts[self._peer(fault)]
        self.network.set_link(host, False)
        return lambda: self.network.set_link(host, True)

    def _blackhole(self, fault: Fault) -> Callable[[], None]:
        peer = self.cluster.hosts[self._peer(fault, leader_half=False)]
        grapes = self.rng.sample(GRAPES, self.rng.randint(1, len(GRAPES)))
        fault.target += "|" + ",".join(grapes)
        for grape in grapes:
            host = self.cluster.hosts[grape]
            self.network.blackhole(peer, host.address)
            self.network.blackhole(host, peer.address)
        return self.network.heal

    def _cut(self, pairs: list[tuple[str, str]]) -> Callable[[], None]:
        """At every proxy, refuse connections from the first peer of each pair to the second."""
        by_port: dict[int, list[str]] = {}
        for source, target in pairs:
            by_port.setdefault(PEER_PORTS[PEERS.index(target)], []).append(self.cluster.hosts[source].address)
        for control in self.cluster.proxies.values():
            for port, sources in by_port.items():
                control.send(ports=[port], cut=sources)
        return self._reset_proxies

    def _bridge(self, fault: Fault) -> Callable[[], None]:
        a, b = self.rng.sample(PEERS, 2)
        fault.target = f"{a}|{b}"
        return self._cut([(a, b), (b, a)])

    def _leader_minority(self, fault: Fault) -> Callable[[], None]:
        leader = self.leader() or self.rng.choice(PEERS)
        fault.target = leader
        others = [p for p in PEERS if p != leader]
        return self._cut([pair for p in others for pair in ((leader, p), (p, leader))])

    def _toxic(self, fault: Fault, **order: float) -> Callable[[], None]:
        fault.target = ",".join(f"{k}={v:.2f}" for k, v in order.items())
        for control in self.cluster.proxies.values():
            control.send(**order)
        return self._reset_proxies

    def _delay(self, fault: Fault) -> Callable[[], None]:
        return self._toxic(fault, latency=self.rng.uniform(0.05, 0.3), jitter=self.rng.uniform(0, 0.1))

    def _reorder(self, fault: Fault) -> Callable[[], None]:
        return self._toxic(fault, latency=0.0, jitter=self.rng.uniform(0.1, 0.4))

    def _drop(self, fault: Fault) -> Callable[[], None]:
        return self._toxic(fault, drop=self.rng.uniform(0.05, 0.25))

    def _reset_proxies(self) -> None:
        for control in self.cluster.proxies.values():
            control.send(reset=True)

    def _kill(self, fault: Fault) -> Callable[[], None]:
        return self._kill_program(self._peer(fault))

    def _kill_grape(self, fault: Fault) -> Callable[[], None]:
        fault.target = self.rng.choice(GRAPES)
        return self._kill_program(fault.target)

    def _kill_program(self, name: str) -> Callable[[], None]:
        self.cluster.kill(name)
        return lambda: self.cluster.start_program(name)
