"""The cluster topology: one supervisord config file describes every process.

``render`` writes the config (``conf/cluster.conf`` and ``conf/cluster5.conf``
are its output, checked by a test), ``parse`` reads back what exchangectl
needs: the peer ids, the grape URLs, the run directory and supervisord's
control socket.  Besides supervisord's own sections the file carries a
``[twisted-exchange]`` section that supervisord ignores (see
README.md).  Paths are written relative to the file with
supervisord's ``%(here)s``, so a fresh clone works from any directory.
"""
from __future__ import annotations

import configparser
import functools
import ipaddress
import re
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import click
from twisted_exchange.ctl.errors import CtlError

HOST = "127.0.0.1"
#: (DHT port, API port) per grape, as in Grenache's own examples.
GRAPE_PORTS: tuple[tuple[int, int], ...] = ((20001, 30001), (20002, 40001))
FIRST_PEER_PORT = 5001
#: Admin ports (plain HTTP: metrics, /healthz, the dashboard), peers' and grapes' first.
FIRST_PEER_ADMIN_PORT = 6001
FIRST_GRAPE_ADMIN_PORT = 7001
SECTION = "twisted-exchange"
HERE = "%(here)s"
EMPTY = '""'  # an empty argument in a supervisord command line


@dataclass(frozen=True)
class Topology:
    """What exchangectl needs to know about a cluster, read from its config."""

    config: Path
    peers: tuple[str, ...]
    grapes: tuple[str, ...]
    run_dir: Path
    socket: Path
    pki: Path | None = None   # secure mode: the cluster's certificates (twisted_exchange.pki)
    admin: dict[str, str] = field(default_factory=dict)  # program name -> its admin URL, where it has one
    rpc: dict[str, str] = field(default_factory=dict)  # peer id -> "host:port" it serves on, where fixed


def render(peers: int = 3, *, grape_ports: Sequence[tuple[int, int]] = GRAPE_PORTS,
           peer_ports: Sequence[int] | None = None, run_dir: str | None = None,
           peer_command: str = "twisted-exchange-peer",
           grape_command: str = "twisted-exchange-grape",
           stopwaitsecs: int = 10, secure: bool = True,
           peer_hosts: Sequence[str] | None = None, grape_hosts: Sequence[str] | None = None,
           machine: str | None = None, admin_ports: Sequence[int] | None = None) -> str:
    """A supervisord config for ``len(grape_ports)`` grapes and ``peers`` peers.

    Each grape bootstraps from all the others; peer ``i`` announces on every
    grape and looks up on grape ``i mod len(grape_ports)`` first.  ``peer_ports`` defaults to 5001, 5002, ...;
    a port 0 lets each peer pick a free one.  ``run_dir`` defaults to
    ``run`` beside the config for 3 peers and ``run<N>`` for N peers: a Raft
    data directory belongs to one membership, so topologies never share one.
    ``peer_command`` and ``grape_command`` are the programs' executables
    (tests substitute dummies).  ``secure`` (the default; ``False`` only for
    tests and for measuring what TLS costs) runs the peers in Grenache secure
    mode with certificates under ``run_dir/pki`` (made on first start) and
    tells exchangectl where they are.

    Across machines: ``peer_hosts`` and ``grape_hosts`` are the address each
    process binds and announces (default 127.0.0.1), and ``machine`` keeps only
    the programs bound to that address, so each machine gets its own config
    describing the whole cluster but starting only its own processes.

    ``admin_ports`` are the admin HTTP ports (metrics, health, dashboard) of
    the grapes, then the peers; default 7001, 7002, ... and 6001, 6002, ...
    (0: pick a free one).
    """
    if peers < 1 or not grape_ports:
        raise ValueError("a cluster needs at least one peer and one grape")
    if run_dir is None:
        run_dir = f"{HERE}/run" if peers == 3 else f"{HERE}/run{peers}"
    ports = list(peer_ports) if peer_ports is not None else [FIRST_PEER_PORT + i for i in range(peers)]
    if len(ports) != peers:
        raise ValueError(f"{peers} peers but {len(ports)} peer ports")
    peer_hosts = list(peer_hosts) if peer_hosts is not None else [HOST] * peers
    grape_hosts = list(grape_hosts) if grape_hosts is not None else [HOST] * len(grape_ports)
    if len(peer_hosts) != peers or len(grape_hosts) != len(grape_ports):
        raise ValueError("one host address per peer and per grape")
    if machine is not None and machine not in peer_hosts + grape_hosts:
        raise ValueError(f"no peer or grape is on {machine}")
    if admin_ports is None:
        admin_ports = ([FIRST_GRAPE_ADMIN_PORT + i for i in range(len(grape_ports))]
                       + [FIRST_PEER_ADMIN_PORT + i for i in range(peers)])
    if len(admin_ports) != len(grape_ports) + peers:
        raise ValueError("one admin port per grape and per peer")
    grape_admin, peer_admin = admin_ports[:len(grape_ports)], admin_ports[len(grape_ports):]
    peer_ids = [f"peer{i + 1}" for i in range(peers)]
    grape_urls = [f"http://{host}:{api}" for host, (_, api) in zip(grape_hosts, grape_ports)]
    hosts = sorted(set(peer_hosts + grape_hosts))
    out = [
        "; Generated by twisted_exchange.ctl.topology.render: edit the renderer, not this file.",
        f"; {len(grape_ports)} grapes and {peers} peers on {', '.join(hosts)}"
        + (f"; the programs of {machine}." if machine else ".") + " Start with `exchangectl up`",
        f"; (or `supervisord -c THIS_FILE`), control with `exchangectl`; logs and data in {run_dir}.",
        "",
        "[unix_http_server]",
        f"file={run_dir}/supervisord.sock",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={run_dir}/supervisord.log",
        f"pidfile={run_dir}/supervisord.pid",
        f"childlogdir={run_dir}",
        "logfile_maxbytes=10MB",
        "logfile_backups=2",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{run_dir}/supervisord.sock",
        "",
        f"[{SECTION}]",
        f"peers = {','.join(peer_ids)}",
        f"grapes = {','.join(grape_urls)}",
        f"run_dir = {run_dir}",
        *([f"pki = {run_dir}/pki"] if secure else []),
        "",
    ]
    for i, ((dht, api), host) in enumerate(zip(grape_ports, grape_hosts)):
        if machine not in (None, host):
            continue
        bootstrap = ",".join(f"{h}:{d}" for j, ((d, _), h) in enumerate(zip(grape_ports, grape_hosts)) if j != i)
        command = (f"{grape_command} --dp {dht} --aph {api} --bn {bootstrap or EMPTY} -b {host}"
                   f" --admin-port {grape_admin[i]}")
        out += _program(f"grape{i + 1}", command, run_dir, 100, stopwaitsecs)
    addresses = {peer_id: f"{host}:{port}" for peer_id, port, host in zip(peer_ids, ports, peer_hosts) if port}
    for i, (peer_id, port, host) in enumerate(zip(peer_ids, ports, peer_hosts)):
        if machine not in (None, host):
            continue
        command = (f"{peer_command} --id {peer_id} --peers {','.join(peer_ids)}"
                   + _peer_address_option(addresses, peer_id)
                   + f" --grape {_nearest_grape_first(grape_urls, grape_hosts, host, i)}"
                   f" --host {host} --port {port} --admin-port {peer_admin[i]}"
                   f" --data-dir {run_dir}/{peer_id}" + (f" --pki {run_dir}/pki" if secure else ""))
        out += _program(peer_id, command, run_dir, 200, stopwaitsecs)
    return "\n".join(out)


