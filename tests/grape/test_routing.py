"""Routing table and compact encodings."""
import unittest

from twisted_exchange.grape.compact import decode_nodes, decode_peers, encode_nodes, encode_peer
from twisted_exchange.grape.routing import Contact, RoutingTable, distance


def node_id(first: int, last: int = 0) -> bytes:
    return bytes([first]) + bytes(18) + bytes([last])


class DistanceTests(unittest.TestCase):
    def test_distance_is_xor_of_equal_length_ids(self):
        self.assertEqual(distance(b"\x0f\xf0", b"\xff\x00"), 0xF0F0)

    def test_distance_is_symmetric_and_zero_only_to_itself(self):
        a, b = node_id(1, 2), node_id(3, 4)
        self.assertEqual(distance(a, b), distance(b, a))
        self.assertEqual(distance(a, a), 0)

    def test_bytes_past_the_shorter_id_count_as_0xff(self):
        self.assertEqual(distance(b"svc", b"svc\x00\x01"), 0xFFFF)
        self.assertLess(distance(b"svc", b"svc\x00"), distance(b"svc", b"svd\x00"))


class RoutingTableTests(unittest.TestCase):
    def setUp(self):
        self.table = RoutingTable(node_id(0), k=2)

    def test_closest_orders_contacts_by_distance_to_target(self):
        for first in (0x80, 0x01, 0x40):
            self.table.add(Contact(node_id(first), "127.0.0.1", 1000 + first))
        self.assertEqual([c.id[0] for c in self.table.closest(node_id(0x41), 3)], [0x40, 0x01, 0x80])

    def test_own_id_is_never_added(self):
        self.assertFalse(self.table.add(Contact(node_id(0), "127.0.0.1", 1)))
        self.assertEqual(len(self.table), 0)

    def test_full_bucket_keeps_its_older_contacts(self):
        added = [self.table.add(Contact(node_id(0x80, n), "127.0.0.1", 1000 + n)) for n in range(3)]
        self.assertEqual(added, [True, True, False])
        self.assertIsNone(self.table.get(node_id(0x80, 2)))

    def test_removal_makes_room_in_a_full_bucket(self):
        for n in range(2):
            self.table.add(Contact(node_id(0x80, n), "127.0.0.1", 1000 + n))
        self.table.remove(node_id(0x80, 0))
        self.assertTrue(self.table.add(Contact(node_id(0x80, 2), "127.0.0.1", 1002)))

    def test_readding_a_contact_updates_its_address(self):
        self.table.add(Contact(node_id(0x80), "127.0.0.1", 1))
        self.table.add(Contact(node_id(0x80), "127.0.0.2", 2))
        self.assertEqual(self.table.get(node_id(0x80)).address, ("127.0.0.2", 2))
        self.assertEqual(len(self.table), 1)


class CompactTests(unittest.TestCase):
    def test_peer_is_ip_then_big_endian_port(self):
        self.assertEqual(encode_peer("127.0.0.1", 4242), b"\x7f\x00\x00\x01\x10\x92")

    def test_peers_round_trip_and_port_zero_is_skipped(self):
        values = [encode_peer("10.0.0.1", 80), encode_peer("10.0.0.2", 0)]
        self.assertEqual(decode_peers(values), [("10.0.0.1", 80)])

    def test_malformed_peer_values_decode_to_what_precedes_them(self):
        self.assertEqual(decode_peers([encode_peer("10.0.0.1", 80), b"\x01"]), [("10.0.0.1", 80)])
        self.assertEqual(decode_peers(b"not a list"), [])

    def test_nodes_round_trip_and_truncated_tail_is_dropped(self):
        contacts = [Contact(node_id(1), "127.0.0.1", 20001), Contact(node_id(2), "10.1.2.3", 6881)]
        blob = encode_nodes(contacts)
        self.assertEqual(len(blob), 52)
        self.assertEqual(decode_nodes(blob + b"\x00" * 7), contacts)
        self.assertEqual(decode_nodes(12), [])
