"""``exchangectl``: run and use a twisted-exchange cluster.

Process control goes to supervisord over its XML-RPC socket, everything else
to the peers over Grenache through the grapes; both are found in the
cluster's supervisord config (``-c``), so the user never types a port.
Every failure ends as one line ``error: ...`` on stderr and exit status 1
(``CtlGroup.main`` is the one place that does it); ``--json`` prints the
peers' replies unchanged.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any, Callable

import click

from twisted_exchange import pki
from twisted_exchange.ctl import output
from twisted_exchange.ctl.consistency import Observer
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.ids import new_request_id
from twisted_exchange.ctl.supervisor import ALIVE, Supervisor
from twisted_exchange.ctl.topology import HERE, Topology, parse, render_checked, topology_options
from twisted_exchange.peer.protocol import DEFAULT_DEPTH, MAX_DEPTH, MAX_TRADES
from twisted_exchange.pki import CLIENT, PEER, Identity

DEFAULT_CONFIG = Path("conf") / "cluster.conf"
PACKAGED_CONFIG = Path(__file__).resolve().parents[2] / DEFAULT_CONFIG
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


#: Exit statuses: a failure, a usage error (as click), and `status` with a program not RUNNING
#: (as supervisorctl).
EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_RUNNING = 1, 2, 3


class CtlGroup(click.Group):
    """A click group whose every failure is one ``error: ...`` line (a JSON
    object on standard output under ``--json``) and exit 1, or 2 for usage."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> None:
        extra.pop("standalone_mode", None)
        argv = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in argv
        try:
            code = super().main(argv, prog_name, standalone_mode=False, **extra)
        except CtlError as e:
            _fail(str(e), as_json, code=e.code)
        except click.exceptions.NoArgsIsHelpError as e:
            click.echo(e.ctx.get_help() if e.ctx else str(e))
            sys.exit(0)
        except click.UsageError as e:
            hint = f" (see: {e.ctx.command_path} --help)" if e.ctx else ""
            _fail(e.format_message() + hint, as_json, EXIT_USAGE)
        except click.ClickException as e:
            _fail(e.format_message(), as_json, e.exit_code)
        except click.Abort:
            _fail("interrupted", as_json)
        except Exception as e:  # a bug: still one line, never a traceback
            _fail(f"internal error: {type(e).__name__}: {e}", as_json)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, as_json: bool = False, status: int = EXIT_FAILURE, code: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps({"error": {"message": message, "code": code}}, indent=2))
    else:
        click.echo(f"error: {message}", err=True)
    sys.exit(status)


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.ensure_object(dict)[key] = value
        return value
    return callback


CONFIG_HELP = "Cluster config [default: ./conf/cluster.conf, else the one next to the package]."
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
peer_option = click.option("--peer", help="Peer to send to (default: any peer).")
peer_argument = click.argument("peer", required=False)
DEFAULT_CLIENT = "cli"
client_option = click.option("--client", default=DEFAULT_CLIENT, show_default=True, envvar="EXCHANGECTL_CLIENT",
                             help="Client name owning the orders (env EXCHANGECTL_CLIENT); in secure "
                                  "mode the command is sent with that client's credential.")
request_option = click.option("--request", "request_id",
                              help="Request id, increasing per client; resending one is safe"
                                   " (default: a fresh time-ordered id).")
symbol_option = click.option("--symbol", default="BTCUSD", show_default=True, help="Market symbol.")


def command(*args: Any, group: click.Group | None = None, **kwargs: Any) -> Callable:
    """A subcommand of ``group`` (default ``main``) that also accepts
    ``-c/--config`` after its name."""
    def decorate(f: Callable) -> click.Command:
        f = click.option("-c", "--config", type=click.Path(dir_okay=False), expose_value=False,
                         is_eager=True, callback=_remember("config"), help=CONFIG_HELP)(f)
        return (group or main).command(*args, **kwargs)(f)
    return decorate


@click.group(cls=CtlGroup, context_settings=CONTEXT)
@click.option("-c", "--config", type=click.Path(dir_okay=False), envvar="EXCHANGECTL_CONFIG",
              is_eager=True, expose_value=False, callback=_remember("config"),
              help=CONFIG_HELP + " Env: EXCHANGECTL_CONFIG.")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              expose_value=False, callback=_remember("timeout"), help="Seconds per peer request.")
