"""What a grape stores for others: announced peers and BEP44 immutable values.

``PeerStore`` forgets an announcement ``max_age`` seconds after its last
announce, exactly (Node's record-cache forgets between 2/3 and 4/3 of it, and
the Node CLI never does; a fixed TTL is easier to reason about). Time comes
from an injected clock, so expiry is tested with ``task.Clock``.

``ValueStore`` keeps the most recently stored ``max_values`` immutable values
by key = sha1(bencode(v)), like bittorrent-dht's LRU.
"""
from __future__ import annotations

import hashlib
import random
from collections import OrderedDict

from fastbencode import bencode
from twisted.internet.interfaces import IReactorTime

Peer = tuple[str, int]
Value = bytes | int


class PeerStore:
    """Announced (host, port) peers per info hash, each with an expiry time.

    Reads prune what has expired, so an expired peer is never returned;
    ``prune()`` also sweeps names nobody reads any more.
    """

    def __init__(self, clock: IReactorTime, max_age: float, rng: random.Random | None = None,
                 max_peers: int = 10000) -> None:
        self._clock = clock
        self._max_age = max_age
        self._rng = rng or random.Random()
        self._max_peers = max_peers
        self._peers: dict[bytes, dict[Peer, float]] = {}

    def add(self, info_hash: bytes, host: str, port: int) -> bool:
        """Store or refresh one announcement; True if it was not stored before."""
        self._prune(info_hash)
        peers = self._peers.setdefault(info_hash, {})
        new = peers.pop((host, port), None) is None
        if len(peers) >= self._max_peers:
            return False
        peers[(host, port)] = self._clock.seconds() + self._max_age
        return new

    def get(self, info_hash: bytes, limit: int = 100) -> list[Peer]:
        """At most ``limit`` live peers of ``info_hash``, in random order."""
        self._prune(info_hash)
        peers = list(self._peers.get(info_hash, ()))
        return self._rng.sample(peers, min(limit, len(peers)))

    def _prune(self, info_hash: bytes) -> None:
        peers = self._peers.get(info_hash)
        if peers is None:
            return
        now = self._clock.seconds()
        for peer in [p for p, expiry in peers.items() if expiry <= now]:
            del peers[peer]
        if not peers:
            del self._peers[info_hash]

    def prune(self) -> None:
        """Drop every expired announcement."""
        for info_hash in list(self._peers):
            self._prune(info_hash)

    def __len__(self) -> int:
        return sum(len(peers) for peers in self._peers.values())


def immutable_key(value: Value) -> bytes:
    """BEP44 key of an immutable value: sha1 of its bencoding."""
    return hashlib.sha1(bencode(value)).digest()


class ValueStore:
    """BEP44 immutable values by key, least recently stored evicted first."""

    def __init__(self, max_values: int = 5000) -> None:
        self._max_values = max_values
        self._values: OrderedDict[bytes, Value] = OrderedDict()

    def put(self, value: Value) -> bytes:
        key = immutable_key(value)
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self._max_values:
            self._values.popitem(last=False)
        return key

    def get(self, key: bytes) -> Value | None:
        return self._values.get(key)
