"""The history checker on hand-made histories: each broken one is caught, the sound ones pass."""
from __future__ import annotations

import copy
import unittest

from tests.netns.checker import check, longest_gap
from tests.netns.workload import Op
from twisted_exchange.replication.state_machine import ReplicatedStateMachine


def submit(client: str, request: str, side: str, price: str, quantity: str) -> dict:
    return {"action": "submit", "client": client, "request": request, "symbol": "BTCUSD",
            "side": side, "type": "limit", "price": price, "quantity": quantity}


SELL = submit("alice", "r1", "sell", "100", "2")
BUY = submit("bob", "r1", "buy", "101", "1")


def replay(*commands: dict) -> list[dict]:
    """The log the real state machine makes of ``commands``, in order."""
    machine = ReplicatedStateMachine()
    log = []
    for index, command in enumerate(commands, 1):
        result = machine.apply({"index": index, "term": 1, "command": command})
        log.append({"index": index, "command": command, "result": result, "digest": machine.digest})
    return log


def acked(command: dict, log: list[dict], invoked: float, completed: float) -> Op:
    """``command`` acknowledged with the result its first entry in ``log`` carries."""
    entry = next(e for e in log if e["command"] == command)
    return Op(command["client"], command["request"], command, invoked, completed, "ok", entry["result"])


def head(log: list[dict]) -> tuple[int, str]:
    return log[-1]["index"], log[-1]["digest"]


