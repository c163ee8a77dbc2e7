"""The grape's DHT node: BEP5 peers and BEP44 immutable values over KRPC.

``DHTNode`` answers ``ping``, ``find_node``, ``get_peers``,
``announce_peer``, ``get`` and ``put`` with the message shapes, tokens and
error strings of bittorrent-dht, and runs the grape's four operations the way
bittorrent-dht does:

- ``announce``: a ``get_peers`` traversal collects write tokens, then
  ``announce_peer`` goes to the k closest nodes that gave one. The grape also
  stores the announcement itself under its bind address (Node's ``-b``
  behaviour), so a lone grape serves its own announces.
- ``lookup``: own peers plus the ``values`` met on a ``get_peers`` traversal;
  concurrent lookups of one name share one traversal.
- ``put`` / ``get``: the same for BEP44 immutable values, keyed by
  sha1(bencode(v)).

As in grenache-grape, the info hash of a service is the raw UTF-8 bytes of
its name, not a sha1. Every node that queries us or answers us joins the
routing table; one that times out during a traversal leaves it.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import random
from dataclasses import dataclass
from typing import Callable, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from twisted_exchange.grape.compact import decode_peers, encode_nodes, encode_peer
from twisted_exchange.grape.errors import GrapeError
from twisted_exchange.grape.krpc import (
    DEFAULT_TIMEOUT, METHOD_UNKNOWN, PROTOCOL_ERROR, Address, KRPCError, KRPCProtocol, Message,
    QueryTimeout)
from twisted_exchange.grape.routing import ID_LENGTH, K, Contact, RoutingTable, distance, is_node_id
from twisted_exchange.grape.store import PeerStore, Value, ValueStore, immutable_key
from twisted_exchange.grape.traversal import Responder, Traversal

CONCURRENCY = 16
LOOKUP_LIMIT = 100
#: Seconds an address that let a query time out is not asked (unless it writes to us first).
SILENCE = 30.0
MAX_VALUE_BYTES = 1000


@dataclass(frozen=True)
class Found:
    """A BEP44 value and the node that returned it (token None when it was us)."""

    node_id: bytes
    token: bytes | None
    value: Value


class Tokens:
    """BEP5 write tokens: sha1(ip + secret), valid for this secret and the last."""

    def __init__(self) -> None:
        self._secrets = [os.urandom(ID_LENGTH), os.urandom(ID_LENGTH)]

    def rotate(self) -> None:
        self._secrets = [os.urandom(ID_LENGTH), self._secrets[0]]

    def issue(self, host: str) -> bytes:
        return self._token(host, self._secrets[0])

    def valid(self, host: str, token: object) -> bool:
        return isinstance(token, bytes) and any(
            hmac.compare_digest(token, self._token(host, secret)) for secret in self._secrets)

    @staticmethod
    def _token(host: str, secret: bytes) -> bytes:
        return hashlib.sha1(host.encode() + secret).digest()


def _required(args: Message, name: bytes, method: str) -> bytes:
    value = args.get(name)
    if not isinstance(value, bytes) or not value:
        raise KRPCError(PROTOCOL_ERROR, f"`{method}` missing required `a.{name.decode()}` field")
    return value


def _name(info_hash: bytes) -> str:
    return info_hash.decode("utf-8", "replace")


class DHTNode:
    """One grape's node in the DHT; ``protocol`` is its UDP KRPC endpoint."""

    log = Logger()

    def __init__(self, *, host: str = "127.0.0.1", bootstrap: Sequence[Address] = (),
                 peer_max_age: float = 120.0, clock: IReactorTime | None = None,
                 node_id: bytes | None = None, rng: random.Random | None = None, k: int = K,
                 concurrency: int = CONCURRENCY, query_timeout: float = DEFAULT_TIMEOUT) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.id = node_id or os.urandom(ID_LENGTH)
        self.host = host
        self.bootstrap = list(bootstrap)
        self.concurrency = concurrency
        self._rng = rng or random.Random()
        self.routing = RoutingTable(self.id, k)
        self.peers = PeerStore(clock, peer_max_age, self._rng)
        self.values = ValueStore()
        self.tokens = Tokens()
        self.protocol = KRPCProtocol(self._on_query, clock, query_timeout)
        self._clock = clock
        #: Addresses that let a query time out, and until when they are not asked again.
        self._silent: dict[Address, float] = {}
        self._lookups: dict[bytes, list[defer.Deferred]] = {}
        self._handlers: dict[bytes, Callable[[Message, Address], Message]] = {
            b"ping": self._on_ping, b"find_node": self._on_find_node,
            b"get_peers": self._on_get_peers, b"announce_peer": self._on_announce_peer,
            b"get": self._on_get, b"put": self._on_put,
        }

    @property
    def port(self) -> int:
        """The bound UDP port."""
        return self.protocol.transport.getHost().port

    # -- talking to other nodes ------------------------------------------------

    def _query(self, address: Address, method: bytes, args: Message) -> defer.Deferred:
        d = self.protocol.query(address, method, {**args, b"id": self.id})
        d.addCallbacks(self._heard_from, self._not_heard_from, callbackArgs=(address,), errbackArgs=(address,))
        return d

    def _heard_from(self, reply: Message, address: Address) -> Message:
        self._learn(reply.get(b"id"), address)
        return reply

    def _not_heard_from(self, failure: Failure, address: Address) -> Failure:
        """Remember an address that let a query time out: a dead grape costs
        one timeout per :data:`SILENCE` seconds, not one per lookup."""
        if failure.check(QueryTimeout):
            self._silent[address] = self._clock.seconds() + SILENCE
        return failure

    def _is_silent(self, address: Address) -> bool:
        until = self._silent.get(address)
        if until is not None and until <= self._clock.seconds():
            del self._silent[address]
            return False
        return until is not None

    def _learn(self, node_id: object, address: Address) -> None:
        if not is_node_id(node_id) or node_id == self.id:
            return
        known = self.routing.get(node_id) is not None
        if self.routing.add(Contact(node_id, *address)) and not known:
            self.log.info("DHT node {node} joined from {host}:{port}",
                          node=node_id.hex(), host=address[0], port=address[1])

    def _drop(self, contact: Contact) -> None:
        if self.routing.get(contact.id) is not None:
            self.routing.remove(contact.id)
            self.log.info("DHT node {node} at {host}:{port} is gone",
                          node=contact.id.hex(), host=contact.host, port=contact.port)

    def traverse(self, target: bytes, method: bytes, args: Message,
                 visit: Callable[[Message], bool] | None = None) -> defer.Deferred:
        """Iterative lookup of ``target``; fires with the (node, reply) pairs."""
        return Traversal(self._query, self.id, target, method, args, self.routing.closest(target),
                         self.bootstrap, self.routing.k, self.concurrency, visit, self._drop,
                         self._is_silent).run()

    def join(self) -> defer.Deferred:
        """Look up our own id via the bootstrap nodes; fires with the table size."""
        d = self.traverse(self.id, b"find_node", {b"target": self.id})
        return d.addCallback(lambda _: len(self.routing))

    def refresh(self) -> defer.Deferred | None:
        """Rejoin when isolated (every known node gone), like bittorrent-dht."""
        self.peers.prune()
        if not len(self.routing) and self.bootstrap:
            return self.join()
        return None

    # -- the grape's operations --------------------------------------------------

    @defer.inlineCallbacks
    def announce(self, info_hash: bytes, port: int):
        """Store ``host:port`` for ``info_hash`` here and on the closest nodes.

        Fires with the number of remote nodes that stored it, or fails with
        GrapeError ``No nodes to query`` / ``All queries failed`` as Node does.
        """
        self._store_peer(info_hash, self.host, port)
        responders = yield self.traverse(info_hash, b"get_peers", {b"info_hash": info_hash})
        hits = yield self._store(info_hash, responders, b"announce_peer",
                                 {b"info_hash": info_hash, b"port": port, b"implied_port": 0})
        return hits

    def lookup(self, info_hash: bytes) -> defer.Deferred:
        """Fires with at most 100 ``"host:port"`` strings, in random order."""
        waiting = self._lookups.get(info_hash)
        d = defer.Deferred()
        if waiting is not None:
            waiting.append(d)
            return d
        self._lookups[info_hash] = [d]
        found: set[tuple[str, int]] = set()

        def collect(reply: Message) -> bool:
            found.update(decode_peers(reply.get(b"values")))
            return True

        def finish(result: object) -> None:
            found.update(self.peers.get(info_hash, LOOKUP_LIMIT))
            addresses = [f"{host}:{port}" for host, port in found]
            chosen = self._rng.sample(addresses, min(LOOKUP_LIMIT, len(addresses)))
            for waiter in self._lookups.pop(info_hash):
                waiter.callback(list(chosen))

        self.traverse(info_hash, b"get_peers", {b"info_hash": info_hash}, collect).addBoth(finish)
        return d

    @defer.inlineCallbacks
    def put(self, value: Value):
        """Store an immutable value here and on the closest nodes; fires with its key."""
        key = self.values.put(value)
        responders = yield self.traverse(key, b"get", {b"target": key})
        yield self._store(key, responders, b"put", {b"v": value})
        return key

    @defer.inlineCallbacks
    def get(self, key: bytes):
        """Fires with a ``Found`` for ``key``, or None when no node has it."""
        value = self.values.get(key)
        if value is not None:
            return Found(self.id, None, value)
        found: list[Found] = []

        def check(reply: Message) -> bool:
            v = reply.get(b"v")
            if isinstance(v, (bytes, int)) and v and immutable_key(v) == key:
                found.append(Found(reply[b"id"], reply.get(b"token"), v))
                return False
            return True

        yield self.traverse(key, b"get", {b"target": key}, check)
        return found[0] if found else None

    def _store(self, target: bytes, responders: list[Responder], method: bytes,
               args: Message) -> defer.Deferred:
        """Send ``method`` with each node's token to the k closest token holders."""
        holders = sorted(((c, r[b"token"]) for c, r in responders if isinstance(r.get(b"token"), bytes)),
                         key=lambda holder: distance(holder[0].id, target))[:self.routing.k]
        if not holders:
            return defer.fail(GrapeError("No nodes to query"))
        sent = [self._query(c.address, method, {**args, b"token": token}) for c, token in holders]
        return defer.DeferredList(sent, consumeErrors=True).addCallback(_count_stored)

    # -- answering other nodes -------------------------------------------------------

    def _on_query(self, method: bytes, args: Message, sender: Address) -> Message:
        self._silent.pop(sender, None)  # back (a restarted grape bootstraps from us): ask it again
        self._learn(args.get(b"id"), sender)
        handler = self._handlers.get(method)
        if handler is None:
            raise KRPCError(METHOD_UNKNOWN, "Method Unknown")
        return handler(args, sender)

    def _on_ping(self, args: Message, sender: Address) -> Message:
        return {b"id": self.id}

    def _on_find_node(self, args: Message, sender: Address) -> Message:
        target = _required(args, b"target", "find_node")
        return {b"id": self.id, b"nodes": encode_nodes(self.routing.closest(target))}

    def _on_get_peers(self, args: Message, sender: Address) -> Message:
        info_hash = _required(args, b"info_hash", "get_peers")
        reply: Message = {b"id": self.id, b"token": self.tokens.issue(sender[0])}
        peers = self.peers.get(info_hash, LOOKUP_LIMIT)
        if peers:
            reply[b"values"] = [encode_peer(host, port) for host, port in peers]
        else:
            reply[b"nodes"] = encode_nodes(self.routing.closest(info_hash))
        return reply

    def _on_announce_peer(self, args: Message, sender: Address) -> Message:
        host = sender[0]
        port = sender[1] if args.get(b"implied_port") else args.get(b"port")
        if not isinstance(port, int) or not 0 < port <= 0xFFFF:
            raise KRPCError(PROTOCOL_ERROR, "`announce_peer` with a bad port")
        info_hash = _required(args, b"info_hash", "announce_peer")
        if not self.tokens.valid(host, _required(args, b"token", "announce_peer")):
            raise KRPCError(PROTOCOL_ERROR, "cannot `announce_peer` with bad token")
        self._store_peer(info_hash, host, port)
        return {b"id": self.id}

    def _store_peer(self, info_hash: bytes, host: str, port: int) -> None:
        if self.peers.add(info_hash, host, port):
            self.log.info("new announce {name} at {host}:{port}", name=_name(info_hash), host=host, port=port)

    def _on_get(self, args: Message, sender: Address) -> Message:
        target = _required(args, b"target", "get")
        reply: Message = {b"id": self.id, b"token": self.tokens.issue(sender[0])}
        value = self.values.get(target)
        if value is None:
            reply[b"nodes"] = encode_nodes(self.routing.closest(target))
        else:
            reply[b"v"] = value
        return reply

    def _on_put(self, args: Message, sender: Address) -> Message:
        value = args.get(b"v")
        if not isinstance(value, (bytes, int)):
            raise KRPCError(PROTOCOL_ERROR, "`put` missing required `a.v` field")
        if not self.tokens.valid(sender[0], _required(args, b"token", "put")):
            raise KRPCError(PROTOCOL_ERROR, "cannot `put` with bad token")
        if isinstance(value, bytes) and len(value) > MAX_VALUE_BYTES:
            raise KRPCError(205, "data payload too large")
        if b"k" in args or b"sig" in args:
            raise KRPCError(400, "verification not supported")
        self.values.put(value)
        return {b"id": self.id}


def _count_stored(results: list[tuple[bool, object]]) -> int:
    """k-rpc's ``queryAll`` verdict: the number stored, or the error Node reports."""
    hits = sum(1 for ok, _ in results if ok)
    if hits:
        return hits
    refusals = [f.value for ok, f in results
                if not ok and isinstance(f, Failure) and isinstance(f.value, KRPCError)
                and 300 <= f.value.code < 400]
    raise GrapeError(str(refusals[-1]) if refusals else "All queries failed")
