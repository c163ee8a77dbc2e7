"""ReplicatedStateMachine: the exchange behind the session table, and the digest."""
from __future__ import annotations

import json
import unittest

from hypothesis import given, settings, strategies as st

from twisted_exchange.replication.sessions import WINDOW, SessionTable
from twisted_exchange.replication.state_machine import ReplicatedStateMachine

SMALL = dict(window=4, result_bytes=2048, kept_bytes=4 * 4 * 2500)  # a few clients' windows


def submit(client: str, request: str, side: str = "buy", price: str = "100") -> dict:
    return {"action": "submit", "client": client, "request": request, "symbol": "BTCUSD",
            "side": side, "type": "limit", "price": price, "quantity": "1"}


def feed(machine: ReplicatedStateMachine, *commands: dict | None) -> list:
    return [machine.apply({"index": machine.applied + 1, "term": 1, "command": command})
            for command in commands]


def executed(machine: ReplicatedStateMachine) -> int:
    """How many submits the exchange accepted: each one numbers an order."""
    return machine.exchange.stats()["last_order_id"]


def code(result: dict) -> str:
    return result["error"].split(":")[0]


def copy_of(machine: ReplicatedStateMachine, **bounds) -> ReplicatedStateMachine:
    data = json.loads(json.dumps(machine.snapshot()))
    return ReplicatedStateMachine.restore(data, SessionTable(**bounds))


class ExactlyOnceTests(unittest.TestCase):

    def test_retried_request_returns_the_original_result_without_executing_again(self):
        machine = ReplicatedStateMachine()
        first, retry = feed(machine, submit("alice", "r1"), submit("alice", "r1"))
        self.assertEqual(first, retry)
        self.assertEqual(executed(machine), 1)

    def test_same_request_id_of_another_client_is_a_new_command(self):
        machine = ReplicatedStateMachine()
        first, other = feed(machine, submit("alice", "r1"), submit("bob", "r1"))
        self.assertNotEqual(first["order"]["id"], other["order"]["id"])

    def test_refused_command_is_remembered_too(self):
        machine = ReplicatedStateMachine()
        bad = dict(submit("alice", "r1"), price="-1")
        first, retry = feed(machine, bad, bad)
        self.assertFalse(first["ok"])
        self.assertEqual((retry, machine.lookup(bad)), (first, first))

    def test_late_retry_after_a_thousand_newer_requests_is_stale_and_not_executed(self):
        machine = ReplicatedStateMachine()
        feed(machine, *(submit("alice", f"r{n}") for n in range(1001)))
        [retry] = feed(machine, submit("alice", "r0"))
        self.assertEqual(code(retry), "ERR_STALE_REQUEST")
        self.assertEqual(executed(machine), 1001)

    def test_retry_within_the_window_gets_its_original_result(self):
        machine = ReplicatedStateMachine()
        results = feed(machine, *(submit("alice", f"r{n}") for n in range(WINDOW)))
        self.assertEqual(feed(machine, submit("alice", "r0")), results[:1])
        self.assertEqual(executed(machine), WINDOW)

    def test_reused_request_id_with_another_payload_is_refused_and_changes_nothing(self):
        machine = ReplicatedStateMachine()
        first, = feed(machine, submit("alice", "r1"))
        before = machine.state_hash()
        [reused] = feed(machine, submit("alice", "r1", price="101"))
        self.assertEqual(code(reused), "ERR_REQUEST_REUSED")
        self.assertEqual((machine.state_hash(), executed(machine)), (before, 1))
        self.assertEqual(feed(machine, submit("alice", "r1")), [first])

    def test_out_of_order_ids_within_the_window_each_execute_once(self):
        machine = ReplicatedStateMachine()
        order = ["r5", "r3", "r4", "r1", "r2", "r6"]
        results = feed(machine, *(submit("alice", request) for request in order))
        retries = feed(machine, *(submit("alice", request) for request in reversed(order)))
        self.assertTrue(all(result["ok"] for result in results))
        self.assertEqual(retries, results[::-1])
        self.assertEqual(executed(machine), len(order))

    def test_request_ids_order_by_length_then_text(self):
        machine = ReplicatedStateMachine(sessions=SessionTable(**SMALL))
        feed(machine, *(submit("alice", f"r{n}") for n in range(8, 14)))  # r9 < r10: r8, r9 dropped
        self.assertEqual(code(machine.lookup(submit("alice", "r9"))), "ERR_STALE_REQUEST")
        self.assertIsNone(machine.lookup(submit("alice", "r14")))

    def test_client_flood_then_an_honest_retry_never_executes_twice(self):
        for bounds in ({}, SMALL):
            with self.subTest(bounds=bounds):
                machine = ReplicatedStateMachine(sessions=SessionTable(**bounds))
                honest, = feed(machine, submit("alice", "r1"))
                feed(machine, *({"action": "cancel", "client": f"flood{n}", "request": "1", "order_id": "9"}
                                for n in range(100_001 if not bounds else 100)))
                [retry] = feed(machine, submit("alice", "r1"))
                self.assertTrue(retry == honest or code(retry) == "ERR_STALE_REQUEST")
                self.assertEqual(executed(machine), 1)

    def test_least_recently_active_client_keeps_only_its_floor(self):
        machine = ReplicatedStateMachine(sessions=SessionTable(**SMALL))
        feed(machine, submit("alice", "r1"), submit("bob", "r1"))
        feed(machine, *(submit(f"c{n}", "r1") for n in range(60)))
        self.assertEqual(code(machine.lookup(submit("alice", "r1"))), "ERR_STALE_REQUEST")
        self.assertIsNone(machine.lookup(submit("alice", "r2")))

    def test_new_client_past_the_client_cap_is_refused_and_known_clients_go_on(self):
        machine = ReplicatedStateMachine(sessions=SessionTable(**SMALL, clients=2))
        feed(machine, submit("alice", "r1"), submit("bob", "r1"))
        before = machine.state_hash()
        [refused] = feed(machine, submit("carol", "r1"))
        self.assertEqual(code(refused), "ERR_TOO_MANY_CLIENTS")
        self.assertEqual(machine.state_hash(), before)
        self.assertTrue(feed(machine, submit("alice", "r2"))[0]["ok"])

    def test_result_too_large_to_keep_is_stale_on_retry_not_executed(self):
        machine = ReplicatedStateMachine(sessions=SessionTable(**dict(SMALL, result_bytes=100)))
        feed(machine, submit("alice", "r1"), submit("alice", "r1"))
        self.assertEqual(code(machine.lookup(submit("alice", "r1"))), "ERR_STALE_REQUEST")
        self.assertEqual(executed(machine), 1)

    def test_kept_results_stay_within_the_byte_budget(self):
        table = SessionTable(**SMALL)
        machine = ReplicatedStateMachine(sessions=table)
        feed(machine, *(submit(f"c{n % 30}", f"r{n}") for n in range(300)))
        self.assertLessEqual(table.stats()["kept_bytes"], SMALL["kept_bytes"])

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(1, 12), st.sampled_from(["99", "100"])),
                    max_size=60))
    def test_no_request_ever_executes_twice_whatever_the_order_of_retries(self, requests):
        machine = ReplicatedStateMachine(sessions=SessionTable(**SMALL))
        first: dict = {}
        for client, number, price in requests:
            command = submit(client, f"r{number}", price=price)
            [result] = feed(machine, command)
            key = (client, number)
            if key in first and result.get("ok"):
                self.assertEqual(result, first[key][1])   # a kept result, never a second order
                self.assertEqual(command, first[key][0])
            if result.get("ok") and key not in first:
                first[key] = (command, result)
        self.assertEqual(executed(machine), len(first))


