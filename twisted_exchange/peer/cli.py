"""``twisted-exchange-peer``: run one exchange peer until SIGTERM."""
from __future__ import annotations

import errno
import re
import sys
import time

from collections.abc import Callable

import click
from cryptography import x509
from twisted.internet.error import CannotListenError

from twisted_exchange import connections, gctuning, pki, scheduling
from twisted_exchange.monotonic import use_monotonic_time
from twisted_exchange.grenache import tls
from twisted_exchange.logs import begin_logging, log_options
from twisted_exchange.peer.membership import MembershipError, recorded
from twisted_exchange.peer.protocol import is_address
from twisted_exchange.pki import PEER, Credential, Identity
from twisted_exchange.peer.service import SNAPSHOT_EVERY, PeerService
from twisted_exchange.replication.storage import StorageError

PEER_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: Errors of the machine, not of the data: wait for someone to fix the disk.
DISK_ERRORS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO})
#: Seconds between attempts to open a data directory that the disk refuses.
DISK_RETRY_SECONDS = (1, 2, 5)


def _peer_list(ctx, param, value: str) -> list[str]:
    peers = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in peers if not PEER_ID.match(p)]
    if bad:
        raise click.BadParameter(f"peer ids must match {PEER_ID.pattern}: {', '.join(bad)}")
    if len(set(peers)) != len(peers):
        raise click.BadParameter("peer ids must be unique")
    return peers


def _grape_list(ctx, param, value: str) -> list[str]:
    urls = [u.strip() for u in value.split(",") if u.strip()]
    bad = [u for u in urls if not re.match(r"^http://[^/\s]+:\d+/?$", u)]
    if not urls or bad:
        raise click.BadParameter(f"expected http://HOST:PORT[,http://HOST:PORT...], got {value!r}")
    return urls


def _peer_addresses(ctx, param, value: str | None) -> dict[str, str]:
    """``ID=HOST:PORT,...`` as ``{id: "host:port"}``."""
    found: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        peer_id, sep, address = item.strip().partition("=")
        if not (sep and peer_id and is_address(address)):
            raise click.BadParameter(f"expected ID=HOST:PORT[,ID=HOST:PORT...], got {item.strip()!r}")
        found[peer_id] = address
    return found


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--id", "node_id", required=True, help="This peer's id, one of --peers.")
@click.option("--peers", required=True, callback=_peer_list,
              help="Comma list of the cluster's initial peer ids (its first configuration; "
                   "membership changes live in the Raft log, see `exchangectl member`).")
@click.option("--grape", "grapes", default="http://127.0.0.1:30001", show_default=True,
              callback=_grape_list,
              help="HTTP API URL of a grape, or a comma list: the peer announces on every "
                   "one and looks peers up on the first that answers.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind and announce the RPC server on (the admin port binds it too).")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="RPC port; 0 picks a free one.")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False),
              help="Directory for this peer's Raft log, hard state and snapshots.")
@click.option("--fsync", default="batch", show_default=True, type=click.Choice(["batch", "never"]),
              help="fsync every ready batch; 'never' is for tests and benchmarks only.")
@click.option("--snapshot-every", default=SNAPSHOT_EVERY, show_default=True, type=click.IntRange(0),
              help="Snapshot the state and compact the Raft log every N applied entries, or every "
                   "quarter as many entries as the exchange knows orders if more (0: never).")
@click.option("--pki", "pki_dir", type=click.Path(file_okay=False),
              help="Directory with ca.crt and this peer's peer-ID.crt/.key (twisted_exchange.pki), "
                   "issued there on first start if it also holds the CA key (or nothing yet): "
                   "serve and call in Grenache secure mode (mutual TLS).")
@click.option("--admin-client", "admin_clients", default="cli", show_default=True, callback=_peer_list,
              help="Comma list of client names whose credentials may change the membership "
                   "(secure mode; exchangectl acts as client `cli`).")
@click.option("--admin-port", type=click.IntRange(0, 65535),
              help="Serve Prometheus /metrics, /healthz and the web dashboard over plain HTTP on this "
                   "port of --host (0 picks a free one; `status` names the URL). Off when not given.")
@click.option("--cpu-scheduling", default="batch", show_default=True,
              type=click.Choice(sorted(scheduling.POLICIES)),
              help="Linux CPU policy: 'batch' (SCHED_BATCH: other processes' wake-ups do not preempt "
                   "a reactor turn; more orders/s and a shorter tail on a shared, busy machine), "
                   "'normal' (SCHED_OTHER) or 'inherit' (as started: systemd, chrt). Elsewhere ignored.")
