"""Link: the grape API client, driven by hand on a Clock and over loopback."""
from __future__ import annotations

import json
import uuid

from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web import server

from tests.grenache.fakes import FakeGrape, WireStub
from tests.support import free_port
from twisted_exchange.grenache import GrenacheError, Link


def sent(request: dict) -> dict:
    return json.loads(request["body"])


class LinkWireTests(unittest.SynchronousTestCase):
    """Every call, its request on the wire and each kind of answer."""

    def setUp(self) -> None:
        self.grape = WireStub()
        self.link = Link("http://127.0.0.1:30001", reactor=self.grape.reactor)

    def test_announce_posts_name_and_port_and_returns_node_count(self) -> None:
        d = self.link.announce("rpc_test", 1337)
        request = self.grape.answer(200, b"2")
        self.assertEqual(self.successResultOf(d), 2)
        self.assertEqual(request["line"], "POST /announce HTTP/1.1")
        self.assertEqual(request["headers"]["content-type"], "application/json")
        self.assertEqual(sent(request)["data"], ["rpc_test", 1337])
        uuid.UUID(sent(request)["rid"], version=4)

    def test_lookup_returns_addresses(self) -> None:
        d = self.link.lookup("rpc_test")
        request = self.grape.answer(200, b'["127.0.0.1:1337","127.0.0.1:1338"]')
        self.assertEqual(self.successResultOf(d), ["127.0.0.1:1337", "127.0.0.1:1338"])
        self.assertEqual(request["line"], "POST /lookup HTTP/1.1")
        self.assertEqual(sent(request)["data"], "rpc_test")

    def test_junk_in_a_lookup_answer_is_dropped_and_the_real_addresses_kept(self) -> None:
        d = self.link.lookup("svc")
        self.grape.answer(200, b'["127.0.0.1:1", 5, null, ["x"], "127.0.0.1:0", "h:99999", "a b:1",'
                               b' "evil.example:80/x", "127.0.0.1:1", "[::1]:7", "' + b"x" * 300 + b':1"]')
        self.assertEqual(self.successResultOf(d), ["127.0.0.1:1", "[::1]:7"])

    def test_an_answer_of_junk_only_is_an_empty_lookup(self) -> None:
        d = self.link.lookup("svc")
        self.grape.answer(200, b'[1, "nohost", ":80"]')
        self.assertEqual(self.failureResultOf(d, GrenacheError).value.code, "ERR_GRAPE_LOOKUP_EMPTY")

    def test_a_lookup_answer_keeps_at_most_64_addresses(self) -> None:
        d = self.link.lookup("svc")
        self.grape.answer(200, json.dumps([f"127.0.0.1:{p}" for p in range(1, 1000)]).encode())
        self.assertEqual(len(self.successResultOf(d)), 64)

    def test_lookup_is_cached_for_one_second(self) -> None:
        self.assertFalse(self.link.knows("svc"))
        self.link.lookup("svc")
        self.grape.answer(200, b'["127.0.0.1:1"]')
        self.grape.reactor.advance(0.9)
        self.assertTrue(self.link.knows("svc"))
        self.assertEqual(self.successResultOf(self.link.lookup("svc")), ["127.0.0.1:1"])
        self.assertEqual(self.grape.pending(), 0)
        self.grape.reactor.advance(0.2)
        self.assertFalse(self.link.knows("svc"))
        d = self.link.lookup("svc")
        self.grape.answer(200, b'["127.0.0.1:2"]')
        self.assertEqual(self.successResultOf(d), ["127.0.0.1:2"])

    def test_empty_lookup_is_an_error_and_is_not_cached(self) -> None:
        d = self.link.lookup("nobody")
        self.grape.answer(200, b"[]")
        self.assertEqual(self.failureResultOf(d, GrenacheError).value.code, "ERR_GRAPE_LOOKUP_EMPTY")
        d = self.link.lookup("nobody")
        self.grape.answer(200, b'["127.0.0.1:3"]')
        self.assertEqual(self.successResultOf(d), ["127.0.0.1:3"])

    def test_identical_lookups_in_flight_share_one_grape_request(self) -> None:
        first, second = self.link.lookup("svc"), self.link.lookup("svc")
        self.assertEqual(self.grape.pending(), 1)
        self.grape.answer(200, b'["127.0.0.1:4"]')
        self.assertEqual(self.successResultOf(first), ["127.0.0.1:4"])
        self.assertEqual(self.successResultOf(second), ["127.0.0.1:4"])

    def test_a_cancelled_shared_lookup_leaves_the_others_answered(self) -> None:
        first, second = self.link.lookup("svc"), self.link.lookup("svc")
        first.cancel()
        self.grape.answer(200, b'["127.0.0.1:4"]')
        self.failureResultOf(first, defer.CancelledError)
        self.assertEqual(self.successResultOf(second), ["127.0.0.1:4"])

    def test_grape_error_string_becomes_error_with_its_code(self) -> None:
        d = self.link.lookup("")
        self.grape.answer(200, b'"ERR_GRAPE_LOOKUP"')
        error = self.failureResultOf(d, GrenacheError).value
        self.assertEqual((error.code, str(error)), ("ERR_GRAPE_LOOKUP", "ERR_GRAPE_LOOKUP"))

    def test_uncoded_grape_error_keeps_its_text(self) -> None:
        d = self.link.announce("svc", 1)
        self.grape.answer(200, b'"No nodes to query"')
        error = self.failureResultOf(d, GrenacheError).value
        self.assertEqual((error.code, error.wire), ("ERR_REMOTE", "No nodes to query"))

    def test_http_500_is_a_generic_request_error_naming_the_status(self) -> None:
        d = self.link.lookup("svc")
        self.grape.answer(500, b"ERR_GRAPE_PAYLOAD_INVALID")
        error = self.failureResultOf(d, GrenacheError).value
        self.assertEqual(error.code, "ERR_REQUEST_GENERIC")
        self.assertIn("HTTP 500 ERR_GRAPE_PAYLOAD_INVALID", error.detail)

    def test_reply_that_is_not_json_is_reply_empty(self) -> None:
        d = self.link.lookup("svc")
        self.grape.answer(200, b"<html>")
        self.assertEqual(self.failureResultOf(d, GrenacheError).value.code, "ERR_REPLY_EMPTY")

    def test_reply_of_the_wrong_type_is_reply_empty(self) -> None:
        d = self.link.announce("svc", 1)
        self.grape.answer(200, b'["not","a","count"]')
        self.assertEqual(self.failureResultOf(d, GrenacheError).value.code, "ERR_REPLY_EMPTY")

    def test_silent_grape_times_out_after_the_link_timeout(self) -> None:
        d = self.link.lookup("svc")
        self.assertEqual(self.grape.pending(), 1)  # connected, and the request sent
        self.grape.reactor.advance(2.4)
        self.assertNoResult(d)
        self.grape.reactor.advance(0.2)
        error = self.failureResultOf(d, GrenacheError).value
        self.assertEqual(error.code, "ERR_TIMEOUT")
        self.assertIn("/lookup", error.detail)

    def test_put_returns_hash_and_get_returns_item(self) -> None:
        key = "a" * 40
        put = self.link.put("hello")
        request = self.grape.answer(200, json.dumps(key).encode())
        self.assertEqual((self.successResultOf(put), sent(request)["data"]), (key, {"v": "hello"}))
        got = self.link.get(key)
        request = self.grape.answer(200, b'{"id":"ab","token":null,"v":"hello"}')
        self.assertEqual(self.successResultOf(got), {"id": "ab", "token": None, "v": "hello"})
        self.assertEqual(sent(request)["data"], key)

    def test_put_error_string_is_not_taken_for_a_hash(self) -> None:
        d = self.link.put("")
        self.grape.answer(200, b'"opts.v not given"')
        self.assertEqual(self.failureResultOf(d, GrenacheError).value.wire, "opts.v not given")

    def test_get_of_a_missing_hash_is_none(self) -> None:
        d = self.link.get("b" * 40)
        self.grape.answer(200, b"")
        self.assertIsNone(self.successResultOf(d))


class AnnouncingTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.grape = WireStub()
        self.link = Link("http://127.0.0.1:30001", reactor=self.grape.reactor)

    def test_announces_now_and_every_interval_until_stopped(self) -> None:
        self.link.start_announcing("svc", 1337, interval=1.0)
        self.assertEqual(sent(self.grape.answer(200, b"1"))["data"], ["svc", 1337])
        self.grape.reactor.advance(1.0)
        self.grape.answer(200, b"1")
        self.link.stop_announcing("svc")
        self.grape.reactor.advance(5.0)
        self.assertEqual(self.grape.pending(), 0)

    def test_failed_announce_is_logged_and_announcing_goes_on(self) -> None:
        self.link.start_announcing("svc", 1337, interval=1.0)
        self.grape.answer(200, b'"No nodes to query"')
        self.grape.reactor.advance(1.0)
        self.assertEqual(sent(self.grape.answer(200, b"1"))["data"], ["svc", 1337])
        self.link.stop_announcing()

    def test_close_stops_every_announce(self) -> None:
        self.link.start_announcing("a", 1)
        self.link.start_announcing("b", 2)
        self.grape.answer(200, b"1")
        self.grape.answer(200, b"1")
        self.link.close()
        self.grape.reactor.advance(5.0)
        self.assertEqual(self.grape.pending(), 0)


class LinkOverLoopbackTests(unittest.TestCase):
    """The same Link over real sockets: a scripted grape and a dead one."""

    def setUp(self) -> None:
        self.fake = FakeGrape({"/lookup": (200, b'["127.0.0.1:1337"]')})
        port = reactor.listenTCP(0, server.Site(self.fake), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.link = Link(f"http://127.0.0.1:{port.getHost().port}")
        self.addCleanup(self.link.close)

    async def test_lookup_over_loopback(self) -> None:
        self.assertEqual(await self.link.lookup("svc"), ["127.0.0.1:1337"])
        self.assertEqual(self.fake.calls, [("/lookup", "svc")])

    async def test_unknown_path_answer_is_an_error(self) -> None:
        with self.assertRaises(GrenacheError) as caught:
            await self.link.announce("svc", 1)
        self.assertEqual(caught.exception.code, "ERR_REQ_NOTFOUND")

    async def test_dead_grape_is_connection_refused(self) -> None:
        link = Link(f"http://127.0.0.1:{free_port()}")
        self.addCleanup(link.close)
        with self.assertRaises(GrenacheError) as caught:
            await link.lookup("svc")
        self.assertEqual(caught.exception.code, "ERR_REQUEST_GENERIC")
        self.assertIn("connection refused", caught.exception.detail)
