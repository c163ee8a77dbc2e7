"""The peer's RPC surface: one Grenache payload in, one reply or error out.

The payload is parsed once by :func:`~twisted_exchange.peer.protocol.parse_request`;
each typed request then has one handler here.  Client commands go through
Raft and are answered after this peer applied them; queries are answered
from this peer's own book.  Every refusal is an exception with an ERR_
``code`` that the RPC server sends as ``ERR_<CODE>: reason``.

Book queries run one per reactor turn, in arrival order: one costs up to
tens of milliseconds on a large book (10,000 open orders), and a burst
handled in one turn would starve the Raft tick long enough to depose the
leader.  At most :data:`MAX_WAITING_QUERIES` wait; past that ERR_BUSY.
``status`` is O(1) and answered at once, so monitoring sees a busy peer.

In secure mode (``authenticated``: the server is TLS-only, every caller
presents a certificate from the cluster CA) who may do what follows from
the caller's ``Identity``, never from a field of the payload: only peer
``p`` may send a ``raft.batch`` (or a snapshot chunk, or a ``peer.hello``:
where ``p`` serves) from ``p``; only client ``c`` may submit,
cancel or amend as ``c`` (a command without ``client`` is ``c``'s, one
naming another client is refused); only a client named in
``admin_clients`` (the peer's ``--admin-client``, default ``cli``: the
identity exchangectl uses) may change the membership; any identity may
query.  Everything else is ERR_FORBIDDEN and changes nothing.  Without
identities (plain mode) a ``peer.hello`` is refused: a claim of where a
peer serves is worth only what proves who makes it.
"""
from __future__ import annotations

from typing import Any, Protocol

from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IReactorTime

from twisted_exchange.grenache.tls import Caller
from twisted_exchange.peer import protocol
from twisted_exchange.peer.protocol import RequestError
from twisted_exchange.peer.snapshots import SnapshotAssembler
from twisted_exchange.pki import CLIENT, PEER, Identity


class Node(Protocol):
    """What the API needs from the peer service."""

    node_id: str

    def propose(self, command: dict) -> Deferred: ...
    def deliver(self, sender: str, messages: list) -> None: ...
    def deliver_and_reply(self, sender: str, messages: list) -> Deferred: ...
    def change_membership(self, change: str, peer: str) -> Deferred: ...
    def serves_at(self, peer: str, address: str) -> None: ...
    def status(self) -> dict: ...
    @property
    def exchange(self) -> Any: ...
    @property
    def applied(self) -> int: ...


#: Book queries waiting for their turn before new ones get ERR_BUSY.
MAX_WAITING_QUERIES = 1000


