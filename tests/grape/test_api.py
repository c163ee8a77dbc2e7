"""The Grape HTTP API of an in-process grape: every endpoint and error reply."""
import hashlib
import json

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twisted_exchange.grape.api import handler_name
from tests.grape.support import call, poll, request, start_grape

HELLO_KEY = hashlib.sha1(b"5:hello").hexdigest()


class HandlerNameTests(SynchronousTestCase):
    def test_paths_map_to_handlers_like_grenache_grape(self):
        for path, name in [("lookup", "Lookup"), ("Lookup", "Lookup"), ("_lookup", "Lookup"),
                           ("lookup-", "Lookup"), ("lookup/", "Lookup/"), ("lookup?x=1", "Lookup?X=1"),
                           ("LOOKUP", "LOOKUP"), ("look_up", "LookUp"), ("", "")]:
            self.assertEqual(handler_name(path), name, path)


class LoneGrapeAPITests(TestCase):
    def setUp(self):
        self.grape = start_grape(self)

    @defer.inlineCallbacks
    def assertReplies(self, path, data, expected):
        reply = yield call(self.grape, path, data)
        self.assertEqual(reply, (200, expected), f"{path} {data!r}")

    @defer.inlineCallbacks
    def assertRaw(self, path, body, status, text, method=b"POST"):
        reply = yield request(self.grape.api_port, path, body, method)
        self.assertEqual(reply, (status, text), f"{path} {body!r}")

    @defer.inlineCallbacks
    def test_lone_grape_serves_its_own_announce(self):
        yield self.assertReplies("/announce", ["svc", 4242], "No nodes to query")
        yield self.assertReplies("/lookup", "svc", ["127.0.0.1:4242"])

    @defer.inlineCallbacks
    def test_announce_port_zero_means_the_dht_port(self):
        yield self.assertReplies("/announce", ["svc", 0], "No nodes to query")
        yield self.assertReplies("/lookup", "svc", [f"127.0.0.1:{self.grape.dht_port}"])

    @defer.inlineCallbacks
    def test_announce_accepts_an_integral_float_port(self):
        yield self.assertRaw("/announce", b'{"data":["svc",80.0]}', 200, b'"No nodes to query"')
        yield self.assertReplies("/lookup", "svc", ["127.0.0.1:80"])

    @defer.inlineCallbacks
    def test_announce_errors(self):
        for data, error in [("svc", "ERR_GRAPE_ANNOUNCE"), (None, "ERR_GRAPE_ANNOUNCE"), ({}, "ERR_GRAPE_ANNOUNCE"),
                            (["svc", "80"], "ERR_GRAPE_SERVICE_PORT"), (["svc", 80.5], "ERR_GRAPE_SERVICE_PORT"),
                            (["svc"], "ERR_GRAPE_SERVICE_PORT"), (["svc", True], "ERR_GRAPE_SERVICE_PORT"),
                            (["svc", -1], "ERR_GRAPE_SERVICE_PORT"), (["svc", 65536], "ERR_GRAPE_SERVICE_PORT"),
                            ([5, 80], "ERR_GRAPE_ANNOUNCE"), (["", 80], "ERR_GRAPE_ANNOUNCE")]:
            yield self.assertReplies("/announce", data, error)

    @defer.inlineCallbacks
    def test_lookup_of_unknown_name_is_an_empty_list(self):
        yield self.assertReplies("/lookup", "nobody", [])

    @defer.inlineCallbacks
    def test_lookup_errors(self):
        for data in ["", None, ["svc"], 5]:
            yield self.assertReplies("/lookup", data, "ERR_GRAPE_LOOKUP")
        yield self.assertRaw("/lookup", b'{"rid":"x"}', 200, b'"ERR_GRAPE_LOOKUP"')

    @defer.inlineCallbacks
    def test_put_answers_no_nodes_but_get_returns_the_value(self):
        yield self.assertReplies("/put", {"v": "hello"}, "No nodes to query")
        expected = {"id": self.grape.dht.id.hex(), "token": None, "v": "hello"}
        yield self.assertReplies("/get", HELLO_KEY, expected)
        yield self.assertReplies("/get", {"hash": HELLO_KEY.upper()}, expected)

    @defer.inlineCallbacks
    def test_put_of_a_bare_string_or_integer(self):
        yield self.assertReplies("/put", "hello", "No nodes to query")
        yield self.assertReplies("/put", {"v": 5}, "No nodes to query")
        yield self.assertReplies("/get", HELLO_KEY, {"id": self.grape.dht.id.hex(), "token": None, "v": "hello"})
        reply = yield call(self.grape, "/get", hashlib.sha1(b"i5e").hexdigest())
        self.assertEqual(reply[1]["v"], "5")

    @defer.inlineCallbacks
    def test_put_errors(self):
        for data, error in [(5, "opts.v not given"), ({}, "opts.v not given"), (["x"], "opts.v not given"),
                            ({"v": None}, "Cannot read properties of null (reading 'length')"),
                            ({"v": "x" * 1000}, "v must be less than 1000 bytes in put()"),
                            ({"v": "x", "k": "00"}, "opts.k ed25519 public key must be 32 bytes"),
                            ({"v": "x", "k": "ab" * 32}, "verification not supported"),
                            ({"v": {"a": 1}}, "ERR_GRAPE_PUT_VALUE"), ({"v": 1.5}, "ERR_GRAPE_PUT_VALUE")]:
            yield self.assertReplies("/put", data, error)
        yield self.assertRaw("/put", b'{"data":null}', 500, b"Cannot read properties of null (reading 'k')")
        yield self.assertRaw("/put", b"{}", 500, b"Cannot read properties of undefined (reading 'k')")

    @defer.inlineCallbacks
    def test_get_of_unknown_hash_is_an_empty_body(self):
        yield self.assertRaw("/get", json.dumps({"data": "00" * 20}).encode(), 200, b"")
        yield self.assertRaw("/get", b'{"data":"abcd"}', 200, b"")

    @defer.inlineCallbacks
    def test_get_errors(self):
        for data, error in [("zz", "ERR_GRAPE_HASH_FORMAT"), ("abc", "ERR_GRAPE_HASH_FORMAT"),
                            ("", "ERR_GRAPE_HASH_FORMAT"), ({"hash": "xyz"}, "ERR_GRAPE_HASH_FORMAT"),
                            (5, "ERR_GRAPE_GENERIC"), ({"hash": 5}, "ERR_GRAPE_GENERIC"), ([1], "ERR_GRAPE_GENERIC")]:
            yield self.assertReplies("/get", data, error)
        yield self.assertRaw("/get", b"{}", 500, b"Cannot read properties of undefined (reading 'salt')")

    @defer.inlineCallbacks
    def test_unknown_paths_are_not_found(self):
        for path in ["/nope", "/lookup/", "/lookup?x=1", "/", "/LOOKUP"]:
            yield self.assertReplies(path, "svc", "ERR_REQ_NOTFOUND")

    @defer.inlineCallbacks
    def test_any_method_and_grape_path_spellings_work(self):
        yield self.assertRaw("/_Lookup", b'{"data":"svc"}', 200, b"[]", method=b"GET")
        yield self.assertRaw("/lookup", b'{"data":"svc"}', 200, b"[]", method=b"PUT")

    @defer.inlineCallbacks
    def test_body_that_is_not_json_is_a_raw_500(self):
        for body in [b"", b"{", b"not json", b"NaN", b'{"data":Infinity}', b"\xff\xfe", b"[" * 100000]:
            yield self.assertRaw("/lookup", body, 500, b"ERR_GRAPE_PAYLOAD_INVALID")

    @defer.inlineCallbacks
    def test_json_null_body_is_nodes_type_error(self):
        yield self.assertRaw("/lookup", b"null", 500, b"Cannot read properties of null (reading 'data')")

    @defer.inlineCallbacks
    def test_json_body_without_data_object_means_undefined_data(self):
        yield self.assertRaw("/lookup", b"5", 200, b'"ERR_GRAPE_LOOKUP"')
        yield self.assertRaw("/announce", b'["svc", 80]', 200, b'"ERR_GRAPE_ANNOUNCE"')


