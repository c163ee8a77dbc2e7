"""KRPC transactions: matching, timeouts, error replies, malformed input."""
from fastbencode import bdecode, bencode
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twisted_exchange.grape.krpc import KRPCError, KRPCProtocol, QueryTimeout

PEER = ("127.0.0.1", 6881)


class FakeTransport:
    def __init__(self):
        self.sent = []

    def write(self, data, address):
        self.sent.append((bdecode(data), address))


class KRPCTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.queries = []
        self.protocol = KRPCProtocol(self.answer, self.clock, timeout=2.0)
        self.transport = FakeTransport()
        self.protocol.makeConnection(self.transport)

    def answer(self, method, args, sender):
        self.queries.append((method, args, sender))
        if method == b"boom":
            raise ZeroDivisionError()
        if method == b"refuse":
            raise KRPCError(203, "refused")
        return {b"id": b"me"}

    def receive(self, message, address=PEER):
        self.protocol.datagramReceived(bencode(message), address)

    def test_query_is_sent_as_bencoded_q_message(self):
        self.protocol.query(PEER, b"ping", {b"id": b"x"})
        [(message, address)] = self.transport.sent
        self.assertEqual(address, PEER)
        self.assertEqual(message[b"y"], b"q")
        self.assertEqual(message[b"q"], b"ping")
        self.assertEqual(message[b"a"], {b"id": b"x"})
        self.assertEqual(len(message[b"t"]), 2)

    def test_reply_with_matching_transaction_fires_query(self):
        d = self.protocol.query(PEER, b"ping", {})
        tid = self.transport.sent[0][0][b"t"]
        self.receive({b"t": tid, b"y": b"r", b"r": {b"id": b"them"}})
        self.assertEqual(self.successResultOf(d), {b"id": b"them"})

    def test_reply_from_another_host_is_ignored(self):
        d = self.protocol.query(PEER, b"ping", {})
        tid = self.transport.sent[0][0][b"t"]
        self.receive({b"t": tid, b"y": b"r", b"r": {}}, ("10.0.0.9", 6881))
        self.assertNoResult(d)

    def test_error_reply_fails_query_with_code_and_message(self):
        d = self.protocol.query(PEER, b"ping", {})
        tid = self.transport.sent[0][0][b"t"]
        self.receive({b"t": tid, b"y": b"e", b"e": [203, b"bad token"]})
        error = self.failureResultOf(d, KRPCError).value
        self.assertEqual((error.code, error.message, str(error)), (203, "bad token", "203 bad token"))

    def test_query_without_reply_times_out_on_the_clock(self):
        d = self.protocol.query(PEER, b"ping", {})
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, QueryTimeout)

    def test_transaction_ids_are_distinct_while_pending(self):
        for _ in range(3):
            self.protocol.query(PEER, b"ping", {})
        self.assertEqual(len({m[b"t"] for m, _ in self.transport.sent}), 3)

    def test_incoming_query_is_answered_with_handler_result(self):
        self.receive({b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": b"x"}})
        self.assertEqual(self.queries, [(b"ping", {b"id": b"x"}, PEER)])
        self.assertEqual(self.transport.sent, [({b"t": b"aa", b"y": b"r", b"r": {b"id": b"me"}}, PEER)])

    def test_handler_krpc_error_becomes_error_reply(self):
        self.receive({b"t": b"aa", b"y": b"q", b"q": b"refuse", b"a": {}})
        self.assertEqual(self.transport.sent[0][0], {b"t": b"aa", b"y": b"e", b"e": [203, b"refused"]})

    def test_handler_crash_becomes_server_error_and_is_logged(self):
        self.receive({b"t": b"aa", b"y": b"q", b"q": b"boom", b"a": {}})
        self.assertEqual(self.transport.sent[0][0][b"e"], [202, b"Server Error"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_query_without_arguments_gets_protocol_error(self):
        self.receive({b"t": b"aa", b"y": b"q", b"q": b"ping"})
        self.assertEqual(self.transport.sent[0][0][b"e"], [203, b"Protocol Error"])
        self.assertEqual(self.queries, [])

    def test_garbage_and_messages_without_transaction_are_ignored(self):
        for datagram in (b"", b"garbage", b"d1:y1:qe", b"i5e", b"d1:ti5e1:y1:qe", b"l1:te"):
            self.protocol.datagramReceived(datagram, PEER)
        self.assertEqual(self.transport.sent, [])

    def test_closing_the_socket_fails_pending_queries(self):
        d = self.protocol.query(PEER, b"ping", {})
        self.protocol.doStop()
        self.failureResultOf(d, QueryTimeout)
        self.assertEqual(self.clock.getDelayedCalls(), [])
