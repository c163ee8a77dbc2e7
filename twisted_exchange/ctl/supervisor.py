"""Control of the cluster's supervisord over its XML-RPC unix socket.

A thin, blocking wrapper (xmlrpc.client over a unix socket, every call
bounded by a timeout) that turns every failure into a ``CtlError`` with a
line fit for the user: a missing or refused socket means supervisord is not
running, an XML-RPC fault names the process and the fault.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import xmlrpc.client
from pathlib import Path
from typing import Any, Callable, Iterator

from supervisor.xmlrpc import Faults, getFaultDescription

from twisted_exchange.ctl.errors import CtlError

NOT_RUNNING = "supervisord is not running (start it with: exchangectl up)"
#: Process states in which a program is up or on its way up.
ALIVE = frozenset({"STARTING", "RUNNING", "BACKOFF"})


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the unix socket at ``path``, with a timeout on every operation."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self._path))


class UnixTransport(xmlrpc.client.Transport):
    """xmlrpc.client transport to a unix socket (one connection per call)."""

    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self._path, self._timeout)


class Supervisor:
    """supervisord's XML-RPC interface at unix socket ``socket``.

    ``timeout`` bounds each call; stopping a program waits for it to exit
    (up to its stopwaitsecs), so it is generous.
    """

    def __init__(self, socket: Path, timeout: float = 60.0) -> None:
        self.socket = socket
        self._proxy = xmlrpc.client.ServerProxy("http://localhost", UnixTransport(socket, timeout))

    def _call(self, method: str, *args: Any, name: str | None = None) -> Any:
        try:
            return getattr(self._proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            raise CtlError(_fault_message(fault, name)) from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise CtlError(NOT_RUNNING) from None
        except (OSError, http.client.HTTPException) as e:
            raise CtlError(f"supervisord at {self.socket}: {getattr(e, 'strerror', None) or e}") from None
        finally:
            self._proxy("close")()

    def is_running(self) -> bool:
        """True when supervisord answers on the socket."""
        try:
            self._call("getState")
        except CtlError as e:
            return str(e) != NOT_RUNNING
        return True

    def state(self) -> str:
        """supervisord's own state name: RUNNING, SHUTDOWN, ..."""
        return self._call("getState")["statename"]

    def pid(self) -> int:
        """supervisord's process id."""
        return self._call("getPID")

    def processes(self) -> list[dict[str, Any]]:
        """``getAllProcessInfo``: one dict per program (name, statename, pid, ...)."""
        return self._call("getAllProcessInfo")

    def process(self, name: str) -> dict[str, Any]:
        """``getProcessInfo(name)``."""
        return self._call("getProcessInfo", name, name=name)

    def start(self, name: str, wait: bool = True) -> None:
        """Start ``name``; with ``wait``, until supervisord considers it running."""
        self._call("startProcess", name, wait, name=name)

    def stop(self, name: str) -> None:
        """Stop ``name`` (its stopsignal, then SIGKILL after stopwaitsecs)."""
        self._call("stopProcess", name, True, name=name)

    def kill(self, name: str) -> int:
        """SIGKILL ``name`` by the pid supervisord reports; returns the pid.

        supervisord sees an unexpected exit and restarts the program
        (autorestart), which is the point of a chaos drill.
        """
        info = self.process(name)
        if info["statename"] != "RUNNING" or not info["pid"]:
            raise CtlError(f"{name} is not running ({info['statename']})")
        try:
            os.kill(info["pid"], signal.SIGKILL)
        except ProcessLookupError:
            raise CtlError(f"{name} (pid {info['pid']}) has already exited") from None
        except PermissionError:
            raise CtlError(f"not allowed to kill {name} (pid {info['pid']})") from None
        return info["pid"]

    def log_size(self, name: str) -> int:
        """The size of ``name``'s log file in bytes."""
        # tailProcessStdoutLog with length 0 reads nothing and returns the size.
        return self._call("tailProcessStdoutLog", name, 0, 0, name=name)[1]

    def read_log(self, name: str, offset: int, length: int) -> str:
        """``length`` bytes of ``name``'s log from ``offset`` (exactly those:
        tailProcessStdoutLog would return the whole file when asked for more
        than there is)."""
        return self._call("readProcessStdoutLog", name, offset, length, name=name) if length > 0 else ""

    def last_lines(self, name: str, lines: int) -> tuple[str, int]:
        """The last ``lines`` whole lines of ``name``'s log, and the offset after them."""
        size = self.log_size(name)
        length = min(size, max(8192, 160 * lines))
        while True:
            text = self.read_log(name, size - length, length)
            found = text.splitlines(keepends=True)
            partial_first = length < size
            if len(found) > lines + partial_first or length == size:
                return "".join(found[partial_first:][-lines:]), size
            length = min(size, length * 4)

    def follow(self, name: str, lines: int = 20, interval: float = 0.5) -> Iterator[str]:
        """The last ``lines`` lines of ``name``'s log, then whatever it appends,
        from the start of a new file when supervisord rotated the log."""
        text, offset = self.last_lines(name, lines)
        yield text
        while True:
            time.sleep(interval)
            size = self.log_size(name)
            if size < offset:  # rotated or truncated: the new file from its start
                offset = 0
            while offset < size:
                chunk = min(size - offset, 1 << 20)
                text = self.read_log(name, offset, chunk)
                offset += chunk
                yield text

    def add_program(self, name: str) -> None:
        """Reread the config file and start program ``name`` added to it
        (supervisorctl's reread + update, for one new program)."""
        self._call("reloadConfig")
        self._call("addProcessGroup", name, name=name)

    def remove_program(self, name: str) -> None:
        """Stop program ``name``, forget it, and reread the config file it
        was removed from."""
        if self.process(name)["statename"] in ALIVE:
            self.stop(name)
        self._call("removeProcessGroup", name, name=name)
        self._call("reloadConfig")

    def shutdown(self) -> None:
        """Stop every program, then supervisord itself."""
        self._call("shutdown")

    def launch(self, config: Path, timeout: float = 15.0) -> None:
        """Start supervisord on ``config`` (it daemonizes) and wait until it answers.

        The run directory must exist; supervisord's own startup errors (port or
        socket in use, bad config) are reported with its message.  Its PATH
        starts with this Python's scripts directory, so the programs are found
        however exchangectl was invoked (a venv that is not activated, say).
        """
        with tempfile.TemporaryFile("w+") as said:
            process = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(config)],
                                       stdin=subprocess.DEVNULL, stdout=said, stderr=subprocess.STDOUT,
                                       env=programs_environment())
            try:
                code = process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = None
            said.seek(0)
            lines = said.read().strip().splitlines()
        if code != 0:
            errors = [line.removeprefix("Error: ") for line in lines if line.startswith("Error:")]
            reason = (errors or lines[-1:] or [f"exit status {code}"])[0]
            failed = "did not daemonize" if code is None else "failed to start"
            raise CtlError(f"supervisord {failed}: {reason}")
        self.wait_until(lambda: self.is_running() and self.state() == "RUNNING", timeout,
                        f"supervisord did not come up within {timeout:g}s (see its log)")

    def wait_until(self, done: Callable[[], bool], timeout: float, message: str,
                   interval: float = 0.1) -> None:
        """Poll ``done`` until it is true, or raise ``CtlError(message)`` at the deadline."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                raise CtlError(message)
            time.sleep(interval)


def programs_environment() -> dict[str, str]:
    """This process's environment, with the directories of this Python's
    console scripts (``twisted-exchange-peer`` and the others) first in PATH."""
    scripts = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    return {**os.environ, "PATH": os.pathsep.join(dict.fromkeys(scripts + path))}


def _fault_message(fault: xmlrpc.client.Fault, name: str | None) -> str:
    subject = f"{name}: " if name else ""
    if fault.faultCode == Faults.BAD_NAME:
        return f"no such process: {name}" if name else f"bad name: {fault.faultString}"
    if fault.faultCode == Faults.ALREADY_STARTED:
        return f"{subject}already started"
    if fault.faultCode == Faults.NOT_RUNNING:
        return f"{subject}not running"
    if fault.faultCode == Faults.SHUTDOWN_STATE:
        return "supervisord is shutting down"
    detail = fault.faultString.split(":", 1)[-1].strip()
    return f"{subject}{getFaultDescription(fault.faultCode)}{': ' + detail if detail else ''}"
