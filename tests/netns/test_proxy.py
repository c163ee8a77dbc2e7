"""The link proxy over loopback (no namespaces needed): order kept under
jitter, cuts and drops reset connections, a reset heals."""
from __future__ import annotations

import os
import socket
import socketserver
import tempfile
import threading
import time
import unittest
from pathlib import Path

from tests.netns.proxy import Control
from tests.support import LOOPBACK, free_port, python_module, spawn, wait_for_port


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


class ProxyTests(unittest.TestCase):
    def setUp(self):
        server = socketserver.ThreadingTCPServer((LOOPBACK, 0), Echo)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.port = free_port()
        control = Path(tempfile.mkdtemp(prefix="tx-proxy-")) / "control.sock"
        self.addCleanup(os.rmdir, control.parent)
        self.addCleanup(lambda: control.unlink(missing_ok=True))
        proc = spawn(self, python_module("tests.netns.proxy", "--control", str(control), "--link",
                                         f"{LOOPBACK}:{self.port}={LOOPBACK}:{server.server_address[1]}"))
        wait_for_port(self.port, proc=proc)
        deadline = time.monotonic() + 10
        while not control.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.control = Control(str(control))

    def echo(self, chunks: list[bytes]) -> bytes:
        """What comes back for ``chunks``, until all of it or the connection ends
        (no half-close: the proxy, like HTTP, closes both ways at once)."""
        expected = sum(map(len, chunks))
        with socket.create_connection((LOOPBACK, self.port), timeout=5) as s:
            for chunk in chunks:
                s.sendall(chunk)
            received = b""
            while len(received) < expected and (data := s.recv(65536)):
                received += data
        return received

    def test_jitter_delays_chunks_but_keeps_their_order(self):
        self.control.send(latency=0.05, jitter=0.1)
        chunks = [b"%03d;" % i for i in range(30)]
        started = time.monotonic()
        self.assertEqual(self.echo(chunks), b"".join(chunks))
        self.assertGreater(time.monotonic() - started, 0.1)

    def lost(self, payload: bytes) -> bool:
        """The connection was reset, or closed with nothing echoed."""
        try:
            return self.echo([payload]) == b""
        except ConnectionError:
            return True

    def test_cut_source_is_refused_and_reset_heals(self):
        self.control.send(cut=[LOOPBACK])
        self.assertTrue(self.lost(b"x"))
        self.control.send(reset=True)
        self.assertEqual(self.echo([b"back"]), b"back")

    def test_certain_drop_loses_the_connection(self):
        self.control.send(drop=1.0)
        self.assertTrue(self.lost(b"lost"))