class StateTests(unittest.TestCase):

    def test_no_op_entry_changes_nothing_but_the_applied_index_and_digest(self):
        machine = ReplicatedStateMachine()
        before = machine.state_hash()
        self.assertEqual(feed(machine, None), [None])
        self.assertEqual((machine.applied, machine.state_hash()), (1, before))

    def test_entries_must_be_applied_in_index_order(self):
        machine = ReplicatedStateMachine()
        with self.assertRaises(ValueError):
            machine.apply({"index": 2, "term": 1, "command": None})

    def test_snapshot_restore_keeps_sessions_and_digest_identical(self):
        machine = ReplicatedStateMachine(sessions=SessionTable(**SMALL))
        feed(machine, *(submit(f"c{n % 7}", f"r{n}") for n in range(40)))
        copy = copy_of(machine, **SMALL)
        self.assertEqual((copy.state_hash(), copy.digest, copy.applied),
                         (machine.state_hash(), machine.digest, 40))
        more = [submit("c1", "r1"), submit("c3", "r39"), submit("zed", "r1"), submit("c2", "r99")]
        self.assertEqual(feed(copy, *more), feed(machine, *more))
        self.assertEqual((copy.state_hash(), copy.digest), (machine.state_hash(), machine.digest))

    def test_session_recency_is_part_of_the_hash(self):
        one = ReplicatedStateMachine()
        two = ReplicatedStateMachine()
        feed(one, submit("alice", "r1"), submit("bob", "r1", side="sell", price="200"), submit("alice", "r2"))
        feed(two, submit("alice", "r1"), submit("bob", "r1", side="sell", price="200"), submit("bob", "r2"))
        self.assertNotEqual(one.state_hash(), two.state_hash())

    def test_state_hash_covers_the_session_table(self):
        one, two = ReplicatedStateMachine(), ReplicatedStateMachine()
        feed(one, submit("alice", "r1", price="-1"))
        feed(two, submit("bob", "r1", price="-1"))
        self.assertEqual(one.exchange.state_hash(), two.exchange.state_hash())
        self.assertNotEqual(one.state_hash(), two.state_hash())

    def test_digest_differs_when_a_result_differs(self):
        one, two = ReplicatedStateMachine(), ReplicatedStateMachine()
        entry = {"index": 1, "term": 1, "command": submit("alice", "r1")}
        one.apply(entry)
        two.exchange.apply(submit("bob", "r0"))  # same command, another state: another result
        two.apply(entry)
        self.assertNotEqual(one.digest, two.digest)

    def test_digest_is_the_same_for_the_same_entries_and_results(self):
        one, two = ReplicatedStateMachine(), ReplicatedStateMachine()
        commands = [submit("alice", "r1"), None, submit("bob", "r1", side="sell", price="99")]
        feed(one, *commands)
        feed(two, *commands)
        self.assertEqual(one.digest, two.digest)

    def test_digest_update_depends_only_on_the_previous_digest_and_the_entry(self):
        # O(1) in the state: a machine with a large state and a fresh one
        # holding only the same digest extend the chain identically.
        large = ReplicatedStateMachine()
        feed(large, *(submit("maker", f"r{n}", price=str(50 + n % 40)) for n in range(300)))
        fresh = ReplicatedStateMachine(applied=large.applied, digest=large.digest)
        feed(large, None)
        feed(fresh, None)
        self.assertEqual(large.digest, fresh.digest)
