"""PeerAPI: payload validation and dispatch, against a fake node."""
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase

from twisted_exchange.core import Exchange, ExchangeError
from twisted_exchange.grenache.tls import Caller
from twisted_exchange.peer import api as peer_api
from twisted_exchange.peer.api import PeerAPI, RequestError
from twisted_exchange.pki import Identity


class FakeNode:
    node_id = "peer1"

    def __init__(self):
        self.exchange = Exchange()
        self.proposed = []
        self.delivered = []
        self.claims = []
        self.applied = 0

    def propose(self, command):
        self.proposed.append(command)
        self.applied += 1
        return defer.succeed(self.exchange.apply(command))

    def deliver(self, sender, messages):
        self.delivered.append((sender, messages))

    def deliver_and_reply(self, sender, messages):
        self.deliver(sender, messages)
        self.replied = defer.Deferred()
        return self.replied

    def status(self):
        return {"id": self.node_id, "role": "leader"}

    def serves_at(self, peer, address):
        self.claims.append((peer, address))


def submit(**overrides):
    command = {"action": "submit", "client": "alice", "request": "r1", "symbol": "BTCUSD",
               "side": "buy", "type": "limit", "price": "100", "quantity": "2",
               "tif": "gtc", "post_only": False}
    command.update(overrides)
    return command


