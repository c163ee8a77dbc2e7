"""ReplicatedStateMachine: the exchange plus the client session table."""
from __future__ import annotations

import json
import unittest

from twisted_exchange.replication.state_machine import SESSION_WINDOW, ReplicatedStateMachine


def submit(client: str, request: str, side: str = "buy", price: str = "100") -> dict:
    return {"action": "submit", "client": client, "request": request, "symbol": "BTCUSD",
            "side": side, "type": "limit", "price": price, "quantity": "1"}


def feed(machine: ReplicatedStateMachine, *commands: dict | None) -> list:
    return [machine.apply({"index": machine.applied + 1, "term": 1, "command": command})
            for command in commands]


class StateMachineTests(unittest.TestCase):

    def test_no_op_entry_changes_nothing_but_the_applied_index(self):
        machine = ReplicatedStateMachine()
        before = machine.state_hash()
        self.assertEqual(feed(machine, None), [None])
        self.assertEqual((machine.applied, machine.state_hash()), (1, before))

    def test_retried_request_returns_the_original_result_without_executing_again(self):
        machine = ReplicatedStateMachine()
        first, retry = feed(machine, submit("alice", "r1"), submit("alice", "r1"))
        self.assertEqual(first, retry)
        self.assertEqual(machine.exchange.book("BTCUSD")["bids"], [["100", "1"]])

    def test_same_request_id_of_another_client_is_a_new_command(self):
        machine = ReplicatedStateMachine()
        first, other = feed(machine, submit("alice", "r1"), submit("bob", "r1"))
        self.assertNotEqual(first["order"]["id"], other["order"]["id"])

    def test_refused_command_is_remembered_too(self):
        machine = ReplicatedStateMachine()
        bad = dict(submit("alice", "r1"), price="-1")
        first, retry = feed(machine, bad, bad)
        self.assertFalse(first["ok"])
        self.assertEqual(first, retry)
        self.assertEqual(machine.lookup(bad), first)

    def test_session_remembers_a_window_of_recent_requests_per_client(self):
        machine = ReplicatedStateMachine()
        feed(machine, *(submit("alice", f"r{n}") for n in range(SESSION_WINDOW + 1)))
        self.assertIsNone(machine.lookup(submit("alice", "r0")))
        self.assertIsNotNone(machine.lookup(submit("alice", "r1")))
        self.assertIsNotNone(machine.lookup(submit("alice", f"r{SESSION_WINDOW}")))

    def test_least_recently_active_client_is_forgotten_beyond_the_bound(self):
        machine = ReplicatedStateMachine(max_clients=2)
        feed(machine, submit("alice", "r1"), submit("bob", "r1"), submit("alice", "r2"),
             submit("carol", "r1"))
        self.assertIsNone(machine.lookup(submit("bob", "r1")))
        self.assertIsNotNone(machine.lookup(submit("alice", "r1")))
        self.assertIsNotNone(machine.lookup(submit("carol", "r1")))

    def test_session_recency_survives_a_snapshot_and_is_part_of_the_hash(self):
        one, two = ReplicatedStateMachine(max_clients=2), ReplicatedStateMachine(max_clients=2)
        feed(one, submit("alice", "r1"), submit("bob", "r1", side="sell", price="200"),
             submit("alice", "r1"))
        feed(two, submit("alice", "r1"), submit("bob", "r1", side="sell", price="200"),
             submit("bob", "r1", side="sell", price="200"))
        self.assertNotEqual(one.state_hash(), two.state_hash())  # same content, other recency
        copy = ReplicatedStateMachine.restore(json.loads(json.dumps(one.snapshot())), max_clients=2)
        self.assertEqual(copy.state_hash(), one.state_hash())
        feed(one, submit("carol", "r1"))
        feed(copy, submit("carol", "r1"))
        self.assertIsNone(copy.lookup(submit("bob", "r1")))
        self.assertEqual(copy.state_hash(), one.state_hash())

    def test_entries_must_be_applied_in_index_order(self):
        machine = ReplicatedStateMachine()
        with self.assertRaises(ValueError):
            machine.apply({"index": 2, "term": 1, "command": None})

    def test_snapshot_restores_exchange_and_sessions_with_the_same_hash(self):
        machine = ReplicatedStateMachine()
        feed(machine, submit("alice", "r1"), submit("bob", "r1", side="sell", price="99"))
        data = json.loads(json.dumps(machine.snapshot()))
        copy = ReplicatedStateMachine.restore(data)
        self.assertEqual((copy.state_hash(), copy.applied), (machine.state_hash(), 2))
        self.assertEqual(feed(copy, submit("alice", "r1"), submit("carol", "r1")),
                         feed(machine, submit("alice", "r1"), submit("carol", "r1")))

    def test_state_hash_covers_the_session_table(self):
        one, two = ReplicatedStateMachine(), ReplicatedStateMachine()
        feed(one, submit("alice", "r1", price="-1"))
        feed(two, submit("bob", "r1", price="-1"))
        self.assertEqual(one.exchange.state_hash(), two.exchange.state_hash())
        self.assertNotEqual(one.state_hash(), two.state_hash())
