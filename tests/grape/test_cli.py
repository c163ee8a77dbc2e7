"""The ``twisted-exchange-grape`` process: serves, stops on SIGTERM, rejects bad flags."""
import json
import os
import resource
import signal
import socket
import subprocess
import tempfile
import unittest
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support import LOOPBACK, closed_by_peer, free_ports, python_module, spawn, wait_for_port

GRAPE = "twisted_exchange.grape"


def post(port: int, path: str, data: object) -> object:
    body = json.dumps({"rid": "cli-test", "data": data}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", body), timeout=10) as r:
        return json.loads(r.read())


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(python_module(GRAPE, *args), capture_output=True, text=True, timeout=60)


class GrapeProcessTests(unittest.TestCase):
    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.log = Path(directory.name) / "grape.log"

    def test_serves_announces_and_stops_cleanly_on_sigterm(self):
        dht, api = free_ports(2)
        proc = spawn(self, python_module(GRAPE, "--dp", str(dht), "--aph", str(api), "--bn", ""), log=self.log)
        wait_for_port(api, proc=proc)
        self.assertEqual(post(api, "/announce", ["svc", 4242]), "No nodes to query")
        self.assertEqual(post(api, "/lookup", "svc"), ["127.0.0.1:4242"])
        os.kill(proc.pid, signal.SIGTERM)
        self.assertEqual(proc.wait(15), 0)
        log = self.log.read_text()
        self.assertIn("grape stopped", log)
        self.assertIn(f"DHT udp 127.0.0.1:{dht}", log)
        self.assertNotIn("Traceback", log)

    def test_a_host_holding_its_share_of_connections_does_not_shut_out_lookups(self):
        # Before the caps, a connection flood took a grape to EMFILE and it refused every lookup.
        dht, api, admin = free_ports(3)
        proc = spawn(self, python_module(GRAPE, "--dp", str(dht), "--aph", str(api), "--bn", "",
                                         "--max-connections", "64", "--max-connections-per-address", "8",
                                         "--admin-port", str(admin)),
                     log=self.log)
        wait_for_port(api, proc=proc)
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        for n in range(9):  # from 127.0.0.2, speaking: the ninth is past its share
            s = socket.create_connection((LOOPBACK, api), source_address=("127.0.0.2", 0), timeout=10)
            s.sendall(b"POST /lookup HTTP/1.1\r\n")
            held.append(s)
        self.assertTrue(closed_by_peer(held[-1]))
        for n in range(64):  # from other hosts, silent: the oldest give their places
            held.append(socket.create_connection((LOOPBACK, api), source_address=(f"127.0.2.{n + 1}", 0), timeout=10))
        self.assertEqual(post(api, "/announce", ["svc", 4242]), "No nodes to query")
        self.assertEqual(post(api, "/lookup", "svc"), ["127.0.0.1:4242"])
        self.assertRegex(self.log.read_text(), r"grape API: refusing connections: \d+ open, 8 from 127\.0\.0\.2 ")
        with urllib.request.urlopen(f"http://{LOOPBACK}:{admin}/metrics", timeout=10) as response:
            metrics = {s.name: s.value for f in text_string_to_metric_families(response.read().decode())
                       for s in f.samples if s.name.startswith("twisted_exchange_grape_api_connections")}
        self.assertEqual(metrics["twisted_exchange_grape_api_connections_refused_total"], 1)
        self.assertGreaterEqual(metrics["twisted_exchange_grape_api_connections_evicted_total"], 8)
        self.assertLessEqual(metrics["twisted_exchange_grape_api_connections"], 64)

    def test_too_few_file_descriptors_is_one_error_line_and_exit_1(self):
        dht, api = free_ports(2)
        result = subprocess.run(python_module(GRAPE, "--dp", str(dht), "--aph", str(api)), capture_output=True,
                                text=True, timeout=60,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)))
        self.assertEqual(result.returncode, 1)
        self.assertTrue(result.stderr.startswith("error: 300 file descriptors (ulimit -n) leave room for 44 "
                                                 "connections; at least 320 are needed"), result.stderr)

    def test_bad_flags_are_usage_errors_without_traceback(self):
        for args in [("--aph", "1"), ("--dp", "x", "--aph", "1"), ("--dp", "1", "--aph", "70000"),
                     ("--dp", "1", "--aph", "2", "--bn", "nohost"), ("--dp", "1", "--aph", "2", "--dpa", "0")]:
            result = run(*args)
            self.assertEqual(result.returncode, 2, args)
            self.assertIn("Usage:", result.stderr)
            self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_port_in_use_is_a_one_line_error_and_exit_1(self):
        for kind, taken_is_api in [(socket.SOCK_STREAM, True), (socket.SOCK_DGRAM, False)]:
            dht, api = free_ports(2)
            with socket.socket(socket.AF_INET, kind) as taken:
                taken.bind((LOOPBACK, api if taken_is_api else dht))
                result = run("--dp", str(dht), "--aph", str(api))
            self.assertEqual(result.returncode, 1)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            port = api if taken_is_api else dht
            self.assertTrue(result.stderr.startswith(f"error: cannot listen: 127.0.0.1:{port}"), result.stderr)

    def test_help_says_where_defaults_differ_from_node(self):
        result = run("--help")
        self.assertEqual(result.returncode, 0)
        text = " ".join(result.stdout.split())
        for flag in ("--dp, --dht_port", "--aph, --api_port", "--bn, --bootstrap", "-b, --bind",
                     "--dpa, --dht_peer_maxAge", "--check_maxPayloadSize"):
            self.assertIn(flag, text)
        self.assertIn("Unlike Node's grape (all interfaces), the default is loopback only", text)
        self.assertIn("Unlike Node's CLI", text)
