"""Benchmark of the matching core against the naive reference model.

``python -m twisted_exchange.core.bench [--commands N] [--seed S]``

One seeded workload (60% limit orders around a moving mid, 15% cancels, 10%
market, 10% ioc, 5% amends; 1,000 clients) is run through
:meth:`Exchange.apply` and through
:class:`~twisted_exchange.core.reference.ReferenceExchange` in the same
process.  The naive model costs O(resting orders) per command, so it runs
only the first ``--naive-commands`` commands (default 20,000) of the same
stream, and the engine's rate over that same prefix is printed next to it.
Then the cost per command is measured on books pre-filled with 10^3, 10^5
and 10^6 resting orders (engine; naive at 10^3 and 10^5), and the memory
per resting order with tracemalloc.  Targets: >= 200,000 commands/s,
>= 20x naive at 10^5 resting, flat cost (+-20%) from 10^3 to 10^6, <= 500
bytes per resting order.  The first line says which core ran, the source or
its mypyc build (:data:`twisted_exchange.core.COMPILED`; compare the two
with ``TWISTED_EXCHANGE_CORE=pure`` and ``=compiled``); issue 12's figures
against the peer engines are in :mod:`.peers.bench`.

Issue 12, one session, one after the other (``--commands 100000
--naive-commands 2000 --batch 5000 --repeats 2``; this shared 2-core
machine; "before" is 9983fa2)::

                         from empty   us/command at 10^3 / 10^5 / 10^6   bytes/order
    before (9983fa2)     167k cmd/s   5.33 / 5.57 / 6.16  (1.16x)            230
    after, pure          227k cmd/s   4.00 / 4.53 / 4.68  (1.17x)            222
    after, compiled      502k cmd/s   1.56 / 1.87 / 1.97  (1.27x)            262

The compiled core's cost grows by about 0.4 us from 10^3 to 10^6, less than
before's 0.8 us, but that is a larger share of a smaller cost (cache misses
on a bigger heap; see :mod:`.peers.bench`).

Latest (2026-11-30, the order index of :mod:`.index`; ``make bench``,
compiled): 499k cmd/s from empty; 1.53 / 1.57 / 1.78 us per command at
10^3 / 10^5 / 10^6 resting (1.16x); 169 bytes per resting order.
"""
from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from contextlib import contextmanager
from itertools import islice
from typing import Iterator

from . import COMPILED, Exchange
from .reference import ReferenceExchange

MID = 10_000  # in ticks of 0.01: a price of 100.00
SYMBOL = "BTCUSD"


class Workload:
    """The seeded command stream; ids are predicted because every submit is accepted."""

    def __init__(self, seed: int, clients: int = 1000) -> None:
        self.rng = random.Random(seed)
        self.clients = [f"c{n}" for n in range(clients)]
        self.owners: list[str] = []   # client of order id n + 1
        self.mid = MID
        self.requests = 0

    def commands(self) -> Iterator[dict]:
        rng = self.rng
        while True:
            roll = rng.random()
            if roll < 0.60:
                yield self.limit(aggressive=rng.random() < 0.05)
            elif roll < 0.75:
                yield self.cancel()
            elif roll < 0.85:
                yield self.submit(rng.choice(("buy", "sell")), None, {})
            elif roll < 0.95:
                yield self.limit(aggressive=True, tif="ioc")
            else:
                yield self.amend()
            if rng.random() < 0.01:
                self.mid = max(1000, self.mid + rng.choice((-1, 1)))

    def resting(self, count: int) -> Iterator[dict]:
        """``count`` limit orders that never cross (bids below mid, asks above)."""
        for _ in range(count):
            yield self.limit(aggressive=False)

    def limit(self, aggressive: bool, tif: str = "gtc") -> dict:
        rng = self.rng
        side = rng.choice(("buy", "sell"))
        distance = 1 + int(rng.expovariate(1 / 50))
        if aggressive:
            distance = -rng.randrange(0, 5)
        price = self.mid - distance if side == "buy" else self.mid + distance
        return self.submit(side, price, {"tif": tif})

    def submit(self, side: str, price: int | None, fields: dict) -> dict:
        client = self.rng.choice(self.clients)
        self.owners.append(client)
        command = self.base("submit", client)
        command.update(symbol=SYMBOL, side=side, quantity=str(self.rng.randint(1, 20)), **fields)
        if price is None:
            command["type"] = "market"
        else:
            command["type"] = "limit"
            command["price"] = f"{price // 100}.{price % 100:02d}"
        return command

    def cancel(self) -> dict:
        order_id = self.pick()
        command = self.base("cancel", self.owners[order_id - 1])
        command["order_id"] = str(order_id)
        return command

    def amend(self) -> dict:
        order_id = self.pick()
        command = self.base("amend", self.owners[order_id - 1])
        command["order_id"] = str(order_id)
        command["quantity"] = str(self.rng.randint(1, 20))
        return command

    def pick(self) -> int:
        """A recent order id: recent orders are the likeliest to be open."""
        submitted = len(self.owners)
        return max(1, submitted - int(self.rng.expovariate(1 / 200)))

    def base(self, action: str, client: str) -> dict:
        self.requests += 1
        return {"action": action, "client": client, "request": str(self.requests)}


