"""One iterative Kademlia lookup, as k-rpc's ``closest`` runs it.

Ask the k known nodes closest to the target, learn closer ones from the
``nodes`` of their replies, ask those, and stop when nobody is left to ask
(or when ``visit`` returns False, e.g. once a BEP44 value is found). When we
know fewer nodes than bootstrap addresses, the bootstrap addresses are asked
too, once. At most ``concurrency`` queries are in flight; a known node that
times out, or answers with another id (it restarted), is reported to
``on_dead`` so the routing table can drop it; addresses for which ``skip``
holds (recently silent) are not asked at all.
"""
from __future__ import annotations

from typing import Callable

from twisted.internet import defer
from twisted.python.failure import Failure

from twisted_exchange.grape.compact import decode_nodes
from twisted_exchange.grape.krpc import Address, Message, QueryTimeout
from twisted_exchange.grape.routing import Contact, distance, is_node_id

Query = Callable[[Address, bytes, Message], defer.Deferred]
Responder = tuple[Contact, Message]


class Traversal:
    """Run ``method(args)`` against the nodes closest to ``target``."""

    def __init__(self, query: Query, own_id: bytes, target: bytes, method: bytes, args: Message,
                 start: list[Contact], bootstrap: list[Address], k: int, concurrency: int,
                 visit: Callable[[Message], bool] | None = None,
                 on_dead: Callable[[Contact], None] | None = None,
                 skip: Callable[[Address], bool] = lambda address: False) -> None:
        self._query = query
        self._own_id = own_id
        self._target = target
        self._method = method
        self._args = args
        self._candidates = {c.id: c for c in start}
        self._bootstrap = bootstrap
        self._bootstrapped = False
        self._k = k
        self._concurrency = concurrency
        self._visit = visit
        self._on_dead = on_dead
        self._skip = skip
        self._asked: set[Address] = set()
        self._in_flight = 0
        self._stopped = False
        self._responders: list[Responder] = []
        self._done = defer.Deferred()

    def run(self) -> defer.Deferred:
        """Fires with every (node, reply) that answered, in arrival order."""
        self._kick()
        return self._done

    def _kick(self) -> None:
        if self._done.called:
            return
        if not self._stopped:
            closest = sorted(self._candidates.values(), key=lambda c: distance(c.id, self._target))[:self._k]
            if len(closest) < max(1, len(self._bootstrap)) and not self._bootstrapped:
                self._bootstrapped = True
                for address in self._bootstrap:
                    self._ask(address, None)
            for contact in closest:
                if self._in_flight >= self._concurrency:
                    break
                self._ask(contact.address, contact)
        if not self._in_flight and not self._done.called:
            self._done.callback(self._responders)

    def _ask(self, address: Address, contact: Contact | None) -> None:
        if address in self._asked:
            return
        self._asked.add(address)
        if self._skip(address):
            return
        self._in_flight += 1
        d = self._query(address, self._method, self._args)
        d.addCallbacks(self._replied, self._failed, callbackArgs=(address, contact), errbackArgs=(contact,))

    def _replied(self, reply: Message, address: Address, contact: Contact | None) -> None:
        self._in_flight -= 1
        node_id = reply.get(b"id")
        if contact is not None and node_id != contact.id and self._on_dead is not None:
            self._on_dead(contact)
        if is_node_id(node_id) and node_id != self._own_id:
            contact = Contact(node_id, *address)
            self._candidates.setdefault(node_id, contact)
            self._responders.append((contact, reply))
        for contact in decode_nodes(reply.get(b"nodes")):
            if contact.id != self._own_id:
                self._candidates.setdefault(contact.id, contact)
        if self._visit is not None and self._visit(reply) is False:
            self._stopped = True
        self._kick()

    def _failed(self, failure: Failure, contact: Contact | None) -> None:
        self._in_flight -= 1
        if contact is not None and failure.check(QueryTimeout) and self._on_dead is not None:
            self._on_dead(contact)
        self._kick()