@click.version_option(package_name="twisted-exchange", prog_name="exchangectl")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Control a twisted-exchange cluster: processes (via supervisord) and the
    exchange itself (via Grenache).  Start with `exchangectl up`.

    Shell completion (bash; zsh and fish likewise):
    eval "$(_EXCHANGECTL_COMPLETE=bash_source exchangectl)"
    """
    ctx.ensure_object(dict)


# -- context ---------------------------------------------------------------

def _options() -> dict:
    return click.get_current_context().ensure_object(dict)


def resolve_config(given: str | None) -> Path:
    """``given``, else ./conf/cluster.conf, else the repository's conf/ next to the package."""
    if given:
        return Path(given)
    if not DEFAULT_CONFIG.exists() and PACKAGED_CONFIG.exists():
        return PACKAGED_CONFIG
    return DEFAULT_CONFIG


def _topology() -> Topology:
    return parse(resolve_config(_options().get("config")))


def _supervisor() -> Supervisor:
    return Supervisor(_topology().socket)


def _check_peer(topology: Topology, peer: str | None) -> None:
    if peer is not None and peer not in topology.peers:
        raise CtlError(f"unknown peer {peer!r} (peers: {', '.join(topology.peers)})")


def _in_reactor(work: Callable, timeout: float | None = None, client: str = DEFAULT_CLIENT) -> Any:
    """``work(peers)`` run against the cluster's peers, as ``client`` in secure mode; its result."""
    from twisted_exchange.ctl.peers import run
    topology = _topology()
    credential = _credential(topology, client) if topology.pki is not None else None
    return run(work, topology.grapes, timeout or _options().get("timeout", 5.0), credential, topology.rpc)


def _credential(topology: Topology, client: str) -> pki.Credential:
    """``client``'s credential in the cluster's pki directory, issued on first use."""
    try:
        return pki.obtain(topology.pki, Identity(CLIENT, client))
    except (OSError, ValueError) as e:
        raise CtlError(f"no credential for client {client!r} in {topology.pki}: {e}") from None


def _ask(payload: dict, peer: str | None, client: str = DEFAULT_CLIENT) -> Any:
    _check_peer(_topology(), peer)
    return _in_reactor(lambda peers: peers.call(payload, peer), client=client)


