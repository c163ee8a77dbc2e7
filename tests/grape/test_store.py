"""Peer store expiry and the BEP44 value store."""
import hashlib
import random
import unittest

from twisted.internet.task import Clock

from twisted_exchange.grape.store import PeerStore, ValueStore, immutable_key


class PeerStoreTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = PeerStore(self.clock, max_age=10.0, rng=random.Random(1))

    def test_announced_peer_is_returned(self):
        self.store.add(b"svc", "127.0.0.1", 4242)
        self.assertEqual(self.store.get(b"svc"), [("127.0.0.1", 4242)])
        self.assertEqual(self.store.get(b"other"), [])

    def test_peer_expires_max_age_after_its_last_announce(self):
        self.store.add(b"svc", "127.0.0.1", 4242)
        self.clock.advance(9.9)
        self.assertEqual(len(self.store.get(b"svc")), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.store.get(b"svc"), [])

    def test_reannounce_extends_the_lifetime(self):
        self.store.add(b"svc", "127.0.0.1", 4242)
        self.clock.advance(8)
        self.store.add(b"svc", "127.0.0.1", 4242)
        self.clock.advance(8)
        self.assertEqual(self.store.get(b"svc"), [("127.0.0.1", 4242)])

    def test_add_says_whether_the_announcement_is_new(self):
        self.assertTrue(self.store.add(b"svc", "127.0.0.1", 4242))
        self.assertFalse(self.store.add(b"svc", "127.0.0.1", 4242))
        self.clock.advance(10)
        self.assertTrue(self.store.add(b"svc", "127.0.0.1", 4242))

    def test_prune_forgets_names_nobody_reads(self):
        self.store.add(b"a", "127.0.0.1", 1)
        self.store.add(b"b", "127.0.0.1", 2)
        self.clock.advance(11)
        self.store.prune()
        self.assertEqual(len(self.store), 0)

    def test_get_returns_at_most_limit_distinct_peers(self):
        for port in range(1, 151):
            self.store.add(b"svc", "127.0.0.1", port)
        peers = self.store.get(b"svc", limit=100)
        self.assertEqual(len(peers), 100)
        self.assertEqual(len(set(peers)), 100)


class ValueStoreTests(unittest.TestCase):
    def test_key_is_sha1_of_bencoded_value(self):
        self.assertEqual(immutable_key(b"hello"), hashlib.sha1(b"5:hello").digest())
        self.assertEqual(immutable_key(5), hashlib.sha1(b"i5e").digest())

    def test_put_then_get(self):
        store = ValueStore()
        key = store.put(b"hello")
        self.assertEqual(store.get(key), b"hello")
        self.assertIsNone(store.get(bytes(20)))

    def test_least_recently_stored_value_is_evicted(self):
        store = ValueStore(max_values=2)
        first = store.put(b"a")
        store.put(b"b")
        store.put(b"a")
        store.put(b"c")
        self.assertEqual(store.get(first), b"a")
        self.assertIsNone(store.get(immutable_key(b"b")))
