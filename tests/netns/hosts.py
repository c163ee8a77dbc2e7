"""Separate hosts on one Linux machine: network namespaces on one switch.

Each host is a namespace ``tx-<tag>-<name>`` with one veth ``eth0`` holding
one address of ``SUBNET``; the other ends of the veths sit on a bridge in a
namespace of their own (the switch), so no address or link ever touches the
machine's own namespace.  The kernel faults a nemesis needs are here:
taking a host's switch port down (a cut cable) and blackhole routes inside
a host (one-way or both-way loss towards an address).

``<tag>`` is the PID of the process that built the network, so two runs can
coexist (the same addresses live in different namespaces), and
:func:`sweep_leftovers` can tell an abandoned network (its PID is gone) from
a live one.  Processes are started in a host with ``ip netns exec`` (which
execs, so the PID we hold is the program's own) and are killed by that PID
before the namespaces are deleted.
"""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

PREFIX = "tx-"
#: A private /24 unlikely to be in use on a CI machine; only ever inside our namespaces.
SUBNET = "10.77.0"
NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Host:
    """One machine: its namespace, its address and its port on the switch."""

    name: str
    namespace: str
    address: str
    port: str  # the veth end on the switch's bridge


def ip(*args: str) -> None:
    """Run ``ip ARGS``; a failure raises with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        reason = "; ".join(line for line in done.stderr.splitlines() if line.strip())
        raise OSError(f"ip {' '.join(args)}: {reason}")


def unavailable() -> str | None:
    """Why namespaces cannot be used here (one line), or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
        ip("netns", "del", probe)
    except (OSError, FileNotFoundError) as e:
        return f"ip netns is not allowed here: {e}"
    return None


def sweep_leftovers() -> list[str]:
    """Delete the namespaces of networks whose builder died (killing what
    still runs in them); the names deleted."""
    swept = []
    for path in sorted(NETNS_DIR.glob(f"{PREFIX}*")) if NETNS_DIR.is_dir() else []:
        owner = path.name[len(PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        _kill_inside(path.name)
        subprocess.run(["ip", "netns", "del", path.name], capture_output=True)
        swept.append(path.name)
    return swept


def _kill_inside(namespace: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout
    for pid in pids.split():
        if int(pid) == os.getpid():
            continue  # this process, moved onto one of its hosts by Network.enter
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


class Network:
    """Hosts on one switch, built by this process and torn down by :meth:`destroy`."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.hosts: dict[str, Host] = {}
        self._processes: list[subprocess.Popen] = []
        self._blackholes: set[tuple[str, str]] = set()
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def add_host(self, name: str, octet: int) -> Host:
        """A new host ``name`` at ``SUBNET.octet``, plugged into the switch."""
        host = Host(name, f"{self.tag}-{name}", f"{SUBNET}.{octet}", f"v-{name}")
        ip("netns", "add", host.namespace)
        self.hosts[name] = host
        ip("-n", self.switch, "link", "add", host.port, "type", "veth",
           "peer", "name", "eth0", "netns", host.namespace)
        ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        return host

    # -- processes ------------------------------------------------------------

    def spawn(self, host: Host, argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
        """Start ``argv`` on ``host``, output appended to ``log``; killed at :meth:`destroy`."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", host.namespace, *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self._processes.append(proc)
        return proc

    def enter(self, host: Host) -> None:
        """Move this process (its calling thread, and threads it starts later)
        onto ``host``: sockets opened from now on are that host's."""
        fd = os.open(NETNS_DIR / host.namespace, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {host.namespace}")
        finally:
            os.close(fd)

    # -- kernel faults ------------------------------------------------------------

    def set_link(self, host: Host, up: bool) -> None:
        """Plug ``host``'s cable into the switch, or pull it out."""
        ip("-n", self.switch, "link", "set", host.port, "up" if up else "down")

    def blackhole(self, host: Host, address: str) -> None:
        """``host`` silently drops everything it sends to ``address``."""
        ip("-n", host.namespace, "route", "add", "blackhole", f"{address}/32")
        self._blackholes.add((host.name, address))

    def unblackhole(self, host: Host, address: str) -> None:
        ip("-n", host.namespace, "route", "del", "blackhole", f"{address}/32")
        self._blackholes.discard((host.name, address))

    def heal(self) -> None:
        """Every cable plugged in, every blackhole route gone."""
        for host in self.hosts.values():
            self.set_link(host, True)
        for name, address in sorted(self._blackholes):
            self.unblackhole(self.hosts[name], address)

    def destroy(self) -> None:
        """Kill every process started here (by PID), then delete every namespace."""
        for proc in self._processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for host in self.hosts.values():
            _kill_inside(host.namespace)  # anything a program of ours forked
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)
        self.hosts.clear()
