"""Our grape against the real Node ``grenache-grape``.

(3) A Node grape and ours bootstrapped to each other share announces and
BEP44 values both ways. (4) Our Grape API answers the same requests exactly
like a lone real grape: same status, same body (up to each grape's own DHT
port and node id, and the random order of lookup results). Requests on which
the real grape crashes (a non-hex /get hash, announce ports out of range) or
answers V8 internals are left out: there ours answers an error, by design.
"""
import hashlib
import json
import re
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import LOOPBACK, free_ports, node_grape_argv, node_or_skip, python_module, spawn, wait_for_port

HELLO_KEY = hashlib.sha1(b"5:hello").hexdigest()


def send(port: int, path: str, body: bytes, method: str = "POST") -> tuple[int, bytes]:
    """One HTTP request; (status, body) for every status."""
    req = urllib.request.Request(f"http://{LOOPBACK}:{port}{path}", body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def call(port: int, path: str, data: object) -> object:
    status, body = send(port, path, json.dumps({"rid": "interop", "data": data}).encode())
    assert status == 200, (status, body)
    return json.loads(body) if body else None


def eventually(check, timeout: float = 3.0) -> bool:
    """Poll ``check()`` until it is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class GrapeInteropCase(unittest.TestCase):
    def setUp(self):
        node_or_skip()
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.logs = Path(directory.name)

    def start_node(self, dht: int, api: int, bootstrap: list[str]) -> None:
        proc = spawn(self, node_grape_argv(dht, api, bootstrap), log=self.logs / "node-grape.log")
        wait_for_port(api, proc=proc)

    def start_ours(self, dht: int, api: int, bootstrap: list[str]) -> None:
        argv = python_module("twisted_exchange.grape", "--dp", str(dht), "--aph", str(api), "--bn", ",".join(bootstrap))
        proc = spawn(self, argv, log=self.logs / "grape.log")
        wait_for_port(api, proc=proc)


class MixedNetworkTests(GrapeInteropCase):
    def setUp(self):
        super().setUp()
        self.node_dht, self.node_api, self.our_dht, self.our_api = free_ports(4)
        self.start_node(self.node_dht, self.node_api, [f"{LOOPBACK}:{self.our_dht}"])
        self.start_ours(self.our_dht, self.our_api, [f"{LOOPBACK}:{self.node_dht}"])

    def test_announce_on_either_grape_is_returned_by_lookup_on_the_other(self):
        self.assertEqual(call(self.our_api, "/announce", ["on_ours", 4001]), 1)
        self.assertEqual(call(self.node_api, "/announce", ["on_node", 4002]), 1)
        self.assertEqual(call(self.our_api, "/announce", ["own_port", 0]), 1)
        self.assertTrue(eventually(lambda: call(self.node_api, "/lookup", "on_ours") == ["127.0.0.1:4001"]))
        self.assertTrue(eventually(lambda: call(self.our_api, "/lookup", "on_node") == ["127.0.0.1:4002"]))
        self.assertTrue(eventually(
            lambda: call(self.node_api, "/lookup", "own_port") == [f"127.0.0.1:{self.our_dht}"]))

    def test_immutable_values_put_on_either_grape_are_found_on_the_other(self):
        self.assertEqual(call(self.our_api, "/put", {"v": "hello"}), HELLO_KEY)
        self.assertEqual(call(self.node_api, "/get", HELLO_KEY)["v"], "hello")
        key = call(self.node_api, "/put", {"v": "from node"})
        self.assertEqual(key, hashlib.sha1(b"9:from node").hexdigest())
        self.assertEqual(call(self.our_api, "/get", {"hash": key})["v"], "from node")


def _body(data: object) -> bytes:
    return json.dumps({"rid": "interop", "data": data}).encode()


# (method, path, raw body): sent in this order to both grapes.
SAME_ANSWERS = [
    ("POST", "/announce", _body(["svc", 4242])),
    ("POST", "/lookup", _body("svc")),
    ("POST", "/Lookup", _body("svc")),
    ("GET", "/_lookup", _body("svc")),
    ("PUT", "/announce", _body(["svc", 0])),
    ("POST", "/lookup", _body("svc")),
    ("POST", "/announce", b'{"data":["svc",80.0]}'),
    ("POST", "/announce", _body(["svc", "80"])),
    ("POST", "/announce", _body(["svc", 80.5])),
    ("POST", "/announce", _body(["svc", True])),
    ("POST", "/announce", _body(["svc"])),
    ("POST", "/announce", _body([])),
    ("POST", "/announce", _body("svc")),
    ("POST", "/announce", _body({})),
    ("POST", "/announce", _body(None)),
    ("POST", "/announce", b'["svc",80]'),
    ("POST", "/lookup", _body("nobody")),
    ("POST", "/lookup", _body("")),
    ("POST", "/lookup", _body(5)),
    ("POST", "/lookup", _body(["svc"])),
    ("POST", "/lookup", b'{"rid":"x"}'),
    ("POST", "/lookup", b"5"),
    ("POST", "/lookup", b"null"),
    ("POST", "/lookup", b""),
    ("POST", "/lookup", b"{"),
    ("POST", "/lookup", b"not json"),
    ("POST", "/put", _body({"v": "hello"})),
    ("POST", "/put", _body("bare string")),
    ("POST", "/put", _body({"v": 5})),
    ("POST", "/put", _body({"v": ""})),
    ("POST", "/put", _body({"v": "h\u00e9llo \u2713"})),
    ("POST", "/put", _body({"v": "x" * 999})),
    ("POST", "/put", _body({"v": "x" * 1000})),
    ("POST", "/put", _body({"v": None})),
    ("POST", "/put", _body({"v": "x", "k": "00"})),
    ("POST", "/put", _body(5)),
    ("POST", "/put", _body([1])),
    ("POST", "/put", _body({})),
    ("POST", "/put", _body(None)),
    ("POST", "/put", b"{}"),
    ("POST", "/get", _body(HELLO_KEY)),
    ("POST", "/get", _body({"hash": HELLO_KEY})),
    ("POST", "/get", _body(HELLO_KEY.upper())),
    ("POST", "/get", _body(hashlib.sha1(b"i5e").hexdigest())),
    ("POST", "/get", _body(hashlib.sha1("12:h\u00e9llo \u2713".encode()).hexdigest())),
    ("POST", "/get", _body(hashlib.sha1(b"11:bare string").hexdigest())),
    ("POST", "/get", _body("00" * 20)),
    ("POST", "/get", _body("abcd")),
    ("POST", "/get", _body(5)),
    ("POST", "/get", _body({"hash": 5})),
    ("POST", "/get", _body([1])),
    ("POST", "/get", b"{}"),
    ("POST", "/get", _body(None)),
    ("POST", "/nope", _body("svc")),
    ("POST", "/lookup/", _body("svc")),
    ("POST", "/lookup?x=1", _body("svc")),
    ("POST", "/", _body("svc")),
    ("POST", "/LOOKUP", _body("svc")),
]


class SameAnswersTests(GrapeInteropCase):
    def normalise(self, body: bytes, own_dht: int) -> object:
        """Own DHT port and node id as placeholders; lookup results sorted."""
        text = body.decode().replace(f":{own_dht}", ":<dht>")
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, list):
            return sorted(value)
        if isinstance(value, dict) and re.fullmatch(r"[0-9a-f]{40}", value.get("id", "")):
            value["id"] = "<node id>"
        return value

    def test_grape_api_answers_like_a_real_grape(self):
        node_dht, node_api, our_dht, our_api = free_ports(4)
        self.start_node(node_dht, node_api, [])
        self.start_ours(our_dht, our_api, [])
        for method, path, body in SAME_ANSWERS:
            node_status, node_body = send(node_api, path, body, method)
            our_status, our_body = send(our_api, path, body, method)
            with self.subTest(method=method, path=path, body=body):
                self.assertEqual((our_status, self.normalise(our_body, our_dht)),
                                 (node_status, self.normalise(node_body, node_dht)))
