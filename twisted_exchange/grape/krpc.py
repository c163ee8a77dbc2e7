"""KRPC (BEP5): bencoded queries, replies and errors over UDP.

``KRPCProtocol`` is the transport half of the DHT: it numbers outgoing
queries with 2-byte transaction ids, matches replies to them by id and
source host (as k-rpc-socket does), fails them after ``timeout`` seconds on
the injected clock, and hands incoming queries to a handler whose return
value becomes the reply and whose ``KRPCError`` becomes an error reply.
Datagrams that are not bencoded dicts with a transaction id are ignored:
there is nobody to answer.
"""
from __future__ import annotations

import struct
from typing import Callable

from fastbencode import bdecode, bencode
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

Address = tuple[str, int]
Message = dict[bytes, object]

GENERIC_ERROR = 201
SERVER_ERROR = 202
PROTOCOL_ERROR = 203
METHOD_UNKNOWN = 204
DEFAULT_TIMEOUT = 2.0

_TID = struct.Struct(">H")


class KRPCError(Exception):
    """A KRPC error ``[code, message]``, received from a node or to send to one."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class QueryTimeout(Exception):
    """A query got no reply within the protocol's timeout."""


QueryHandler = Callable[[bytes, Message, Address], Message]


class KRPCProtocol(DatagramProtocol):
    """One UDP socket's KRPC transactions, both directions."""

    log = Logger()
    noisy = False

    def __init__(self, handler: QueryHandler, clock: IReactorTime,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self._handler = handler
        self._clock = clock
        self._timeout = timeout
        self._pending: dict[bytes, tuple[str, defer.Deferred, IDelayedCall]] = {}
        self._last_tid = 0

    def query(self, address: Address, method: bytes, args: Message) -> defer.Deferred:
        """Send ``method`` with ``args``; fires with the reply's ``r`` dict.

        Fails with ``KRPCError`` on an error reply, ``QueryTimeout`` when no
        reply comes in time, or the socket error when it cannot be sent.
        """
        tid = self._next_tid()
        try:
            self.transport.write(bencode({b"t": tid, b"y": b"q", b"q": method, b"a": args}), address)
        except (OSError, AttributeError, ValueError, TypeError, OverflowError) as e:
            return defer.fail(e)
        d = defer.Deferred(lambda _: self._forget(tid))
        timer = self._clock.callLater(self._timeout, self._expire, tid)
        self._pending[tid] = (address[0], d, timer)
        return d

    def _next_tid(self) -> bytes:
        for _ in range(0x10000):
            self._last_tid = self._last_tid % 0xFFFF + 1
            tid = _TID.pack(self._last_tid)
            if tid not in self._pending:
                return tid
        raise KRPCError(SERVER_ERROR, "no free transaction id")

    def _forget(self, tid: bytes) -> tuple[str, defer.Deferred, IDelayedCall] | None:
        entry = self._pending.pop(tid, None)
        if entry is not None and entry[2].active():
            entry[2].cancel()
        return entry

    def _expire(self, tid: bytes) -> None:
        entry = self._pending.pop(tid, None)
        if entry is not None:
            entry[1].errback(QueryTimeout(f"KRPC query timed out after {self._timeout}s"))

    def datagramReceived(self, datagram: bytes, address: Address) -> None:
        try:
            message = bdecode(datagram)
        except Exception:
            self.log.debug("ignored undecodable datagram from {address}", address=address)
            return
        if not isinstance(message, dict) or not isinstance(message.get(b"t"), bytes):
            return
        kind = message.get(b"y")
        if kind == b"q":
            self._answer(message, address)
        elif kind in (b"r", b"e"):
            self._settle(message, address)
        else:
            self.send_error(address, message[b"t"], KRPCError(PROTOCOL_ERROR, "Protocol Error"))

    def _answer(self, message: Message, address: Address) -> None:
        tid = message[b"t"]
        method, args = message.get(b"q"), message.get(b"a")
        if not isinstance(method, bytes) or not isinstance(args, dict):
            self.send_error(address, tid, KRPCError(PROTOCOL_ERROR, "Protocol Error"))
            return
        try:
            reply = self._handler(method, args, address)
        except KRPCError as e:
            self.send_error(address, tid, e)
        except Exception:
            self.log.failure("query {method!r} from {address} failed", method=method, address=address)
            self.send_error(address, tid, KRPCError(SERVER_ERROR, "Server Error"))
        else:
            self._send(address, {b"t": tid, b"y": b"r", b"r": reply})

    def _settle(self, message: Message, address: Address) -> None:
        tid = message[b"t"]
        entry = self._pending.get(tid)
        if entry is None or entry[0] != address[0]:
            return
        _, d, _ = self._forget(tid)
        if message[b"y"] == b"e":
            d.errback(_received_error(message.get(b"e")))
        elif isinstance(message.get(b"r"), dict):
            d.callback(message[b"r"])
        else:
            d.errback(KRPCError(PROTOCOL_ERROR, "reply without an r dict"))

    def send_error(self, address: Address, tid: bytes, error: KRPCError) -> None:
        self._send(address, {b"t": tid, b"y": b"e", b"e": [error.code, error.message.encode()]})

    def _send(self, address: Address, message: Message) -> None:
        try:
            self.transport.write(bencode(message), address)
        except Exception:
            self.log.failure("could not send a KRPC message to {address}", address=address)

    def stopProtocol(self) -> None:
        for tid in list(self._pending):
            entry = self._forget(tid)
            if entry is not None:
                entry[1].errback(QueryTimeout("KRPC socket closed"))


def _received_error(body: object) -> KRPCError:
    """An error reply's ``e`` list as a KRPCError (code 0 if malformed, like k-rpc)."""
    if isinstance(body, list) and body:
        code = body[0] if isinstance(body[0], int) else 0
        text = " ".join(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in body[1:])
        return KRPCError(code, text)
    return KRPCError(0, "Unknown error")
