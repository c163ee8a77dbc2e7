"""Example tests for every matching rule of the core (see core/__init__.py)."""
import json
import sys
import unittest

from twisted_exchange.core import Exchange
from twisted_exchange.core.book import SPARE_LEVELS

from .builders import amend, cancel, submit


class ExchangeTestCase(unittest.TestCase):
    def setUp(self):
        self.exchange = Exchange()

    def ok(self, command):
        reply = self.exchange.apply(command)
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(set(reply), {"ok", "order", "fills"})
        return reply

    def refused(self, command, code):
        before = self.exchange.state_hash()
        reply = self.exchange.apply(command)
        self.assertEqual(set(reply), {"ok", "error"})
        self.assertFalse(reply["ok"])
        self.assertTrue(reply["error"].startswith(code + ": "), reply["error"])
        self.assertEqual(self.exchange.state_hash(), before, "a refused command changed the state")
        return reply["error"]

    def book(self, symbol="BTCUSD"):
        return self.exchange.book(symbol)

    def first_maker(self, side, price):
        """The maker order a new one-unit taker of ``side`` at ``price`` trades with first."""
        return self.ok(submit("taker", side, price, "1"))["fills"][0]["maker_order"]


class SubmitTests(ExchangeTestCase):
    def test_limit_order_without_a_counterparty_rests_open(self):
        reply = self.ok(submit("alice", "buy", "100.5", "2", tif="gtc", post_only=False))
        self.assertEqual(reply["order"], {
            "id": "1", "client": "alice", "symbol": "BTCUSD", "side": "buy", "type": "limit",
            "price": "100.5", "quantity": "2", "filled": "0", "remaining": "2",
            "cancelled": "0", "status": "open", "tif": "gtc", "post_only": False,
        })
        self.assertEqual(reply["fills"], [])
        self.assertEqual(self.book(), {"bids": [["100.5", "2"]], "asks": []})

    def test_order_ids_count_up_from_one_and_refusals_consume_none(self):
        self.assertEqual(self.ok(submit("a", "buy", "1", "1"))["order"]["id"], "1")
        self.refused(submit("a", "buy", "-1", "1"), "ERR_INVALID_ORDER")
        self.assertEqual(self.ok(submit("a", "buy", "1", "1"))["order"]["id"], "2")

    def test_book_aggregates_levels_best_first_and_honours_depth(self):
        for price, qty in [("99", "1"), ("101", "1"), ("100", "2"), ("100", "0.5")]:
            self.ok(submit("a", "buy", price, qty))
        for price in ["105", "103", "104"]:
            self.ok(submit("b", "sell", price, "1"))
        self.assertEqual(self.book(), {
            "bids": [["101", "1"], ["100", "2.5"], ["99", "1"]],
            "asks": [["103", "1"], ["104", "1"], ["105", "1"]],
        })
        self.assertEqual(self.exchange.book("BTCUSD", depth=1),
                         {"bids": [["101", "1"]], "asks": [["103", "1"]]})

    def test_unknown_symbol_has_an_empty_book_and_a_book_is_created_on_first_use(self):
        self.assertEqual(self.exchange.book("ETHUSD"), {"bids": [], "asks": []})
        self.ok(submit("a", "sell", "2000", "1", symbol="ETHUSD"))
        self.assertEqual(self.exchange.book("ETHUSD"), {"bids": [], "asks": [["2000", "1"]]})
        self.assertEqual(self.book(), {"bids": [], "asks": []})

    def test_crossing_order_trades_at_the_makers_price(self):
        self.ok(submit("alice", "sell", "100", "1"))
        reply = self.ok(submit("bob", "buy", "105", "1"))
        self.assertEqual(reply["fills"], [{
            "trade_id": "1", "symbol": "BTCUSD", "price": "100", "quantity": "1",
            "maker_order": "1", "taker_order": "2", "maker_client": "alice",
            "taker_client": "bob", "taker_side": "buy",
        }])
        self.assertEqual(reply["order"]["status"], "filled")
        self.assertEqual(self.exchange.order("1")["status"], "filled")
        self.assertEqual(self.book(), {"bids": [], "asks": []})

    def test_better_price_matches_first_then_earlier_order_at_same_price(self):
        self.ok(submit("a", "sell", "101", "1"))   # 1
        self.ok(submit("b", "sell", "100", "1"))   # 2
        self.ok(submit("c", "sell", "100", "1"))   # 3
        fills = self.ok(submit("d", "buy", "101", "3"))["fills"]
        self.assertEqual([(f["maker_order"], f["price"]) for f in fills],
                         [("2", "100"), ("3", "100"), ("1", "101")])

    def test_taker_stops_at_its_limit_and_rests_the_remainder(self):
        self.ok(submit("a", "sell", "100", "1"))
        self.ok(submit("a", "sell", "102", "1"))
        reply = self.ok(submit("b", "buy", "101", "3"))
        self.assertEqual(len(reply["fills"]), 1)
        self.assertEqual((reply["order"]["status"], reply["order"]["filled"], reply["order"]["remaining"]),
                         ("partially_filled", "1", "2"))
        self.assertEqual(self.book(), {"bids": [["101", "2"]], "asks": [["102", "1"]]})

    def test_partial_fill_leaves_maker_remainder_at_front_of_queue(self):
        self.ok(submit("a", "sell", "100", "5"))   # 1
        self.ok(submit("b", "sell", "100", "1"))   # 2
        self.ok(submit("c", "buy", "100", "2"))
        maker = self.exchange.order("1")
        self.assertEqual((maker["status"], maker["remaining"]), ("partially_filled", "3"))
        self.assertEqual(self.first_maker("buy", "100"), "1")

    def test_commands_decoded_from_json_behave_like_literals(self):
        self.ok(json.loads(json.dumps(submit("a", "buy", "100", "1"))))
        reply = self.ok(json.loads(json.dumps(submit("b", "sell", "100", "1", tif="ioc"))))
        self.assertEqual(reply["order"]["status"], "filled")
        self.assertEqual(reply["fills"][0]["taker_side"], "sell")

    def test_sell_taker_sweeps_bids_from_the_highest(self):
        self.ok(submit("a", "buy", "99", "1"))
        self.ok(submit("a", "buy", "100", "1"))
        fills = self.ok(submit("b", "sell", "99", "2"))["fills"]
        self.assertEqual([f["price"] for f in fills], ["100", "99"])
        self.assertEqual([f["taker_side"] for f in fills], ["sell", "sell"])

    def test_ioc_fills_what_it_can_and_cancels_the_rest(self):
        self.ok(submit("a", "sell", "100", "1"))
        reply = self.ok(submit("b", "buy", "100", "3", tif="ioc"))
        order = reply["order"]
        self.assertEqual((order["status"], order["filled"], order["remaining"], order["cancelled"]),
                         ("cancelled", "1", "0", "2"))
        self.assertEqual(self.book(), {"bids": [], "asks": []})

    def test_ioc_without_liquidity_is_accepted_and_cancelled(self):
        order = self.ok(submit("b", "buy", "100", "3", tif="ioc"))["order"]
        self.assertEqual((order["status"], order["cancelled"]), ("cancelled", "3"))

    def test_fok_fills_completely_across_levels(self):
        self.ok(submit("a", "sell", "100", "1"))
        self.ok(submit("a", "sell", "101", "1"))
        reply = self.ok(submit("b", "buy", "101", "2", tif="fok"))
        self.assertEqual(reply["order"]["status"], "filled")
        self.assertEqual(len(reply["fills"]), 2)

    def test_fok_that_cannot_fill_completely_is_refused_and_changes_nothing(self):
        self.ok(submit("a", "sell", "100", "1"))
        self.ok(submit("a", "sell", "102", "5"))
        self.refused(submit("b", "buy", "101", "2", tif="fok"), "ERR_FOK_UNFILLABLE")
        self.assertEqual(self.book()["asks"], [["100", "1"], ["102", "5"]])

    def test_fok_does_not_count_its_own_clients_liquidity(self):
        self.ok(submit("b", "sell", "100", "5"))
        self.ok(submit("a", "sell", "100", "1"))
        self.refused(submit("b", "buy", "100", "2", tif="fok"), "ERR_FOK_UNFILLABLE")
        self.assertEqual(self.exchange.order("1")["status"], "open")

    def test_market_order_sweeps_any_price_and_never_rests(self):
        self.ok(submit("a", "sell", "100", "1"))
        self.ok(submit("a", "sell", "5000", "1"))
        order = self.ok(submit("b", "buy", None, "3"))["order"]
        self.assertEqual((order["type"], order["price"], order["tif"]), ("market", None, "ioc"))
        self.assertEqual((order["status"], order["filled"], order["cancelled"]), ("cancelled", "2", "1"))
        self.assertEqual(self.book(), {"bids": [], "asks": []})

    def test_market_fok_is_all_or_nothing(self):
        self.ok(submit("a", "buy", "100", "1"))
        self.refused(submit("b", "sell", None, "2", tif="fok"), "ERR_FOK_UNFILLABLE")
        self.assertEqual(self.ok(submit("b", "sell", None, "1", tif="fok"))["order"]["status"], "filled")

    def test_post_only_rests_when_it_does_not_cross(self):
        self.ok(submit("a", "sell", "101", "1"))
        order = self.ok(submit("b", "buy", "100", "1", post_only=True))["order"]
        self.assertEqual((order["status"], order["post_only"]), ("open", True))

    def test_post_only_that_would_take_is_refused(self):
        self.ok(submit("a", "sell", "100", "1"))
        self.refused(submit("b", "buy", "100", "1", post_only=True), "ERR_POST_ONLY_WOULD_TAKE")

    def test_post_only_is_refused_even_against_its_own_clients_order(self):
        self.ok(submit("a", "sell", "100", "1"))
        self.refused(submit("a", "buy", "100", "1", post_only=True), "ERR_POST_ONLY_WOULD_TAKE")