def _peer_address_option(addresses: dict[str, str], peer_id: str) -> str:
    """`` --peer-address`` with every other peer's fixed address (none: no option)."""
    others = ",".join(f"{other}={address}" for other, address in addresses.items() if other != peer_id)
    return f" --peer-address {others}" if others else ""


def _nearest_grape_first(grape_urls: list[str], grape_hosts: list[str], host: str, peer_index: int) -> str:
    """Every grape for peer ``peer_index`` on ``host``: the one grape on its
    host first, else (none or several there) its own by round robin."""
    same_host = [j for j, grape_host in enumerate(grape_hosts) if grape_host == host]
    first = same_host[0] if len(same_host) == 1 else peer_index % len(grape_urls)
    return ",".join(grape_urls[first:] + grape_urls[:first])


def _program(name: str, command: str, run_dir: str, priority: int, stopwaitsecs: int) -> list[str]:
    return [
        f"[program:{name}]",
        f"command={command}",
        f"priority={priority}",
        "autostart=true",
        "autorestart=true",
        "startsecs=1",
        "startretries=5",
        "stopsignal=TERM",
        f"stopwaitsecs={stopwaitsecs}",
        "redirect_stderr=true",
        f"stdout_logfile={run_dir}/{name}.log",
        "stdout_logfile_maxbytes=10MB",
        "stdout_logfile_backups=2",
        "environment=PYTHONUNBUFFERED=\"1\"",
        "",
    ]


