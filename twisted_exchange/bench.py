"""``make bench``: every layer's benchmark, each in its own interpreter.

Each benchmark lives next to the code it measures and prints its own table,
with a baseline measured in the same run.  Running them as separate processes
keeps one benchmark's heap and caches out of the next one's figures.
"""
from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    ("matching core", "twisted_exchange.core.bench"),
    ("replication", "twisted_exchange.wal.bench"),
    ("grenache rpc", "twisted_exchange.grenache.bench"),
]


def main() -> int:
    failed = []
    for title, module in BENCHMARKS:
        print(f"\n=== {title} ({module}) ===", flush=True)
        if subprocess.call([sys.executable, "-m", module]) != 0:
            failed.append(module)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
