"""RPCServer over loopback: Node's wire behaviour, and answers to bad input."""
from __future__ import annotations

import gzip
import json

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from tests.grenache.fakes import http_post
from tests.support import free_port
from twisted_exchange.grenache import GrenacheError, RPCServer


class CodedError(Exception):
    """Another layer's error type: a stable ``code`` attribute."""

    code = "ERR_INVALID_ORDER"


def handler(key: str, payload: object) -> object:
    if key == "fail":
        raise GrenacheError("ERR_NOT_FOUND", f"no {payload}")
    if key == "coded":
        raise CodedError("price must be > 0")
    if key == "crash":
        raise ZeroDivisionError("boom")
    if key == "later":
        d: defer.Deferred[object] = defer.Deferred()
        reactor.callLater(0, d.callback, {"later": payload})
        return d
    if key == "not-json":
        return {1, 2}
    if key == "too-deep":
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        return deep
    return {"key": key, "echo": payload}


class ServerTests(unittest.TestCase):
    utf8_only = False
    not_utf8_reply = (200, ["rid", None, {"key": "k", "echo": "\ufffd"}])  # as Node

    def setUp(self) -> defer.Deferred[None]:
        self.server = RPCServer(handler, max_body=50_000, utf8_only=self.utf8_only)
        self.addCleanup(self.server.stop)
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=pool)
        return self.server.start()

    async def send(self, body: bytes, headers: dict[bytes, bytes] | None = None,
                   method: bytes = b"POST", path: bytes = b"/") -> tuple[int, Headers, bytes]:
        url = b"http://127.0.0.1:%d%s" % (self.server.port, path)
        return await http_post(self.agent, url, body, headers or {}, method)

    async def test_reply_echoes_rid_with_null_error_and_result(self) -> None:
        status, _, body = await self.send(b'["rid1","rpc_test",{"msg":"hello"}]')
        self.assertEqual((status, json.loads(body)),
                         (200, ["rid1", None, {"key": "rpc_test", "echo": {"msg": "hello"}}]))

    async def test_any_method_and_path_is_a_call(self) -> None:
        status, _, body = await self.send(b'["rid2","k","p"]', method=b"PUT", path=b"/any/path")
        self.assertEqual((status, json.loads(body)), (200, ["rid2", None, {"key": "k", "echo": "p"}]))

    async def test_form_content_type_as_curl_sends_is_still_a_call(self) -> None:
        status, _, body = await self.send(
            b'["rid3","k",{"a":"b&c=d"}]', {b"content-type": b"application/x-www-form-urlencoded"})
        self.assertEqual((status, json.loads(body)), (200, ["rid3", None, {"key": "k", "echo": {"a": "b&c=d"}}]))

    async def test_bytes_that_are_not_utf8_are_replaced_or_refused_when_utf8_only(self) -> None:
        status, _, body = await self.send(b'["rid","k","\xff"]')
        self.assertEqual((status, json.loads(body)), self.not_utf8_reply)

    async def test_rid_of_any_json_type_is_echoed(self) -> None:
        for rid in (7, {"a": [1]}, None, "ü"):
            _, _, body = await self.send(json.dumps([rid, "k", 0]).encode())
            self.assertEqual(json.loads(body)[0], rid)

    async def test_gr_header_overrides_rid_and_key(self) -> None:
        _, _, body = await self.send(b'["body-rid","body-key",1]', {b"_gr": b'["hdr-rid","hdr-key"]'})
        self.assertEqual(json.loads(body), ["hdr-rid", None, {"key": "hdr-key", "echo": 1}])

    async def test_bad_gr_header_is_500_as_node(self) -> None:
        status, _, body = await self.send(b'["r","k",1]', {b"_gr": b"{nope"})
        self.assertEqual((status, body), (500, b'[null,"ERR_HEADER_PARSE_GR",null]'))

    async def test_gzip_request_gets_raw_gzip_reply_without_content_encoding(self) -> None:
        status, headers, body = await self.send(gzip.compress(b'["r","k","zip"]'),
                                                {b"grc-compress": b"gzip"})
        self.assertEqual((status, json.loads(gzip.decompress(body))),
                         (200, ["r", None, {"key": "k", "echo": "zip"}]))
        self.assertFalse(headers.hasHeader(b"content-encoding"))

    async def test_body_not_json_is_400_with_json_error_array(self) -> None:
        status, _, body = await self.send(b"hello")
        reply = json.loads(body)
        self.assertEqual((status, reply[0], reply[2]), (400, None, None))
        self.assertTrue(reply[1].startswith("ERR_REQUEST_INVALID: "))

    async def test_wrong_shapes_are_400(self) -> None:
        for body in (b'{"a":1}', b'["r","k"]', b'["r",5,1]', b"[NaN,\"k\",1]", b"[" * 40_000):
            status, _, _ = await self.send(body)
            self.assertEqual(status, 400, body[:20])

    async def test_body_over_max_is_413_and_connection_stays_usable(self) -> None:
        status, _, body = await self.send(json.dumps(["r", "k", "x" * 60_000]).encode())
        self.assertEqual(status, 413)
        self.assertTrue(json.loads(body)[1].startswith("ERR_REQUEST_TOO_LARGE"))
        self.assertEqual((await self.send(b'["r","k",1]'))[0], 200)

    async def test_gzip_bomb_is_413(self) -> None:
        bomb = gzip.compress(json.dumps(["r", "k", "0" * 1_000_000]).encode())
        self.assertLess(len(bomb), 50_000)
        status, _, _ = await self.send(bomb, {b"grc-compress": b"gzip"})
        self.assertEqual(status, 413)

    async def test_handler_grenache_error_is_sent_as_its_string(self) -> None:
        _, _, body = await self.send(b'["r","fail","order 7"]')
        self.assertEqual(json.loads(body), ["r", "ERR_NOT_FOUND: no order 7", None])

    async def test_other_layer_coded_error_is_sent_with_its_code(self) -> None:
        _, _, body = await self.send(b'["r","coded",1]')
        self.assertEqual(json.loads(body), ["r", "ERR_INVALID_ORDER: price must be > 0", None])

    async def test_unexpected_exception_is_internal_logged_and_server_goes_on(self) -> None:
        status, _, body = await self.send(b'["r","crash",1]')
        self.assertEqual((status, json.loads(body)), (200, ["r", "ERR_INTERNAL: ZeroDivisionError", None]))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual((await self.send(b'["r","k",1]'))[0], 200)

    async def test_deferred_result_is_awaited(self) -> None:
        _, _, body = await self.send(b'["r","later",3]')
        self.assertEqual(json.loads(body), ["r", None, {"later": 3}])

    async def test_result_that_is_not_json_is_internal_error(self) -> None:
        _, _, body = await self.send(b'["r","not-json",1]')
        self.assertEqual(json.loads(body), ["r", "ERR_INTERNAL: result is not JSON", None])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    async def test_result_nested_too_deeply_is_internal_error(self) -> None:
        _, _, body = await self.send(b'["r","too-deep",1]')
        self.assertEqual(json.loads(body), ["r", "ERR_INTERNAL: result is not JSON", None])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class ServerLifecycleTests(unittest.TestCase):
    async def test_port_zero_binds_a_free_port_and_stop_closes_it(self) -> None:
        server = RPCServer(handler)
        await server.start()
        self.assertNotEqual(server.port, 0)
        await server.stop()
        again = RPCServer(handler, port=server.port)
        await again.start()
        await again.stop()

    async def test_stop_closes_kept_alive_connections(self) -> None:
        server = RPCServer(handler, port=free_port())
        await server.start()
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        url = b"http://127.0.0.1:%d/" % server.port
        await http_post(Agent(reactor, pool=pool), url, b'["r","k",1]', {})
        self.assertEqual(len(server._site.channels), 1)
        await server.stop()
        self.assertEqual(server._site.channels, set())



class Utf8OnlyServerTests(ServerTests):
    """The whole suite again with ``utf8_only``, as the peer runs its server."""

    utf8_only = True
    not_utf8_reply = (400, [None, "ERR_REQUEST_INVALID: body is not UTF-8", None])
