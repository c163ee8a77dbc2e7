"""Judging peers' status replies: agreement, lag, unreachable peers, divergence."""
from __future__ import annotations

import unittest

from twisted_exchange.ctl.consistency import Observer


def status(applied: int, digest: str) -> dict:
    return {"applied": applied, "state_hash": digest, "role": "follower"}


class ObserverTests(unittest.TestCase):

    def test_peers_at_one_index_with_one_hash_agree(self):
        verdict = Observer().observe({"peer1": status(7, "aa"), "peer2": status(7, "aa")})
        self.assertTrue(verdict.ok)
        self.assertEqual(verdict.summary(), "2 peers agree at applied index 7 (state_hash aa)")

    def test_same_index_different_hash_is_a_divergence(self):
        verdict = Observer().observe({"peer1": status(7, "aa"), "peer2": status(7, "bb"),
                                      "peer3": status(7, "aa")})
        self.assertFalse(verdict.ok)
        self.assertEqual([(d.applied, d.hashes) for d in verdict.divergences],
                         [(7, {"peer1": "aa", "peer2": "bb", "peer3": "aa"})])
        self.assertEqual(verdict.summary(), "peers diverge at applied index 7: peer1 aa, peer2 bb, peer3 aa")

    def test_a_lagging_peer_is_not_a_divergence_but_not_converged_either(self):
        verdict = Observer().observe({"peer1": status(7, "aa"), "peer2": status(5, "cc")})
        self.assertEqual(verdict.divergences, [])
        self.assertFalse(verdict.converged)
        self.assertIn("did not reach the same applied index: peer1 7, peer2 5", verdict.summary())

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
        self.assertEqual(data["peers"]["peer2"], {"applied": 3, "state_hash": "bb"})
        self.assertEqual(data["divergences"], [{"applied": 3, "hashes": {"peer1": "aa", "peer2": "bb"}}])