class SelfTradePreventionTests(ExchangeTestCase):
    def test_incoming_order_cancels_its_clients_resting_order_and_keeps_matching(self):
        self.ok(submit("alice", "sell", "100", "1"))   # 1: alice's own
        self.ok(submit("bob", "sell", "100", "1"))     # 2
        reply = self.ok(submit("alice", "buy", "100", "1"))
        self.assertEqual([f["maker_order"] for f in reply["fills"]], ["2"])
        own = self.exchange.order("1")
        self.assertEqual((own["status"], own["cancelled"], own["filled"]), ("cancelled", "1", "0"))
        self.assertEqual(reply["order"]["status"], "filled")

    def test_no_trade_ever_has_the_same_client_on_both_sides(self):
        self.ok(submit("alice", "sell", "100", "1"))
        reply = self.ok(submit("alice", "buy", "100", "1"))
        self.assertEqual(reply["fills"], [])
        self.assertEqual(reply["order"]["status"], "open")
        self.assertEqual(self.book(), {"bids": [["100", "1"]], "asks": []})
        self.assertEqual(self.exchange.trades("BTCUSD"), [])


class CancelTests(ExchangeTestCase):
    def test_cancel_removes_the_order_and_reports_it(self):
        self.ok(submit("alice", "buy", "100", "2"))
        reply = self.ok(cancel("alice", "1"))
        self.assertEqual(reply["fills"], [])
        self.assertEqual((reply["order"]["status"], reply["order"]["cancelled"], reply["order"]["remaining"]),
                         ("cancelled", "2", "0"))
        self.assertEqual(self.book(), {"bids": [], "asks": []})

    def test_cancel_of_a_partially_filled_order_keeps_the_filled_part(self):
        self.ok(submit("alice", "buy", "100", "2"))
        self.ok(submit("bob", "sell", "100", "0.5"))
        order = self.ok(cancel("alice", "1"))["order"]
        self.assertEqual((order["filled"], order["cancelled"]), ("0.5", "1.5"))

    def test_cancel_keeps_the_others_in_time_order(self):
        for client in "abc":
            self.ok(submit(client, "sell", "100", "1"))
        self.ok(cancel("b", "2"))
        fills = self.ok(submit("d", "buy", "100", "2"))["fills"]
        self.assertEqual([f["maker_order"] for f in fills], ["1", "3"])

    def test_cancel_of_unknown_order_is_refused(self):
        self.refused(cancel("alice", "42"), "ERR_UNKNOWN_ORDER")

    def test_only_the_owner_may_cancel(self):
        self.ok(submit("alice", "buy", "100", "2"))
        self.refused(cancel("mallory", "1"), "ERR_NOT_OWNER")

    def test_cancel_of_a_closed_order_is_refused(self):
        self.ok(submit("alice", "buy", "100", "1"))
        self.ok(submit("bob", "sell", "100", "1"))
        self.refused(cancel("alice", "1"), "ERR_ORDER_CLOSED")
        self.ok(submit("alice", "buy", "100", "1"))
        self.ok(cancel("alice", "3"))
        self.refused(cancel("alice", "3"), "ERR_ORDER_CLOSED")


