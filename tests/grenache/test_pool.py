"""The lean HTTP/1.1 client: response framings, keep-alive, bad responses."""
from __future__ import annotations

from twisted.internet import defer, error
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.grenache.fakes import WireStub
from twisted_exchange.grenache.pool import CONNECT_TIMEOUT, BadResponse, ConnectionPool

ADDRESS = ("127.0.0.1", 1337)
HEAD = b"POST / HTTP/1.1\r\nHost: 127.0.0.1:1337\r\nContent-Length: 2\r\n\r\n"


class PoolTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.peer = WireStub()
        self.pool = ConnectionPool(self.peer.reactor, per_host=2)

    def post(self) -> object:
        return self.pool.post(ADDRESS, HEAD, b"[]")

    def test_request_is_written_in_one_piece(self) -> None:
        self.post()
        request = self.peer.answer(200, b"ok")
        self.assertEqual((request["line"], request["body"]), ("POST / HTTP/1.1", b"[]"))

    def test_content_length_reply_split_anywhere(self) -> None:
        d = self.post()
        self.peer.answer_raw(b"HTTP/1.1 200 OK\r\nContent-", b"Length: 5\r\n\r", b"\nhel", b"lo")
        self.assertEqual(self.successResultOf(d), (200, b"hello"))

    def test_chunked_reply_as_node_sends_it(self) -> None:
        d = self.post()
        self.peer.answer_raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhel",
                             b"lo\r\n1\r\n!\r\n0\r\nTrailer: t\r\n\r\n")
        self.assertEqual(self.successResultOf(d), (200, b"hello!"))

    def test_interim_100_continue_is_skipped(self) -> None:
        d = self.post()
        self.peer.answer_raw(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.successResultOf(d), (201, b""))

    def test_reply_without_length_ends_at_close(self) -> None:
        d = self.post()
        request = self.peer.answer_raw(b"HTTP/1.0 200 OK\r\n\r\npartial")
        self.assertNoResult(d)
        request["protocol"].connectionLost(Failure(error.ConnectionDone()))
        self.assertEqual(self.successResultOf(d), (200, b"partial"))

    def test_kept_alive_connection_is_reused(self) -> None:
        first = self.post()
        self.peer.answer(200, b"1")
        second = self.post()
        self.peer.answer(200, b"2")
        self.assertEqual([self.successResultOf(d)[1] for d in (first, second)], [b"1", b"2"])
        self.assertEqual(len(self.peer.transports), 1)

    def test_connection_close_reply_is_not_reused(self) -> None:
        self.post()
        request = self.peer.answer_raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(request["transport"].disconnecting)
        self.post()
        self.peer.answer(200, b"")
        self.assertEqual(len(self.peer.transports), 2)

    def test_bytes_after_the_reply_close_the_connection(self) -> None:
        d = self.post()
        request = self.peer.answer_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxGARBAGE")
        self.assertEqual(self.successResultOf(d), (200, b"x"))
        self.assertTrue(request["transport"].disconnecting)

    def test_idle_connections_beyond_per_host_are_closed(self) -> None:
        pending = [self.post() for _ in range(3)]
        for _ in pending:
            self.peer.answer(200, b"")
        self.assertEqual(sum(t.disconnecting for t in self.peer.transports), 1)

    def test_not_http_is_bad_response_and_aborts(self) -> None:
        for garbage in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
            d = self.post()
            request = self.peer.answer_raw(garbage)
            self.failureResultOf(d, BadResponse)
            self.assertTrue(request["transport"].aborted)

    def test_connection_lost_before_the_reply_fails_the_request(self) -> None:
        d = self.post()
        request = self.peer.answer_raw(b"HTTP/1.1 200 OK\r\n")
        request["protocol"].connectionLost(Failure(error.ConnectionLost()))
        self.failureResultOf(d, error.ConnectionLost)

    def test_cancel_aborts_the_connection(self) -> None:
        d = self.post()
        self.assertEqual(self.peer.pending(), 1)
        d.cancel()
        self.assertTrue(self.peer.transports[0].aborted)
        self.failureResultOf(d, defer.CancelledError)

    def test_a_connection_never_made_fails_after_the_connect_timeout(self) -> None:
        d = self.post()  # the stub never accepts it: a black hole's address
        self.peer.reactor.advance(CONNECT_TIMEOUT - 0.1)
        self.assertNoResult(d)
        self.peer.reactor.advance(0.2)
        self.failureResultOf(d, error.TimeoutError)
        self.assertTrue(self.peer.reactor.connectors[0].stoppedConnecting)  # the attempt is given up

    def test_a_ready_connection_waits_for_its_reply_beyond_the_connect_timeout(self) -> None:
        d = self.post()
        self.assertEqual(self.peer.pending(), 1)
        self.peer.reactor.advance(CONNECT_TIMEOUT * 3)
        self.assertNoResult(d)
        self.peer.answer(200, b"late")
        self.assertEqual(self.successResultOf(d), (200, b"late"))
