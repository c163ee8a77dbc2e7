"""``make bench-peers``: our core against the order books of PyPI, on one workload.

``python -m twisted_exchange.core.peers.bench [--depths 1000,100000,1000000]
[--commands 100000] [--rounds 3] [--seed 1] [--venv DIR]``

The peer engines are pinned in :data:`.engines.ENGINES` and installed into a
virtual environment of their own (``--venv``, made on first use with
``python -m venv`` and pip), never into the project's.  For each depth the
:mod:`.workload` is written once to a file; every round then runs every
engine on it in a fresh process (:mod:`.engines`), engines interleaved so
that a noisy moment on the machine hits them all alike, and the best round
counts.  Reported per engine and depth: commands per second (CPU time) and
its ratio to ours, fills (and whether they equal ours: a different count on
the same commands is a matching bug or an API that does not report them),
commands the engine raised on, and bytes per resting order (growth of the
resident set over the prefill, divided by the depth: meaningful at the
largest depth only).  An engine that fails to install or to run is reported
in one line and the others go on.

Latest figures (``make bench-peers``, seed 1, 100,000 commands, best of 3
interleaved rounds, CPU time; this 2-core machine, shared with other work;
bytes per order from the resident set: noise at 10^3).  "before" is the core
as of 21b8cfc, "after" with the keys-view and client-cache changes of the
same branch; the two runs overlapped, and the difference is within noise::

    engine                  D=10^3 cmds/s        D=10^5 cmds/s        D=10^6   bytes/order
                            before    after      before    after      before   at 10^6
    twisted_exchange core   141,594  145,398     132,307  130,046    103,653      271
    cython-orderbook        245,039  231,120     267,545  228,745    189,144      359
    akhil4n-orderbook       225,581  223,260     249,453  226,814    210,395      407
    pyorderbook             121,186  120,797     130,126  129,312    101,577      493
    fastlob (637 errors)     61,345   55,332      59,579   55,806     62,213      518
    limit-order-book (C++)  838,311  796,472     818,902  780,953    770,302       92

Fills agree (43,955 / 45,029 / 50,774) for every engine that reports them
except fastlob, which counts only makers it fills completely and raises
KeyError on some cancels of its own orders (the "errors").

Where our time goes (cProfile, D=10^3): parsing and checking the command
dict about 30%, the exchange's bookkeeping (ids, retention, statuses, trade
records) about 35%, the book itself about 20%, building the reply 10%.  It
is call overhead more than work: about 25 Python-level calls per submit.
A trial mypyc build of the six core modules, unchanged, ran 1.2x faster
(171k against 144k cmds/s at D=10^3) and failed 14 core/replication tests,
because compiled functions check argument types at the call: a query or
restore given a wrong type raises TypeError before our own check can answer
ERR_INVALID_QUERY / ERR_INVALID_SNAPSHOT.  Issue 12's 400,000 cmds/s needs
both: fewer calls on the submit path, and a compiled build whose public
entry points take ``object``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from . import engines
from .workload import Workload

OURS = "twisted_exchange core"
ROOT = Path(__file__).resolve().parents[3]  # the checkout: what ``ours`` imports
DEFAULT_VENV = ROOT / "build" / "bench-peers-venv"  # ``make clean`` removes it


def install(venv: Path) -> dict[str, str]:
    """Make ``venv`` hold every pinned peer engine; engine -> why not, for those that failed."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    failed = {}
    for name, (_, requirement) in engines.ENGINES.items():
        if requirement is None:
            continue
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               requirement], capture_output=True, text=True)
        if done.returncode:
            lines = (done.stderr or done.stdout).strip().splitlines() or ["pip failed"]
            failed[name] = lines[-1]
    return failed


def run_engine(name: str, workload: Path, venv: Path) -> dict:
    """One engine on one workload in a fresh process: its JSON line, or ``{"error": ...}``."""
    requirement = engines.ENGINES[name][1]
    python = sys.executable if requirement is None else str(venv / "bin" / "python")
    env = dict(os.environ, PYTHONPATH=str(ROOT)) if requirement is None else None
    done = subprocess.run([python, engines.__file__, name, str(workload)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        return {"error": lines[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(depth: int, args: argparse.Namespace, names: list[str], directory: Path) -> dict[str, dict]:
    """Best of ``args.rounds`` interleaved rounds of every engine at one depth."""
    workload = Workload(args.seed, depth, args.commands)
    path = directory / f"workload-{depth}.json"
    path.write_text(json.dumps({"prefill": workload.prefill, "commands": workload.commands}))
    best: dict[str, dict] = {}
    for _ in range(args.rounds):
        for name in names:
            result = run_engine(name, path, args.venv)
            kept = best.get(name)
            if kept is None or "error" in kept or result.get("seconds", float("inf")) < kept["seconds"]:
                best[name] = result
    path.unlink()
    return best


def report(depth: int, results: dict[str, dict]) -> None:
    ours = results.get(OURS, {})
    print(f"\ndepth {depth:,} resting orders, {ours.get('commands', 0):,} commands "
          f"(best round, CPU time)")
    if ours.get("implementation"):
        print(f"  ours: {ours['implementation']}")
    print(f"  {'engine':<24} {'cmds/s':>10} {'vs ours':>8} {'fills':>8} {'errors':>7} {'bytes/order':>12}")
    for name, result in results.items():
        if "error" in result:
            print(f"  {name:<24} failed: {result['error']}")
            continue
        rate = result["commands"] / result["seconds"]
        ratio = rate / (ours["commands"] / ours["seconds"]) if "seconds" in ours else float("nan")
        size = result["bytes_per_order"]
        print(f"  {name:<24} {rate:>10,.0f} {ratio:>7.2f}x {_fills(result, ours):>8} {result['errors']:>7,}"
              f" {'' if size is None else f'{size:,.0f}':>12}")
    for name, result in results.items():
        if name == OURS or "error" in result or result["fills"] == ours.get("fills"):
            continue
        if result["fills"] is None:
            print(f"  ! {name}: fills not compared: {result['fill_note']}")
        else:
            why = result["fill_note"] or "a matching difference: same commands, other fills"
            print(f"  ! {name}: {result['fills']:,} fills, ours {ours.get('fills', 0):,}: {why}")


def _fills(result: dict, ours: dict) -> str:
    fills: Optional[int] = result["fills"]
    return "n/a" if fills is None else f"{fills:,}" + ("" if fills == ours.get("fills") else "!")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="1000,100000,1000000",
                        help="resting orders before the timed commands, comma-separated")
    parser.add_argument("--commands", type=int, default=100_000, help="timed commands per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best counts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                        help=f"virtual environment of the peer engines (default {DEFAULT_VENV})")
    args = parser.parse_args(argv)
    skipped = install(args.venv)
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    names = [name for name in engines.ENGINES if name not in skipped]
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as directory:
        for depth in (int(text) for text in args.depths.split(",")):
            report(depth, compare(depth, args, names, Path(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