def run(exchange, commands: list, collector: bool = True) -> float:
    """CPU seconds of this process to apply ``commands`` (other load on the machine does not count).

    ``collector=False`` pauses Python's cyclic garbage collector for the run,
    which separates the engine's own cost from the collector's scans of the
    long-lived orders.
    """
    apply = exchange.apply
    gc.collect()
    if not collector:
        gc.disable()
    try:
        start = time.process_time()
        for command in commands:
            apply(command)
        return time.process_time() - start
    finally:
        gc.enable()


@contextmanager
def harness_frozen():
    """Keep the benchmark's own objects (pre-built commands, snapshots) out of the collector's way.

    Everything alive on entry is frozen; exchanges built inside are collected
    normally, as they would be in a peer.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def best(build, commands: list, repeats: int, collector: bool = True) -> float:
    """The fastest of ``repeats`` runs, each on a freshly built exchange."""
    return min(run(build(), commands, collector) for _ in range(repeats))


def throughput(args) -> None:
    commands = list(islice(Workload(args.seed).commands(), args.commands))
    prefix = commands[:args.naive_commands]
    with harness_frozen():
        engine = best(Exchange, commands, args.repeats)
        paused = run(Exchange(), commands, collector=False)
        engine_prefix = best(Exchange, prefix, args.repeats)
        naive = run(ReferenceExchange(), prefix)
    print(f"throughput: seeded mix from an empty book (seed {args.seed}, best of {args.repeats}, CPU time)")
    print(f"  engine  {len(commands):>9,} commands  {len(commands) / engine:>10,.0f} commands/s")
    print(f"  engine  {len(commands):>9,} commands  {len(commands) / paused:>10,.0f} commands/s"
          "  (cyclic gc paused)")
    print(f"  engine  {len(prefix):>9,} commands  {len(prefix) / engine_prefix:>10,.0f} commands/s")
    print(f"  naive   {len(prefix):>9,} commands  {len(prefix) / naive:>10,.0f} commands/s")
    print(f"  engine / naive on the same {len(prefix):,} commands: {naive / engine_prefix:,.0f}x")


def cost_per_command(args) -> None:
    """Cost of the same mix on books pre-filled with 10^3, 10^5 and 10^6 resting orders.

    Every row runs the same number of commands (``--batch``); the mix adds
    resting orders, so the small book grows during its batch (the table says
    to what).  Each figure is the best of ``repeats`` batches.  At 10^3 and
    10^5 every batch starts from a restored snapshot of the pre-filled book;
    at 10^6 the batches run one after the other on one book (restoring a
    million orders takes longer than the batch, which barely changes it).
    """
    print(f"cost per command of the same mix on a pre-filled book ({args.batch:,} commands, "
          f"best of {args.repeats}, CPU time)")
    print("  'engine': as a peer runs it; 'gc paused': Python's cyclic collector paused during the batch")
    print(f"  {'resting':>9}  {'after':>9}  {'engine us':>9}  {'vs 10^3':>7}  {'gc paused':>9}  {'vs 10^3':>7}"
          f"  {'naive us':>9}  {'engine/naive':>12}")
    baselines = None
    for resting, naive_batch in [(10**3, 1_000), (10**5, 100), (10**6, 0)]:
        workload = Workload(args.seed)
        prefill = list(workload.resting(resting))
        commands = list(islice(workload.commands(), args.batch))
        with harness_frozen():
            exchange = Exchange()
            for command in prefill:
                exchange.apply(command)
            if naive_batch:
                snapshot = exchange.snapshot()
                costs = [best(lambda: Exchange.restore(snapshot), commands, args.repeats, collector)
                         for collector in (True, False)]
                naive = run(ReferenceExchange.restore(snapshot), commands[:naive_batch]) / naive_batch
                run(exchange, commands)
            else:
                costs = [min(run(exchange, commands, collector) for _ in range(args.repeats))
                         for collector in (True, False)]
            after = exchange.stats()["resting_orders"]
            del exchange
        engine, paused = (cost / args.batch for cost in costs)
        baselines = baselines or (engine, paused)
        line = (f"  {resting:>9,}  {after:>9,}  {engine * 1e6:>9.2f}  {engine / baselines[0]:>7.2f}"
                f"  {paused * 1e6:>9.2f}  {paused / baselines[1]:>7.2f}")
        if naive_batch:
            line += f"  {naive * 1e6:>9,.0f}  {naive / engine:>11,.0f}x"
        print(line, flush=True)


def memory(args) -> None:
    count = 100_000
    commands = list(Workload(args.seed).resting(count))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    exchange = Exchange()
    for command in commands:
        exchange.apply(command)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    levels = exchange.book(SYMBOL, 10**9)
    print(f"memory: {used / count:,.0f} bytes per resting order "
          f"({count:,} orders on {len(levels['bids']) + len(levels['asks']):,} levels, tracemalloc)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1_000_000, help="engine commands (default 1,000,000)")
    parser.add_argument("--naive-commands", type=int, default=20_000,
                        help="prefix of the same stream run through the naive model (default 20,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=10_000,
                        help="commands per row of the cost table (default 10,000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the best counts (default 3)")
    args = parser.parse_args(argv)
    print(f"core: {'compiled (mypyc)' if COMPILED else 'pure Python'} (TWISTED_EXCHANGE_CORE chooses)")
    throughput(args)
    cost_per_command(args)
    memory(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
