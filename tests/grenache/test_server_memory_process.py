"""Process-level: stalled huge uploads cannot blow up a real RPCServer process.

The red-team case of issue 9 against ``tests.grenache.echo_server`` run as
the peer runs its server (max_body 64 MiB, the default shared budget): 12
connections each send 64 MiB of a large body and stall.  The server's peak
RSS (VmHWM) must stay under 400 MB and another client must still be served.
Loopback only; the child is killed by PID at cleanup.
"""
from __future__ import annotations

import socket
import unittest

from tests.grenache.test_server_fuzz import read_response
from tests.support import LOOPBACK, ROOT, free_port, python_module, spawn, wait_for_port

MAX_BODY = 64 << 20
UPLOADS = 12
RSS_LIMIT_KB = 400 * 1000


def vm_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` size field such as VmHWM (peak RSS), in kB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


class ServerMemoryProcessTests(unittest.TestCase):
    def setUp(self) -> None:
        self.port = free_port()
        self.server = spawn(self, python_module(
            "tests.grenache.echo_server", str(self.port), str(MAX_BODY)), cwd=ROOT)
        wait_for_port(self.port, proc=self.server)

    def stall_uploads(self, announced: int, sent: int = MAX_BODY) -> None:
        """Open UPLOADS connections, each announcing ``announced`` body bytes and sending ``sent``."""
        data = b"x" * sent
        for _ in range(UPLOADS):
            sock = socket.create_connection((LOOPBACK, self.port), timeout=10)
            self.addCleanup(sock.close)
            try:
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % announced)
                sock.sendall(data)
            except OSError:  # refused and closed by the server: what we want
                pass

    def assert_bounded_and_serving(self) -> None:
        with socket.create_connection((LOOPBACK, self.port), timeout=10) as sock:
            body = b'["r","k",1]'
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            self.assertEqual(read_response(sock), (200, b'["r",null,{"key":"k","echo":1}]'))
        self.assertLess(vm_kb(self.server.pid, "VmHWM"), RSS_LIMIT_KB)  # by now all was read

    def test_stalled_uploads_announcing_100_mb_stay_under_400_mb(self) -> None:
        self.stall_uploads(100_000_000)
        self.assert_bounded_and_serving()

    def test_stalled_uploads_just_within_max_body_stay_under_400_mb(self) -> None:
        self.stall_uploads(MAX_BODY, MAX_BODY - 1)  # only the shared budget can stop these
        self.assert_bounded_and_serving()
