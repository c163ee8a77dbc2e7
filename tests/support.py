"""Shared test helpers for real processes: free loopback ports, spawning a
child process, waiting for it to listen, and killing it by PID.

Every process a test starts is registered with ``addCleanup`` so that it is
killed (SIGTERM, then SIGKILL) even when the test fails.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest
from pathlib import Path

from twisted.internet import defer, reactor, task
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss

from twisted_exchange.ctl.topology import free_ports  # noqa: F401 (re-exported for the tests)

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "tests" / "interop" / "node_modules"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that is free right now (TCP by default, or UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 15.0,
                  proc: subprocess.Popen | None = None) -> None:
    """Poll until a TCP connect to host:port succeeds, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {host}:{port} after {timeout}s")


def kill(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop a child by PID: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def spawn(test: unittest.TestCase, args: list[str], log: Path | None = None,
          **kwargs) -> subprocess.Popen:
    """Start ``args`` as a child process that ``test`` kills at cleanup.

    Output goes to ``log`` (a file the test can read for diagnostics) or is
    discarded.
    """
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, **kwargs)
    finally:
        if log is not None:
            out.close()
    test.addCleanup(kill, proc)
    return proc


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def node_or_skip() -> str:
    """Path of ``node`` with the interop packages installed, else SkipTest."""
    node = shutil.which("node")
    if node is None:
        raise unittest.SkipTest("node not found: Node Grenache interop not tested")
    if not (NODE_MODULES / "grenache-nodejs-http").is_dir():
        raise unittest.SkipTest("tests/interop/node_modules missing: run `make interop`")
    return node


def node_grape_argv(dht_port: int, api_port: int, bootstrap: list[str] | None = None) -> list[str]:
    """argv for the real Node ``grape`` bound to loopback."""
    argv = [node_or_skip(), str(NODE_MODULES / "grenache-grape" / "bin" / "grape.js"),
            "--dp", str(dht_port), "--aph", str(api_port), "-b", LOOPBACK]
    argv += ["--bn", ",".join(bootstrap)] if bootstrap else ["--bn", ""]
    return argv


class Collect(Protocol):
    """Collects a response body (readBody without its abortConnection warning)."""

    def __init__(self, done: defer.Deferred) -> None:
        self._done = done
        self._chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)

    def connectionLost(self, reason) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)


@defer.inlineCallbacks
def http_get(url: str):
    """GET ``url``; fires with (status, content type, body bytes). No connection is kept."""
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    response = yield agent.request(b"GET", url.encode())
    body = defer.Deferred()
    response.deliverBody(Collect(body))
    body = yield body
    content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode()
    return response.code, content_type, body


@defer.inlineCallbacks
def eventually(check, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``check()`` (value or Deferred) until truthy; fail at the deadline."""
    deadline = reactor.seconds() + timeout
    last_error = None
    while True:
        try:
            result = yield defer.maybeDeferred(check)
        except Exception as e:  # a peer that is down or restarting: poll again
            result, last_error = None, e
        if result:
            return result
        if reactor.seconds() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s (last error: {last_error!r})")
        yield task.deferLater(reactor, interval, lambda: None)


def vm_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size field such as VmHWM (peak RSS), in kB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def closed_by_peer(connection: socket.socket, timeout: float = 10) -> bool:
    """Whether the other side closes ``connection`` (or resets it: an abort, or
    a close with our bytes unread) within ``timeout``, with nothing sent first."""
    connection.settimeout(timeout)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True


def connect(port: int, tls: dict[str, Path] | None = None, timeout: float = 10) -> socket.socket:
    """A blocking socket to ``port`` on loopback, speaking TLS when ``tls``
    (``pki.paths``: ca, and key and cert for mutual TLS) is given."""
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    if tls is None:
        return sock
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the identity is checked by the tests that care
    context.load_verify_locations(tls["ca"])
    if "cert" in tls:
        context.load_cert_chain(tls["cert"], tls["key"])
    return context.wrap_socket(sock)


def raw_http_status(port: int, raw: bytes, tls: dict | None) -> bytes:
    """The status code the peer answers to raw bytes (b"" if it just closes)."""
    with connect(port, tls) as s:
        s.sendall(raw)
        reply = b""
        while b"\r\n" not in reply and (chunk := s.recv(65536)):
            reply += chunk
    return reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.1 ") else b""


def stall_uploads(test: unittest.TestCase, port: int, count: int, announced: int, sent: int,
                  tls: dict[str, Path] | None = None) -> None:
    """Open ``count`` connections to ``port`` (in mutual TLS with ``tls``), each
    announcing ``announced`` body bytes, sending ``sent`` of them, then
    stalling (closed at cleanup)."""
    data = b"x" * sent
    for _ in range(count):
        sock = connect(port, tls)
        test.addCleanup(sock.close)
        try:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % announced)
            sock.sendall(data)
        except OSError:  # refused and closed by the server: what we want
            pass


def start_grape(test: unittest.TestCase) -> str:
    """A grape in this reactor on free loopback ports, stopped at cleanup; its API URL."""
    from twisted_exchange.grape.service import GrapeConfig, GrapeService
    dht, api = free_ports(2)
    grape = GrapeService(GrapeConfig(dht_port=dht, api_port=api))
    grape.startService()
    test.addCleanup(grape.stopService)
    return f"http://{LOOPBACK}:{api}"
