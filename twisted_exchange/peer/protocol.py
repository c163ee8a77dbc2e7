"""The peer protocol: its vocabulary, its limits, and the parser at its edge.

Everything a peer says or hears over Grenache is named here once: the
services a peer announces, the actions a payload may carry, the ``ERR_``
codes of refusals, and the limits of every field.  :func:`parse_request`
turns an untrusted payload into one typed request, or raises
:class:`RequestError`; nothing past it handles unchecked data.

What passes is exactly what we accept: a JSON object with a known
``action`` and exactly that action's fields, strings where strings are
required (bounded, printable), integers that are ints within their range,
no numbers where strings belong (so no ``1e999``), no unknown fields (so no
nesting beyond the schema).  Client commands pass the core's own
:func:`~twisted_exchange.core.commands.canonical_command`, so what a client
sends either is refused here or enters the log as a value every peer can
encode, send and apply.  Raft batches are parsed message by message by
:mod:`twisted_exchange.replication.messages`.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Union

from twisted_exchange.core.commands import MAX_CLIENT, MAX_ORDER_ID, canonical_command, is_symbol
from twisted_exchange.core.errors import (
    FOK_UNFILLABLE, INVALID_ORDER, INVALID_QUERY, NOT_OWNER, ORDER_CLOSED, POST_ONLY_WOULD_TAKE,
    UNKNOWN_ORDER, ExchangeError,
)
from twisted_exchange.grenache.errors import ERR_BUSY as BUSY
from twisted_exchange.grenache.tls import Caller
from twisted_exchange.pki import PEER
from twisted_exchange.replication.configuration import CHANGES, MEMBER_ID
from twisted_exchange.replication.messages import MessageError
from twisted_exchange.replication.replica import MEMBERSHIP, NO_LEADER, NOT_LEADER
from twisted_exchange.replication.sessions import REQUEST_REUSED, STALE_REQUEST, TOO_MANY_CLIENTS

# -- services ---------------------------------------------------------------

#: The Grenache service every peer announces; a client calls it to reach any peer.
SERVICE = "exchange"


def service_name(peer_id: str | None) -> str:
    """The Grenache service of ``peer_id`` (``exchange:<id>``), or of any peer for None."""
    return SERVICE if peer_id is None else f"{SERVICE}:{peer_id}"


# -- actions ----------------------------------------------------------------

COMMANDS = frozenset({"submit", "cancel", "amend"})
QUERIES = frozenset({"book", "orders", "order", "trades", "status"})
RAFT_BATCH = "raft.batch"
SNAPSHOT_CHUNK = "raft.snapshot_chunk"   # a Raft snapshot in pieces (peer/snapshots.py)
#: A membership change (replication.configuration.CHANGES), for the cluster's operators only.
MEMBER = "member"
#: A peer telling another where it serves, from its certificate (peer/service.py).
PEER_HELLO = "peer.hello"
ACTIONS = COMMANDS | QUERIES | {RAFT_BATCH, SNAPSHOT_CHUNK, MEMBER, PEER_HELLO}

# -- refusals: every one reaches clients as "ERR_<CODE>: reason" -------------
# Defined where they are raised, named here: this list is the whole vocabulary.

ERR_BAD_REQUEST = "ERR_BAD_REQUEST"          # not a JSON object with a string action
ERR_UNKNOWN_ACTION = "ERR_UNKNOWN_ACTION"    # an action we do not serve
ERR_WRONG_PEER = "ERR_WRONG_PEER"            # a raft.batch for another peer id
ERR_FORBIDDEN = "ERR_FORBIDDEN"              # the caller's credential may not do this
ERR_BAD_MESSAGE = MessageError.code          # a raft.batch that does not parse
ERR_INVALID_ORDER = INVALID_ORDER            # a command the core refuses to parse
ERR_INVALID_QUERY = INVALID_QUERY            # a query with bad or unknown fields
ERR_UNKNOWN_ORDER = UNKNOWN_ORDER            # an order id never seen (or forgotten)
ERR_NOT_OWNER = NOT_OWNER                    # another client's order
ERR_ORDER_CLOSED = ORDER_CLOSED              # a filled or cancelled order
ERR_POST_ONLY_WOULD_TAKE = POST_ONLY_WOULD_TAKE
ERR_FOK_UNFILLABLE = FOK_UNFILLABLE
ERR_NO_LEADER = NO_LEADER                    # no leader long enough: retry, same request id
ERR_STALE_REQUEST = STALE_REQUEST            # a request id below what its client's session keeps
ERR_REQUEST_REUSED = REQUEST_REUSED          # a request id reused for another command
ERR_TOO_MANY_CLIENTS = TOO_MANY_CLIENTS      # the session table is full: new clients refused
ERR_BUSY = BUSY                              # too many queries or bytes in flight: retry
ERR_NOT_LEADER = NOT_LEADER                  # a membership change sent to a follower: names the leader
ERR_MEMBERSHIP = MEMBERSHIP                  # a membership change the rules refuse now

# -- limits -----------------------------------------------------------------

DEFAULT_SYMBOL = "BTCUSD"
DEFAULT_DEPTH = 10
MAX_DEPTH = 1000
DEFAULT_TRADES = 100
MAX_TRADES = 1000
DEFAULT_ORDERS = 1000
MAX_ORDERS = 10_000
#: Messages one raft.batch may carry (the sender's queue holds 256 per peer).
MAX_BATCH = 1024
#: Largest RPC body a peer accepts: a raft.batch of catch-up appends (up to
#: 4096 entries each) must fit; snapshots travel in chunks (peer/snapshots.py).
MAX_BODY = 64 << 20
#: Largest RPC body from a client (secure mode: any identity but a peer's).
#: A command or query is under a kilobyte; the cap keeps an authenticated
#: client from making a peer decode 64 MiB of adversarial JSON (about 1 GB
#: while it is decoded).  Plain mode knows no identities: everyone gets MAX_BODY.
MAX_CLIENT_BODY = 1 << 20
#: Peer ids, as the command line accepts them.
MAX_PEER_ID = 32
#: A snapshot's encoded size, assembled from its chunks (the state must fit in memory anyway).
MAX_SNAPSHOT_BYTES = 1 << 30
#: Bytes of snapshot one raft.snapshot_chunk may carry (base64 in the payload).
MAX_CHUNK_BYTES = 4 << 20
#: A snapshot transfer's id.
MAX_TRANSFER_ID = 64
#: A peer's "host:port": a DNS name's 253 characters, a colon and a port.
MAX_ADDRESS = 259


def max_body_for(caller: Caller) -> int:
    """The RPC body cap of ``caller``'s connection (``RPCServer(max_body_for=)``)."""
    identity = caller.identity
    return MAX_BODY if identity is None or identity.kind == PEER else MAX_CLIENT_BODY


