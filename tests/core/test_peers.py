"""The shared workload of ``make bench-peers`` and our own adapter (no timing asserted)."""
import json
import tempfile
import unittest
from collections import Counter
from pathlib import Path

from twisted_exchange.core import Exchange
from twisted_exchange.core.peers.bench import DEFAULT_VENV, OURS, flatness, run_engine
from twisted_exchange.core.peers.engines import BACKED_BYTES, Ours, measure
from twisted_exchange.core.peers.workload import FAR, MID, Workload


def kind(command):
    """limit-near, limit-crossing, limit-far, market or cancel."""
    if command[0] != "limit":
        return command[0]
    _, _, side, price, _ = command
    if (price > MID) if side == "buy" else (price < MID):
        return "crossing"
    return "far" if abs(price - MID) >= FAR[0] else "near"


class WorkloadTests(unittest.TestCase):
    def test_same_seed_gives_the_same_commands_and_another_seed_others(self):
        self.assertEqual(Workload(7, 100, 1000).commands, Workload(7, 100, 1000).commands)
        self.assertNotEqual(Workload(7, 100, 1000).commands, Workload(8, 100, 1000).commands)

    def test_prefill_rests_on_both_sides_without_crossing(self):
        prefill = Workload(1, 2000, 0).prefill
        self.assertEqual(len(prefill), 2000)
        self.assertTrue(all(command[0] == "limit" and kind(command) != "crossing" for command in prefill))
        sides = Counter(command[2] for command in prefill)
        self.assertGreater(min(sides.values()), 800)

    def test_mix_is_the_issues_mix(self):
        counts = Counter(kind(command) for command in Workload(1, 1000, 20_000).commands)
        share = {name: count / 20_000 for name, count in counts.items()}
        self.assertAlmostEqual(share["near"] + share["crossing"], 0.70, delta=0.02)
        self.assertAlmostEqual(share["crossing"] / (share["near"] + share["crossing"]), 1 / 3, delta=0.02)
        self.assertAlmostEqual(share["cancel"], 0.15, delta=0.01)
        self.assertAlmostEqual(share["market"], 0.05, delta=0.01)
        self.assertAlmostEqual(share["far"], 0.10, delta=0.01)

    def test_order_ids_count_up_from_one_and_cancels_name_earlier_limit_orders(self):
        workload = Workload(3, 50, 500)
        ids = [command[1] for command in workload.prefill + workload.commands if command[0] != "cancel"]
        self.assertEqual(ids, list(range(1, len(ids) + 1)))
        limits = set()
        for command in workload.prefill + workload.commands:
            if command[0] == "cancel":
                self.assertIn(command[1], limits)
            elif command[0] == "limit":
                limits.add(command[1])


class OurAdapterTests(unittest.TestCase):
    def test_counts_the_fills_the_core_reports_on_the_same_commands(self):
        workload = Workload(5, 200, 2000)
        result = measure(Ours(), workload.prefill, workload.commands)

        commands = Ours()
        exchange = Exchange()
        replies = [exchange.apply(command)
                   for command in commands.prepare(workload.prefill) + commands.prepare(workload.commands)]

        fills = sum(len(reply["fills"]) for reply in replies if reply["ok"])
        self.assertGreater(fills, 0)
        self.assertEqual(result["fills"], fills)
        self.assertEqual(result["errors"], 0)
        self.assertEqual(result["commands"], 2000)

    def test_the_timed_commands_start_on_backed_pages_unless_asked_for_cold_ones(self):
        workload = Workload(5, 50, 200)
        warm = measure(Ours(), workload.prefill, workload.commands)
        cold = measure(Ours(), workload.prefill, workload.commands, back_pages=False)
        self.assertEqual((warm["backed_bytes"], cold["backed_bytes"]), (BACKED_BYTES, 0))
        for result in (warm, cold):
            self.assertGreaterEqual(result["kernel_seconds"], 0)
            self.assertLessEqual(result["kernel_seconds"], result["seconds"] + 0.01)  # clock granularity

    def test_buyers_and_sellers_are_distinct_clients_so_nothing_is_self_trade_cancelled(self):
        adapter = Ours()
        commands = adapter.prepare(Workload(2, 0, 3000).commands)
        buyers = {c["client"] for c in commands if c.get("side") == "buy"}
        sellers = {c["client"] for c in commands if c.get("side") == "sell"}
        self.assertFalse(buyers & sellers)


class RunEngineTests(unittest.TestCase):
    def test_ours_runs_in_a_child_that_passes_cold_pages_on(self):
        workload = Workload(4, 20, 100)
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "workload.json"
            path.write_text(json.dumps({"prefill": workload.prefill, "commands": workload.commands}))
            warm = run_engine(OURS, path, DEFAULT_VENV)
            cold = run_engine(OURS, path, DEFAULT_VENV, cold_pages=True)
        self.assertEqual((warm["commands"], warm["errors"], warm["backed_bytes"]), (100, 0, BACKED_BYTES))
        self.assertEqual((cold["commands"], cold["errors"], cold["backed_bytes"]), (100, 0, 0))
        self.assertEqual(warm["fills"], cold["fills"])


class FlatnessTests(unittest.TestCase):
    def test_cost_at_the_largest_depth_over_the_smallest_per_engine_that_ran_at_both(self):
        by_depth = {
            1000: {"ours": {"seconds": 1.0, "commands": 100}, "other": {"seconds": 2.0, "commands": 100},
                   "broken": {"error": "boom"}},
            10**6: {"ours": {"seconds": 1.5, "commands": 100}, "other": {"seconds": 2.0, "commands": 50},
                    "broken": {"seconds": 1.0, "commands": 100}},
        }
        self.assertEqual(flatness(by_depth), {"ours": 1.5, "other": 2.0})
        self.assertEqual(flatness({1000: by_depth[1000]}), {})
