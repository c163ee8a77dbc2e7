"""Every rejection of malformed input: ERR_INVALID_ORDER, nothing changed, never an exception."""
import json
import unittest

from twisted_exchange.core import Exchange
from twisted_exchange.core.commands import parse_command

from .builders import amend, cancel, submit


class RejectionTests(unittest.TestCase):
    def setUp(self):
        self.exchange = Exchange()
        self.exchange.apply(submit("alice", "sell", "100", "1"))
        self.before = self.exchange.state_hash()

    def assertInvalid(self, command, reason_part=""):
        reply = self.exchange.apply(command)
        self.assertEqual(reply["ok"], False, reply)
        self.assertTrue(reply["error"].startswith("ERR_INVALID_ORDER: "), reply["error"])
        self.assertIn(reason_part, reply["error"])
        self.assertEqual(self.exchange.state_hash(), self.before)

    def test_command_must_be_an_object_with_a_known_action(self):
        for command in [None, 1, "submit", [], ["action"], b"{}", {}, {"action": "buy"},
                        {"action": ["submit"]}, {"action": None}, {1: 2}]:
            with self.subTest(command=command):
                self.assertInvalid(command, "")

    def test_unknown_fields_are_refused_by_name(self):
        self.assertInvalid(submit("a", "buy", "1", "1", colour="red"), "'colour'")
        self.assertInvalid(cancel("a", "1") | {"quantity": "1"}, "'quantity'")
        self.assertInvalid(submit("a", "buy", "1", "1") | {7: "x"}, "field names must be strings")

    def test_missing_fields_are_named(self):
        command = submit("a", "buy", "1", "1")
        for field in ["client", "request", "symbol", "side", "type", "quantity"]:
            with self.subTest(field=field):
                broken = dict(command)
                del broken[field]
                self.assertInvalid(broken, field)
        self.assertInvalid({"action": "cancel", "client": "a", "request": "r"}, "order_id")

    def test_client_request_and_order_id_must_be_bounded_printable_strings(self):
        for bad in ["", "x" * 65, 7, None, True, "a\nb", ["a"]]:
            with self.subTest(client=bad):
                self.assertInvalid(submit(bad, "buy", "1", "1"), "client")
        self.assertInvalid(submit("a", "buy", "1", "1") | {"request": "r" * 129}, "request")
        self.assertInvalid(submit("a", "buy", "1", "1") | {"request": 5}, "request")
        self.assertInvalid(cancel("alice", 1), "order_id")
        self.assertInvalid(cancel("alice", "9" * 21), "order_id")

    def test_symbol_must_be_two_to_twelve_capitals_or_digits(self):
        for bad in ["B", "btcusd", "BTC-USD", "ABCDEFGHIJKLM", "BTCUSD\n", "", 5, None]:
            with self.subTest(symbol=bad):
                self.assertInvalid(submit("a", "buy", "1", "1", symbol=bad), "symbol")

    def test_side_type_and_tif_must_be_known_words(self):
        self.assertInvalid(submit("a", "BUY", "1", "1"), "side")
        self.assertInvalid(submit("a", ["buy"], "1", "1"), "side")
        self.assertInvalid(submit("a", "buy", "1", "1") | {"type": "stop"}, "type")
        self.assertInvalid(submit("a", "buy", "1", "1") | {"type": {}}, "type")
        self.assertInvalid(submit("a", "buy", "1", "1", tif="day"), "tif")
        self.assertInvalid(submit("a", "buy", "1", "1", tif=None), "tif")

    def test_amounts_must_be_positive_bounded_decimal_strings(self):
        for bad in ["0", "-1", "1e2", "NaN", "Infinity", "1.123456789", "10000000000001", 1, 1.0, True, None]:
            with self.subTest(amount=bad):
                self.assertInvalid(submit("a", "buy", "1", bad), "quantity")
                if bad is not None:
                    self.assertInvalid(submit("a", "buy", bad, "1"), "price")

    def test_limit_order_needs_a_price(self):
        command = submit("a", "buy", "1", "1")
        del command["price"]
        self.assertInvalid(command, "needs a price")
        self.assertInvalid(command | {"price": None}, "needs a price")

    def test_market_order_refuses_a_price_gtc_and_post_only(self):
        self.assertInvalid(submit("a", "buy", None, "1") | {"price": "100"}, "no price")
        self.assertInvalid(submit("a", "buy", None, "1", tif="gtc"), "ioc or fok")
        self.assertInvalid(submit("a", "buy", None, "1", post_only=True), "post_only")

    def test_post_only_must_be_a_boolean_and_needs_gtc(self):
        for bad in [1, 0, "true", None]:
            with self.subTest(post_only=bad):
                self.assertInvalid(submit("a", "buy", "1", "1", post_only=bad), "post_only")
        self.assertInvalid(submit("a", "buy", "1", "1", post_only=True, tif="ioc"), "gtc")

    def test_amend_needs_a_valid_new_price_or_quantity(self):
        self.assertInvalid(amend("alice", "1"), "price or quantity")
        self.assertInvalid(amend("alice", "1", quantity="0"), "quantity")
        self.assertInvalid(amend("alice", "1", price="abc"), "price")
        self.assertInvalid(amend("alice", "1", side="buy"), "'side'")

    def test_huge_input_is_refused_cheaply(self):
        self.assertInvalid(submit("a", "buy", "1" * 1_000_000, "1"), "too long")
        self.assertInvalid(submit("a" * 1_000_000, "buy", "1", "1"), "client")


class ParsedNamesTests(unittest.TestCase):
    def test_equal_symbols_and_clients_from_the_wire_share_one_string(self):
        # A peer decodes every command from JSON: a new string per field.
        # Each resting order holds its symbol and client, so a million of
        # them must not hold a million copies of "BTCUSD".
        first, second = (parse_command(json.loads(json.dumps(submit("alice", "buy", "1", "1"))))
                         for _ in range(2))
        self.assertEqual(first.symbol, "BTCUSD")
        self.assertIs(first.symbol, second.symbol)
        self.assertIs(first.client, second.client)
