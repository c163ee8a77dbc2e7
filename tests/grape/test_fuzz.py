"""Fuzz a grape process: malformed HTTP requests to its API, malformed KRPC to its DHT port.

Every input must get an answer or be ignored; the grape must keep serving and
never hang. The grape runs as a real process, so a crash or a hang shows as a
dead process or a missing reply.
"""
import json
import socket
import tempfile
import unittest
from pathlib import Path

from fastbencode import bdecode, bencode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.grape.test_cli import GRAPE, post
from tests.support import LOOPBACK, free_ports, python_module, spawn, wait_for_port

FUZZ = settings(max_examples=1200, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)
data_bodies = st.one_of(
    json_values.map(lambda data: {"data": data}),
    st.tuples(st.text(max_size=12), json_values).map(lambda nv: {"data": list(nv)}),
    st.fixed_dictionaries({"v": json_values}, optional={"k": json_values, "hash": json_values})
    .map(lambda data: {"rid": "f", "data": data}),
    json_values,
).map(lambda message: json.dumps(message).encode())
bodies = st.one_of(data_bodies, st.binary(max_size=200), data_bodies.map(lambda b: b[:-1]))
paths = st.one_of(st.sampled_from(["/announce", "/lookup", "/put", "/get"]),
                  st.from_regex(r"/[!-~]{0,20}", fullmatch=True))
methods = st.one_of(st.sampled_from(["POST", "GET", "PUT", "DELETE"]), st.from_regex(r"[A-Z]{1,8}", fullmatch=True))
header_lines = st.lists(
    st.binary(min_size=1, max_size=40).filter(
        lambda line: b"\r" not in line and b"\n" not in line
        and b"content-length" not in line.lower() and b"transfer-encoding" not in line.lower()),
    max_size=3)


class GrapeFuzzTests(unittest.TestCase):
    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.dht, self.api = free_ports(2)
        argv = python_module(GRAPE, "--dp", str(self.dht), "--aph", str(self.api))
        self.log = Path(directory.name) / "grape.log"
        self.proc = spawn(self, argv, log=self.log)
        wait_for_port(self.api, proc=self.proc)

    def assertStillServing(self):
        self.assertIsNone(self.proc.poll(), "grape exited")
        post(self.api, "/announce", ["alive", 4242])
        self.assertEqual(post(self.api, "/lookup", "alive"), ["127.0.0.1:4242"])
        self.assertNotIn("Traceback", self.log.read_text(errors="replace"))

    def exchange(self, raw: bytes) -> bytes:
        with socket.create_connection((LOOPBACK, self.api), timeout=5) as s:
            try:
                s.sendall(raw)
            except ConnectionError:
                pass
            reply = b""
            try:
                while chunk := s.recv(65536):
                    reply += chunk
            except ConnectionResetError:
                pass
            return reply

    def test_malformed_http_requests_get_an_answer_and_the_grape_keeps_serving(self):
        @FUZZ
        @given(methods, paths, header_lines, bodies)
        def check(method, path, headers, body):
            head = f"{method} {path} HTTP/1.1\r\nHost: grape\r\n".encode() + b"".join(h + b"\r\n" for h in headers)
            raw = head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
            reply = self.exchange(raw)
            if not headers:
                status, _, _ = reply.partition(b"\r\n")
                self.assertRegex(status, rb"^HTTP/1\.1 (200|500) ", raw)
                self.assertFalse(reply.endswith(b"\r\n\r\nERR_GRAPE_GENERIC"), raw)
            elif reply:
                self.assertRegex(reply, rb"^HTTP/1\.1 \d{3} ", raw)

        check()
        self.assertStillServing()

    def test_malformed_krpc_datagrams_are_answered_or_ignored_and_the_grape_keeps_serving(self):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(udp.close)
        udp.bind((LOOPBACK, 0))
        udp.settimeout(2)
        pings = iter(range(1, 1 << 30))

        def ping_after(datagram: bytes) -> None:
            udp.sendto(datagram, (LOOPBACK, self.dht))
            tid = b"zz%d" % next(pings)
            udp.sendto(bencode({b"t": tid, b"y": b"q", b"q": b"ping", b"a": {b"id": b"f" * 20}}),
                       (LOOPBACK, self.dht))
            while True:
                reply = bdecode(udp.recv(65536))
                self.assertIsInstance(reply, dict)
                self.assertIn(reply.get(b"y"), (b"r", b"e", b"q"), reply)
                if reply.get(b"t") == tid:
                    self.assertEqual(reply[b"y"], b"r")
                    return

        keys = st.sampled_from([b"t", b"y", b"q", b"a", b"r", b"e", b"id", b"info_hash", b"target", b"port",
                                b"implied_port", b"token", b"v", b"k", b"sig", b"nodes", b"values"]) | st.binary(max_size=6)
        values = st.recursive(
            st.integers(-2**70, 2**70) | st.binary(max_size=30)
            | st.sampled_from([b"q", b"r", b"e", b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put"]),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
            max_leaves=10)
        queries = st.fixed_dictionaries(
            {b"t": st.binary(min_size=1, max_size=4), b"y": st.just(b"q"),
             b"q": st.sampled_from([b"ping", b"find_node", b"get_peers", b"announce_peer", b"get", b"put", b"x"]),
             b"a": st.dictionaries(keys, values, max_size=6)}).map(bencode)
        datagrams = st.one_of(queries, values.map(bencode), st.dictionaries(keys, values).map(bencode),
                              st.binary(max_size=300))

        @settings(FUZZ, max_examples=1500)
        @given(datagrams)
        def check(datagram):
            ping_after(datagram)

        check()
        self.assertStillServing()