class PeerAPI:
    """Dispatches RPC payloads to ``node``: ``api(key, payload)`` is the RPC handler."""

    def __init__(self, node: Node, reactor: IReactorTime, authenticated: bool = False,
                 admin_clients: frozenset[str] = frozenset({"cli"})) -> None:
        self._node = node
        self._reactor = reactor
        self._authenticated = authenticated
        self._admins = frozenset(Identity(CLIENT, name) for name in admin_clients)
        self._turns = DeferredSemaphore(1)
        self._snapshots = SnapshotAssembler()

    def __call__(self, key: str, payload: Any, caller: Caller | None = None) -> Any:
        if self._authenticated:
            payload = _as_caller(payload, caller)
        request = protocol.parse_request(payload)
        if self._authenticated:
            _authorize(request, caller.identity)
        elif isinstance(request, protocol.PeerHello):
            raise RequestError(protocol.ERR_FORBIDDEN, "peer.hello needs a peer's certificate (secure mode)")
            if isinstance(request, protocol.MemberChange) and caller.identity not in self._admins:
                raise RequestError(protocol.ERR_FORBIDDEN, f"{caller.identity} may not change the membership "
                                                           "(see the peers' --admin-client)")
        handler = self._HANDLERS[type(request)]
        if type(request) not in self._ONE_PER_TURN:
            return handler(self, request)
        if len(self._turns.waiting) >= MAX_WAITING_QUERIES:
            raise RequestError(protocol.ERR_BUSY, f"{MAX_WAITING_QUERIES} queries already wait; retry")
        return self._turns.run(task.deferLater, self._reactor, 0, handler, self, request)

    def _command(self, request: protocol.Command) -> Deferred:
        return self._node.propose(request.command).addCallback(_result_or_error)

    def _raft_batch(self, request: protocol.RaftBatch) -> dict | Deferred:
        self._addressed_here(request.to)
        answer = {"ok": True, "id": self._node.node_id}
        if not request.replies:
            self._node.deliver(request.sender, request.messages)
            return answer
        replied = self._node.deliver_and_reply(request.sender, request.messages)
        return replied.addCallback(lambda messages: {**answer, "messages": messages})

    def _snapshot_chunk(self, request: protocol.SnapshotChunk) -> dict:
        self._addressed_here(request.to)
        wanted, message = self._snapshots.receive(request)
        if message is not None:
            self._node.deliver(request.sender, [message])
        return {"ok": True, "id": self._node.node_id, "next": wanted}

    def _hello(self, request: protocol.PeerHello) -> dict:
        self._node.serves_at(request.sender, request.address)
        return {"ok": True, "id": self._node.node_id}

    def _addressed_here(self, to: str) -> None:
        """ERR_WRONG_PEER unless Raft traffic for ``to`` reached that peer (a stale announcement)."""
        if to != self._node.node_id:
            raise RequestError(protocol.ERR_WRONG_PEER, f"this is {self._node.node_id}, not {to!r}")

    def _member(self, request: protocol.MemberChange) -> Deferred:
        return self._node.change_membership(request.change, request.peer).addCallback(_result_or_error)

    def _book(self, request: protocol.BookQuery) -> dict:
        book = self._node.exchange.book(request.symbol, depth=request.depth)
        return {**self._stamp(), "symbol": request.symbol, "bids": book["bids"], "asks": book["asks"]}

    def _orders(self, request: protocol.OrdersQuery) -> dict:
        orders = self._node.exchange.open_orders(symbol=request.symbol, client=request.client,
                                                 limit=request.limit)
        return {**self._stamp(), "orders": orders}

    def _order(self, request: protocol.OrderQuery) -> dict:
        order = self._node.exchange.order(request.order_id)
        if order is None:
            raise RequestError(protocol.ERR_UNKNOWN_ORDER, f"no order {request.order_id!r}")
        return {**self._stamp(), "order": order}

    def _trades(self, request: protocol.TradesQuery) -> dict:
        trades = self._node.exchange.trades(request.symbol, limit=request.limit)
        return {**self._stamp(), "symbol": request.symbol, "trades": trades}

    def _status(self, request: protocol.StatusQuery) -> dict:
        return self._node.status()

    def _stamp(self) -> dict:
        return {"peer": self._node.node_id, "applied": self._node.applied}

    _HANDLERS = {protocol.Command: _command, protocol.RaftBatch: _raft_batch,
                 protocol.SnapshotChunk: _snapshot_chunk,
                 protocol.BookQuery: _book, protocol.OrdersQuery: _orders,
                 protocol.OrderQuery: _order, protocol.TradesQuery: _trades,
                 protocol.StatusQuery: _status, protocol.MemberChange: _member,
                 protocol.PeerHello: _hello}
    _ONE_PER_TURN = frozenset({protocol.BookQuery, protocol.OrdersQuery, protocol.OrderQuery,
                               protocol.TradesQuery})


def _as_caller(payload: Any, caller: Caller | None) -> Any:
    """The payload, with a command's missing ``client`` taken from the credential."""
    identity = caller.identity if caller is not None else None
    if identity is None:
        raise RequestError(protocol.ERR_FORBIDDEN, "a certificate naming a peer or client of this cluster is required")
    if (type(payload) is dict and payload.get("action") in protocol.COMMANDS
            and identity.kind == CLIENT and "client" not in payload):
        return {**payload, "client": identity.name}
    return payload


def _authorize(request: protocol.Request, identity: Identity) -> None:
    """ERR_FORBIDDEN unless ``identity`` may make ``request`` (see the module)."""
    if isinstance(request, (protocol.RaftBatch, protocol.SnapshotChunk, protocol.PeerHello)):
        if identity != Identity(PEER, request.sender):
            raise RequestError(protocol.ERR_FORBIDDEN, f"{identity} may not speak as peer {request.sender!r}")
    elif isinstance(request, protocol.Command):
        if identity != Identity(CLIENT, request.command["client"]):
            raise RequestError(protocol.ERR_FORBIDDEN,
                               f"{identity} may not act as client {request.command['client']!r}")


def _result_or_error(result: dict) -> dict:
    if result.get("ok"):
        return result
    code, _, reason = str(result.get("error", "ERR_INTERNAL: no result")).partition(": ")
    raise RequestError(code, reason)
