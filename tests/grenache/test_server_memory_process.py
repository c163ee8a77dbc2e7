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
from tests.support import (
    LOOPBACK, ROOT, free_port, python_module, spawn, stall_uploads, vm_kb, wait_for_port,
)

MAX_BODY = 64 << 20
UPLOADS = 12
RSS_LIMIT_KB = 400 * 1000


class ServerMemoryProcessTests(unittest.TestCase):
    def setUp(self) -> None:
        self.port = free_port()
        self.server = spawn(self, python_module(
            "tests.grenache.echo_server", str(self.port), str(MAX_BODY)), cwd=ROOT)
        wait_for_port(self.port, proc=self.server)

    def assert_bounded_and_serving(self) -> None:
        with socket.create_connection((LOOPBACK, self.port), timeout=10) as sock:
            body = b'["r","k",1]'
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            self.assertEqual(read_response(sock), (200, b'["r",null,{"key":"k","echo":1}]'))
        self.assertLess(vm_kb(self.server.pid, "VmHWM"), RSS_LIMIT_KB)  # by now all was read

    def test_stalled_uploads_announcing_100_mb_stay_under_400_mb(self) -> None:
        stall_uploads(self, self.port, UPLOADS, 100_000_000, MAX_BODY)
        self.assert_bounded_and_serving()

    def test_stalled_uploads_just_within_max_body_stay_under_400_mb(self) -> None:
        stall_uploads(self, self.port, UPLOADS, MAX_BODY, MAX_BODY - 1)  # only the shared budget can stop these
        self.assert_bounded_and_serving()