class PeerAPITests(SynchronousTestCase):
    def setUp(self):
        self.node = FakeNode()
        self.clock = task.Clock()
        self.api = PeerAPI(self.node, self.clock)

    def call(self, payload):
        d = defer.maybeDeferred(self.api, "exchange", payload)
        self.clock.advance(0)  # book queries run in a later reactor turn
        return self.successResultOf(d)

    def refused(self, payload) -> Exception:
        d = defer.maybeDeferred(self.api, "exchange", payload)
        self.clock.advance(0)
        return self.failureResultOf(d, RequestError, ExchangeError).value

    def test_submit_is_proposed_and_answered_with_the_core_result(self):
        result = self.call(submit())
        self.assertEqual(result["order"]["id"], "1")
        self.assertEqual(self.node.proposed[0]["request"], "r1")

    def test_rejected_order_becomes_its_error_code(self):
        error = self.refused(submit(price="-1"))
        self.assertEqual(error.code, "ERR_INVALID_ORDER")
        self.assertTrue(str(error).startswith("ERR_INVALID_ORDER: "))

    def test_command_without_client_or_request_is_refused_before_replication(self):
        for field in ("client", "request"):
            payload = submit()
            del payload[field]
            self.assertEqual(self.refused(payload).code, "ERR_INVALID_ORDER")
        self.assertEqual(self.node.proposed, [])

    def test_non_object_payload_and_unknown_action_are_refused(self):
        self.assertEqual(self.refused(["submit"]).code, "ERR_BAD_REQUEST")
        self.assertEqual(self.refused({"action": "explode"}).code, "ERR_UNKNOWN_ACTION")
        self.assertEqual(self.refused({}).code, "ERR_BAD_REQUEST")
        self.assertEqual(self.refused({"action": 1}).code, "ERR_BAD_REQUEST")

    def test_hostile_commands_are_refused_at_the_edge_and_never_proposed(self):
        nested = {"x": [[[[{"y": [1]}]]]]}
        for payload in (submit(quantity=1e999), submit(quantity=float("nan")), submit(price=100),
                        submit(extra=nested), submit(client=["alice"]), submit(request="\ud800"),
                        submit(client="a" * 65), submit(symbol="BTC\x00"), submit(post_only=1)):
            self.assertEqual(self.refused(payload).code, "ERR_INVALID_ORDER", payload)
        self.assertEqual(self.node.proposed, [])

    def test_what_is_proposed_is_exactly_the_accepted_fields(self):
        self.call(submit())
        self.assertEqual(self.node.proposed, [submit()])

    def test_book_reports_peer_applied_index_and_levels(self):
        self.call(submit())
        book = self.call({"action": "book", "symbol": "BTCUSD"})
        self.assertEqual(book["peer"], "peer1")
        self.assertEqual(book["applied"], 1)
        self.assertEqual(book["bids"], [["100", "2"]])

    def test_query_parameters_are_validated(self):
        for payload in ({"action": "book", "symbol": "btc"}, {"action": "book", "depth": 0},
                        {"action": "book", "depth": True}, {"action": "trades", "limit": "5"},
                        {"action": "orders", "symbol": 5}, {"action": "orders", "client": 5},
                        {"action": "book", "depth": 10**6}, {"action": "trades", "limit": 1.0},
                        {"action": "book", "extra": {"deep": [1]}}, {"action": "status", "x": 1},
                        {"action": "order", "order_id": 1}, {"action": "order"}):
            self.assertEqual(self.refused(payload).code, "ERR_INVALID_QUERY", payload)

    def test_unknown_order_is_refused(self):
        self.assertEqual(self.refused({"action": "order", "order_id": "9"}).code,
                         "ERR_UNKNOWN_ORDER")

    def test_order_and_open_orders_are_served_from_the_local_book(self):
        self.call(submit())
        self.assertEqual(self.call({"action": "order", "order_id": "1"})["order"]["client"], "alice")
        orders = self.call({"action": "orders", "client": "alice"})["orders"]
        self.assertEqual([o["id"] for o in orders], ["1"])
        self.assertEqual(self.call({"action": "orders", "client": "bob"})["orders"], [])

    def test_raft_batch_for_another_peer_is_refused(self):
        self.assertEqual(self.refused({"action": "raft.batch", "from": "peer2", "to": "peer3",
                                       "messages": []}).code, "ERR_WRONG_PEER")
        self.assertEqual(self.node.delivered, [])

    def test_malformed_raft_batch_is_refused_before_delivery(self):
        for payload in ({"action": "raft.batch", "from": "peer2", "to": "peer1"},
                        {"action": "raft.batch", "from": 2, "to": "peer1", "messages": []},
                        {"action": "raft.batch", "from": "peer2", "to": "peer1", "messages": {}},
                        {"action": "raft.batch", "from": "peer2", "to": "peer1", "messages": [],
                         "extra": 1},
                        {"action": "raft.batch", "from": "peer2", "to": "peer1",
                         "messages": [{}] * 1025}):
            self.assertEqual(self.refused(payload).code, "ERR_BAD_MESSAGE", payload)
        self.assertEqual(self.node.delivered, [])

    def test_without_identities_no_peer_may_say_where_it_serves(self):
        error = self.refused({"action": "peer.hello", "from": "peer2", "address": "10.0.0.2:5002"})
        self.assertTrue(str(error).startswith("ERR_FORBIDDEN: "), str(error))
        self.assertEqual(self.node.claims, [])

    def test_raft_batch_is_delivered(self):
        reply = self.call({"action": "raft.batch", "from": "peer2", "to": "peer1",
                           "messages": [{"type": "raft.append"}]})
        self.assertEqual(reply, {"ok": True, "id": "peer1"})
        self.assertEqual(self.node.delivered, [("peer2", [{"type": "raft.append"}])])

    def test_a_raft_batch_asking_for_replies_is_answered_with_the_peers_messages(self):
        d = defer.maybeDeferred(self.api, "exchange", {"action": "raft.batch", "from": "peer2", "to": "peer1",
                                                       "messages": [{"type": "raft.append"}], "replies": True})
        self.assertEqual(self.node.delivered, [("peer2", [{"type": "raft.append"}])])
        self.assertNoResult(d)
        self.node.replied.callback([{"type": "raft.append_reply"}])
        self.assertEqual(self.successResultOf(d), {"ok": True, "id": "peer1",
                                                   "messages": [{"type": "raft.append_reply"}]})

    def test_replies_must_be_true_when_given(self):
        for replies in (False, 1, "yes", None):
            payload = {"action": "raft.batch", "from": "peer2", "to": "peer1", "messages": [], "replies": replies}
            self.assertEqual(self.refused(payload).code, "ERR_BAD_MESSAGE", replies)
        self.assertEqual(self.node.delivered, [])

    def test_book_queries_are_answered_in_a_later_reactor_turn_in_arrival_order(self):
        self.call(submit())
        answers = []
        for payload in ({"action": "book"}, {"action": "orders"}, {"action": "trades"}):
            defer.maybeDeferred(self.api, "exchange", payload).addCallback(answers.append)
        self.assertEqual(answers, [])
        self.clock.advance(0)
        self.assertEqual([("bids" in a, "orders" in a, "trades" in a) for a in answers],
                         [(True, False, False), (False, True, False), (False, False, True)])

    def test_status_is_answered_at_once_while_queries_wait(self):
        defer.maybeDeferred(self.api, "exchange", {"action": "book"})
        status = self.successResultOf(defer.maybeDeferred(self.api, "exchange", {"action": "status"}))
        self.assertEqual(status["id"], "peer1")

    def test_past_the_waiting_cap_a_query_is_refused_busy(self):
        for _ in range(peer_api.MAX_WAITING_QUERIES + 1):  # the first one runs, the rest wait
            defer.maybeDeferred(self.api, "exchange", {"action": "book"})
        self.assertEqual(self.refused({"action": "book"}).code, "ERR_BUSY")
        self.clock.advance(0)
        self.successResultOf(defer.maybeDeferred(self.api, "exchange", {"action": "status"}))