class CheckerTests(unittest.TestCase):
    def setUp(self):
        self.log = replay(SELL, BUY)
        self.history = [acked(SELL, self.log, 0.0, 1.0), acked(BUY, self.log, 2.0, 3.0)]
        self.finals = {"peer1": head(self.log), "peer2": head(self.log)}

    def test_sequential_history_matching_the_log_passes(self):
        verdict = check(self.history, self.log, self.finals)
        self.assertTrue(verdict.ok, verdict)

    def test_concurrent_ops_may_execute_in_either_order(self):
        log = replay(BUY, SELL)
        history = [acked(SELL, log, 0.0, 5.0), acked(BUY, log, 1.0, 4.0)]
        self.assertTrue(check(history, log, {"peer1": head(log)}).ok)

    def test_retry_answered_from_the_session_table_is_one_execution(self):
        log = replay(SELL, BUY, BUY)
        verdict = check([acked(SELL, log, 0, 1), acked(BUY, log, 2, 3)], log, {"peer1": head(log)})
        self.assertTrue(verdict.ok, verdict)

    def test_late_replay_answered_with_the_original_reply_passes(self):
        log = replay(SELL, BUY, SELL)  # the replay's own entry, answered from the session table
        original = acked(SELL, log, 0.0, 1.0)
        late = Op("alice", "r1", SELL, 5.0, 6.0, "ok", log[2]["result"], replay=True)
        verdict = check([original, acked(BUY, log, 2.0, 3.0), late], log, {"peer1": head(log)})
        self.assertEqual(log[2]["result"], log[0]["result"])
        self.assertTrue(verdict.ok, verdict)

    def test_late_replay_executed_again_is_duplicated_and_contradicted(self):
        log = replay(SELL, BUY)
        again = replay(SELL, BUY, {**SELL, "request": "r2"})[-1]  # a session table that forgot r1
        log.append({**again, "command": SELL})
        late = Op("alice", "r1", SELL, 5.0, 6.0, "ok", again["result"], replay=True)
        verdict = check([*self.history, late], log, {"peer1": head(log)})
        self.assertEqual(verdict.duplicated, [("alice", "r1")])
        self.assertEqual(verdict.contradicted, [("alice", "r1")])

    def test_late_replay_within_the_window_refused_is_forgotten(self):
        late = Op("alice", "r1", SELL, 5.0, 6.0, "fail", error="ERR_STALE_REQUEST: r1", replay=True)
        verdict = check([*self.history, late], self.log, self.finals)
        self.assertEqual(verdict.forgotten, [("alice", "r1")])
        self.assertFalse(verdict.ok)

    def test_late_replay_beyond_the_window_may_be_stale_and_nothing_else(self):
        stale = Op("alice", "r1", SELL, 5.0, 6.0, "fail", error="ERR_STALE_REQUEST: r1", replay=True, stale_ok=True)
        self.assertTrue(check([*self.history, stale], self.log, self.finals).ok)
        reused = Op("alice", "r1", SELL, 5.0, 6.0, "fail", error="ERR_REQUEST_REUSED: r1", replay=True,
                    stale_ok=True)
        self.assertEqual(check([*self.history, reused], self.log, self.finals).forgotten, [("alice", "r1")])

    def test_late_replay_takes_no_part_in_real_time_order(self):
        # It completes after BUY began, yet "executes" at SELL's index: no reordering.
        late = Op("alice", "r1", SELL, 1.5, 1.8, "ok", self.log[0]["result"], replay=True)
        self.assertTrue(check([*self.history, late], self.log, self.finals).ok)

    def test_cancel_racing_a_fill_is_checked_like_any_command(self):
        cancel = {"action": "cancel", "client": "alice", "request": "r2", "order_id": "1"}
        log = replay(SELL, BUY, cancel)  # the fill came first: the cancel takes the rest, 1 of 2
        history = [*self.history, acked(cancel, log, 4.0, 5.0)]
        self.assertEqual(log[2]["result"]["order"]["filled"], "1")
        self.assertTrue(check(history, log, {"peer1": head(log)}).ok)
        refused = Op("alice", "r2", cancel, 4.0, 5.0, "fail", error="ERR_ORDER_CLOSED: order 1 is filled")
        verdict = check([*self.history, refused], log, {"peer1": head(log)})
        self.assertEqual(verdict.failed_executed, [("alice", "r2")])

    def test_fills_are_checked_against_the_price_an_amend_left(self):
        amend = {"action": "amend", "client": "alice", "request": "r2", "order_id": "1", "price": "102"}
        buy = submit("bob", "r1", "buy", "103", "1")
        log = replay(SELL, amend, buy)
        self.assertEqual(log[2]["result"]["fills"][0]["price"], "102")
        history = [acked(c, log, 2.0 * i, 2.0 * i + 1) for i, c in enumerate((SELL, amend, buy))]
        self.assertTrue(check(history, log, {"peer1": head(log)}).ok)
        forged = copy.deepcopy(log)
        forged[2]["result"]["fills"][0]["price"] = "100"  # at the price before the amend
        self.assertEqual(check([], forged, {"peer1": head(log)}).bad_trades, ["1"])

    def test_acknowledged_order_missing_from_the_log_is_lost(self):
        log = self.log[:1]
        verdict = check(self.history, log, {"peer1": head(log)})
        self.assertEqual(verdict.lost, [("bob", "r1")])
        self.assertFalse(verdict.ok)

    def test_command_executed_twice_is_duplicated(self):
        log = replay(SELL, BUY)
        again = replay(SELL, BUY, {**BUY, "request": "r2"})[-1]  # what a second execution looks like
        log.append({**again, "command": BUY})
        verdict = check(self.history, log, {"peer1": head(log)})
        self.assertEqual(verdict.duplicated, [("bob", "r1")])

    def test_reply_that_contradicts_the_log_is_caught(self):
        history = copy.deepcopy(self.history)
        history[1].result["fills"] = []  # the client was told it did not trade
        self.assertEqual(check(history, self.log, self.finals).contradicted, [("bob", "r1")])

    def test_op_ordered_before_one_that_completed_before_it_began_is_reordered(self):
        log = replay(BUY, SELL)  # BUY first, though SELL was acknowledged before BUY was sent
        history = [acked(SELL, log, 0.0, 1.0), acked(BUY, log, 2.0, 3.0)]
        self.assertEqual(check(history, log, {"peer1": head(log)}).reordered, [("bob", "r1")])

    def test_definite_refusal_that_executed_is_caught(self):
        history = [self.history[0], Op("bob", "r1", BUY, 2.0, 3.0, "fail", error="ERR_FORBIDDEN: no")]
        self.assertEqual(check(history, self.log, self.finals).failed_executed, [("bob", "r1")])

    def test_unknown_outcome_may_or_may_not_execute(self):
        unknown = Op("bob", "r1", BUY, 2.0, 9.0, "info", error="ERR_TIMEOUT")
        for log in (self.log, self.log[:1]):
            verdict = check([self.history[0], unknown], log, {"peer1": head(log)})
            self.assertTrue(verdict.ok, verdict)

    def test_order_filled_beyond_its_quantity_is_overfilled(self):
        log = replay(SELL, BUY)
        log[0]["result"]["order"]["quantity"] = "0.5"  # the maker was smaller than what traded
        verdict = check([], log, {"peer1": head(log)})
        self.assertIn(log[0]["result"]["order"]["id"], verdict.overfilled)

    def test_trade_above_the_buyers_limit_is_a_bad_trade(self):
        log = replay(SELL, BUY)
        log[1]["result"]["fills"][0]["price"] = "102"
        self.assertEqual(check([], log, {"peer1": head(log)}).bad_trades, ["1"])

    def test_replica_at_another_digest_or_silent_is_divergent(self):
        finals = {"peer1": head(self.log), "peer2": (2, "f" * 64), "peer3": None}
        self.assertEqual(check(self.history, self.log, finals).divergent, ["peer2", "peer3"])

    def test_longest_gap_is_the_longest_time_without_an_ack(self):
        self.assertEqual(longest_gap(self.history), 2.0)


if __name__ == "__main__":
    unittest.main()