def parse(config_path: str | Path) -> Topology:
    """Read a topology back from a config written by ``render`` (or by hand).

    Raises ``CtlError`` with a one-line reason when the file is missing or
    lacks what exchangectl needs.
    """
    path = Path(config_path).absolute()
    parser = configparser.RawConfigParser(strict=False)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except FileNotFoundError:
        raise CtlError(f"config file not found: {config_path}"
                       " (use -c PATH, or write one with: exchangectl init DIR)") from None
    except (OSError, configparser.Error) as e:
        raise CtlError(f"cannot read config {config_path}: {_first_line(e)}") from None
    here = str(path.parent)

    def get(section: str, key: str) -> str:
        try:
            return parser.get(section, key).replace(HERE, here).strip()
        except configparser.Error:
            raise CtlError(f"{config_path}: missing [{section}] {key}") from None

    peers = tuple(p.strip() for p in get(SECTION, "peers").split(",") if p.strip())
    grapes = tuple(g.strip() for g in get(SECTION, "grapes").split(",") if g.strip())
    if not peers or not grapes:
        raise CtlError(f"{config_path}: [{SECTION}] needs at least one peer and one grape")
    pki = get(SECTION, "pki") if parser.has_option(SECTION, "pki") else None
    admin = {section.split(":", 1)[1]: url for section in parser.sections() if section.startswith("program:")
             for url in [_admin_url(parser.get(section, "command", fallback=""))] if url}
    rpc = {options["--id"]: address for section in parser.sections() if section.startswith("program:")
           for options in [_options(parser.get(section, "command", fallback=""))] if options.get("--id") in peers
           for address in [_rpc_address(options)] if address}
    return Topology(config=path, peers=peers, grapes=grapes, admin=admin, rpc=rpc,
                    run_dir=Path(get(SECTION, "run_dir")),
                    socket=Path(get("unix_http_server", "file")),
                    pki=Path(pki) if pki else None)


def _options(command: str) -> dict[str, str]:
    """A program's command line as ``{option: the word after it}``: the one
    way this module reads what a program is told (empty if it does not split)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return {}
    return dict(zip(words, words[1:]))


def _command_options(section: str) -> dict[str, str]:
    """The options of the ``command=`` line of a config section's text."""
    found = re.search(r"^command=(.*)$", section, re.MULTILINE)
    return _options(found.group(1)) if found else {}


def _rpc_address(options: dict[str, str]) -> str | None:
    """The ``host:port`` a peer's options give it to serve RPC on, None with port 0 (it picks one)."""
    port = options.get("--port", "0")
    return f"{options.get('--host', HOST)}:{port}" if port.isdigit() and int(port) else None


def _admin_url(command: str) -> str | None:
    """The admin URL a program's command line gives it (``--admin-port`` on its
    ``-b``/``--bind``/``--host`` address), None without one or with port 0."""
    options = _options(command)
    port = options.get("--admin-port", "0")
    host = options.get("--host") or options.get("-b") or options.get("--bind") or HOST
    return f"http://{host}:{port}" if port.isdigit() and int(port) else None

def _peer_section(text: str, peer_id: str) -> re.Match:
    """The ``[program:peer_id]`` section of a config, up to the next section."""
    found = re.search(rf"^\[program:{re.escape(peer_id)}\]\n(?:(?!\[).*\n?)*", text, re.MULTILINE)
    if found is None:
        raise CtlError(f"the config has no [program:{peer_id}] section")
    return found


def _with_peers(text: str, peers: Sequence[str]) -> str:
    """``text`` with the ``[twisted-exchange] peers`` line listing ``peers``."""
    return re.sub(r"^peers = .*$", f"peers = {','.join(peers)}", text, count=1, flags=re.MULTILINE)


def _peer_commands(text: str) -> list[dict[str, str]]:
    """The options of every peer program (those with an ``--id``) of a config."""
    return [options for line in re.findall(r"^command=(.*)$", text, re.MULTILINE)
            for options in [_options(line)] if "--id" in options]


def peer_ports(text: str) -> list[int]:
    """The RPC ports the config's peer programs listen on."""
    return [int(options["--port"]) for options in _peer_commands(text) if options.get("--port", "").isdigit()]


def initial_peers(text: str, peer_id: str) -> list[str]:
    """Peer ``peer_id``'s ``--peers``: the cluster's initial configuration."""
    peers = _command_options(_peer_section(text, peer_id).group(0)).get("--peers")
    if peers is None:
        raise CtlError(f"[program:{peer_id}] has no --peers")
    return peers.split(",")


def peer_host(text: str, peer_id: str) -> str:
    """The address peer ``peer_id`` binds (``--host``, default 127.0.0.1)."""
    return _command_options(_peer_section(text, peer_id).group(0)).get("--host", HOST)


