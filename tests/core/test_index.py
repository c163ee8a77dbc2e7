"""The order index: a list for the dense run of recent ids, a dict for stragglers."""
import random
import unittest

from twisted_exchange.core.index import OrderIndex
from twisted_exchange.core.order import GTC, Order


def order(order_id):
    return Order(order_id, "alice", "BTCUSD", "buy", 100, 1, GTC, False)


class OrderIndexTests(unittest.TestCase):
    def setUp(self):
        self.index = OrderIndex()

    def fill(self, ids):
        orders = {order_id: order(order_id) for order_id in ids}
        for kept in orders.values():
            self.index.add(kept)
        return orders

    def test_orders_are_found_by_id_and_unknown_ids_are_none(self):
        orders = self.fill(range(1, 6))
        for order_id, kept in orders.items():
            self.assertIs(self.index.get(order_id), kept)
        for unknown in (0, -3, 6, 10**30):
            self.assertIsNone(self.index.get(unknown))
        self.assertEqual(len(self.index), 5)

    def test_a_removed_order_is_gone_and_removing_it_again_raises(self):
        self.fill(range(1, 4))
        self.index.remove(2)
        self.assertIsNone(self.index.get(2))
        self.assertEqual([o.id for o in self.index.values()], [1, 3])
        self.assertEqual(len(self.index), 2)
        with self.assertRaises(KeyError):
            self.index.remove(2)

    def test_ids_must_increase(self):
        self.fill([1, 2, 3])
        for stale in (3, 1):
            with self.subTest(stale=stale), self.assertRaises(ValueError):
                self.index.add(order(stale))
        self.assertEqual(len(self.index), 3)

    def test_stragglers_move_to_the_dict_once_most_slots_are_holes(self):
        self.fill(range(1, 4001))
        for order_id in range(1, 4001):
            if order_id % 100:
                self.index.remove(order_id)
        self.assertEqual(len(self.index), 40)
        self.assertLessEqual(len(self.index._recent), 2 * 1024)   # the list shrank: few slots per order
        self.assertGreater(len(self.index._old), 0)
        self.assertEqual([o.id for o in self.index.values()], list(range(100, 4001, 100)))
        for order_id in range(100, 4001, 100):
            self.assertEqual(self.index.get(order_id).id, order_id)
        self.index.remove(100)                                     # a straggler leaves the dict
        self.assertIsNone(self.index.get(100))
        self.assertEqual(len(self.index), 39)

    def test_a_jump_in_ids_starts_a_new_run_instead_of_filling_the_gap(self):
        self.fill([1, 2, 10**12])
        self.assertLessEqual(len(self.index._recent), 1)
        self.assertEqual([o.id for o in self.index.values()], [1, 2, 10**12])
        self.assertEqual(self.index.get(10**12).id, 10**12)
        self.assertIsNone(self.index.get(10**12 - 1))

    def test_random_adds_and_removes_agree_with_a_dict(self):
        rng = random.Random(7)
        model = {}
        next_id = 1
        for _ in range(30_000):
            if model and rng.random() < 0.55:
                gone = rng.choice(list(model)) if rng.random() < 0.1 else min(model) if rng.random() < 0.3 \
                    else max(model)
                del model[gone]
                self.index.remove(gone)
            else:
                next_id += 1 if rng.random() < 0.95 else rng.randrange(2, 3000)
                model[next_id] = order(next_id)
                self.index.add(model[next_id])
        self.assertEqual(len(self.index), len(model))
        self.assertEqual([o.id for o in self.index.values()], sorted(model))
        for probe in range(0, next_id + 2):
            self.assertIs(self.index.get(probe), model.get(probe))
        self.assertLessEqual(len(self.index._recent), max(2 * len(model), 1024) + 3000)
