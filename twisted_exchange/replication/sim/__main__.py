"""The simulator's command line: run seeds in parallel, print a summary, exit 1 on a violation."""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter

import click

from twisted_exchange.replication.sim.simulation import DEFAULT_STEPS, Outcome, simulate


def _run_seed(arguments: tuple[int, int, int]) -> Outcome:
    return simulate(*arguments)


@click.command()
@click.option("--seeds", default=100, show_default=True, help="How many seeds to run.")
@click.option("--seed", "first", default=0, show_default=True, help="The first seed.")
@click.option("--nodes", type=click.Choice(["3", "5"]), default="3", show_default=True)
@click.option("--steps", default=DEFAULT_STEPS, show_default=True, help="Events per seed before healing.")
@click.option("--jobs", default=os.cpu_count() or 1, show_default=True, help="Worker processes.")
def main(seeds: int, first: int, nodes: str, steps: int, jobs: int) -> None:
    """Run the deterministic fault simulator over a range of seeds."""
    work = [(seed, int(nodes), steps) for seed in range(first, first + seeds)]
    outcomes: list[Outcome] = []
    with multiprocessing.Pool(jobs) if jobs > 1 and seeds > 1 else _Serial() as pool:
        results = pool.imap_unordered(_run_seed, work, chunksize=max(1, seeds // (jobs * 20)))
        with click.progressbar(results, length=seeds, label=f"{nodes} nodes", file=sys.stderr) as bar:
            outcomes.extend(bar)
    outcomes.sort(key=lambda outcome: outcome.seed)
    faults = sum((outcome.faults for outcome in outcomes), Counter())
    failed = [outcome for outcome in outcomes if outcome.violation]
    click.echo(f"seeds run: {len(outcomes)}, nodes: {nodes}, steps per seed: {steps}")
    click.echo(f"faults injected: {sum(faults.values())} ({', '.join(f'{k} {v}' for k, v in sorted(faults.items()))})")
    click.echo(f"commits: {sum(o.commits for o in outcomes)}, elections: {sum(o.elections for o in outcomes)}, "
               f"acknowledged commands: {sum(o.acknowledged for o in outcomes)}")
    click.echo(f"violations: {len(failed)}")
    for outcome in failed:
        click.echo(f"seed {outcome.seed}: {outcome.violation}\n  reproduce: {outcome.reproduce()}")
    sys.exit(1 if failed else 0)


class _Serial:
    """The Pool interface, in this process (one job, or one seed)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def imap_unordered(self, function, iterable, chunksize: int = 1):
        return map(function, iterable)


if __name__ == "__main__":
    main()