class AmendTests(ExchangeTestCase):
    def test_quantity_decrease_keeps_queue_priority(self):
        self.ok(submit("a", "sell", "100", "5"))   # 1
        self.ok(submit("b", "sell", "100", "1"))   # 2
        order = self.ok(amend("a", "1", quantity="2"))["order"]
        self.assertEqual((order["quantity"], order["remaining"], order["cancelled"]), ("2", "2", "0"))
        self.assertEqual(self.book()["asks"], [["100", "3"]])
        self.assertEqual(self.first_maker("buy", "100"), "1")

    def test_quantity_increase_moves_to_back_of_level(self):
        self.ok(submit("a", "sell", "100", "1"))   # 1
        self.ok(submit("b", "sell", "100", "1"))   # 2
        self.ok(amend("a", "1", quantity="3"))
        self.assertEqual(self.book()["asks"], [["100", "4"]])
        self.assertEqual(self.first_maker("buy", "100"), "2")

    def test_price_change_requeues_at_the_new_price_with_the_same_id(self):
        self.ok(submit("a", "buy", "100", "1"))   # 1
        self.ok(submit("b", "buy", "101", "1"))   # 2
        order = self.ok(amend("a", "1", price="101"))["order"]
        self.assertEqual((order["id"], order["price"]), ("1", "101"))
        self.assertEqual(self.book()["bids"], [["101", "2"]])
        self.assertEqual(self.first_maker("sell", "101"), "2")

    def test_crossing_price_change_trades_like_a_new_taker(self):
        self.ok(submit("a", "sell", "101", "1"))   # 1
        self.ok(submit("b", "buy", "100", "3"))    # 2
        reply = self.ok(amend("b", "2", price="102"))
        self.assertEqual([(f["maker_order"], f["taker_order"], f["price"]) for f in reply["fills"]],
                         [("1", "2", "101")])
        self.assertEqual((reply["order"]["status"], reply["order"]["remaining"]), ("partially_filled", "2"))
        self.assertEqual(self.book(), {"bids": [["102", "2"]], "asks": []})

    def test_crossing_price_change_of_a_post_only_order_is_refused(self):
        self.ok(submit("a", "sell", "101", "1"))
        self.ok(submit("b", "buy", "100", "1", post_only=True))
        self.refused(amend("b", "2", price="101"), "ERR_POST_ONLY_WOULD_TAKE")

    def test_amend_of_a_partially_filled_order_counts_the_filled_part(self):
        self.ok(submit("a", "buy", "100", "5"))
        self.ok(submit("b", "sell", "100", "2"))
        order = self.ok(amend("a", "1", quantity="4"))["order"]
        self.assertEqual((order["quantity"], order["filled"], order["remaining"]), ("4", "2", "2"))
        self.refused(amend("a", "1", quantity="2"), "ERR_INVALID_ORDER")

    def test_amend_to_the_same_values_changes_nothing(self):
        self.ok(submit("a", "buy", "100", "5"))
        before = self.exchange.state_hash()
        self.ok(amend("a", "1", price="100", quantity="5"))
        self.assertEqual(self.exchange.state_hash(), before)

    def test_amend_refusals(self):
        self.ok(submit("a", "buy", "100", "1"))
        self.refused(amend("a", "9", quantity="2"), "ERR_UNKNOWN_ORDER")
        self.refused(amend("b", "1", quantity="2"), "ERR_NOT_OWNER")
        self.refused(amend("a", "1"), "ERR_INVALID_ORDER")
        self.ok(cancel("a", "1"))
        self.refused(amend("a", "1", quantity="2"), "ERR_ORDER_CLOSED")


