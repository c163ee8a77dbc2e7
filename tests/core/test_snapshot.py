"""Snapshot, restore and the state hash."""
import json
import unittest

from twisted_exchange.core import Exchange, ExchangeError

from .builders import amend, cancel, submit


def busy_exchange(**bounds):
    exchange = Exchange(**bounds)
    for command in [
        submit("a", "buy", "100", "2"), submit("b", "buy", "100", "1"), submit("a", "buy", "99.5", "1"),
        submit("c", "sell", "101", "3"), submit("c", "sell", "100", "0.5"), submit("d", "sell", None, "1"),
        cancel("a", "3"), amend("c", "4", quantity="2"), submit("a", "buy", "1", "1", symbol="ETHUSD"),
    ]:
        assert exchange.apply(command)["ok"], command
    return exchange


class SnapshotTests(unittest.TestCase):
    def test_snapshot_survives_json_and_restores_the_same_state(self):
        exchange = busy_exchange()
        snapshot = json.loads(json.dumps(exchange.snapshot()))
        restored = Exchange.restore(snapshot)
        self.assertEqual(restored.state_hash(), exchange.state_hash())
        self.assertEqual(restored.snapshot(), exchange.snapshot())
        for symbol in ["BTCUSD", "ETHUSD"]:
            self.assertEqual(restored.book(symbol), exchange.book(symbol))
            self.assertEqual(restored.trades(symbol), exchange.trades(symbol))
        for order_id in map(str, range(1, 10)):
            self.assertEqual(restored.order(order_id), exchange.order(order_id))

    def test_restored_exchange_gives_the_same_future_replies(self):
        exchange = busy_exchange(closed_orders_kept=3, trades_kept=2)
        restored = Exchange.restore(json.loads(json.dumps(exchange.snapshot())))
        for command in [submit("e", "sell", "99", "5"), amend("c", "4", price="98"), cancel("b", "2"),
                        submit("b", "buy", "100", "1", tif="fok"), cancel("a", "1")]:
            self.assertEqual(restored.apply(command), exchange.apply(command))
            self.assertEqual(restored.state_hash(), exchange.state_hash())

    def test_hash_differs_when_any_part_of_the_state_differs(self):
        base = busy_exchange().state_hash()
        self.assertEqual(busy_exchange().state_hash(), base)
        variants = [
            submit("z", "buy", "1", "1"),                # a new resting order and the id counter
            submit("z", "buy", "1", "1", tif="ioc"),     # only a closed order and the counter
            amend("a", "1", quantity="1.75"),             # a quantity, priority kept
        ]
        for command in variants:
            exchange = busy_exchange()
            self.assertTrue(exchange.apply(command)["ok"])
            self.assertNotEqual(exchange.state_hash(), base, command)
        self.assertNotEqual(busy_exchange(trades_kept=5).state_hash(), base)

    def test_hash_sees_queue_order_within_a_level(self):
        one, two = Exchange(), Exchange()
        for exchange, requeue in [(one, False), (two, True)]:
            exchange.apply(submit("a", "buy", "100", "1"))
            exchange.apply(submit("b", "buy", "100", "1"))
            if requeue:
                exchange.apply(amend("a", "1", quantity="2"))
                exchange.apply(amend("a", "1", quantity="1"))
        self.assertEqual(one.book("BTCUSD"), two.book("BTCUSD"))
        self.assertNotEqual(one.state_hash(), two.state_hash())

    def test_malformed_snapshot_raises_invalid_snapshot(self):
        good = busy_exchange().snapshot()
        for broken in [None, {}, good | {"format": 99}, good | {"orders": [["1"]]},
                       good | {"resting": {"BTCUSD": ["404"]}}, good | {"last_order_id": "x"},
                       good | {"last_order_id": 1}, good | {"closed": good["closed"] + ["1"]},
                       good | {"closed": good["closed"][1:]}, good | {"closed": ["404"]},
                       good | {"resting": {}}, good | {"closed_orders_kept": 1},
                       good | {"orders": good["orders"][::-1]}, good | {"orders": good["orders"][:1] * 2}]:
            with self.subTest(broken=str(broken)[:60]), self.assertRaises(ExchangeError) as caught:
                Exchange.restore(broken)
            self.assertEqual(caught.exception.code, "ERR_INVALID_SNAPSHOT")
