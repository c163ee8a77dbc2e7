"""The peer's edge parser: whatever a client sends is refused or is safe to replicate."""
from __future__ import annotations

import json
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from twisted_exchange.core import Exchange
from twisted_exchange.grenache import wire
from twisted_exchange.peer import protocol
from twisted_exchange.peer.protocol import RequestError, parse_request
from twisted_exchange.replication.messages import parse_message

SUBMIT = {"action": "submit", "client": "alice", "request": "r1", "symbol": "BTCUSD",
          "side": "buy", "type": "limit", "price": "100", "quantity": "2"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10)


def payloads():
    """Near misses of real requests: real fields with hostile values, and extra fields."""
    fields = st.sampled_from(sorted(set(SUBMIT) | {"order_id", "tif", "post_only", "depth",
                                                   "limit", "from", "to", "messages"}))
    base = st.sampled_from([SUBMIT, {"action": "cancel", "client": "a", "request": "r", "order_id": "1"},
                            {"action": "amend", "client": "a", "request": "r", "order_id": "1",
                             "price": "5"}, {"action": "book"}, {"action": "trades"}])
    return st.builds(lambda b, extra: {**b, **extra}, base,
                     st.dictionaries(fields | st.text(max_size=4), json_values, max_size=3))


class ParseRequestTests(unittest.TestCase):
    def test_a_command_is_the_accepted_fields_and_nothing_else(self):
        self.assertEqual(parse_request(SUBMIT), protocol.Command(SUBMIT))

    def test_queries_get_their_defaults(self):
        self.assertEqual(parse_request({"action": "book"}), protocol.BookQuery("BTCUSD", 10))
        self.assertEqual(parse_request({"action": "trades", "symbol": "ETHUSD", "limit": 5}),
                         protocol.TradesQuery("ETHUSD", 5))
        self.assertEqual(parse_request({"action": "orders"}), protocol.OrdersQuery(None, None, 1000))

    def test_a_peer_hello_is_exactly_a_peer_id_and_a_host_and_port(self):
        hello = {"action": "peer.hello", "from": "peer4", "address": "10.0.0.4:5004"}
        self.assertEqual(parse_request(hello), protocol.PeerHello("peer4", "10.0.0.4:5004"))
        for bad in ({"address": "10.0.0.4"}, {"address": "10.0.0.4:0"}, {"address": "10.0.0.4:65536"},
                    {"address": ":5004"}, {"address": "a b:5004"}, {"address": 5004}, {"address": "h:+5004"},
                    {"address": "h" * 300 + ":1"}, {"from": ""}, {"from": ["peer4"]}, {"extra": 1}):
            with self.assertRaises(RequestError, msg=bad) as raised:
                parse_request({**hello, **bad})
            self.assertEqual(raised.exception.code, protocol.ERR_BAD_MESSAGE)

    def test_service_names(self):
        self.assertEqual((protocol.service_name(None), protocol.service_name("peer2")),
                         ("exchange", "exchange:peer2"))

    @settings(max_examples=500, deadline=None)
    @given(payloads())
    def test_whatever_a_client_sends_is_refused_or_can_be_encoded_sent_and_applied_by_every_peer(self, payload):
        try:
            request = parse_request(payload)
        except RequestError as error:
            self.assertRegex(str(error), r"^ERR_[A-Z_]+: ")
            return
        if not isinstance(request, protocol.Command):
            return
        entry = {"index": 1, "term": 1, "command": request.command}
        append = {"type": "raft.append", "from": "a", "to": "b", "term": 1, "prev_index": 0,
                  "prev_term": 0, "entries": [entry], "commit": 1, "last_index": 1,
                  "epoch": None}
        sent = json.loads(wire.encode(append))
        self.assertEqual(parse_message(sent, "a", "b")["entries"][0]["command"], request.command)
        replies = {json.dumps(Exchange().apply(sent["entries"][0]["command"]), sort_keys=True)
                   for _ in range(2)}
        self.assertEqual(len(replies), 1)
