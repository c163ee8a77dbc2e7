"""The sorted keys of a side's levels against a plain sorted list."""
import random
import unittest

from hypothesis import given, strategies as st

from twisted_exchange.core.keys import LOAD, SortedKeys

EMPTY = -1


class SortedKeysTests(unittest.TestCase):
    def assertHolds(self, keys: SortedKeys, expected: set) -> None:
        self.assertEqual(list(keys), sorted(expected))
        self.assertEqual(keys.first(EMPTY), min(expected, default=EMPTY))
        self.assertEqual(keys.lasts, [chunk[-1] for chunk in keys.chunks])
        self.assertTrue(all(0 < len(chunk) <= 2 * LOAD for chunk in keys.chunks))

    def test_many_keys_split_into_chunks_and_stay_in_order_as_they_come_and_go(self):
        rng = random.Random(7)
        keys, expected = SortedKeys(), set()
        for key in rng.sample(range(-50_000, 50_000), 6 * LOAD):
            keys.add(key)
            expected.add(key)
        self.assertGreater(len(keys.chunks), 3)
        self.assertHolds(keys, expected)
        for key in rng.sample(sorted(expected), len(expected)):
            keys.remove(key)
            expected.discard(key)
            if len(expected) % 500 == 0:
                self.assertHolds(keys, expected)
        self.assertHolds(keys, set())

    @given(st.lists(st.tuples(st.booleans(), st.integers(-30, 30)), max_size=300))
    def test_any_adds_and_removes_leave_the_keys_sorted(self, operations):
        keys, expected = SortedKeys(), set()
        for add, key in operations:
            if add and key not in expected:
                keys.add(key)
                expected.add(key)
            elif not add and key in expected:
                keys.remove(key)
                expected.discard(key)
        self.assertHolds(keys, expected)