class SecureModeTests(SynchronousTestCase):
    """Authorization by the caller's certificate identity, never by payload fields."""

    def setUp(self):
        self.node = FakeNode()
        self.clock = task.Clock()
        self.api = PeerAPI(self.node, self.clock, authenticated=True)

    def as_(self, kind, name, payload):
        caller = Caller("127.0.0.1:1", None, Identity(kind, name) if kind else None)
        d = defer.maybeDeferred(self.api, "exchange", payload, caller)
        self.clock.advance(0)
        return d

    def forbidden(self, kind, name, payload) -> str:
        return str(self.failureResultOf(self.as_(kind, name, payload), RequestError).value)

    def test_only_the_named_peer_may_send_its_raft_batches(self):
        batch = {"action": "raft.batch", "from": "peer2", "to": "peer1", "messages": []}
        self.assertTrue(self.forbidden("client", "peer2", batch).startswith("ERR_FORBIDDEN: "))
        self.assertTrue(self.forbidden("peer", "peer3", batch).startswith("ERR_FORBIDDEN: "))
        self.assertEqual(self.node.delivered, [])
        self.assertEqual(self.successResultOf(self.as_("peer", "peer2", batch)), {"ok": True, "id": "peer1"})

    def test_only_the_named_peer_may_say_where_it_serves(self):
        hello = {"action": "peer.hello", "from": "peer2", "address": "10.0.0.2:5002"}
        for kind, name in (("client", "peer2"), ("peer", "peer3"), (None, None)):
            self.assertTrue(self.forbidden(kind, name, hello).startswith("ERR_FORBIDDEN: "))
        self.assertEqual(self.node.claims, [])
        self.assertEqual(self.successResultOf(self.as_("peer", "peer2", hello)), {"ok": True, "id": "peer1"})
        self.assertEqual(self.node.claims, [("peer2", "10.0.0.2:5002")])

    def test_a_client_acts_only_as_itself_and_its_name_comes_from_its_certificate(self):
        self.assertTrue(self.forbidden("client", "mallory", submit()).startswith("ERR_FORBIDDEN: "))
        self.assertTrue(self.forbidden("peer", "peer2", submit()).startswith("ERR_FORBIDDEN: "))
        self.assertEqual(self.node.proposed, [])
        unnamed = submit()
        del unnamed["client"]
        self.successResultOf(self.as_("client", "alice", unnamed))
        self.assertEqual(self.node.proposed, [submit()])

    def test_a_caller_without_an_identity_may_do_nothing(self):
        for payload in (submit(), {"action": "book"}, {"action": "status"}):
            self.assertTrue(self.forbidden(None, None, payload).startswith("ERR_FORBIDDEN: "))

    def test_any_identity_may_query(self):
        for kind, name in (("client", "bob"), ("peer", "peer3")):
            self.assertIn("bids", self.successResultOf(self.as_(kind, name, {"action": "book"})))
            self.assertEqual(self.successResultOf(self.as_(kind, name, {"action": "status"}))["id"], "peer1")
