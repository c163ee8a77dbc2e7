"""The exchange across hosts: two grapes and three peers, each on its own
namespace, plus a client host, started from the configs that
``topology.render(..., machine=ADDR)`` writes for each machine.

Where a peer is found.  A Grenache announce carries a port only: the grape
files it under its *own* address (its DHT node's, which is also what the
other grapes see as the UDP source), so ``exchange:peer3`` announced on the
grape at 10.77.0.11 is found at 10.77.0.11:5003, not at peer3's address.
Grenache assumes a grape on every machine; here the grapes have machines of
their own, so each grape host runs a link proxy (``proxy.py``) per peer,
listening on exactly the address the grapes announce (grape address, peer
port) and forwarding to the peer.  Every connection to a peer, from a
client or another peer, therefore crosses one proxy: that is where the
nemesis delays, drops, reorders and cuts.

Secure mode as shipped: one CA, each peer's credential issued before start
for its own address, each client with its own.  ``--fsync never`` as in the
single-host e2e tests (a SIGKILL does not lose the page cache).

Compaction on, often: ``--snapshot-every`` :data:`SNAPSHOT_EVERY` (the
peers stretch it to a quarter of the orders they know, a few thousand
entries here), so the nemesis also meets background snapshots (forked
writers killed with their peer), dead log prefixes, log files rewritten at
restarts, and InstallSnapshot to the followers it cut off or killed.  A
peer then seldom keeps its log from entry 1, so ``archive.LogArchive``
keeps every version of every peer's log file, and the committed log is
rebuilt from them (:meth:`NetCluster.committed`).  Each peer's own final state is
replayed from its own files: its snapshot restored (the digest is part of
the state, so the hash chain goes on), then its log after it
(:meth:`NetCluster.replay_peer`).
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from twisted_exchange import pki
from twisted_exchange.ctl.topology import GRAPE_PORTS, render
from twisted_exchange.pki import PEER, Identity
from twisted_exchange.replication.records import Entry
from twisted_exchange.replication.state_machine import ReplicatedStateMachine
from twisted_exchange.wal import codec, read_log
from twisted_exchange.wal.file_storage import LOG, SNAPSHOT

from tests.netns.archive import LogArchive, contiguous
from tests.netns.hosts import Network
from tests.netns.proxy import Control
from tests.support import ROOT

PEERS = ("peer1", "peer2", "peer3")
GRAPES = ("grape1", "grape2")
PEER_PORTS = (5001, 5002, 5003)
CLIENT_HOST = "client"
#: The peers' --snapshot-every: often, so that a run takes and installs many snapshots.
SNAPSHOT_EVERY = 500
#: Last octet of each host's address in hosts.SUBNET.
OCTETS = {"grape1": 11, "grape2": 12, "peer1": 21, "peer2": 22, "peer3": 23, CLIENT_HOST: 100}


class NetCluster:
    """The processes of the exchange on ``network``'s hosts, logs and data in ``run_dir``."""

    def __init__(self, network: Network, run_dir: Path) -> None:
        self.network = network
        self.run_dir = run_dir
        self.hosts = {name: network.add_host(name, octet) for name, octet in OCTETS.items()}
        self.pki = run_dir / "pki"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.grape_urls = [f"http://{self.hosts[g].address}:{api}" for g, (_, api) in zip(GRAPES, GRAPE_PORTS)]
        self.argv = self._programs()
        self.proxies = {g: Control(str(run_dir / f"proxy-{g}.sock")) for g in GRAPES}
        self._running: dict[str, subprocess.Popen] = {}
        self.exits: list[str] = []
        self.archive = LogArchive({peer: run_dir / peer for peer in PEERS}, run_dir / "archive")

    def _programs(self) -> dict[str, list[str]]:
        """Each program's command line, from the config of the machine it runs on."""
        python = sys.executable
        kwargs = dict(grape_ports=GRAPE_PORTS, peer_ports=PEER_PORTS, run_dir=str(self.run_dir),
                      peer_command=f"{python} -m twisted_exchange.peer --fsync never "
                                   f"--snapshot-every {SNAPSHOT_EVERY}",
                      grape_command=f"{python} -m twisted_exchange.grape", stopwaitsecs=3, secure=True,
                      peer_hosts=[self.hosts[p].address for p in PEERS],
                      grape_hosts=[self.hosts[g].address for g in GRAPES],
                      admin_ports=[0] * (len(GRAPES) + len(PEERS)))
        programs = {}
        for name in GRAPES + PEERS:
            parser = configparser.RawConfigParser()
            parser.read_string(render(len(PEERS), machine=self.hosts[name].address, **kwargs))
            programs[name] = shlex.split(parser.get(f"program:{name}", "command"))
        return programs

    def credential(self, kind: str, name: str) -> pki.Credential:
        return pki.obtain(self.pki, Identity(kind, name))

    def start(self) -> None:
        """Proxies (ready when their control sockets exist), grapes, then peers."""
        for peer in PEERS:  # issued here, each for its own address, not by racing first starts
            pki.obtain(self.pki, Identity(PEER, peer), [self.hosts[peer].address])
        for grape in GRAPES:
            address = self.hosts[grape].address
            links = [f"{address}:{port}={self.hosts[peer].address}:{port}"
                     for peer, port in zip(PEERS, PEER_PORTS)]
            argv = [sys.executable, "-m", "tests.netns.proxy", "--control", self.proxies[grape].path,
                    "--seed", str(OCTETS[grape])]
            for link in links:
                argv += ["--link", link]
            proc = self.network.spawn(self.hosts[grape], argv, self.run_dir / f"proxy-{grape}.log", self.env)
            _poll(lambda: os.path.exists(self.proxies[grape].path), proc, f"proxy on {grape}")
        for name in GRAPES + PEERS:
            self.start_program(name)

    def start_program(self, name: str) -> None:
        """Start grape or peer ``name`` on its host (again, after a kill)."""
        log = self.run_dir / f"{name}.log"
        self._running[name] = self.network.spawn(self.hosts[name], self.argv[name], log, self.env)

    def restart_dead(self) -> None:
        """Start every grape and peer not running; one that exited by itself
        (not killed here) is noted in ``self.exits``."""
        for name in GRAPES + PEERS:
            proc = self._running.get(name)
            if proc is not None and proc.poll() is not None:
                self.exits.append(f"{name} exited with {proc.returncode}")
            if proc is None or proc.poll() is not None:
                self.start_program(name)

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` by its PID and reap it."""
        proc = self._running.pop(name)
        proc.kill()
        proc.wait()

    def stop_peers(self) -> None:
        """SIGTERM every peer and wait: their logs can then be read."""
        for peer in PEERS:
            proc = self._running.pop(peer, None)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def committed(self, applied: dict[str, int], head: int) -> tuple[list[Entry], list[str]]:
        """The committed log 1..``head`` from every archived log file, and
        the conflicts among them (``LogArchive.committed``), once the peers
        stopped; ``applied``: the index each peer reported.  AssertionError
        if an entry is missing."""
        self.archive.poll()  # the files as the peers left them
        known = [(index, term) for peer in PEERS for _, index, term in self._snapshot_lines(peer)]
        log, conflicts = self.archive.committed(known, applied)
        return contiguous(log, head), conflicts

    def replay_peer(self, peer: str, head: int) -> tuple[int, str] | None:
        """``(applied, digest)`` of ``peer``'s own files (it stopped): its
        snapshot restored, then its log after it replayed, up to ``head``;
        None if that applies nothing."""
        data = self.run_dir / peer
        try:
            snapshot = json.loads((data / SNAPSHOT).read_bytes())
        except FileNotFoundError:
            snapshot = None
        machine = ReplicatedStateMachine.restore(snapshot["data"]) if snapshot else ReplicatedStateMachine()
        for entry in read_log(data / LOG):  # the dead prefix too: skipped, the snapshot covers it
            if entry["index"] > head:
                break
            if entry["index"] == machine.applied + 1:
                machine.apply(entry)
        return (machine.applied, machine.digest) if machine.applied else None

    def first_entries(self) -> dict[str, int | None]:
        """The index of the first entry each peer's log file holds now (dead
        prefix included): 1 only if the file was never rewritten."""
        firsts = {}
        for peer in PEERS:
            data = (self.run_dir / peer / LOG).read_bytes()
            firsts[peer] = codec.decode(data, 0)[0]["index"] if data else None
        return firsts

    def snapshots(self) -> dict[str, dict[str, int]]:
        """Per peer, the snapshots it took (and compacted its log to) and
        those it installed from a leader, over every start."""
        counts = {}
        for peer in PEERS:
            kinds = [kind for kind, _, _ in self._snapshot_lines(peer)]
            counts[peer] = {"taken": kinds.count("compacted"), "installed": kinds.count("installed")}
        return counts

    def _snapshot_lines(self, peer: str) -> list[tuple[str, int, int]]:
        """``(kind, index, term)`` of each snapshot ``peer`` logged
        (``peer/service.py``): "compacted" or "installed"."""
        text = (self.run_dir / f"{peer}.log").read_text(errors="replace")
        pattern = re.compile(rf"{peer} (compacted) its log to entry (\d+) \(term (\d+)"
                             rf"|{peer} (installed) a snapshot from \S+ of entries up to (\d+) \(term (\d+)\)")
        return [(m[1] or m[4], int(m[2] or m[5]), int(m[3] or m[6])) for m in pattern.finditer(text)]


def replay(entries: list[Entry]) -> list[dict]:
    """The log ``entries`` from entry 1, each with the result and digest a
    replay through the state machine gives: ``{"index", "command", "result",
    "digest"}``."""
    machine = ReplicatedStateMachine()
    replayed = []
    for entry in entries:
        result = machine.apply(entry)
        replayed.append({"index": entry["index"], "command": entry["command"],
                         "result": result, "digest": machine.digest})
    return replayed


def _poll(ready, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    """Wait until ``ready()``, failing at once if ``proc`` exits, else at the deadline."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(0.05)
