"""Interop with the real Node Grenache packages (skipped without node).

(1) A Node PeerRPCClient looks up our RPCServer (announced by our Link) via a
grape and calls it, plain and gzip.  (2) Our RPCClient looks up a Node
PeerRPCServer via a grape and calls it.  Plus our Link against a real grape:
the four endpoints and their error replies.  ``start_grapes`` is the one
place that decides which grape implementation the tests run against.
"""
from __future__ import annotations

import json
import time
from typing import Any, Awaitable, Callable

from twisted.internet import reactor, task, utils
from twisted.trial import unittest

from tests.support import (
    LOOPBACK, ROOT, free_port, free_ports, node_grape_argv, node_or_skip, spawn, wait_for_port)
from twisted_exchange.grenache import GrenacheError, Link, RPCClient, RPCServer

INTEROP = ROOT / "tests" / "interop"


def start_grapes(test: unittest.TestCase, count: int = 2) -> list[str]:
    """``count`` grapes bootstrapped to the first one; their API URLs."""
    urls: list[str] = []
    first_dht = None
    for _ in range(count):
        dht, api = free_ports(2)
        argv = node_grape_argv(dht, api, [f"{LOOPBACK}:{first_dht}"] if first_dht else None)
        wait_for_port(api, proc=spawn(test, argv))
        first_dht = first_dht or dht
        urls.append(f"http://{LOOPBACK}:{api}")
    return urls


async def eventually(attempt: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """The first result of ``attempt`` that does not raise GrenacheError."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await attempt()
        except GrenacheError:
            if time.monotonic() > deadline:
                raise
        await task.deferLater(reactor, 0.05)


class InteropTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.node = node_or_skip()
        self.grapes = start_grapes(self)

    def link(self, url: str) -> Link:
        link = Link(url)
        self.addCleanup(link.close)
        return link

    async def found(self, link: Link, key: str, dest: str) -> None:
        """Wait until ``link`` finds ``dest`` under ``key``."""
        async def lookup() -> None:
            if dest not in await link.lookup(key):
                raise GrenacheError("ERR_GRAPE_LOOKUP_EMPTY", f"{dest} not yet announced")
        await eventually(lookup)


def handler(key: str, payload: dict) -> dict:
    if "fail" in payload:
        raise GrenacheError("ERR_INVALID_ORDER", payload["fail"])
    return {"echo": payload, "from": "python"}


class NodeClientToOurServerTests(InteropTestCase):
    async def test_node_client_calls_our_server_plain_gzip_error_and_map(self) -> None:
        server = RPCServer(handler)
        await server.start()
        self.addCleanup(server.stop)
        announcer, finder = self.link(self.grapes[0]), self.link(self.grapes[1])
        await eventually(lambda: announcer.announce("rpc_interop_py", server.port))
        await self.found(finder, "rpc_interop_py", f"{LOOPBACK}:{server.port}")

        out, err, code = await utils.getProcessOutputAndValue(
            self.node, [str(INTEROP / "rpc_client.js"), self.grapes[1], "rpc_interop_py"],
            path=str(INTEROP))
        self.assertEqual(code, 0, err)
        plain, zipped, failed, mapped = json.loads(out)
        self.assertEqual(plain, {"err": None, "data": {"echo": {"msg": "hello"}, "from": "python"}})
        self.assertEqual(zipped["err"], None)
        self.assertEqual(zipped["data"]["echo"], {"msg": "zipped", "big": "x" * 5000})
        self.assertEqual(failed, {"err": "ERR_INVALID_ORDER: price must be > 0", "data": None})
        self.assertEqual(mapped, {"err": None, "data": [{"echo": {"msg": "all"}, "from": "python"}]})


class OurClientToNodeServerTests(InteropTestCase):
    async def test_our_client_calls_node_server_plain_gzip_error_and_map(self) -> None:
        port = free_port()
        spawn(self, [self.node, str(INTEROP / "rpc_server.js"), self.grapes[0], "rpc_interop_node",
                     str(port)], cwd=INTEROP)
        dest = f"{LOOPBACK}:{port}"
        link = self.link(self.grapes[1])
        await self.found(link, "rpc_interop_node", dest)
        client, zipping = RPCClient(link), RPCClient(link, compress=True)
        self.addCleanup(client.close)
        self.addCleanup(zipping.close)

        self.assertEqual(await client.request("rpc_interop_node", {"msg": "hello"}),
                         {"echo": {"msg": "hello"}, "world": "world"})
        self.assertEqual(await zipping.request("rpc_interop_node", "ü" * 3000),
                         {"echo": "ü" * 3000, "world": "world"})
        with self.assertRaises(GrenacheError) as caught:
            await client.request("rpc_interop_node", {"fail": "price must be > 0"})
        self.assertEqual((caught.exception.code, caught.exception.detail),
                         ("ERR_INVALID_ORDER", "price must be > 0"))
        self.assertEqual(await client.map("rpc_interop_node", 7),
                         {dest: ("ok", {"echo": 7, "world": "world"})})


class OurLinkToNodeGrapeTests(InteropTestCase):
    async def test_announce_then_lookup_on_the_other_grape(self) -> None:
        port = free_port()
        count = await eventually(lambda: self.link(self.grapes[0]).announce("link_interop", port))
        self.assertGreaterEqual(count, 1)
        await self.found(self.link(self.grapes[1]), "link_interop", f"{LOOPBACK}:{port}")

    async def test_put_then_get_on_the_other_grape(self) -> None:
        key = await eventually(lambda: self.link(self.grapes[0]).put("hello grenache"))
        self.assertRegex(key, "^[0-9a-f]{40}$")
        item = await self.link(self.grapes[1]).get(key)
        self.assertEqual(item["v"], "hello grenache")

    async def test_grape_error_replies_become_errors_with_their_codes(self) -> None:
        link = self.link(self.grapes[0])
        for call, code in ((lambda: link.lookup(""), "ERR_GRAPE_LOOKUP"),
                           (lambda: link.lookup("nobody_announces_this"), "ERR_GRAPE_LOOKUP_EMPTY"),
                           (lambda: link.announce("svc", "8080"), "ERR_GRAPE_SERVICE_PORT")):
            with self.assertRaises(GrenacheError) as caught:
                await call()
            self.assertEqual(caught.exception.code, code)

    async def test_get_of_an_unknown_hash_is_none(self) -> None:
        self.assertIsNone(await self.link(self.grapes[0]).get("0" * 40))
