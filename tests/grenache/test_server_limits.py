"""RPCServer memory bounds, driven byte by byte on a MemoryReactorClock.

Each connection is a StringTransport, so a test decides exactly which body
bytes have arrived and when time moves; nothing sleeps.
"""
from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_exchange.grenache import RPCServer
from twisted_exchange.pki import CA, PEER, Identity

MAX_BODY = 1000
MAX_BUFFERED = 2000  # large bodies share 1750 of it; bodies up to 31 bytes may use it all
TIMEOUT = 10.0
CALL = b'["r","k",1]'
PEER_CREDENTIAL = CA.create().issue(Identity(PEER, "peer1"))


def echo(key: str, payload: object) -> object:
    return {"echo": payload}


def head(length: int | None, *extra: bytes) -> bytes:
    """The request line and headers of a POST announcing ``length`` body bytes."""
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return b"\r\n".join([b"POST / HTTP/1.1", b"Host: x", framing, *extra]) + b"\r\n\r\n"


def reply(transport: StringTransport) -> tuple[int, list]:
    """(status, JSON body) of the one response written on ``transport``."""
    status_line, _, rest = transport.value().partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


class ServerLimitTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.server = RPCServer(echo, max_body=MAX_BODY, max_buffered=MAX_BUFFERED,
                                body_timeout=TIMEOUT, reactor=self.clock)
        self.server.startService()
        self.budget = self.server._site.budget

    def connect(self) -> tuple[object, StringTransport]:
        channel = self.server._site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        return channel, transport

    def upload(self, length: int | None, sent: bytes) -> tuple[object, StringTransport]:
        """A connection that announced ``length`` bytes and has sent ``sent`` of the body."""
        channel, transport = self.connect()
        channel.dataReceived(head(length) + sent)
        return channel, transport

    def call(self) -> tuple[int, list]:
        channel, transport = self.upload(len(CALL), CALL)
        return reply(transport)

    def assertRefused(self, transport: StringTransport, status: int, code: str) -> None:
        got, body = reply(transport)
        self.assertEqual((got, body[0], body[1].split(":")[0], body[2]), (status, None, code, None))
        self.assertTrue(transport.disconnecting)

    def test_upload_past_the_shared_budget_is_refused_busy_and_its_bytes_released(self) -> None:
        self.upload(MAX_BODY, b"x" * 900)
        _, second = self.upload(MAX_BODY, b"x" * 900)
        self.assertRefused(second, 503, "ERR_BUSY")
        self.assertEqual(self.budget.used, 900)

    def test_bytes_return_to_the_budget_once_the_reply_is_sent(self) -> None:
        channel, transport = self.upload(len(CALL), CALL)
        self.assertEqual(reply(transport), (200, ["r", None, {"echo": 1}]))
        self.assertEqual(self.budget.used, 0)
        self.assertFalse(transport.disconnecting)  # kept alive, holding no body
        self.assertEqual(channel.requests, [])

    def test_bytes_go_when_the_connection_is_lost(self) -> None:
        channel, _ = self.upload(MAX_BODY, b"x" * 500)
        self.assertEqual(self.budget.used, 500)
        channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.budget.used, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no timer left behind

    def test_body_that_stops_arriving_is_refused_after_body_timeout(self) -> None:
        channel, transport = self.upload(MAX_BODY, b"x" * 100)
        self.clock.advance(TIMEOUT - 1)
        channel.dataReceived(b"x" * 100)  # each chunk restarts the wait
        self.clock.advance(TIMEOUT - 1)
        self.assertEqual((transport.value(), self.budget.used), (b"", 200))
        self.clock.advance(1)
        self.assertRefused(transport, 408, "ERR_TIMEOUT")
        self.assertEqual(self.budget.used, 0)

    def test_idle_keep_alive_connection_is_closed_after_body_timeout(self) -> None:
        channel, transport = self.upload(len(CALL), CALL)
        self.clock.advance(TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.budget.used, 0)

    def test_a_handler_may_take_longer_than_body_timeout_and_silence_counts_from_its_reply(self) -> None:
        answers: list[defer.Deferred] = []
        server = RPCServer(lambda key, payload: answers.append(defer.Deferred()) or answers[-1],
                           body_timeout=TIMEOUT, reactor=self.clock)
        server.startService()
        channel = server._site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(head(len(CALL)) + CALL)
        self.clock.advance(TIMEOUT * 3)
        self.assertEqual((transport.value(), transport.disconnecting), (b"", False))
        answers[0].callback({"late": True})
        self.assertEqual(reply(transport), (200, ["r", None, {"late": True}]))
        self.clock.advance(TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_a_tls_handshake_that_stops_arriving_is_closed_after_body_timeout(self) -> None:
        server = RPCServer(echo, body_timeout=TIMEOUT, reactor=self.clock, tls=PEER_CREDENTIAL)
        server.startService()
        tls = server._factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40001))
        transport = StringTransport()
        tls.makeConnection(transport)
        tls.dataReceived(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then silence
        self.clock.advance(TIMEOUT - 1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_declared_length_over_max_body_is_refused_before_any_body_byte(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(head(100_000_000, b"Expect: 100-continue"))
        self.assertRefused(transport, 413, "ERR_REQUEST_TOO_LARGE")
        self.assertNotIn(b"100 Continue", transport.value())
        channel.dataReceived(b"x" * 5000)  # what was in flight is not kept
        self.assertEqual(self.budget.used, 0)

    def test_chunked_body_is_refused_as_soon_as_it_passes_max_body(self) -> None:
        chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
        channel, transport = self.upload(None, chunk)
        self.assertEqual(self.budget.used, 600)
        channel.dataReceived(chunk + chunk + b"0\r\n\r\n")
        self.assertRefused(transport, 413, "ERR_REQUEST_TOO_LARGE")
        self.assertEqual(self.budget.used, 0)

    def test_calls_are_served_while_stalled_uploads_fill_the_budget(self) -> None:
        self.upload(MAX_BODY, b"x" * 999)
        self.upload(MAX_BODY, b"x" * 751)
        _, refused = self.upload(MAX_BODY, b"x" * 40)
        self.assertRefused(refused, 503, "ERR_BUSY")
        for _ in range(3):
            self.assertEqual(self.call(), (200, ["r", None, {"echo": 1}]))

    def test_a_connections_own_cap_is_asked_once_and_refuses_before_any_body_byte(self) -> None:
        asked = []
        caps = iter([100, 10 * MAX_BODY])
        self.server = RPCServer(echo, max_body=MAX_BODY, max_buffered=MAX_BUFFERED, body_timeout=TIMEOUT,
                                reactor=self.clock,
                                max_body_for=lambda caller: asked.append(caller.address) or next(caps))
        self.server.startService()
        channel, transport = self.upload(len(CALL), CALL)
        self.assertEqual(reply(transport)[0], 200)
        channel.dataReceived(head(101))
        self.assertIn(b"ERR_REQUEST_TOO_LARGE: Content-Length over 100 bytes", transport.value())
        self.assertTrue(transport.disconnecting)
        _, other = self.upload(MAX_BODY + 1, b"")  # a cap above max_body is max_body
        self.assertRefused(other, 413, "ERR_REQUEST_TOO_LARGE")
        self.assertEqual(len(asked), 2)  # once per connection, not per request

    def test_max_buffered_with_no_room_for_one_max_body_is_a_usage_error(self) -> None:
        with self.assertRaises(ValueError):
            RPCServer(echo, max_body=MAX_BODY, max_buffered=MAX_BODY, reactor=self.clock)

    def test_default_budget_holds_two_max_bodies_less_the_eighth_for_calls(self) -> None:
        server = RPCServer(echo, max_body=64 << 20, reactor=self.clock)
        self.assertEqual(server._site.budget.limit, 128 << 20)


class ConnectionCapTests(unittest.TestCase):
    """Past ``max_connections_per_address``, or ``max_connections`` with no
    silent connection to give its place, a new connection gets no protocol:
    Twisted closes it before reading a byte."""

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()

    def server(self, **caps: int) -> RPCServer:
        server = RPCServer(echo, body_timeout=TIMEOUT, reactor=self.clock, **caps)
        server.startService()
        return server

    def connect(self, server: RPCServer, host: str = "127.0.0.1", factory: object = None) -> object:
        """The protocol for a new connection from ``host``, connected, or None if refused."""
        built = (factory or server._site).buildProtocol(IPv4Address("TCP", host, 40000))
        if built is not None:
            built.makeConnection(StringTransport())
        return built

    def test_one_address_past_its_cap_is_refused_while_others_are_served(self) -> None:
        server = self.server(max_connections_per_address=2)
        held = [self.connect(server, "10.0.0.1") for _ in range(2)]
        self.assertIsNone(self.connect(server, "10.0.0.1"))
        other = self.connect(server, "10.0.0.2")
        self.assertIsNotNone(other)
        other.dataReceived(head(len(CALL)) + CALL)
        self.assertEqual(reply(other.transport), (200, ["r", None, {"echo": 1}]))
        self.assertEqual((server.caps.open, server.caps.refused), (3, 1))
        held[0].transport.loseConnection()
        held[0].connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.connect(server, "10.0.0.1"))  # its place is free again

    def test_at_the_total_cap_a_new_connection_takes_the_place_of_the_oldest_silent_one(self) -> None:
        server = self.server(max_connections=3)
        spoke, silent, newer = [self.connect(server, f"10.0.0.{n}") for n in range(3)]
        spoke.dataReceived(b"POST")
        latest = self.connect(server, "10.0.0.9")
        self.assertIsNotNone(latest)
        self.assertTrue(silent.transport.disconnecting)  # aborted: it never sent a byte
        self.assertFalse(spoke.transport.disconnecting or newer.transport.disconnecting)
        self.assertEqual((server.caps.open, server.caps.evicted, server.caps.refused), (3, 1, 0))
        silent.connectionLost(Failure(ConnectionDone()))  # the abort's, later: counted once
        self.assertEqual(server.caps.by_address, {"10.0.0.0": 1, "10.0.0.2": 1, "10.0.0.9": 1})

    def test_at_the_total_cap_with_every_connection_heard_a_new_one_is_refused_until_one_closes(self) -> None:
        server = self.server(max_connections=3)
        held = [self.connect(server, f"10.0.0.{n}") for n in range(3)]
        for channel in held:
            channel.dataReceived(b"P")
        self.assertIsNone(self.connect(server, "10.0.0.9"))
        held[1].connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(self.connect(server, "10.0.0.9"))
        self.assertEqual((server.caps.evicted, server.caps.refused), (0, 1))

    def test_idle_connections_timed_out_give_their_places_back(self) -> None:
        server = self.server(max_connections=2)
        for _ in range(2):
            self.connect(server).dataReceived(b"POST / HT")  # and then nothing
        self.assertIsNone(self.connect(server))
        self.clock.advance(TIMEOUT)
        for channel in list(server._site.channels):
            self.assertTrue(channel.transport.disconnecting)
            channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(server.caps.open, 0)
        self.assertIsNotNone(self.connect(server))

    def test_in_secure_mode_a_refused_connection_gets_no_tls_either(self) -> None:
        server = RPCServer(echo, body_timeout=TIMEOUT, reactor=self.clock, tls=PEER_CREDENTIAL,
                           max_connections_per_address=1)
        server.startService()
        first = self.connect(server, factory=server._factory)
        self.assertIsNotNone(first)
        self.assertIsNone(self.connect(server, factory=server._factory))
        first.connectionLost(Failure(ConnectionDone()))  # the TLS wrapper tells its channel
        self.assertEqual(server.caps.open, 0)
        self.assertIsNotNone(self.connect(server, factory=server._factory))

    def test_in_secure_mode_a_handshake_not_finished_is_silent_and_gives_its_place(self) -> None:
        server = RPCServer(echo, body_timeout=TIMEOUT, reactor=self.clock, tls=PEER_CREDENTIAL, max_connections=1)
        server.startService()
        stalled = self.connect(server, factory=server._factory)
        stalled.dataReceived(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello: TLS's, not the channel's
        self.assertIsNotNone(self.connect(server, "10.0.0.2", factory=server._factory))
        self.assertTrue(stalled.transport.disconnecting)
        self.assertEqual((server.caps.open, server.caps.evicted), (1, 1))

    def test_without_caps_every_connection_is_served(self) -> None:
        server = self.server()
        self.assertTrue(all(self.connect(server) is not None for _ in range(100)))
        self.assertEqual((server.caps.open, server.caps.refused), (100, 0))


class ServerFramingTests(unittest.TestCase):
    """The lean HTTP/1.1 reader: the same answers however the bytes arrive."""

    BODY = b'["r","k",[1,2,3]]'
    REQUESTS = [
        head(len(BODY)) + BODY,
        head(None) + b'5\r\n["r",\r\n%x\r\n%s\r\n0\r\n\r\n' % (len(BODY) - 5, BODY[5:]),
        head(None) + b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(BODY), BODY),
    ]

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.server = RPCServer(echo, max_body=MAX_BODY, reactor=self.clock)
        self.server.startService()

    def answers(self, *parts: bytes) -> bytes:
        channel = self.server._site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        for part in parts:
            channel.dataReceived(part)
        return transport.value()

    def test_a_request_split_anywhere_and_pipelined_gets_the_same_answers(self) -> None:
        for request in self.REQUESTS:
            whole = self.answers(request * 2)
            self.assertEqual(whole.count(b"HTTP/1.1 200 OK\r\n"), 2)
            for cut in range(1, len(request)):
                self.assertEqual(self.answers(request[:cut], request[cut:] + request), whole, cut)

    def test_a_head_that_is_not_http_is_400_and_closed(self) -> None:
        for bad in (b"GET /\r\n\r\n", b"POST / HTTP/2.0\r\n\r\n", b"POST / HTTP/1.1\r\nno colon\r\n\r\n",
                    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"):
            status_line = self.answers(bad).partition(b"\r\n")[0]
            self.assertEqual(status_line, b"HTTP/1.1 400 Bad Request", bad)
