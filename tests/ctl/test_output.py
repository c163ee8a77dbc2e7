"""Human output: tables, the side-by-side book, orders, status highlighting."""
from __future__ import annotations

import unittest

import click

from twisted_exchange.ctl import output
from twisted_exchange.ctl.consistency import Observer


class TableTests(unittest.TestCase):

    def test_columns_are_padded_and_numbers_right_aligned(self):
        text = output.table(("NAME", "N"), [("a", 1), ("long", 100)], right=(1,))
        self.assertEqual(text.splitlines(), ["NAME    N", "a       1", "long  100"])

    def test_none_and_booleans_are_readable(self):
        self.assertEqual(output.table(("A", "B"), [(None, True)]).splitlines()[1], "-  yes")

    def test_highlighted_rows_are_styled_and_unstyle_to_the_same_text(self):
        text = output.table(("A",), [("x",), ("y",)], highlight=(1,))
        lines = text.splitlines()
        self.assertEqual(lines[1], "x")
        self.assertNotEqual(lines[2], "y")
        self.assertEqual(click.unstyle(lines[2]), "y")


class BookTests(unittest.TestCase):

    def test_bids_and_asks_side_by_side_best_first(self):
        text = output.book({"peer": "peer2", "symbol": "BTCUSD", "applied": 4,
                            "bids": [["100.5", "2"], ["99", "1.25"]], "asks": [["101", "3"]]})
        self.assertEqual(text.splitlines(), [
            "BTCUSD on peer2 (applied 4)",
            "BID QTY    BID  |  ASK  ASK QTY",
            "      2  100.5  |  101  3",
            "   1.25     99  |",
        ])

    def test_an_empty_book_says_so(self):
        text = output.book({"peer": "peer1", "symbol": "ETHUSD", "applied": 0, "bids": [], "asks": []})
        self.assertEqual(text, "ETHUSD on peer1 (applied 0)\n(empty book)")


class OrderOutputTests(unittest.TestCase):
    order = {"id": "7", "client": "alice", "symbol": "BTCUSD", "side": "buy", "type": "limit",
             "price": "100", "quantity": "2", "filled": "1", "remaining": "1", "status": "open",
             "tif": "gtc", "post_only": False}

    def test_command_result_shows_the_order_and_its_fills(self):
        text = output.command_result({"ok": True, "order": self.order,
                                      "fills": [{"price": "100", "quantity": "1", "maker": "3"}]})
        lines = text.splitlines()
        self.assertTrue(lines[0].startswith("order id=7 client=alice symbol=BTCUSD side=buy"))
        self.assertEqual(lines[1], "1 fill")
        self.assertEqual(lines[2].split(), ["PRICE", "QUANTITY", "MAKER"])
        self.assertEqual(lines[3].split(), ["100", "1", "3"])

    def test_orders_table_puts_known_columns_first_then_the_rest(self):
        text = output.orders({"peer": "peer1", "orders": [self.order]})
        header = text.splitlines()[1].split()
        self.assertEqual(header[:3], ["ID", "CLIENT", "SYMBOL"])
        self.assertEqual(header[-1], "POST_ONLY")

    def test_trades_read_as_a_tape_oldest_first_whatever_order_they_came_in(self):
        fills = [{"trade_id": "10", "price": "101", "quantity": "1", "symbol": "BTCUSD"},
                 {"trade_id": "9", "price": "100", "quantity": "2", "symbol": "BTCUSD"}]
        lines = output.trades({"peer": "peer2", "symbol": "BTCUSD", "trades": fills}).splitlines()
        self.assertEqual(lines[0], "BTCUSD trades on peer2, newest last")
        self.assertEqual([line.split() for line in lines[1:]],
                         [["TRADE_ID", "PRICE", "QUANTITY", "SYMBOL"], ["9", "100", "2", "BTCUSD"],
                          ["10", "101", "1", "BTCUSD"]])

    def test_no_orders_says_none(self):
        self.assertEqual(output.orders({"peer": "peer1", "orders": []}), "open orders on peer1\n(none)")

    def test_single_order_is_a_field_per_line(self):
        text = output.order({"peer": "peer1", "order": self.order})
        self.assertEqual(text.splitlines()[0].split(), ["id", "7"])
        self.assertIn("post_only  no", text)


class StatusTests(unittest.TestCase):

    def peer(self, role, applied, digest):
        return {"role": role, "term": 2, "leader": "peer1", "commit": applied, "applied": applied,
                "digest": digest}

    def test_divergent_peers_are_highlighted_and_explained(self):
        processes = {"grape1": {"statename": "RUNNING", "pid": 10},
                     "peer1": {"statename": "RUNNING", "pid": 11},
                     "peer2": {"statename": "RUNNING", "pid": 12},
                     "peer3": {"statename": "STOPPED", "pid": 0}}
        peers = {"peer1": self.peer("leader", 5, "a" * 64), "peer2": self.peer("follower", 5, "b" * 64)}
        text = output.status(processes, peers, Observer().observe(peers))
        lines = text.splitlines()
        self.assertEqual(click.unstyle(lines[0]).split(),
                         ["NAME", "PROCESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "DIGEST"])
        self.assertEqual(lines[1].split(), ["grape1", "RUNNING", "pid", "10"])
        self.assertNotEqual(lines[2], click.unstyle(lines[2]))  # peer1 highlighted
        self.assertEqual(click.unstyle(lines[2]).split(),
                         ["peer1", "RUNNING", "pid", "11", "leader", "2", "peer1", "5", "5", "a" * 12])
        self.assertEqual(lines[4].split(), ["peer3", "STOPPED"])
        self.assertIn("DIVERGENCE: peers diverge at applied index 5", click.unstyle(lines[5]))

    def test_unreachable_peers_are_marked_and_their_errors_listed_below(self):
        processes = {"peer1": {"statename": "RUNNING", "pid": 11}}
        text = output.status(processes, {"peer1": "ERR_TIMEOUT: no reply"}, Observer().observe({}))
        self.assertEqual(text.splitlines()[1:], ["peer1  RUNNING pid 11  unreachable",
                                                 "peer1: ERR_TIMEOUT: no reply"])

    def test_agreeing_peers_are_plain(self):
        peers = {"peer1": self.peer("leader", 5, "a" * 64), "peer2": self.peer("follower", 5, "a" * 64)}
        text = output.status({}, peers, Observer().observe(peers))
        self.assertEqual(text, click.unstyle(text))
        self.assertNotIn("DIVERGENCE", text)