class QueryTests(ExchangeTestCase):
    def test_trades_are_newest_first_and_limited(self):
        self.ok(submit("a", "sell", "100", "3"))
        for _ in range(3):
            self.ok(submit("b", "buy", "100", "1"))
        trades = self.exchange.trades("BTCUSD", limit=2)
        self.assertEqual([t["trade_id"] for t in trades], ["3", "2"])
        self.assertEqual(self.exchange.trades("ETHUSD"), [])

    def test_only_the_last_trades_per_symbol_are_kept(self):
        exchange = Exchange(trades_kept=2)
        exchange.apply(submit("a", "sell", "100", "3"))
        for _ in range(3):
            exchange.apply(submit("b", "buy", "100", "1"))
        self.assertEqual([t["trade_id"] for t in exchange.trades("BTCUSD")], ["3", "2"])

    def test_closed_orders_are_forgotten_oldest_first_beyond_the_bound(self):
        exchange = Exchange(closed_orders_kept=2)
        for n in range(3):
            exchange.apply(submit("a", "buy", "100", "1"))
        self.assertEqual(exchange.known_orders(), 3)
        for order_id in ["2", "1", "3"]:
            exchange.apply(cancel("a", order_id))
        self.assertEqual(exchange.known_orders(), 2)
        self.assertEqual(exchange.known_orders(), exchange.stats()["known_orders"])
        self.assertIsNone(exchange.order("2"))
        self.assertEqual(exchange.order("1")["status"], "cancelled")
        reply = exchange.apply(cancel("a", "2"))
        self.assertTrue(reply["error"].startswith("ERR_UNKNOWN_ORDER"))

    def test_open_orders_lists_resting_orders_oldest_first_with_filters(self):
        self.ok(submit("a", "buy", "100", "1"))
        self.ok(submit("b", "sell", "101", "2", symbol="ETHUSD"))
        self.ok(submit("a", "buy", "99", "1"))
        self.ok(submit("c", "sell", "100", "1"))  # fills order 1, which then is not open
        self.assertEqual([o["id"] for o in self.exchange.open_orders()], ["2", "3"])
        self.assertEqual([o["id"] for o in self.exchange.open_orders(client="a")], ["3"])
        self.assertEqual([o["id"] for o in self.exchange.open_orders(symbol="ETHUSD")], ["2"])
        self.assertEqual(self.exchange.open_orders(symbol="ETHUSD", client="a"), [])
        self.assertEqual(len(self.exchange.open_orders(limit=1)), 1)

    def test_order_of_unknown_id_is_none(self):
        self.assertIsNone(self.exchange.order("1"))
        self.assertIsNone(self.exchange.order(1))

    def test_malformed_queries_raise_exchange_error(self):
        from twisted_exchange.core import ExchangeError
        for call in [lambda: self.exchange.book("btc"), lambda: self.exchange.book("BTCUSD", 0),
                     lambda: self.exchange.book("BTCUSD", True), lambda: self.exchange.trades(5),
                     lambda: self.exchange.trades("BTCUSD", -1),
                     lambda: self.exchange.open_orders(symbol="btc"),
                     lambda: self.exchange.open_orders(client=5),
                     lambda: self.exchange.open_orders(limit=0)]:
            with self.assertRaises(ExchangeError) as caught:
                call()
            self.assertEqual(caught.exception.code, "ERR_INVALID_QUERY")

    def test_stats_count_resting_and_known_orders(self):
        self.ok(submit("a", "buy", "100", "1"))
        self.ok(submit("a", "buy", "99", "1", symbol="ETHUSD"))
        self.ok(submit("b", "sell", "100", "1"))
        self.assertEqual(self.exchange.stats(), {
            "resting_orders": 1, "known_orders": 3, "books": 2, "last_order_id": 3, "last_trade_id": 1,
        })

    def test_resting_orders_are_counted_per_symbol_that_has_any(self):
        self.ok(submit("a", "buy", "100", "1"))
        self.ok(submit("a", "buy", "99", "1"))
        self.ok(submit("a", "buy", "99", "1", symbol="ETHUSD"))
        self.ok(submit("b", "sell", "99", "1", symbol="ETHUSD"))
        self.assertEqual(self.exchange.resting_by_symbol(), {"BTCUSD": 2})

    def test_orders_that_never_rest_create_no_book(self):
        self.ok(submit("a", "buy", "100", "1", tif="ioc", symbol="XX1"))
        self.ok(submit("a", "buy", None, "1", symbol="XX2"))
        self.assertEqual(self.exchange.stats()["books"], 0)
        self.assertEqual(self.exchange.snapshot()["resting"], {})

    def test_replies_are_fresh_objects(self):
        reply = self.ok(submit("a", "buy", "100", "1"))
        reply["order"]["remaining"] = "999"
        self.assertEqual(self.exchange.order("1")["remaining"], "1")


