"""RPCClient against our RPCServer over loopback, and against bad servers."""
from __future__ import annotations

import gzip
import json
import os
import random
import uuid

from twisted.internet import defer
from twisted.trial import unittest

from tests.grenache.fakes import WireStub
from tests.support import free_port
from twisted_exchange.grenache import GrenacheError, RPCClient, RPCServer, wire
from twisted_exchange.grenache.client import SUSPECT_SECONDS
from twisted_exchange.grenache.bench import FixedLink


class Echo:
    """A handler that counts its calls and fails on request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def __call__(self, key: str, payload: object) -> object:
        self.calls += 1
        if key == "fail":
            raise GrenacheError("ERR_INVALID_ORDER", "price must be > 0")
        return {"from": self.name, "echo": payload}


class ClientTests(unittest.TestCase):
    async def serve(self, name: str) -> tuple[str, Echo]:
        echo = Echo(name)
        server = RPCServer(echo)
        await server.start()
        self.addCleanup(server.stop)
        return f"127.0.0.1:{server.port}", echo

    def client(self, dests: list[str], **kwargs: object) -> RPCClient:
        client = RPCClient(FixedLink(dests), rng=random.Random(4), **kwargs)
        self.addCleanup(client.close)
        return client

    async def test_request_returns_the_result(self) -> None:
        dest, _ = await self.serve("a")
        result = await self.client([dest]).request("svc", {"msg": "hello"})
        self.assertEqual(result, {"from": "a", "echo": {"msg": "hello"}})

    async def test_compressed_request_round_trips(self) -> None:
        dest, _ = await self.serve("a")
        result = await self.client([dest], compress=True).request("svc", "ü" * 1000)
        self.assertEqual(result, {"from": "a", "echo": "ü" * 1000})

    async def test_error_reply_raises_the_server_string_with_its_code(self) -> None:
        dest, echo = await self.serve("a")
        with self.assertRaises(GrenacheError) as caught:
            await self.client([dest]).request("fail", 1)
        self.assertEqual((caught.exception.code, str(caught.exception)),
                         ("ERR_INVALID_ORDER", "ERR_INVALID_ORDER: price must be > 0"))
        self.assertEqual(echo.calls, 1)

    async def test_application_error_is_not_retried_elsewhere(self) -> None:
        (a, echo_a), (b, echo_b) = await self.serve("a"), await self.serve("b")
        with self.assertRaises(GrenacheError):
            await self.client([a, b]).request("fail", 1, retry=2)
        self.assertEqual(echo_a.calls + echo_b.calls, 1)

    async def test_dead_destination_is_retried_on_another(self) -> None:
        live, _ = await self.serve("a")
        client = self.client([f"127.0.0.1:{free_port()}", live])
        results = [await client.request("svc", n, retry=1) for n in range(10)]
        self.assertEqual(results, [{"from": "a", "echo": n} for n in range(10)])

    async def test_dead_destination_without_retry_is_request_generic(self) -> None:
        with self.assertRaises(GrenacheError) as caught:
            await self.client([f"127.0.0.1:{free_port()}"]).request("svc", 1, retry=0)
        self.assertEqual(caught.exception.code, "ERR_REQUEST_GENERIC")
        self.assertIn("connection refused", str(caught.exception))

    async def test_map_reports_every_destination_result_or_error(self) -> None:
        (a, _), (b, _) = await self.serve("a"), await self.serve("b")
        dead = f"127.0.0.1:{free_port()}"
        outcomes = await self.client([a, b, dead]).map("svc", 5)
        self.assertEqual(outcomes[a], ("ok", {"from": "a", "echo": 5}))
        self.assertEqual(outcomes[b], ("ok", {"from": "b", "echo": 5}))
        self.assertEqual(outcomes[dead][0], "error")
        self.assertEqual(outcomes[dead][1].code, "ERR_REQUEST_GENERIC")

    async def test_map_with_limit_calls_that_many_random_destinations(self) -> None:
        (a, _), (b, _) = await self.serve("a"), await self.serve("b")
        outcomes = await self.client([a, b]).map("svc", 1, limit=1)
        self.assertEqual(len(outcomes), 1)
        self.assertIn(next(iter(outcomes)), (a, b))

    async def test_request_to_calls_the_given_address(self) -> None:
        (a, _), (b, _) = await self.serve("a"), await self.serve("b")
        result = await self.client([a]).request_to(b, "svc", 2)
        self.assertEqual(result, {"from": "b", "echo": 2})

    async def test_lookup_failure_is_the_request_failure(self) -> None:
        class NoOne:
            def lookup(self, key: str) -> defer.Deferred[list[str]]:
                return defer.fail(GrenacheError("ERR_GRAPE_LOOKUP_EMPTY"))
        client = RPCClient(NoOne())
        self.addCleanup(client.close)
        with self.assertRaises(GrenacheError) as caught:
            await client.request("svc", 1)
        self.assertEqual(caught.exception.code, "ERR_GRAPE_LOOKUP_EMPTY")


def echo_reply(request: dict) -> bytes:
    return json.dumps([json.loads(request["body"])[0], None, "ok"]).encode()


class FirstChoice(random.Random):
    """Always picks the first of the destinations offered."""

    def choice(self, seq):
        return seq[0]


class SuspectTests(unittest.SynchronousTestCase):
    """A destination whose call failed is passed over while others answer."""

    def setUp(self) -> None:
        self.peer = WireStub()
        self.client = RPCClient(FixedLink(["127.0.0.1:1", "127.0.0.1:2"]), reactor=self.peer.reactor,
                                rng=FirstChoice())

    def call(self, *statuses: int) -> list[str]:
        """One request answered with ``statuses`` in turn; the hosts it went to."""
        d = self.client.request("svc", 1)
        hosts = [self.peer.answer(status, echo_reply)["headers"]["host"] for status in statuses]
        self.successResultOf(d)
        return hosts

    def test_a_failed_destination_is_passed_over_while_others_answer(self) -> None:
        self.assertEqual(self.call(503, 200), ["127.0.0.1:1", "127.0.0.1:2"])
        self.peer.reactor.advance(SUSPECT_SECONDS - 1)
        self.assertEqual(self.call(200), ["127.0.0.1:2"])

    def test_a_suspect_is_tried_again_once_its_time_is_up(self) -> None:
        self.call(503, 200)
        self.peer.reactor.advance(SUSPECT_SECONDS + 1)
        self.assertEqual(self.call(200), ["127.0.0.1:1"])

    def test_when_every_destination_failed_they_are_still_called(self) -> None:
        self.call(503, 503, 200)
        self.assertEqual(self.call(200), ["127.0.0.1:1"])

    def test_an_application_error_is_not_a_suspect(self) -> None:
        d = self.client.request("svc", 1)
        self.peer.answer(200, lambda request: json.dumps(
            [json.loads(request["body"])[0], "ERR_INVALID_ORDER: no", None]).encode())
        self.failureResultOf(d, GrenacheError)
        self.assertEqual(self.call(200), ["127.0.0.1:1"])


class ClientWireTests(unittest.SynchronousTestCase):
    """The client's requests, timeouts and bad replies, on a Clock."""

    def setUp(self) -> None:
        self.peer = WireStub()
        self.client = RPCClient(FixedLink(["127.0.0.1:1337"]), reactor=self.peer.reactor)

    def error_of(self, d: defer.Deferred[object]) -> GrenacheError:
        return self.failureResultOf(d, GrenacheError).value

    def test_request_is_sent_as_node_sends_it(self) -> None:
        d = self.client.request("rpc_test", {"msg": "hello"})
        request = self.peer.answer(200, echo_reply)
        self.assertEqual(self.successResultOf(d), "ok")
        self.assertEqual(request["line"], "POST / HTTP/1.1")
        self.assertEqual(request["headers"]["grc-compress"], "none")
        self.assertEqual(request["headers"]["content-type"], "text/plain;charset=UTF-8")
        self.assertEqual(json.loads(request["body"])[1:], ["rpc_test", {"msg": "hello"}])

    def test_silent_peer_times_out_after_five_seconds_and_is_dropped(self) -> None:
        d = self.client.request("svc", 1)
        self.assertEqual(self.peer.pending(), 1)
        self.peer.reactor.advance(4.9)
        self.assertNoResult(d)
        self.peer.reactor.advance(0.2)
        self.assertEqual(self.error_of(d).code, "ERR_TIMEOUT")
        self.assertTrue(self.peer.transports[0].aborted)

    def test_request_to_honours_its_own_timeout(self) -> None:
        d = self.client.request_to("127.0.0.1:1", "svc", 1, timeout=0.5)
        self.peer.reactor.advance(0.5)
        self.assertEqual(self.error_of(d).code, "ERR_TIMEOUT")

    def test_reply_that_is_not_json_is_reply_empty(self) -> None:
        d = self.client.request("svc", 1)
        self.peer.answer(200, b"<html>")
        self.assertEqual(self.error_of(d).code, "ERR_REPLY_EMPTY")

    def test_reply_for_another_rid_is_reply_empty(self) -> None:
        d = self.client.request("svc", 1)
        self.peer.answer(200, b'["other",null,1]')
        self.assertEqual(self.error_of(d).code, "ERR_REPLY_EMPTY")

    def test_http_error_is_request_generic_with_status_and_body(self) -> None:
        d = self.client.request("svc", 1, retry=0)
        self.peer.answer(500, b'[null, "ERR_HEADER_PARSE_GR", null]')
        error = self.error_of(d)
        self.assertEqual(error.code, "ERR_REQUEST_GENERIC")
        self.assertIn("HTTP 500", error.detail)

    def test_http_error_is_retried(self) -> None:
        d = self.client.request("svc", 1, retry=1)
        self.peer.answer(503, b"busy")
        self.peer.answer(200, echo_reply)
        self.assertEqual(self.successResultOf(d), "ok")

    def test_uncoded_error_string_from_node_server_keeps_its_text(self) -> None:
        d = self.client.request("svc", 1)
        self.peer.answer(200, lambda r: json.dumps(
            [json.loads(r["body"])[0], "something went wrong", None]).encode())
        error = self.error_of(d)
        self.assertEqual((error.code, str(error)), ("ERR_REMOTE", "something went wrong"))

    def test_compressed_request_is_gzip_and_reply_must_be_gzip(self) -> None:
        client = RPCClient(FixedLink(["127.0.0.1:1337"]), reactor=self.peer.reactor, compress=True)
        good = client.request("svc", 1)
        request = self.peer.answer(200, lambda r: gzip.compress(echo_reply(
            {"body": gzip.decompress(r["body"])})))
        self.assertEqual(self.successResultOf(good), "ok")
        self.assertEqual(request["headers"]["grc-compress"], "gzip")
        bad = client.request("svc", 1)
        self.peer.answer(200, b'["x",null,1]')
        self.assertEqual(self.error_of(bad).code, "ERR_REPLY_ENCODING_COMPRESSION")


class RequestIdTests(unittest.TestCase):
    """``wire.request_id``: the rid of every call, in the form of Node's uuid.v4()."""

    def test_request_ids_are_distinct_uuid4_strings(self) -> None:
        ids = [wire.request_id() for _ in range(10_000)]
        self.assertEqual(len(set(ids)), len(ids))
        for rid in ids[:100]:
            parsed = uuid.UUID(rid)
            self.assertEqual((str(parsed), parsed.version, parsed.variant), (rid, 4, uuid.RFC_4122))

    def test_a_forked_child_draws_other_ids_than_its_parent(self) -> None:
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            os.write(write, wire.request_id().encode())
            os._exit(0)
        os.close(write)
        os.waitpid(child, 0)
        with os.fdopen(read, "rb") as pipe:
            self.assertNotEqual(pipe.read().decode(), wire.request_id())
