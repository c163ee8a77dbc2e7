"""twisted-exchange-peer as a process: flags, startup errors, clean SIGTERM."""
from __future__ import annotations

import http.client
import os
import resource
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from cryptography import x509

from twisted_exchange import connections, pki
from twisted_exchange.peer import membership
from twisted_exchange.pki import Identity
from tests.support import LOOPBACK, free_ports, python_module, spawn, wait_for_port


def peer_argv(data_dir: str, *extra: str) -> list[str]:
    return python_module("twisted_exchange.peer", "--peers", "peer1,peer2,peer3",
                         "--data-dir", data_dir, *extra)


class PeerCommandLineTests(unittest.TestCase):
    def setUp(self):
        self.data_dir = tempfile.mkdtemp(prefix="tx-peer-cli-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.data_dir])

    def run_peer(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(peer_argv(self.data_dir, *args), capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL)

    def test_id_outside_the_peer_list_is_a_usage_error(self):
        done = self.run_peer("--id", "peer9")
        self.assertEqual(done.returncode, 2)
        self.assertIn("'peer9' is not in --peers", done.stderr)
        self.assertNotIn("Traceback", done.stderr)

    def test_grape_must_be_a_list_of_http_urls(self):
        for value in ("127.0.0.1:30001", "http://127.0.0.1:30001,ftp://x:1", ","):
            done = self.run_peer("--id", "peer1", "--grape", value)
            self.assertEqual(done.returncode, 2, value)
            self.assertIn("Invalid value for '--grape'", done.stderr)

    def test_peer_addresses_must_be_other_peers_at_host_and_port(self):
        for value, reason in (("peer2=127.0.0.1", "expected ID=HOST:PORT"), ("peer2=:5002", "expected ID=HOST:PORT"),
                              ("=127.0.0.1:5002", "expected ID=HOST:PORT"), ("peer2=h:99999", "expected ID=HOST:PORT"),
                              ("peer2=127.0.0.1:5002,peer1=127.0.0.1:5001", "names this peer (peer1)")):
            done = self.run_peer("--id", "peer1", "--grape", "http://127.0.0.1:1", "--peer-address", value)
            self.assertEqual(done.returncode, 2, value)
            self.assertRegex(done.stderr, r"Invalid value for '?--peer-address'?: ")
            self.assertIn(reason, done.stderr)
            self.assertNotIn("Traceback", done.stderr)

    def test_port_in_use_is_one_error_line_and_exit_1(self):
        with socket.socket() as taken:
            taken.bind((LOOPBACK, 0))
            taken.listen()
            done = self.run_peer("--id", "peer1", "--port", str(taken.getsockname()[1]),
                                 "--grape", "http://127.0.0.1:1")
        self.assertEqual(done.returncode, 1)
        self.assertRegex(done.stderr, r"^error: cannot listen on 127\.0\.0\.1:\d+")
        self.assertNotIn("Traceback", done.stderr + done.stdout)

    def test_admin_port_in_use_is_one_error_line_naming_it_and_exit_1(self):
        with socket.socket() as taken:
            taken.bind((LOOPBACK, 0))
            taken.listen()
            admin = taken.getsockname()[1]
            done = self.run_peer("--id", "peer1", "--admin-port", str(admin), "--grape", "http://127.0.0.1:1")
        self.assertEqual(done.returncode, 1)
        self.assertRegex(done.stderr, rf"^error: cannot listen on 127\.0\.0\.1:{admin}: ")
        self.assertNotIn("Traceback", done.stderr + done.stdout)

    def test_sigterm_stops_the_peer_cleanly_and_it_restarts_from_its_data_dir(self):
        port, = free_ports(1)
        log = Path(self.data_dir) / "peer.log"
        argv = peer_argv(self.data_dir, "--id", "peer1", "--port", str(port),
                         "--grape", "http://127.0.0.1:1")
        proc = spawn(self, argv, log=log)
        wait_for_port(port, proc=proc)
        second = self.run_peer("--id", "peer1", "--port", "0", "--grape", "http://127.0.0.1:1")
        self.assertEqual(second.returncode, 1, "a second peer on the same data dir must refuse")
        self.assertIn("error: cannot open data directory", second.stderr)
        os.kill(proc.pid, signal.SIGTERM)
        self.assertEqual(proc.wait(15), 0)
        self.assertIn("peer1 stopped", log.read_text())
        self.assertNotIn("Traceback", log.read_text())
        again = spawn(self, argv, log=log)
        wait_for_port(port, proc=again)

    def test_too_few_file_descriptors_is_one_error_line_and_exit_1(self):
        done = subprocess.run(peer_argv(self.data_dir, "--id", "peer1", "--grape", "http://127.0.0.1:1"),
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200)))
        self.assertEqual(done.returncode, 1)
        self.assertRegex(done.stderr, r"^error: 200 file descriptors \(ulimit -n\) leave room for 0 connections")
        self.assertNotIn("Traceback", done.stderr + done.stdout)

    def test_one_address_holding_its_share_of_connections_does_not_shut_out_the_others(self):
        # Loopback is 127/8: a client bound to 127.0.0.2 is another address to the peer.
        port, admin = free_ports(2)
        proc = spawn(self, peer_argv(self.data_dir, "--id", "peer1", "--port", str(port), "--admin-port",
                                     str(admin), "--grape", "http://127.0.0.1:1",
                                     "--max-connections-per-address", "4"))
        wait_for_port(port, proc=proc)
        wait_for_port(admin, proc=proc)
        held = []
        for _ in range(5):
            s = socket.create_connection((LOOPBACK, port), source_address=("127.0.0.2", 0))
            self.addCleanup(s.close)
            held.append(s)
        held[-1].settimeout(10)
        self.assertEqual(held[-1].recv(1), b"", "the fifth from 127.0.0.2 is closed unread")
        status = _post(port, b'["r","exchange:peer1",{"action":"status"}]')  # from 127.0.0.1
        self.assertIn(b'"id":"peer1"', status)
        metrics = _get(admin, "/metrics")
        self.assertIn(b"twisted_exchange_rpc_connections_refused_total 1.0", metrics)
        held[0].close()
        deadline = time.monotonic() + 10
        while b"twisted_exchange_rpc_connections 3.0" not in _get(admin, "/metrics"):  # the 3 still held
            self.assertLess(time.monotonic(), deadline, "the closed connection's place was never given back")
            time.sleep(0.05)
        self.assertIn(b'"id":"peer1"', _post(port, b'["r","exchange:peer1",{"action":"status"}]', "127.0.0.2"))

    def test_connections_past_the_descriptor_limit_are_closed_and_the_peer_lives_on(self):
        # Before the caps, a peer with 400 descriptors held every connection it
        # got, and its storage probe (every 5 s) then failed EMFILE: fail-stop.
        port, admin = free_ports(2)
        proc = spawn(self, peer_argv(self.data_dir, "--id", "peer1", "--port", str(port), "--admin-port",
                                     str(admin), "--grape", "http://127.0.0.1:1"),
                     preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (400, 400)))
        wait_for_port(port, proc=proc)
        wait_for_port(admin, proc=proc)
        flood = []
        self.addCleanup(lambda: [s.close() for s in flood])
        for n in range(400):
            flood.append(socket.create_connection((LOOPBACK, port), source_address=(f"127.0.1.{n % 200 + 1}", 0)))
        full = (b"twisted_exchange_rpc_connections %d.0\n" % (400 - connections.RESERVED_FDS),
                b"twisted_exchange_rpc_connections_evicted_total %d.0\n" % connections.RESERVED_FDS)
        deadline = time.monotonic() + 5
        while not all(line in _get(admin, "/metrics") for line in full):
            self.assertLess(time.monotonic(), deadline, "the silent connections past the cap were not closed")
            time.sleep(0.05)
        # A caller that speaks takes the place of a silent one.
        self.assertIn(b'"id":"peer1"', _post(port, b'["r","exchange:peer1",{"action":"status"}]'))
        until = time.monotonic() + 2 * 5.0 + 1  # two storage probes while it is full (silence closes it at 15 s)
        while time.monotonic() < until:
            self.assertIsNone(proc.poll(), "the peer exited")
            time.sleep(0.2)

    @unittest.skipUnless(hasattr(os, "SCHED_BATCH"), "SCHED_BATCH is Linux's")
    def test_a_peer_runs_under_sched_batch_unless_told_normal_or_to_inherit(self):
        batch = lambda: os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # as chrt -b would
        for flag, policy, before in (((), os.SCHED_BATCH, None),
                                     (("--cpu-scheduling", "normal"), os.SCHED_OTHER, batch),
                                     (("--cpu-scheduling", "inherit"), os.SCHED_BATCH, batch)):
            port, = free_ports(1)
            data_dir = tempfile.mkdtemp(prefix="tx-peer-cli-", dir=self.data_dir)
            proc = spawn(self, peer_argv(data_dir, "--id", "peer1", "--port", str(port),
                                         "--grape", "http://127.0.0.1:1", *flag), preexec_fn=before)
            wait_for_port(port, proc=proc)
            self.assertEqual(os.sched_getscheduler(proc.pid), policy, flag)

    def test_data_dir_of_another_cluster_is_refused(self):
        membership.record(self.data_dir, "peer1", ["peer1", "peer2", "peer3"])  # joined before
        done = subprocess.run(
            python_module("twisted_exchange.peer", "--peers", "peer1,peer2,peer3,peer4,peer5",
                          "--id", "peer1", "--data-dir", self.data_dir, "--grape", "http://127.0.0.1:1"),
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        self.assertEqual(done.returncode, 1)
        self.assertIn("belongs to peer 'peer1' of cluster ['peer1', 'peer2', 'peer3']", done.stderr)


    def test_pki_without_a_credential_for_this_peer_or_the_ca_key_is_one_error_line_and_exit_1(self):
        pki_dir = Path(self.data_dir) / "pki"
        ca = pki.CA.create()
        pki.save(pki_dir, Identity("peer", "peer2"), ca.issue(Identity("peer", "peer2")))  # ca.crt only
        done = self.run_peer("--id", "peer1", "--pki", str(pki_dir), "--grape", "http://127.0.0.1:1")
        self.assertEqual(done.returncode, 1)
        self.assertIn("error: no usable credential for peer:peer1", done.stderr)
        self.assertNotIn("Traceback", done.stderr)

    def test_a_key_that_does_not_go_with_its_certificate_is_one_error_line_and_exit_1(self):
        pki_dir = Path(self.data_dir) / "pki"
        for name in ("peer1", "peer2"):
            pki.ensure(pki_dir, Identity("peer", name))
        files = pki.paths(pki_dir, Identity("peer", "peer1"))
        files["key"].write_bytes(pki.paths(pki_dir, Identity("peer", "peer2"))["key"].read_bytes())
        done = self.run_peer("--id", "peer1", "--pki", str(pki_dir), "--grape", "http://127.0.0.1:1")
        self.assertEqual(done.returncode, 1)
        self.assertRegex(done.stderr, r"^error: no usable credential for peer:peer1 in .*key values mismatch")
        self.assertNotIn("Traceback", done.stderr)

    def test_pki_on_first_start_makes_the_ca_and_this_peers_credential_and_serves_mutual_tls_only(self):
        pki_dir = Path(self.data_dir) / "pki"
        port, = free_ports(1)
        proc = spawn(self, peer_argv(str(Path(self.data_dir) / "data"), "--id", "peer1", "--port", str(port),
                                     "--pki", str(pki_dir), "--grape", "http://127.0.0.1:1"))
        wait_for_port(port, proc=proc)
        with socket.create_connection((LOOPBACK, port), timeout=10) as plain:
            plain.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n["r","k",1]')
            reply = plain.recv(65536)
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply)
        self.assertIn(b"ERR_TLS_REQUIRED", reply)
        files = pki.paths(pki_dir, Identity("peer", "peer1"))
        self.assertEqual(files["key"].stat().st_mode & 0o777, 0o600)
        certificate = x509.load_pem_x509_certificate(files["cert"].read_bytes())
        self.assertEqual(pki.verify(certificate, pki.CA.load(pki_dir).certificate), Identity("peer", "peer1"))


def _post(port: int, body: bytes, source: str = LOOPBACK) -> bytes:
    """The reply body of one plain Grenache call to the peer at ``port``, sent from ``source``."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10, source_address=(source, 0))
    try:
        connection.request("POST", "/", body)
        return connection.getresponse().read()
    finally:
        connection.close()


def _get(port: int, path: str) -> bytes:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()