class EmptiedLevelTests(ExchangeTestCase):
    """An emptied level is kept for its price's next order (core/book.py), never seen."""

    def test_the_best_moves_past_kept_empty_levels_which_nothing_shows(self):
        ids = [self.ok(submit("alice", "sell", price, "1"))["order"]["id"] for price in ("101", "102", "103")]
        self.ok(cancel("alice", ids[1]))                      # 102 emptied, not the best: kept
        self.assertEqual(self.book()["asks"], [["101", "1"], ["103", "1"]])
        fills = self.ok(submit("bob", "buy", "103", "2"))["fills"]
        self.assertEqual([(f["price"], f["maker_order"]) for f in fills], [("101", ids[0]), ("103", ids[2])])
        self.assertEqual(self.book()["asks"], [])
        self.ok(submit("carol", "sell", "102", "1"))          # joins the kept level at 102
        self.assertEqual(self.book()["asks"], [["102", "1"]])
        self.assertEqual(self.first_maker("buy", "102"), str(len(ids) + 2))

    def test_empty_levels_are_bounded_and_the_state_is_as_if_never_kept(self):
        books = self.exchange._books
        for n in range(600):                                  # more emptied levels than SPARE_LEVELS
            placed = self.ok(submit("alice", "buy", f"{1000 - n}", "1"))["order"]["id"]
            self.ok(cancel("alice", placed))
        self.ok(submit("alice", "buy", "50", "1"))
        side = books["BTCUSD"].bids
        self.assertLessEqual(side.empty, SPARE_LEVELS)
        self.assertEqual(len(side.levels) - side.empty, 1)
        self.assertEqual(self.book()["bids"], [["50", "1"]])
        fresh = Exchange.restore(self.exchange.snapshot())
        self.assertEqual(fresh.state_hash(), self.exchange.state_hash())
        self.assertEqual(fresh.apply(submit("bob", "sell", "50", "1"))["fills"][0]["price"], "50")


class DiscardTests(ExchangeTestCase):
    """Compiled, orders are not seen by the cyclic collector (core/order.py): reference counting alone must free them."""

    def test_a_discarded_exchange_unlinks_its_resting_orders(self):
        for _ in range(3):
            self.ok(submit("alice", "buy", "100", "1"))
        middle = self.exchange._orders.get(2)
        self.assertIsNotNone(middle.prev)
        del self.exchange
        self.assertIsNone(middle.prev)
        self.assertIsNone(middle.next)
        self.assertEqual(sys.getrefcount(middle), 2)  # ``middle`` and the argument: nothing else holds it
