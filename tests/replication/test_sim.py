"""The fault simulator: clean runs stay clean, and each injected bug is caught.

Fault injection: a ``RaftNode`` subclass that breaks exactly one rule by
overriding the small method that implements it, handed to the simulator as
``node_factory``.  This hook exists only for these tests.
"""
from __future__ import annotations

import unittest
from unittest import mock

from click.testing import CliRunner

from twisted_exchange.replication import sim
from twisted_exchange.replication.raft import RaftNode

BUG_SEEDS = 30   # the simulator must expose each bug within this many seeds


class CommitsWithoutMajority(RaftNode):
    def _commit_candidate(self) -> int:
        return self.last_index


class VotesTwiceInATerm(RaftNode):
    def _can_vote(self, message: dict) -> bool:
        return True


class AppliesBeforeCommit(RaftNode):
    def _apply_limit(self) -> int:
        return self.last_index


class SkipsLogUpToDateCheck(RaftNode):
    def _log_is_up_to_date(self, last_index: int, last_term: int) -> bool:
        return True


def first_violation(node_factory: type[RaftNode]) -> str | None:
    for seed in range(BUG_SEEDS):
        outcome = sim.simulate(seed, node_factory=node_factory)
        if outcome.violation:
            return outcome.violation
    return None


class CleanRunTests(unittest.TestCase):

    def test_twenty_seeds_of_three_nodes_hold_every_invariant(self):
        for seed in range(20):
            outcome = sim.simulate(seed)
            self.assertIsNone(outcome.violation, outcome.reproduce())
            self.assertGreater(outcome.commits, 0)
            self.assertGreater(sum(outcome.faults.values()), 0)

    def test_five_nodes_hold_every_invariant(self):
        for seed in range(5):
            outcome = sim.simulate(seed, nodes=5)
            self.assertIsNone(outcome.violation, outcome.reproduce())

    def test_messages_and_snapshots_survive_a_json_round_trip(self):
        for seed in range(3):
            self.assertIsNone(sim.simulate(seed, wire=True).violation)

    def test_same_seed_gives_the_same_run(self):
        self.assertEqual(sim.simulate(7, steps=1500), sim.simulate(7, steps=1500))


class InjectedBugTests(unittest.TestCase):

    def test_commit_without_majority_is_caught(self):
        self.assertIsNotNone(first_violation(CommitsWithoutMajority))

    def test_voting_twice_in_a_term_is_caught_as_two_leaders(self):
        self.assertIn("two leaders in term", first_violation(VotesTwiceInATerm) or "")

    def test_applying_before_commit_is_caught(self):
        self.assertIsNotNone(first_violation(AppliesBeforeCommit))

    def test_skipping_the_log_up_to_date_check_is_caught(self):
        self.assertIsNotNone(first_violation(SkipsLogUpToDateCheck))


class CommandLineTests(unittest.TestCase):

    def test_clean_seeds_exit_zero_with_a_summary(self):
        result = CliRunner().invoke(sim.main, ["--seeds", "2", "--steps", "800", "--jobs", "1"])
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("seeds run: 2", result.output)
        self.assertIn("violations: 0", result.output)

    def test_violation_exits_one_and_prints_the_reproduce_command(self):
        def buggy(seed, nodes, steps):
            return sim.Simulation(seed, nodes, steps, node_factory=VotesTwiceInATerm).run()

        with mock.patch.object(sim, "simulate", buggy):
            result = CliRunner().invoke(sim.main, ["--seeds", "1", "--seed", "0", "--jobs", "1"])
        self.assertEqual(result.exit_code, 1, result.output)
        self.assertIn("two leaders in term", result.output)
        self.assertIn(f"python -m twisted_exchange.replication.sim --seeds 1 --seed 0 --nodes 3 "
                      f"--steps {sim.DEFAULT_STEPS}", result.output)