class PayloadLimitTests(TestCase):
    @defer.inlineCallbacks
    def test_body_over_the_limit_is_413_and_at_the_limit_is_served(self):
        grape = start_grape(self, max_payload_size=20)
        body = b'{"data":"svc"}'
        reply = yield request(grape.api_port, "/lookup", body + b" " * (20 - len(body)))
        self.assertEqual(reply, (200, b"[]"))
        reply = yield request(grape.api_port, "/lookup", body + b" " * (21 - len(body)))
        self.assertEqual(reply, (413, b"ERR_GRAPE_PAYLOAD_SIZE"))


class TwoGrapeTests(TestCase):
    @defer.inlineCallbacks
    def test_grapes_bootstrapped_to_each_other_see_each_others_announces_within_a_second(self):
        from tests.support import free_ports
        dht_a, dht_b = free_ports(2)
        a = start_grape(self, dht_port=dht_a, bootstrap=[("127.0.0.1", dht_b)])
        b = start_grape(self, dht_port=dht_b, bootstrap=[("127.0.0.1", dht_a)])
        reply = yield call(a, "/announce", ["on_a", 4001])
        self.assertEqual(reply, (200, 1))
        reply = yield call(b, "/announce", ["on_b", 4002])
        self.assertEqual(reply, (200, 1))

        def sees(grape, name, address):
            return call(grape, "/lookup", name).addCallback(lambda r: r == (200, [address]))

        seen = yield poll(lambda: sees(b, "on_a", "127.0.0.1:4001"), timeout=1.0)
        self.assertTrue(seen)
        seen = yield poll(lambda: sees(a, "on_b", "127.0.0.1:4002"), timeout=1.0)
        self.assertTrue(seen)

        reply = yield call(a, "/put", {"v": "hello"})
        self.assertEqual(reply, (200, HELLO_KEY))
        reply = yield call(b, "/get", HELLO_KEY)
        self.assertEqual(reply[1]["v"], "hello")
