"""``twisted-exchange-grape``: grenache-grape's command line, on Twisted.

Same flags as Node's ``grape``; two defaults differ on purpose and ``--help``
says so: ``-b`` binds 127.0.0.1 (Node: all interfaces), and announcements
expire after ``--dpa`` (Node's CLI keeps them forever). Logs go to stdout, one
line per event; SIGTERM or SIGINT stops it cleanly. Bad flags give a usage
error, a port in use a one-line error and exit status 1.
"""
from __future__ import annotations

import socket
import sys

import click
from twisted.internet.error import CannotListenError

from twisted_exchange import connections
from twisted_exchange.grape.krpc import Address
from twisted_exchange.grape.dht import CONCURRENCY
from twisted_exchange.grape.service import GrapeConfig, GrapeService
from twisted_exchange.logs import begin_logging, log_options
from twisted_exchange.monotonic import use_monotonic_time

PORT = click.IntRange(0, 65535)


def parse_bootstrap(ctx: click.Context, param: click.Parameter, value: str) -> list[Address]:
    """``host:port,host:port`` (empty entries skipped, as Node does)."""
    nodes = []
    for entry in filter(None, (part.strip() for part in value.split(","))):
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise click.BadParameter(f"{entry!r} is not host:port")
        try:
            nodes.append((socket.gethostbyname(host), int(port)))
        except (OSError, UnicodeError):
            raise click.BadParameter(f"cannot resolve host {host!r}") from None
    return nodes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dp", "--dht_port", "dht_port", type=PORT, required=True, help="DHT listening port (UDP).")
@click.option("--aph", "--api_port", "api_port", type=PORT, required=True, help="HTTP API port (TCP).")
@click.option("--bn", "--bootstrap", "bootstrap", default="", callback=parse_bootstrap,
              help="Bootstrap nodes, comma separated host:port (may be empty).")
@click.option("-b", "--bind", "bind", default="127.0.0.1", show_default=True,
              help="Listening address for both ports. Unlike Node's grape (all interfaces), "
                   "the default is loopback only.")
@click.option("--dc", "--dht_concurrency", "concurrency", type=click.IntRange(1, 256), default=CONCURRENCY,
              show_default=True, help="DHT queries in flight per lookup (as Node's --dc).")
@click.option("--dpa", "--dht_peer_maxAge", "peer_max_age", type=click.IntRange(min=1), default=120000,
              show_default=True,
              help="Milliseconds an announcement lives after its last announce. Unlike Node's CLI, "
                   "where announcements never expire unless this is given.")
@click.option("--check_maxPayloadSize", "max_payload_size", type=click.IntRange(min=0), default=None,
              help="Largest API request body in bytes; bigger ones get 413 ERR_GRAPE_PAYLOAD_SIZE. "
                   "Unlimited when not given, as in Node.")
@click.option("--admin-port", "admin_port", type=PORT, default=None,
              help="Serve Prometheus /metrics and /healthz over HTTP on this port of --bind "
                   "(0 picks a free one). Off when not given; not in Node's grape.")
@connections.connection_options
@log_options
@click.version_option(package_name="twisted-exchange")
def main(dht_port: int, api_port: int, bootstrap: list[Address], bind: str, peer_max_age: int,
         max_payload_size: int | None, admin_port: int | None, concurrency: int, max_connections: int,
         max_connections_per_address: int, log_level: str, log_format: str) -> None:
    """A Grenache grape: Grape HTTP API plus BEP5/BEP44 DHT, wire-compatible with grenache-grape."""
    max_connections = connections.total_within_descriptors(max_connections)
    from twisted.internet import reactor
    use_monotonic_time(reactor)

    config = GrapeConfig(dht_port=dht_port, api_port=api_port, bind=bind, bootstrap=bootstrap,
                         peer_max_age=peer_max_age / 1000, max_payload_size=max_payload_size,
                         admin_port=admin_port, concurrency=concurrency, max_connections=max_connections,
                         max_connections_per_address=max_connections_per_address)
    grape = GrapeService(config, reactor)
    try:
        grape.startService()
    except (CannotListenError, OSError) as e:
        click.echo(f"error: cannot listen: {_reason(e)}", err=True)
        sys.exit(1)
    begin_logging(sys.stdout, log_level, log_format)
    reactor.addSystemEventTrigger("before", "shutdown", grape.stopService)
    reactor.run()


def _reason(error: Exception) -> str:
    if isinstance(error, CannotListenError):
        return f"{error.interface or '*'}:{error.port}: {error.socketError}"
    return str(error)