def add_peer(text: str, template: str, peer_id: str, port: int) -> str:
    """The config ``text`` with program ``peer_id`` made from peer ``template``'s
    (same initial ``--peers``, grapes, host and options; its own id, RPC port,
    data directory and log; an admin port of 0 stays 0, else the next after
    the highest; ``--peer-address`` lists every other peer's), and
    ``peer_id`` added to the ``[twisted-exchange]`` peers.  The other peers'
    programs keep their command lines (rewritten, supervisord's ``update``
    would restart them all): the new peer tells them where it serves
    (``peer.hello``), else they look it up."""
    section = _peer_section(text, template).group(0)
    name = re.escape(template)
    for pattern, replacement in ((rf"^\[program:{name}\]", f"[program:{peer_id}]"),
                                 (rf" --id {name}\b", f" --id {peer_id}"),
                                 (rf"(--data-dir \S*/){name}\b", rf"\g<1>{peer_id}"),
                                 (rf"^(stdout_logfile=\S*/){name}\.log", rf"\g<1>{peer_id}.log"),
                                 (r" --port \d+", f" --port {port}")):
        section = re.sub(pattern, replacement, section, count=1, flags=re.MULTILINE)
    if _command_options(section).get("--admin-port", "0") != "0":
        highest = max(int(options.get("--admin-port", 0)) for options in _peer_commands(text))
        section = re.sub(r" --admin-port \d+", f" --admin-port {highest + 1}", section)
    if " --peer-address " in section:  # every other peer's, the template's included
        addresses = {options["--id"]: address for options in _peer_commands(text)
                     for address in [_rpc_address(options)] if address}
        section = re.sub(r" --peer-address \S+", lambda _: _peer_address_option(addresses, peer_id), section)
    peers = [p.strip() for p in re.search(r"^peers = (.*)$", text, re.MULTILINE).group(1).split(",")]
    return _with_peers(text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n", [*peers, peer_id])


def remove_peer(text: str, peer_id: str) -> str:
    """The config ``text`` without program ``peer_id`` nor it in the peers."""
    section = _peer_section(text, peer_id)
    text = text[:section.start()] + text[section.end():]
    peers = [p.strip() for p in re.search(r"^peers = (.*)$", text, re.MULTILINE).group(1).split(",")]
    return _with_peers(text, [p for p in peers if p != peer_id])


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__




def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free for both TCP and UDP right now
    (for temporary topologies: tests and ``bench-cluster``)."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind((HOST, 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind((HOST, port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def _addresses(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """A comma-separated list of IP addresses, checked."""
    if value is None:
        return None
    found = [a.strip() for a in value.split(",") if a.strip()]
    for address in found:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise click.BadParameter(f"{address!r} is not an IP address") from None
    return found


def topology_options(f: Callable) -> Callable:
    """The options that shape a rendered topology (this module's command line
    and ``exchangectl init``); the command receives ``render_kwargs``."""
    options = [
        click.argument("peers", type=click.IntRange(1, 99), default=3),
        click.option("--peer-hosts", callback=_addresses, metavar="ADDR,...",
                     help="Address of each peer, in order (default: 127.0.0.1 for all)."),
        click.option("--grape-hosts", callback=_addresses, metavar="ADDR,...",
                     help="Address of each grape, in order (default: two grapes on 127.0.0.1)."),
        click.option("--machine", metavar="ADDR",
                     help="Only start the programs bound to ADDR: the config of one machine."),
        click.option("--grape-command", metavar="CMD", default="twisted-exchange-grape", show_default=True,
                     help="The grape program: `grape` runs Node's grenache-grape instead"
                          " (npm install -g grenache-grape)."),
    ]

    @functools.wraps(f)
    def command(peers: int, peer_hosts: list[str] | None, grape_hosts: list[str] | None,
                machine: str | None, grape_command: str, **rest: Any) -> Any:
        grape_ports = GRAPE_PORTS
        if grape_hosts is not None and len(grape_hosts) != len(GRAPE_PORTS):
            grape_ports = tuple((GRAPE_PORTS[0][0] + i, GRAPE_PORTS[0][1] + i) for i in range(len(grape_hosts)))
        kwargs = {"peers": peers, "grape_ports": grape_ports, "peer_hosts": peer_hosts,
                  "grape_hosts": grape_hosts, "machine": machine, "grape_command": grape_command}
        return f(render_kwargs=kwargs, **rest)
    for option in reversed(options):
        command = option(command)
    return command


def render_checked(**kwargs: Any) -> str:
    """``render(**kwargs)``, a ValueError turned into the usage error it is."""
    try:
        return render(**kwargs)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@topology_options
@click.version_option(package_name="twisted-exchange")
def main(render_kwargs: dict[str, Any]) -> None:
    """Print a cluster config of PEERS peers (default 3) to standard output.

    \b
    One machine:    python -m twisted_exchange.ctl.topology > conf/cluster.conf
    Three machines: python -m twisted_exchange.ctl.topology \\
                      --peer-hosts 10.0.0.1,10.0.0.2,10.0.0.3 --grape-hosts 10.0.0.1,10.0.0.2 \\
                      --machine 10.0.0.1 > conf/cluster.conf     (and so on for each machine)
    """
    sys.stdout.write(render_checked(**render_kwargs))


if __name__ == "__main__":
    main()
