"""Judging peers' status replies: agreement, lag, unreachable peers, divergence."""
from __future__ import annotations

import unittest

from twisted_exchange.ctl.consistency import Observer


def status(applied: int, digest: str, role: str = "follower", last_index: int | None = None,
           commit: int | None = None, health: dict | None = None) -> dict:
    return {"applied": applied, "digest": digest, "role": role,
            "commit": applied if commit is None else commit,
            "last_index": applied if last_index is None else last_index,
            "health": health or {"ok": True, "problems": []}}


class ObserverTests(unittest.TestCase):

    def test_peers_at_one_index_with_one_hash_agree(self):
        verdict = Observer().observe({"peer1": status(7, "aa"), "peer2": status(7, "aa")})
        self.assertTrue(verdict.ok)
        self.assertEqual(verdict.summary(), "2 peers agree at applied index 7 (digest aa)")

    def test_same_index_different_hash_is_a_divergence(self):
        verdict = Observer().observe({"peer1": status(7, "aa"), "peer2": status(7, "bb"),
                                      "peer3": status(7, "aa")})
        self.assertFalse(verdict.ok)
        self.assertEqual([(d.applied, d.hashes) for d in verdict.divergences],
                         [(7, {"peer1": "aa", "peer2": "bb", "peer3": "aa"})])
        self.assertEqual(verdict.summary(), "peers diverge at applied index 7: peer1 aa, peer2 bb, peer3 aa")

    def test_a_divergence_between_different_state_machine_codes_says_so(self):
        verdict = Observer().observe({"peer1": dict(status(7, "aa"), state_machine_code="c0de01"),
                                      "peer2": dict(status(7, "bb"), state_machine_code="c0de02"),
                                      "peer3": dict(status(7, "aa"), state_machine_code="c0de01")})
        self.assertEqual(verdict.summary(), (
            "peers diverge at applied index 7: peer1 aa, peer2 bb, peer3 aa; they run different state-machine "
            "code (peer1 c0de01, peer2 c0de02, peer3 c0de01): peers that apply or replay an entry under code "
            "that answers it differently disagree from there on (see README, Upgrading)"))
        self.assertEqual(verdict.to_json()["peers"]["peer2"]["state_machine_code"], "c0de02")

    def test_a_divergence_under_one_code_or_unsaid_or_unprintable_codes_is_only_a_divergence(self):
        for codes in (("c0de", "c0de"), (None, "c0de"), ("\x1b[2J", "c0de")):
            statuses = {"peer1": status(7, "aa"), "peer2": status(7, "bb")}
            for peer, code in zip(statuses, codes):
                if code is not None:
                    statuses[peer]["state_machine_code"] = code
            verdict = Observer().observe(statuses)
            self.assertEqual(verdict.summary(), "peers diverge at applied index 7: peer1 aa, peer2 bb", codes)

    def test_a_lagging_peer_is_not_a_divergence_but_not_converged_either(self):
        verdict = Observer().observe({"peer1": status(7, "aa"), "peer2": status(5, "cc")})
        self.assertEqual(verdict.divergences, [])
        self.assertFalse(verdict.converged)
        self.assertIn("did not reach the same applied index with nothing pending: peer1 7, peer2 5", verdict.summary())

    def test_a_divergence_seen_earlier_is_remembered_after_peers_move_on(self):
        observer = Observer()
        observer.observe({"peer1": status(5, "aa"), "peer2": status(4, "xx")})
        verdict = observer.observe({"peer1": status(9, "ff"), "peer2": status(5, "bb")})
        self.assertEqual([d.applied for d in verdict.divergences], [5])

    def test_a_lagging_peer_catching_up_with_the_same_hash_converges(self):
        observer = Observer()
        observer.observe({"peer1": status(9, "ff"), "peer2": status(5, "bb")})
        self.assertTrue(observer.observe({"peer1": status(9, "ff"), "peer2": status(9, "ff")}).ok)

    def test_an_unreachable_peer_prevents_agreement_and_is_named(self):
        verdict = Observer().observe({"peer1": status(7, "aa"), "peer2": RuntimeError("timed out")})
        self.assertFalse(verdict.ok)
        self.assertEqual(verdict.unreachable, {"peer2": "timed out"})
        self.assertEqual(verdict.summary(), "cannot compare: peer2: timed out")

    def test_json_form_carries_every_report(self):
        verdict = Observer().observe({"peer1": status(3, "aa"), "peer2": status(3, "bb")})
        data = verdict.to_json()
        self.assertFalse(data["ok"])
        self.assertEqual(data["peers"]["peer2"],
                         {"applied": 3, "digest": "bb", "pending": 0, "state_machine_code": None})
        self.assertEqual(data["divergences"], [{"applied": 3, "hashes": {"peer1": "aa", "peer2": "bb"}}])

    def test_an_unhealthy_peer_fails_the_check_and_says_why(self):
        sick = status(7, "aa", health={"ok": False, "problems": ["no leader known"]})
        verdict = Observer().observe({"peer1": status(7, "aa"), "peer2": sick})
        self.assertFalse(verdict.ok)
        self.assertEqual(verdict.unhealthy, {"peer2": ["no leader known"]})
        self.assertEqual(verdict.summary(), "unhealthy: peer2: no leader known")

    def test_entries_waiting_at_the_leader_are_not_convergence(self):
        verdict = Observer().observe({"peer1": status(7, "aa", role="leader", last_index=9),
                                      "peer2": status(7, "aa")})
        self.assertFalse(verdict.converged)
        self.assertIn("peer1 7 (+2 pending)", verdict.summary())

    def test_a_frozen_commit_while_the_leader_log_grows_is_stuck(self):
        observer = Observer()
        for end in (10, 20, 30):
            verdict = observer.observe({"peer1": status(7, "aa", role="leader", last_index=end),
                                        "peer2": status(7, "aa"), "peer3": status(7, "aa")})
        self.assertFalse(verdict.ok)
        self.assertEqual(set(verdict.stuck), {"peer1", "peer2", "peer3"})
        self.assertIn("commit index stays at 7 while the log grows from 10 to 30", verdict.summary())

    def test_a_follower_that_stops_committing_is_stuck_while_the_others_move_on(self):
        observer = Observer()
        for n in (10, 20, 30):
            verdict = observer.observe({"peer1": status(n, "x", role="leader", last_index=n + 2),
                                        "peer2": status(n, "x"), "peer3": status(5, "y")})
        self.assertEqual(set(verdict.stuck), {"peer3"})

    def test_a_busy_cluster_that_commits_is_not_stuck(self):
        observer = Observer()
        for n in (10, 20, 30):
            verdict = observer.observe({"peer1": status(n, "x", role="leader", last_index=n + 5),
                                        "peer2": status(n - 1, "y", last_index=n + 3)})
        self.assertEqual(verdict.stuck, {})

    def test_a_stall_that_ends_is_forgotten(self):
        observer = Observer()
        observer.observe({"peer1": status(7, "a", role="leader", last_index=10)})
        self.assertTrue(observer.observe({"peer1": status(7, "a", role="leader", last_index=12)}).stuck)
        self.assertEqual(observer.observe({"peer1": status(12, "b", role="leader", last_index=12)}).stuck, {})