def _show(reply: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    click.echo(json.dumps(reply, indent=2) if as_json else human(reply))


# -- processes ---------------------------------------------------------------

@command()
@click.option("--wait", "wait", type=click.FloatRange(0, 3600), default=60.0, show_default=True,
              help="Seconds to wait until every peer reports a leader.")
def up(wait: float) -> None:
    """Start the cluster (supervisord and every program) and wait for a leader."""
    topology = _topology()
    supervisor = Supervisor(topology.socket)
    if supervisor.is_running():
        stopped = [p["name"] for p in supervisor.processes() if p["statename"] not in ALIVE]
        for name in stopped:
            click.echo(f"starting {name}")
            supervisor.start(name, wait=False)
    else:
        click.echo(f"starting supervisord with {topology.config}")
        try:
            topology.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CtlError(f"cannot create the run directory {topology.run_dir}: {e.strerror or e}") from None
        supervisor.launch(topology.config)
    from twisted_exchange.ctl.peers import leaders_everywhere
    live = _Live()

    def ready(statuses: dict) -> bool:
        done = leaders_everywhere(statuses)
        live.update(_progress_line(statuses), final=done)
        if not done:
            _raise_if_fatal(supervisor)
        return done

    statuses = _in_reactor(lambda peers: peers.watch(topology.peers, ready, wait))
    if not leaders_everywhere(statuses):
        live.update(_progress_line(statuses), final=True)
        raise CtlError(f"not every peer reports a leader after {wait:g}s: {_progress_line(statuses)}"
                       " (see: exchangectl status, exchangectl logs NAME)")
    leader = next(s["leader"] for s in statuses.values())
    click.echo(f"cluster up: {len(statuses)} peers, leader {leader}")


def _raise_if_fatal(supervisor: Supervisor) -> None:
    """CtlError naming every program supervisord gave up starting, and why."""
    fatal = [f"{p['name']}: {p.get('spawnerr') or 'exited too quickly'}"
             for p in supervisor.processes() if p["statename"] == "FATAL"]
    if fatal:
        raise CtlError("supervisord could not start " + "; ".join(fatal) + " (see: exchangectl logs NAME)")


def _progress_line(statuses: dict) -> str:
    def one(peer: str, s: Any) -> str:
        if not isinstance(s, dict):
            return f"{peer} unreachable"
        return f"{peer} {s.get('role')}" + ("" if s.get("role") == "leader" else
                                            f" (leader {s.get('leader') or 'unknown'})")
    return ", ".join(one(peer, s) for peer, s in statuses.items())


class _Live:
    """A status line rewritten in place on a terminal; elsewhere printed when it
    changed, at most every ``every`` seconds unless it is the ``final`` one."""

    def __init__(self, every: float = 0.0, enabled: bool = True) -> None:
        self._every = every
        self._enabled = enabled
        self._tty = sys.stdout.isatty()
        self._last = ("", -float("inf"))

    def update(self, line: str, final: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if self._tty:
            click.echo(f"\r\x1b[K{line}", nl=final)
        elif line != self._last[0] and (final or now - self._last[1] >= self._every):
            click.echo(line)
            self._last = (line, now)


@command()
def down() -> None:
    """Stop every program, then supervisord."""
    supervisor = _supervisor()
    if not supervisor.is_running():
        click.echo("supervisord is not running: nothing to stop")
        return
    supervisor.shutdown()
    supervisor.wait_until(lambda: not supervisor.is_running(), 120,
                          "supervisord is still running 120s after shutdown")
    click.echo("cluster down")


@main.command()
@click.argument("directory", type=click.Path(file_okay=False))
@topology_options
@click.option("--force", is_flag=True, help="Overwrite DIRECTORY/cluster.conf if it exists.")
def init(directory: str, render_kwargs: dict[str, Any], force: bool) -> None:
    """Write a ready cluster config, DIRECTORY/cluster.conf, with its run directory beside it.

    Then: exchangectl -c DIRECTORY/cluster.conf up (or export EXCHANGECTL_CONFIG).
    """
    config = Path(directory) / "cluster.conf"
    if config.exists() and not force:
        raise CtlError(f"{config} exists (use --force to overwrite it)")
    text = render_checked(**render_kwargs, run_dir=f"{HERE}/run")
    try:
        (Path(directory) / "run").mkdir(parents=True, exist_ok=True)
        config.write_text(text, encoding="utf-8")
    except OSError as e:
        raise CtlError(f"cannot write {config}: {e.strerror or e}") from None
    click.echo(f"wrote {config}; start it with: exchangectl -c {config} up")


@command()
@click.option("--yes", is_flag=True, help="Do not ask first.")
def reset(yes: bool) -> None:
    """Stop the cluster and delete its data and logs: the next `up` starts an empty exchange.

    The credentials in the run directory's pki/ are kept, so clients keep working.
    """
    topology = _topology()
    doomed = sorted(p for p in topology.run_dir.glob("*") if p.name not in ("pki", ".gitignore"))
    if not yes:
        if not sys.stdin.isatty():
            raise CtlError("reset deletes every peer's data: confirm with --yes")
        click.confirm(f"Stop the cluster and delete {len(doomed)} files and directories in "
                      f"{topology.run_dir} (every order and trade)?", abort=True)
    supervisor = Supervisor(topology.socket)
    if supervisor.is_running():
        supervisor.shutdown()
        supervisor.wait_until(lambda: not supervisor.is_running(), 120,
                              "supervisord is still running 120s after shutdown")
        click.echo("cluster down")
    for path in doomed:
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise CtlError(f"cannot delete {path}: {e.strerror or e}") from None
    click.echo(f"reset: {topology.run_dir} holds no data (credentials kept in pki/)")


@command()
@json_option
def status(as_json: bool) -> None:
    """Process states and every peer's role, term, leader, indexes, digest and health.

    Exit status 3 when a program is not RUNNING (as supervisorctl status).
    """
    topology = _topology()
    processes = {p["name"]: p for p in Supervisor(topology.socket).processes()}
    alive = [p for p in topology.peers if processes.get(p, {}).get("statename") == "RUNNING"]
    statuses = _in_reactor(lambda peers: peers.statuses(alive)) if alive else {}
    verdict = Observer().observe(statuses)
    if as_json:
        click.echo(json.dumps({
            "processes": {name: {"state": p["statename"], "pid": p["pid"] or None,
                                 "description": p["description"], "error": p.get("spawnerr") or None,
                                 "admin": topology.admin.get(name)}
                          for name, p in processes.items()},
            "peers": {peer: s if isinstance(s, dict) else {"error": str(s)} for peer, s in statuses.items()},
            "divergences": verdict.to_json()["divergences"]}, indent=2))
    else:
        click.echo(output.status(processes, statuses, verdict))
    if any(p["statename"] != "RUNNING" for p in processes.values()):
        sys.exit(EXIT_NOT_RUNNING)


def _programs(names: tuple[str, ...]) -> tuple[Supervisor, list[str]]:
    """supervisord and the programs NAMES name (``all``: every one), checked."""
    supervisor = _supervisor()
    known = [p["name"] for p in supervisor.processes()]
    if "all" in names:
        return supervisor, known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise CtlError(f"no such process: {', '.join(unknown)} (programs: {', '.join(known)})")
    return supervisor, list(dict.fromkeys(names))


@command()
@click.argument("names", metavar="NAME...|all", nargs=-1, required=True)
def start(names: tuple[str, ...]) -> None:
    """Start programs (peers or grapes; all: every stopped one)."""
    supervisor, programs = _programs(names)
    for name in programs:
        if "all" in names and supervisor.process(name)["statename"] in ALIVE:
            continue
        supervisor.start(name)
        click.echo(f"{name}: started")


@command()
@click.argument("names", metavar="NAME...|all", nargs=-1, required=True)
def stop(names: tuple[str, ...]) -> None:
    """Stop programs (SIGTERM, then SIGKILL after their stopwaitsecs; all: every running one)."""
    supervisor, programs = _programs(names)
    for name in programs:
        if "all" in names and supervisor.process(name)["statename"] not in ALIVE:
            continue
        supervisor.stop(name)
        click.echo(f"{name}: stopped")


@command()
@click.argument("names", metavar="NAME...|all", nargs=-1, required=True)
def restart(names: tuple[str, ...]) -> None:
    """Stop (if running) and start programs, one after the other (all: every one)."""
    supervisor, programs = _programs(names)
    for name in programs:
        if supervisor.process(name)["statename"] in ALIVE:
            supervisor.stop(name)
        supervisor.start(name)
        click.echo(f"{name}: restarted")


@command()
@click.argument("name")
def kill(name: str) -> None:
    """SIGKILL program NAME (a chaos drill: supervisord restarts it)."""
    pid = _supervisor().kill(name)
    click.echo(f"{name}: killed pid {pid} with SIGKILL (supervisord restarts it)")


@command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what NAME logs (Ctrl-C to stop).")
@click.option("-n", "--lines", type=click.IntRange(1), default=20, show_default=True,
              help="How many of the last lines to show first.")
def logs(name: str, follow: bool, lines: int) -> None:
    """Print the end of program NAME's log (stdout and stderr)."""
    supervisor = _supervisor()
    if not follow:
        click.echo(supervisor.last_lines(name, lines)[0], nl=False)
        return
    try:
        for text in supervisor.follow(name, lines=lines):
            click.echo(text, nl=False)
    except KeyboardInterrupt:
        pass


# -- orders ------------------------------------------------------------------

def _decimal(value: str, field: str) -> str:
    """``value`` if the core would accept it as a price or quantity, else CtlError."""
    from twisted_exchange.core.errors import ExchangeError
    from twisted_exchange.core.numbers import parse_ticks
    try:
        parse_ticks(value, field)
    except ExchangeError as e:
        raise CtlError(f"invalid {field} {value!r}: {e.reason}") from None
    return value


def order_payload(side: str, quantity: str, price: str | None, *, symbol: str, kind: str,
                  tif: str | None, post_only: bool, client: str, request: str) -> dict:
    """The ``submit`` payload, with SIDE/QUANTITY/PRICE checked here for a clear message
    (the peer stays the authority on everything)."""
    side = side.lower()
    if side not in ("buy", "sell"):
        raise CtlError(f"invalid side {side!r}: expected buy or sell")
    payload = {"action": "submit", "client": client, "request": request, "symbol": symbol,
               "side": side, "type": kind, "quantity": _decimal(quantity, "quantity"),
               "post_only": post_only}
    if kind == "limit":
        if price is None:
            raise CtlError("a limit order needs a PRICE (or use --type market)")
        payload["price"] = _decimal(price, "price")
    elif price is not None:
        raise CtlError("a market order takes no PRICE")
    if tif is not None:
        payload["tif"] = tif
    return payload


def _command(payload: dict, peer: str | None, as_json: bool) -> None:
    from twisted_exchange.ctl.peers import TRANSPORT_CODES
    try:
        reply = _ask(payload, peer, payload["client"])
    except CtlError as e:
        if e.code in TRANSPORT_CODES:  # it may have been applied: say how to retry safely
            raise CtlError(f"{e} (resending with --request {payload['request']} is safe)") from None
        raise
    _show(reply, as_json, output.command_result)


@command()
@click.argument("side")
@click.argument("quantity")
@click.argument("price", required=False)
@peer_option
@symbol_option
@click.option("--type", "kind", type=click.Choice(["limit", "market"]), default="limit", show_default=True)
@click.option("--tif", type=click.Choice(["gtc", "ioc", "fok"]),
              help="Time in force [default: gtc for limit, ioc for market].")
@click.option("--post-only", is_flag=True, help="Reject the order if it would take liquidity.")
@client_option
@request_option
@json_option
def submit(side: str, quantity: str, price: str | None, peer: str | None, symbol: str, kind: str,
           tif: str | None, post_only: bool, client: str, request_id: str | None, as_json: bool) -> None:
    """Place an order: SIDE buy|sell, QUANTITY, and PRICE for a limit order.

    Example: exchangectl submit buy 2 100.5 --peer peer2
    """
    payload = order_payload(side, quantity, price, symbol=symbol, kind=kind, tif=tif,
                            post_only=post_only, client=client,
                            request=request_id or new_request_id())
    _command(payload, peer, as_json)


@command()
@click.argument("order_id")
@peer_option
@client_option
@request_option
@json_option
def cancel(order_id: str, peer: str | None, client: str, request_id: str | None, as_json: bool) -> None:
    """Cancel the open rest of order ORDER_ID."""
    _command({"action": "cancel", "client": client, "request": request_id or new_request_id(),
              "order_id": order_id}, peer, as_json)


@command()
@click.argument("order_id")
@click.option("--quantity", help="New total quantity.")
@click.option("--price", help="New price.")
@peer_option
@client_option
@request_option
@json_option
def amend(order_id: str, quantity: str | None, price: str | None, peer: str | None, client: str,
          request_id: str | None, as_json: bool) -> None:
    """Change the quantity and/or price of open order ORDER_ID."""
    if quantity is None and price is None:
        raise CtlError("amend needs --quantity and/or --price")
    payload = {"action": "amend", "client": client, "request": request_id or new_request_id(),
               "order_id": order_id}
    if quantity is not None:
        payload["quantity"] = _decimal(quantity, "quantity")
    if price is not None:
        payload["price"] = _decimal(price, "price")
    _command(payload, peer, as_json)


# -- queries -------------------------------------------------------------------

@command()
@peer_argument
@symbol_option
@click.option("--depth", type=click.IntRange(1, MAX_DEPTH), default=DEFAULT_DEPTH, show_default=True,
              help="Price levels per side.")
@json_option
def book(peer: str | None, symbol: str, depth: int, as_json: bool) -> None:
    """The order book as PEER (default: any peer) sees it, bids and asks side by side."""
    _show(_ask({"action": "book", "symbol": symbol, "depth": depth}, peer), as_json, output.book)


@command()
@peer_argument
@symbol_option
@click.option("--limit", type=click.IntRange(1, MAX_TRADES), default=20, show_default=True,
              help="How many of the latest trades.")
@json_option
def trades(peer: str | None, symbol: str, limit: int, as_json: bool) -> None:
    """The latest trades as PEER (default: any peer) recorded them."""
    _show(_ask({"action": "trades", "symbol": symbol, "limit": limit}, peer), as_json, output.trades)


@command()
@click.argument("order_id")
@peer_option
@json_option
def order(order_id: str, peer: str | None, as_json: bool) -> None:
    """One order (open or closed) by its id."""
    _show(_ask({"action": "order", "order_id": order_id}, peer), as_json, output.order)


@command()
@peer_argument
@click.option("--client", help="Only this client's orders.")
@click.option("--symbol", help="Only this market.")
@json_option
def orders(peer: str | None, client: str | None, symbol: str | None, as_json: bool) -> None:
    """The open orders as PEER (default: any peer) holds them."""
    payload = {"action": "orders"}
    payload.update({k: v for k, v in (("client", client), ("symbol", symbol)) if v is not None})
    _show(_ask(payload, peer), as_json, output.orders)


@main.group()
def client() -> None:
    """Client credentials: certificates from the cluster CA, in the run directory's pki/."""


@command("add", group=client)
@click.argument("name")
@json_option
def client_add(name: str, as_json: bool) -> None:
    """Issue client NAME a credential (made once; later calls say where it is)."""
    _issue(CLIENT, name, (), as_json)


@command("peer-credential")
@click.argument("name")
@click.option("--address", "addresses", multiple=True, metavar="ADDR",
              help="IP address or host name the peer serves on, named in its certificate"
                   " (repeatable; Node clients check it).")
@json_option
def peer_credential(name: str, addresses: tuple[str, ...], as_json: bool) -> None:
    """Issue peer NAME a credential, to copy with ca.crt to the machine that runs it.

    Run it where the CA key is (the first machine); a peer on the same
    machine needs none: it issues its own on first start.
    """
    _issue(PEER, name, addresses, as_json)


def _issue(kind: str, name: str, addresses: tuple[str, ...], as_json: bool) -> None:
    """Issue ``kind`` ``name`` its credential in the run directory's pki/; print where it is."""
    try:
        identity = Identity(kind, name)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="NAME") from None
    try:
        files = pki.ensure(_topology().run_dir / "pki", identity, addresses)
    except OSError as e:
        raise CtlError(f"cannot write the credential of {identity}: {e.strerror or e}") from None
    except pki.CertificateError as e:
        raise CtlError(str(e)) from None
    if as_json:
        click.echo(json.dumps({part: str(path) for part, path in files.items()}, indent=2))
    else:
        click.echo(f"{identity}: " + ", ".join(f"{part} {path}" for part, path in files.items()))


@main.group()
def member() -> None:
    """Cluster membership, changed through Raft one peer at a time (as client `cli`,
    which the peers' --admin-client allows by default)."""


@command("list", group=member)
@json_option
def member_list(as_json: bool) -> None:
    """The voters and learners, as the leader sees them, and what it has stored on each."""
    from twisted_exchange.ctl import members
    status = _in_reactor(lambda peers: members.leader_status(peers, list(_topology().peers)))
    found = {"leader": status["id"], "configuration": status["configuration"], "stored": status.get("match"),
             "last_index": status["last_index"]}
    _show(found, as_json, lambda _: members.table(status))


member_timeout = click.option("--wait", "wait", type=click.FloatRange(1, 3600), default=120.0, show_default=True,
                              help="Seconds each change may take to commit.")
port_option = click.option("--port", type=click.IntRange(1, 65535),
                           help="RPC port of the new peer [default: the next free one after the highest].")


@command("add", group=member)
@click.argument("name")
@port_option
@member_timeout
def member_add(name: str, port: int | None, wait: float) -> None:
    """Add peer NAME: learner, program and certificate, catch-up, then voter."""
    _add_then_remove(name, None, port, wait)


@command("remove", group=member)
@click.argument("name")
@member_timeout
def member_remove(name: str, wait: float) -> None:
    """Remove peer NAME from the cluster, then stop and delete its program (its data stays)."""
    _add_then_remove(None, name, None, wait)


@command("replace", group=member)
@click.argument("old")
@click.argument("new")
@port_option
@member_timeout
def member_replace(old: str, new: str, port: int | None, wait: float) -> None:
    """Add peer NEW, then remove peer OLD: how a peer whose data was lost comes back."""
    _add_then_remove(new, old, port, wait)


def _add_then_remove(new: str | None, old: str | None, port: int | None, wait: float) -> None:
    """The member commands' one flow (one reactor run per process)."""
    from twisted_exchange.ctl import members, topology as config
    from twisted_exchange.peer import membership
    from twisted_exchange.replication.configuration import MEMBER_ID
    topology = _topology()
    supervisor = Supervisor(topology.socket)
    text = topology.config.read_text(encoding="utf-8")
    if new is not None:
        if not MEMBER_ID.match(new):
            raise click.BadParameter(f"peer names must match {MEMBER_ID.pattern}", param_hint="NAME")
        if new in topology.peers:
            raise CtlError(f"{new} is already in {topology.config}")
        port = port or _free_port_after(max(config.peer_ports(text), default=config.FIRST_PEER_PORT - 1))
        template = next(p for p in topology.peers if p != old)
        initial = config.initial_peers(text, template)
        if topology.pki is not None:
            _issue(PEER, new, (config.peer_host(text, template),), False)
        membership.record(topology.run_dir / new, new, initial, joining=True)
    if old is not None:
        _check_peer(topology, old)

    def start() -> None:
        topology.config.write_text(config.add_peer(text, template, new, port), encoding="utf-8")
        supervisor.add_program(new)
        click.echo(f"started program {new} on port {port}")

    async def work(peers):
        names = list(topology.peers)
        if new is not None:
            await members.add(peers, names, new, start, wait, click.echo)
            names.append(new)
        if old is not None:
            await members.remove(peers, [n for n in names if n != old] + [old], old, wait, click.echo)

    _in_reactor(work)
    if old is not None:
        current = topology.config.read_text(encoding="utf-8")
        topology.config.write_text(config.remove_peer(current, old), encoding="utf-8")
        supervisor.remove_program(old)
        click.echo(f"stopped and removed program {old} (its data stays in {topology.run_dir / old})")


def _free_port_after(port: int) -> int:
    """The first port above ``port`` that nothing listens on."""
    import socket
    while True:
        port += 1
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@command()
@click.option("--wait", type=click.FloatRange(0, 600), default=10.0, show_default=True,
              help="Seconds to let peers at different applied indexes catch up.")
@json_option
def check(wait: float, as_json: bool) -> None:
    """Exit 1 unless every peer is reachable and healthy, commits, and has the same digest at the same applied index."""
    from twisted_exchange.ctl.peers import check as poll_until_agreed
    verdict = _in_reactor(lambda peers: poll_until_agreed(peers, _topology().peers, wait))
    click.echo(json.dumps(verdict.to_json(), indent=2) if as_json else output.verdict(verdict))
    _exit_unless_ok(verdict)


@command()
@click.option("--clients", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Concurrent clients, one order in flight each.")
@click.option("--duration", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds to run (ignored with --count).")
@click.option("--count", type=click.IntRange(1), help="Send exactly this many orders instead.")
@symbol_option
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the order stream.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write latency over time to this PNG.")
@click.option("--wait", type=click.FloatRange(0, 600), default=10.0, show_default=True,
              help="Seconds the final check lets peers catch up.")
@click.option("--resting", is_flag=True,
              help="Orders that never cross instead: the book grows by every order (big-book costs).")
@json_option
def bench(clients: int, duration: float, count: int | None, symbol: str, seed: int,
          plot: str | None, wait: float, resting: bool, as_json: bool) -> None:
    """Load every peer with crossing orders, report throughput and latency, then check."""
    from twisted_exchange.ctl import bench as benchmark
    from twisted_exchange.ctl.peers import check as poll_until_agreed
    if plot:
        benchmark.require_plotting()
    topology = _topology()
    names = topology.peers
    live = _Live(every=5.0, enabled=not as_json)
    credential_of = (lambda name: _credential(topology, name)) if topology.pki is not None else None

    async def work(peers):
        recorder = await benchmark.load(peers, names, clients, duration=None if count else duration,
                                        count=count, reactor=peers.reactor, seed=seed,
                                        symbol=symbol, credential_of=credential_of, resting=resting,
                                        progress=lambda r, f, final: live.update(_bar(r, f), final))
        return recorder, await poll_until_agreed(peers, names, wait)

    recorder, verdict = _in_reactor(work)
    if plot:
        run = f"{count} orders" if count else f"{duration:g} s"
        benchmark.plot(recorder, plot, f"{clients} clients, {run}, {len(names)} peers, {symbol}, seed {seed}")
    summary = recorder.summary()
    if as_json:
        click.echo(json.dumps({**summary, "check": verdict.to_json()}, indent=2))
    else:
        click.echo(benchmark.report(summary))
        if plot:
            click.echo(f"latency plot: {plot}")
        click.echo(output.verdict(verdict))
    _exit_unless_ok(verdict)


@main.command("bench-cluster")
@click.option("--peers", "peer_count", type=click.IntRange(3, 9), default=3, show_default=True,
              help="Peers in the benchmark cluster.")
@click.option("--duration", type=click.FloatRange(0.5, 600), default=5.0, show_default=True,
              help="Seconds of load per measurement.")
@click.option("--plain", is_flag=True,
              help="Run the benchmark cluster over plain HTTP, to measure what TLS costs.")
@json_option
def bench_cluster(peer_count: int, duration: float, plain: bool, as_json: bool) -> None:
    """Benchmark a fresh temporary cluster (free ports) against the naive baseline.

    Measures committed orders/s and p50/p99 latency at 1 and 64 in flight, the
    time from killing the leader to the next commit, then the same load on
    peers that match locally and broadcast (no consensus) and how many diverge.
    Needs no running cluster (-c is not used).
    """
    from twisted_exchange.ctl import benchcluster
    results = benchcluster.run(peer_count, duration, say=lambda line: None if as_json else click.echo(line),
                               secure=not plain)
    click.echo(json.dumps(results, indent=2) if as_json else benchcluster.report(results))
    if not results["cluster"]["check"]["ok"]:
        _fail(results["cluster"]["check"]["summary"])


def _exit_unless_ok(verdict: Any) -> None:
    """Exit 1 with an error line on stderr when ``verdict`` failed (under
    ``--json`` too: the verdict already printed is the JSON answer)."""
    if not verdict.ok:
        _fail(verdict.summary())


def _bar(recorder: Any, fraction: float, width: int = 30) -> str:
    filled = round(fraction * width)
    return (f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%}"
            f"  {recorder.count} committed  {sum(recorder.errors.values())} failed")


@command()
@peer_argument
@click.option("--no-open", is_flag=True, help="Only print the URL, even where a browser could open it.")
@json_option
def dashboard(peer: str | None, no_open: bool, as_json: bool) -> None:
    """Print the URL of PEER's (default: any peer's) live web dashboard, and open it in a
    browser where the desktop has one; the peer serves it on its --admin-port."""
    reply = _ask({"action": "status"}, peer)
    url = reply.get("admin") if isinstance(reply, dict) else None
    name = reply.get("id") if isinstance(reply, dict) else peer
    if not isinstance(url, str) or not url.startswith("http://"):
        raise CtlError(f"{name or 'the peer'} serves no dashboard: its program needs --admin-port"
                       " (see: exchangectl status --json)")
    click.echo(json.dumps({"peer": name, "url": url}, indent=2) if as_json else url)
    if not (no_open or as_json) and (sys.platform in ("darwin", "win32")
                                     or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        try:  # a graphical browser starts in the background; none found is not an error
            webbrowser.open(url, new=2)
        except webbrowser.Error:
            pass


if __name__ == "__main__":
    main()
