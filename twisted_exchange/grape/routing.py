"""Kademlia routing table: the DHT nodes this grape knows, by XOR distance.

Contacts live in k-buckets indexed by the length of the id prefix they share
with ours, which is the fully split k-bucket tree of k-bucket/k-rpc. A full
bucket keeps its older contacts (Kademlia's preference for nodes that have
stayed up); contacts that time out during a traversal are removed, which makes
room. ``closest`` sorts every contact by distance: O(n log n) for n contacts,
at most 160·k and in practice a handful, simpler than walking the buckets.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

ID_LENGTH = 20
K = 20


@dataclass
class Contact:
    """A DHT node: its 20-byte id and UDP address."""

    id: bytes
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


def distance(a: bytes, b: bytes) -> int:
    """XOR distance as k-bucket defines it, also for ids of different lengths.

    Grenache's info hashes are service names of any length: bytes past the
    shorter id count as 0xff, so a longer id is never closer than its prefix.
    """
    common = min(len(a), len(b))
    extra = max(len(a), len(b)) - common
    xor = int.from_bytes(a[:common], "big") ^ int.from_bytes(b[:common], "big")
    return (xor << 8 * extra) | ((1 << 8 * extra) - 1)


def is_node_id(value: object) -> bool:
    """True for a well-formed node id (20 bytes)."""
    return isinstance(value, bytes) and len(value) == ID_LENGTH


class RoutingTable:
    """The k-buckets of the node whose id is ``own_id``."""

    def __init__(self, own_id: bytes, k: int = K) -> None:
        self.own_id = own_id
        self.k = k
        self._buckets: dict[int, OrderedDict[bytes, Contact]] = {}

    def _bucket_index(self, node_id: bytes) -> int:
        return ID_LENGTH * 8 - distance(self.own_id, node_id).bit_length()

    def add(self, contact: Contact) -> bool:
        """Learn or refresh ``contact``; False if ignored (our own id, full bucket)."""
        if contact.id == self.own_id:
            return False
        bucket = self._buckets.setdefault(self._bucket_index(contact.id), OrderedDict())
        if contact.id in bucket:
            bucket[contact.id] = contact
            bucket.move_to_end(contact.id)
            return True
        if len(bucket) >= self.k:
            return False
        bucket[contact.id] = contact
        return True

    def get(self, node_id: bytes) -> Contact | None:
        return self._buckets.get(self._bucket_index(node_id), {}).get(node_id)

    def remove(self, node_id: bytes) -> None:
        self._buckets.get(self._bucket_index(node_id), {}).pop(node_id, None)

    def closest(self, target: bytes, n: int | None = None) -> list[Contact]:
        """The ``n`` (default k) contacts closest to ``target``, closest first."""
        everyone = [c for bucket in self._buckets.values() for c in bucket.values()]
        everyone.sort(key=lambda c: distance(c.id, target))
        return everyone[:self.k if n is None else n]

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())
