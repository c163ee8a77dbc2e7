"""A real cluster for end-to-end tests: a rendered supervisord config with
free loopback ports in a temporary run directory, supervisord started in the
foreground by the test (so it is killed by PID at cleanup, and its programs
with it), and Grenache clients to talk to the peers."""
from __future__ import annotations

import json
import os
import random
import signal
import shutil
import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor, task

from twisted_exchange import pki
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.supervisor import Supervisor
from twisted_exchange.ctl.topology import render
from twisted_exchange.grenache import GrenacheError, Link, RPCClient
from twisted_exchange.pki import CLIENT
from tests.support import eventually, free_ports, python_module, spawn

SYMBOL = "BTCUSD"


class Cluster:
    """Two grapes and ``peers`` peers under a supervisord owned by ``test``."""

    def __init__(self, test, peers: int = 3, grape_command: str | None = None,
                 peer_args: str = "", secure: bool = True) -> None:
        self.test = test
        self.run_dir = Path(tempfile.mkdtemp(prefix="tx-e2e-"))
        test.addCleanup(shutil.rmtree, self.run_dir, True)
        ports = free_ports(4 + peers)
        self.grape_ports = [(ports[0], ports[1]), (ports[2], ports[3])]
        self.peer_ports = ports[4:]
        self.peer_ids = [f"peer{i + 1}" for i in range(peers)]
        self.grape_urls = [f"http://127.0.0.1:{api}" for _, api in self.grape_ports]
        python = sys.executable
        self.config = self.run_dir / "cluster.conf"
        self.config.write_text(render(
            peers, grape_ports=self.grape_ports, peer_ports=self.peer_ports,
            run_dir=str(self.run_dir),
            peer_command=f"{python} -m twisted_exchange.peer --fsync never {peer_args}".strip(),
            grape_command=grape_command or f"{python} -m twisted_exchange.grape",
            stopwaitsecs=3, secure=secure, admin_ports=[0] * (2 + peers)))
        self.pki = self.run_dir / "pki" if secure else None
        self.supervisor = Supervisor(self.run_dir / "supervisord.sock", timeout=10)
        self._clients: dict[tuple[int, str, str], RPCClient] = {}

    def start(self) -> None:
        """Start supervisord (blocking until it answers).

        At cleanup supervisord is stopped (it stops its programs), then any
        program it left running is killed by the PID it last reported.
        """
        programs: list[int] = []
        self.test.addCleanup(_kill_survivors, programs)
        proc = spawn(self.test, python_module("supervisor.supervisord", "-n", "-c", str(self.config)),
                     log=self.run_dir / "supervisord.out")
        self.test.addCleanup(lambda: programs.extend(self._program_pids()))
        self.supervisor.wait_until(
            lambda: proc.poll() is None and self.supervisor.is_running()
            and self.supervisor.state() == "RUNNING", 20, "supervisord did not start")

    def _program_pids(self) -> list[int]:
        try:
            return [p["pid"] for p in self.supervisor.processes() if p["pid"]]
        except CtlError:  # supervisord already gone: nothing to learn
            return []

    def client(self, grape: int = 0, name: str = "tester", kind: str = CLIENT) -> RPCClient:
        """An RPC client looking up on grape ``grape``, in secure mode with the
        credential of ``kind`` ``name`` (a client; a peer to play a peer's
        part); one per (grape, kind, name)."""
        if (grape, kind, name) not in self._clients:
            link = Link(self.grape_urls[grape])
            client = RPCClient(link, timeout=5.0, tls=self.credential(kind, name) if self.pki else None)
            self.test.addCleanup(link.close)
            self.test.addCleanup(client.close)
            self._clients[grape, kind, name] = client
        return self._clients[grape, kind, name]

    def credential(self, kind: str, name: str) -> pki.Credential:
        """``kind`` ``name``'s credential from the cluster's pki directory (secure mode)."""
        return pki.obtain(self.pki, pki.Identity(kind, name))

    def tls_files(self, name: str = "tester", kind: str = CLIENT) -> dict[str, Path] | None:
        """``kind`` ``name``'s credential files for a raw socket (None: plain mode)."""
        if self.pki is None:
            return None
        self.credential(kind, name)
        return pki.paths(self.pki, pki.Identity(kind, name))

    def data_dir(self, peer_id: str) -> Path:
        return self.run_dir / peer_id

    def log(self, name: str) -> str:
        path = self.run_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _kill_survivors(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@defer.inlineCallbacks
def statuses(client: RPCClient, peer_ids: list[str], timeout: float = 2.0):
    """Every peer's status (peers that don't answer are left out)."""
    results = yield defer.DeferredList(
        [client.request(f"exchange:{p}", {"action": "status"}, timeout=timeout, retry=0)
         for p in peer_ids], consumeErrors=True)
    return {p: r for p, (ok, r) in zip(peer_ids, results) if ok}


@defer.inlineCallbacks
def wait_for_leader(client: RPCClient, peer_ids: list[str], timeout: float = 30.0):
    """The leader that every peer agrees on."""
    seen: dict = {}

    def agreed(found):
        seen.clear()
        seen.update({p: (s["role"], s["leader"], s["term"]) for p, s in found.items()})
        leaders = {s["leader"] for s in found.values()}
        if len(found) == len(peer_ids) and len(leaders) == 1 and None not in leaders:
            return leaders.pop()
        return None
    try:
        leader = yield eventually(lambda: statuses(client, peer_ids).addCallback(agreed),
                                  timeout, what="one leader known to every peer")
    except AssertionError as e:  # say what each peer last said (role, leader, term), or that it was silent
        silent = [p for p in peer_ids if p not in seen]
        raise AssertionError(f"{e}; last seen {seen}, no answer from {silent}") from None
    return leader


@defer.inlineCallbacks
def wait_for_convergence(client: RPCClient, peer_ids: list[str], timeout: float = 30.0):
    """Statuses once every peer has applied the same index with the same hash."""
    def converged(found):
        same = {(s["applied"], s["digest"]) for s in found.values()}
        return found if len(found) == len(peer_ids) and len(same) == 1 else None
    found = yield eventually(lambda: statuses(client, peer_ids).addCallback(converged),
                             timeout, what="every peer at the same applied index and hash")
    return found


class Trader:
    """Clients that trade concurrently on every peer, one order in flight each,
    each with its own credential in secure mode.

    A submit that fails in transport (peer down, timeout, no leader) is
    retried on the next peer with the same request id, which the replicated
    session table makes safe: it is applied at most once.
    """

    def __init__(self, cluster: Cluster, peer_ids: list[str], seed: int = 7,
                 name: str = "trader") -> None:
        self.name = name
        self.cluster = cluster
        self.peer_ids = peer_ids
        self.rng = random.Random(seed)
        self.acked: dict[tuple[str, str], dict] = {}
        self.refused: list[str] = []

    def order(self, name: str, n: int) -> dict:
        rng = self.rng
        return {"action": "submit", "client": name, "request": f"{name}-{n}", "symbol": SYMBOL,
                "side": rng.choice(["buy", "sell"]), "type": "limit",
                "price": str(rng.choice(["99", "99.5", "100", "100.5", "101"])),
                "quantity": str(rng.randint(1, 3))}

    @defer.inlineCallbacks
    def run_client(self, index: int, orders: int, deadline: float = 60.0):
        name = f"{self.name}{index}"
        client = self.cluster.client(name=name)
        for n in range(orders):
            payload = self.order(name, n)
            attempt = index
            give_up = reactor.seconds() + deadline
            while True:
                peer = self.peer_ids[attempt % len(self.peer_ids)]
                try:
                    result = yield client.request(f"exchange:{peer}", payload, timeout=5.0, retry=0)
                except GrenacheError as e:
                    if e.code not in ("ERR_TIMEOUT", "ERR_REQUEST_GENERIC", "ERR_NO_LEADER",
                                      "ERR_GRAPE_LOOKUP_EMPTY", "ERR_REPLY_EMPTY"):
                        self.refused.append(str(e))
                        break
                    if reactor.seconds() > give_up:
                        raise
                    attempt += 1
                    yield task.deferLater(reactor, 0.05, lambda: None)
                    continue
                self.acked[(name, payload["request"])] = result
                break

    def run(self, clients: int, orders_each: int):
        return defer.gatherResults([self.run_client(i, orders_each) for i in range(clients)],
                                   consumeErrors=True)


def dump(value) -> str:
    return json.dumps(value, sort_keys=True)


def prefill(data_dirs: list[Path], commands: list[dict]) -> int:
    """Give every peer the same snapshot of the state after ``commands``
    (applied at indexes 1..n in term 1), as if the cluster had run them and
    compacted its log; the index of the snapshot."""
    from twisted_exchange.replication.state_machine import ReplicatedStateMachine
    from twisted_exchange.wal import FileStorage
    machine = ReplicatedStateMachine()
    for index, command in enumerate(commands, 1):
        machine.apply({"index": index, "term": 1, "command": command})
    snapshot = {"index": len(commands), "term": 1, "data": machine.snapshot()}
    for data_dir in data_dirs:
        storage = FileStorage(data_dir, fsync="never")
        storage.load()
        storage.save({"term": 1, "vote": None, "commit": len(commands)}, [], snapshot)
        storage.close()
    return len(commands)