@click.option("--peer-address", "peer_addresses", callback=_peer_addresses, metavar="ID=HOST:PORT,...",
              help="Where other peers serve, as the cluster's config fixes it: called there first, and "
                   "looked up on the grapes only while that fails or until another peer answers there "
                   "(anyone may announce, and a flood of fakes can hide a peer from a lookup).")
@connections.connection_options
@log_options
@click.version_option(package_name="twisted-exchange")
def main(node_id: str, peers: list[str], grapes: list[str], host: str, port: int, data_dir: str,
         fsync: str, snapshot_every: int, pki_dir: str | None, admin_clients: list[str],
         admin_port: int | None, cpu_scheduling: str, peer_addresses: dict[str, str], max_connections: int,
         max_connections_per_address: int, log_level: str, log_format: str) -> None:
    """Run one exchange peer: Raft-replicated order book over Grenache RPC."""
    if node_id not in peers and not recorded(data_dir, node_id):
        raise click.BadParameter(f"{node_id!r} is not in --peers (a peer joins an existing cluster "
                                 "through `exchangectl member add`)", param_hint="--id")
    if node_id in peer_addresses:
        raise click.BadParameter(f"names this peer ({node_id}); list the others", param_hint="--peer-address")
    max_connections = connections.total_within_descriptors(max_connections)
    credential = _credential(pki_dir, node_id, host) if pki_dir is not None else None
    from twisted.internet import reactor
    use_monotonic_time(reactor)

    service = _open(lambda: PeerService(node_id, peers, grapes, data_dir, host=host, port=port,
                                        fsync=fsync, snapshot_every=snapshot_every,
                                        credential=credential, admin_port=admin_port,
                                        admin_clients=frozenset(admin_clients),
                                        peer_addresses=peer_addresses, max_connections=max_connections,
                                        max_connections_per_address=max_connections_per_address), data_dir)
    begin_logging(sys.stdout, log_level, log_format)
    refused = scheduling.use_policy(cpu_scheduling)
    if refused is not None:
        click.echo(f"warning: --cpu-scheduling {cpu_scheduling}: {refused}; running as before", err=True)
    exit_code = []

    def started_or_failed(d):
        def failed(failure):
            if failure.check(CannotListenError):
                error = failure.value
                click.echo(f"error: cannot listen on {error.interface}:{error.port}: {error.socketError}", err=True)
            else:
                click.echo(f"error: {failure.getErrorMessage()}", err=True)
            exit_code.append(1)
            reactor.stop()
        d.addErrback(failed)

    reactor.callWhenRunning(lambda: started_or_failed(service.startService()))
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: service.stopService() if service.running else None)
    gctuning.tune()
    reactor.callWhenRunning(gctuning.started)
    reactor.run()
    sys.exit(exit_code[0] if exit_code else 0)


def _credential(pki_dir: str, node_id: str, host: str) -> Credential:
    """This peer's credential from ``pki_dir`` (issued for ``host`` on first
    start where the CA key is), checked against its CA, or exit 1."""
    identity = Identity(PEER, node_id)
    try:
        credential = pki.obtain(pki_dir, identity, [host])
        found = pki.verify(x509.load_pem_x509_certificate(credential.cert),
                           x509.load_pem_x509_certificate(credential.ca))
        tls.context(credential, server_side=True)  # also a key that goes with its certificate
    except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
        click.echo(f"error: no usable credential for {identity} in {pki_dir}: {e}", err=True)
        sys.exit(1)
    if found != identity:
        click.echo(f"error: {pki.paths(pki_dir, identity)['cert']} names {found}, not {identity}", err=True)
        sys.exit(1)
    return credential


def _open(make: Callable[[], PeerService], data_dir: str) -> PeerService:
    """The service, once its data directory opens.

    Damaged or foreign data ends the process (exit 1: a human must decide).
    A disk that refuses reads or writes (read-only, full, permissions) is
    waited for, so a peer that fail-stopped on it rejoins by itself once the
    disk is fixed instead of exhausting supervisord's start retries.
    """
    attempt = 0
    while True:
        try:
            return make()
        except (StorageError, MembershipError) as e:
            click.echo(f"error: cannot open data directory {data_dir}: {e}", err=True)
        except OSError as e:
            if e.errno in DISK_ERRORS:
                pause = DISK_RETRY_SECONDS[min(attempt, len(DISK_RETRY_SECONDS) - 1)]
                click.echo(f"waiting for data directory {data_dir}: {e}; retrying in {pause} s", err=True)
                attempt += 1
                time.sleep(pause)
                continue
            click.echo(f"error: cannot open data directory {data_dir}: {e}", err=True)
        sys.exit(1)