class RequestError(Exception):
    """A refused request; ``str()`` is the Grenache error string."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code


# -- typed requests -----------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """submit, cancel or amend: ``command`` is canonical (see the module docstring)."""

    command: dict


@dataclass(frozen=True)
class BookQuery:
    symbol: str
    depth: int


@dataclass(frozen=True)
class OrdersQuery:
    symbol: str | None
    client: str | None
    limit: int


@dataclass(frozen=True)
class OrderQuery:
    order_id: str


@dataclass(frozen=True)
class TradesQuery:
    symbol: str
    limit: int


@dataclass(frozen=True)
class StatusQuery:
    pass


@dataclass(frozen=True)
class RaftBatch:
    """Raft messages from peer ``sender`` to peer ``to``; each is parsed by its receiver.

    With ``replies`` the sender takes the receiver's next messages to it in
    the answer (after the receiver persisted what they depend on), rather
    than as a call of their own.
    """

    sender: str
    to: str
    messages: list
    replies: bool = False


@dataclass(frozen=True)
class SnapshotChunk:
    """Bytes ``offset``.. of transfer ``transfer``: a ``raft.snapshot`` message of
    ``size`` bytes from peer ``sender`` to peer ``to``, encoded and cut in pieces."""

    sender: str
    to: str
    transfer: str
    offset: int
    size: int
    data: bytes


@dataclass(frozen=True)
class MemberChange:
    """Add (as a learner), promote or remove one member of the cluster."""

    change: str
    peer: str


@dataclass(frozen=True)
class PeerHello:
    """Peer ``sender`` serves Grenache RPC at ``address`` (``host:port``)."""

    sender: str
    address: str


Request = Union[Command, BookQuery, OrdersQuery, OrderQuery, TradesQuery, StatusQuery, RaftBatch,
                SnapshotChunk, MemberChange, PeerHello]


def parse_request(payload: Any) -> Request:
    """The typed request in ``payload``, or :class:`RequestError` saying why not."""
    if type(payload) is not dict or type(payload.get("action")) is not str:
        raise RequestError(ERR_BAD_REQUEST, "payload must be a JSON object with a string action")
    action = payload["action"]
    if action in COMMANDS:
        try:
            return Command(canonical_command(payload))
        except ExchangeError as error:
            raise RequestError(error.code, error.reason) from None
    parser = _PARSERS.get(action)
    if parser is None:
        raise RequestError(ERR_UNKNOWN_ACTION, f"unknown action {action[:40]!r}")
    return parser(payload)


def _book(payload: dict) -> BookQuery:
    _fields(payload, {"symbol", "depth"})
    return BookQuery(_symbol(payload.get("symbol", DEFAULT_SYMBOL)),
                     _bounded(payload, "depth", DEFAULT_DEPTH, MAX_DEPTH))


def _orders(payload: dict) -> OrdersQuery:
    _fields(payload, {"symbol", "client", "limit"})
    symbol = payload.get("symbol")
    client = payload.get("client")
    if client is not None and not _is_text(client, MAX_CLIENT):
        _invalid(f"client must be a printable string of 1 to {MAX_CLIENT} characters")
    return OrdersQuery(None if symbol is None else _symbol(symbol), client,
                       _bounded(payload, "limit", DEFAULT_ORDERS, MAX_ORDERS))


def _order(payload: dict) -> OrderQuery:
    _fields(payload, {"order_id"}, required=True)
    order_id = payload["order_id"]
    if not _is_text(order_id, MAX_ORDER_ID):
        _invalid(f"order_id must be a printable string of 1 to {MAX_ORDER_ID} characters")
    return OrderQuery(order_id)


def _trades(payload: dict) -> TradesQuery:
    _fields(payload, {"symbol", "limit"})
    return TradesQuery(_symbol(payload.get("symbol", DEFAULT_SYMBOL)),
                       _bounded(payload, "limit", DEFAULT_TRADES, MAX_TRADES))


def _status(payload: dict) -> StatusQuery:
    _fields(payload, set())
    return StatusQuery()


def _raft_batch(payload: dict) -> RaftBatch:
    if payload.keys() - {"replies"} != {"action", "from", "to", "messages"}:
        raise RequestError(ERR_BAD_MESSAGE, "raft.batch takes exactly from, to, messages and optionally replies")
    if payload.get("replies", True) is not True:
        raise RequestError(ERR_BAD_MESSAGE, "replies, when given, must be true")
    sender, to, messages = payload["from"], payload["to"], payload["messages"]
    if not (_is_text(sender, MAX_PEER_ID) and _is_text(to, MAX_PEER_ID)):
        raise RequestError(ERR_BAD_MESSAGE, f"from and to must be peer ids of 1 to {MAX_PEER_ID} characters")
    if type(messages) is not list or len(messages) > MAX_BATCH:
        raise RequestError(ERR_BAD_MESSAGE, f"messages must be a list of at most {MAX_BATCH}")
    return RaftBatch(sender, to, messages, "replies" in payload)


def _snapshot_chunk(payload: dict) -> SnapshotChunk:
    if payload.keys() != {"action", "from", "to", "transfer", "offset", "size", "data"}:
        raise RequestError(ERR_BAD_MESSAGE, "raft.snapshot_chunk takes exactly from, to, transfer,"
                                            " offset, size and data")
    sender, to, transfer = payload["from"], payload["to"], payload["transfer"]
    offset, size, data = payload["offset"], payload["size"], payload["data"]
    if not (_is_text(sender, MAX_PEER_ID) and _is_text(to, MAX_PEER_ID)
            and _is_text(transfer, MAX_TRANSFER_ID)):
        raise RequestError(ERR_BAD_MESSAGE, "from, to and transfer must be short printable strings")
    if not (type(size) is int and 0 < size <= MAX_SNAPSHOT_BYTES and type(offset) is int and 0 <= offset < size):
        raise RequestError(ERR_BAD_MESSAGE, f"need 0 <= offset < size <= {MAX_SNAPSHOT_BYTES}")
    if type(data) is not str or not 0 < len(data) <= (MAX_CHUNK_BYTES + 2) // 3 * 4:
        raise RequestError(ERR_BAD_MESSAGE, f"data must be base64 of 1 to {MAX_CHUNK_BYTES} bytes")
    try:
        chunk = base64.b64decode(data, validate=True)
    except ValueError:
        raise RequestError(ERR_BAD_MESSAGE, "data must be base64") from None
    return SnapshotChunk(sender, to, transfer, offset, size, chunk)


def _member(payload: dict) -> MemberChange:
    _fields(payload, {"change", "peer"}, required=True)
    if payload["change"] not in CHANGES:
        _invalid(f"change must be one of {', '.join(CHANGES)}")
    if type(payload["peer"]) is not str or not MEMBER_ID.match(payload["peer"]):
        _invalid(f"peer must match {MEMBER_ID.pattern}")
    return MemberChange(payload["change"], payload["peer"])


def _peer_hello(payload: dict) -> PeerHello:
    if payload.keys() != {"action", "from", "address"}:
        raise RequestError(ERR_BAD_MESSAGE, "peer.hello takes exactly from and address")
    sender, address = payload["from"], payload["address"]
    if not _is_text(sender, MAX_PEER_ID):
        raise RequestError(ERR_BAD_MESSAGE, f"from must be a peer id of 1 to {MAX_PEER_ID} characters")
    if not (_is_text(address, MAX_ADDRESS) and is_address(address)):
        raise RequestError(ERR_BAD_MESSAGE, "address must be HOST:PORT")
    return PeerHello(sender, address)


_PARSERS = {"book": _book, "orders": _orders, "order": _order, "trades": _trades,
            "status": _status, RAFT_BATCH: _raft_batch, SNAPSHOT_CHUNK: _snapshot_chunk, MEMBER: _member,
            PEER_HELLO: _peer_hello}


def is_address(text: str) -> bool:
    """Is ``text`` a ``host:port`` a peer could serve on (no spaces, a port of 1 to 65535)?"""
    host, colon, port = text.rpartition(":")
    return bool(colon and host and " " not in host and port.isdigit() and len(port) <= 5
                and 0 < int(port) < 65536)


def _fields(payload: dict, fields: set[str], required: bool = False) -> None:
    """Only ``fields`` besides ``action``; all of them if ``required``."""
    unknown = payload.keys() - fields - {"action"}
    if unknown:
        _invalid("unknown fields: " + ", ".join(sorted(repr(str(k)[:40]) for k in unknown)))
    if required and not fields <= payload.keys():
        _invalid("missing fields: " + ", ".join(sorted(fields - payload.keys())))


def _symbol(value: Any) -> str:
    if not is_symbol(value):
        _invalid("symbol must match [A-Z0-9]{2,12}")
    return value


def _bounded(payload: dict, field: str, default: int, most: int) -> int:
    value = payload.get(field, default)
    if type(value) is not int or not 0 < value <= most:
        _invalid(f"{field} must be an integer from 1 to {most}")
    return value


def _is_text(value: Any, longest: int) -> bool:
    return type(value) is str and 0 < len(value) <= longest and value.isprintable()


def _invalid(reason: str) -> None:
    raise RequestError(ERR_INVALID_QUERY, reason)
