"""One nemesis run, end to end: ``python -m tests.netns.run --seconds 300``.

Builds the hosts (``hosts.py``), starts the exchange on them
(``cluster.py``, compaction on), moves this process onto the client host,
trades with ``--clients`` clients (``workload.py``) while the nemesis
(``nemesis.py``) breaks things for ``--seconds`` and every version of every
peer's log file is archived (``archive.py``), heals everything, waits for
every peer to reach the same applied index and digest, stops the peers,
rebuilds the committed log from the archive and replays it, replays each
peer's own snapshot and log, and checks the history against the committed
log (``checker.py``).  The figures count the snapshots each peer took and
installed, how often its log file was rewritten and the first entry its
last file holds, so a run shows that compaction happened under the faults
and whether the witness needed the archive.  Prints the figures (and writes
them as JSON with ``--json``); exits 0 only on a clean verdict, 1 otherwise
(the run directory with every log and the archive is then kept and named),
2 when namespaces cannot be used here.  Every process and namespace
is gone when it returns, whatever happened; a run killed with SIGKILL
leaves namespaces that the next run sweeps.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.threads import blockingCallFromThread, deferToThread

from twisted_exchange.grenache import Link, RPCClient
from twisted_exchange.pki import CLIENT

from tests.e2e.cluster import statuses, wait_for_convergence, wait_for_leader
from tests.netns import checker
from tests.netns.cluster import CLIENT_HOST, PEERS, NetCluster, replay
from tests.netns.hosts import Network, sweep_leftovers, unavailable
from tests.netns.nemesis import Nemesis
from tests.netns.workload import Workload

#: Seconds every peer gets, after the heal, to reach the same applied index and digest.
CONVERGE_SECONDS = 90
#: Seconds between two looks at every peer's log file (``archive.LogArchive.poll``).
ARCHIVE_SECONDS = 0.1


def _client(cluster: NetCluster, grape_url: str, name: str) -> RPCClient:
    return RPCClient(Link(grape_url), timeout=5.0, tls=cluster.credential(CLIENT, name))


async def _leader(watcher: RPCClient) -> str | None:
    """The peer that says it leads in the highest term, if any answers so."""
    found = await statuses(watcher, list(PEERS), timeout=1.0)
    leaders = [(s["term"], p) for p, s in found.items() if s["role"] == "leader"]
    return max(leaders)[1] if leaders else None


async def session(reactor, cluster: NetCluster, args: argparse.Namespace, figures: dict) -> None:
    """Trade under the nemesis, heal, converge, check; the figures go into ``figures``."""
    archiving = task.LoopingCall(cluster.archive.poll)
    archived = archiving.start(ARCHIVE_SECONDS)
    names = [f"client{i + 1}" for i in range(args.clients)]
    rpcs = {name: [_client(cluster, url, name) for url in cluster.grape_urls] for name in names}
    watcher = _client(cluster, cluster.grape_urls[0], "watcher")
    await wait_for_leader(watcher, list(PEERS), timeout=60)
    workload = Workload(rpcs, list(PEERS), seed=args.seed)
    nemesis = Nemesis(cluster, args.seed,
                      leader=lambda: blockingCallFromThread(reactor, lambda: defer.ensureDeferred(_leader(watcher))))
    started = time.monotonic()
    workload.start()
    try:
        await deferToThread(nemesis.run, args.seconds)
    finally:
        nemesis.stop()
        nemesis.heal_all()
    await workload.stop()
    healed = time.monotonic()
    try:
        found = await wait_for_convergence(watcher, list(PEERS), timeout=CONVERGE_SECONDS)
    except AssertionError:
        found = await statuses(watcher, list(PEERS))
    converged = time.monotonic() - healed
    reported = {p: (found[p]["applied"], found[p]["digest"]) if p in found else None for p in PEERS}
    await deferToThread(cluster.stop_peers)
    if archiving.running:
        archiving.stop()
    await archived  # raises what stopped the archive early, if anything did
    head = max((state[0] for state in reported.values() if state), default=0)
    committed, conflicts = cluster.committed({p: state[0] for p, state in reported.items() if state}, head)
    witness = replay(committed)
    finals = dict(reported)
    finals.update({f"{p} log": cluster.replay_peer(p, head) for p in PEERS})
    verdict = checker.check(workload.history, witness, finals)
    commands = [op for op in workload.history if not op.replay]  # submits, cancels, amends
    replays = [op for op in workload.history if op.replay]
    outcomes = {kind: sum(op.outcome == kind for op in commands) for kind in ("ok", "fail", "info")}
    figures.update({
        "seconds": round(healed - started, 1), "seed": args.seed, "clients": args.clients,
        "invoked": len(commands), "acked": outcomes["ok"], "failed": outcomes["fail"],
        "unknown": outcomes["info"], "unknown_executed": verdict.info_executed,
        "acked_per_second": round(outcomes["ok"] / max(healed - started, 1e-9), 1),
        "most_attempts": max((op.attempts for op in workload.history), default=0),
        "replays": len(replays), "replays_acked": sum(op.outcome == "ok" for op in replays),
        "replays_stale": sum(op.outcome == "fail" for op in replays),
        **{f"{action}s": sum(op.command["action"] == action for op in commands) for action in ("cancel", "amend")},
        **{f"{action}s_acked": sum(op.command["action"] == action and op.outcome == "ok" for op in commands)
           for action in ("cancel", "amend")},
        "faults": nemesis.counts(), "faults_total": len(nemesis.faults),
        "max_unavailable_seconds": round(checker.longest_gap(workload.history), 2),
        "converged_after_heal_seconds": round(converged, 2), "applied": head,
        "lost": len(verdict.lost), "duplicated": len(verdict.duplicated), "divergent": len(verdict.divergent),
        "conflicting": len(conflicts), "snapshots": cluster.snapshots(),
        "log_rewrites": cluster.archive.rewrites(), "first_entry_on_file": cluster.first_entries(),
        "unexpected_exits": cluster.exits,
        "violations": {**{k: v for k, v in asdict(verdict).items() if k != "info_executed" and v},
                       **({"conflicting": conflicts[:20]} if conflicts else {})},
        "ok": verdict.ok and not conflicts and not cluster.exits,
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.netns.run", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="nemesis time (default 300)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        print(f"skipped: {reason}")
        return 2
    for name in sweep_leftovers():
        print(f"deleted leftover namespace {name}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the cleanup below
    run_dir = Path(tempfile.mkdtemp(prefix="tx-netns-"))
    network = Network()
    figures: dict = {}
    try:
        cluster = NetCluster(network, run_dir)
        cluster.start()
        network.enter(cluster.hosts[CLIENT_HOST])
        try:
            task.react(lambda reactor: defer.ensureDeferred(session(reactor, cluster, args, figures)).addErrback(
                lambda failure: figures.update(error=failure.getTraceback())))
        except SystemExit as e:
            if e.code:
                figures.setdefault("error", f"session ended with {e.code}: see {run_dir}")
    finally:
        network.destroy()
    for key, value in figures.items():
        print(f"{key:>30}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    if figures.get("ok"):
        shutil.rmtree(run_dir, ignore_errors=True)
        return 0
    print(f"FAILED: logs and data kept in {run_dir}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
