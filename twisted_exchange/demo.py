"""``make demo``: start the cluster, trade on different peers, show every book.

The demo is a script of ordinary ``exchangectl`` commands, printed before
they run, so that what it shows is exactly what a user can type next.
"""
from __future__ import annotations

import shlex
import subprocess
import sys

SCRIPT = [
    ["up"],
    ["submit", "sell", "1.5", "101", "--peer", "peer1", "--client", "alice"],
    ["submit", "sell", "2", "102", "--peer", "peer2", "--client", "bob"],
    ["submit", "buy", "1", "99.5", "--peer", "peer3", "--client", "carol"],
    ["submit", "buy", "2", "101.5", "--peer", "peer3", "--client", "dave"],
    ["submit", "buy", "1", "--type", "market", "--peer", "peer2", "--client", "erin"],
    ["book", "peer1"],
    ["book", "peer2"],
    ["book", "peer3"],
    ["trades", "peer1"],
    ["check"],
]


def exchangectl(*args: str) -> int:
    print(f"\n$ exchangectl {shlex.join(args)}", flush=True)
    return subprocess.call([sys.executable, "-m", "twisted_exchange.ctl", *args])


def main() -> int:
    for step in SCRIPT:
        if exchangectl(*step) != 0:
            print("\nthe demo stopped at a failed step; `exchangectl logs peer1` shows why",
                  file=sys.stderr)
            return 1
    print("\nThe cluster keeps running. Try:\n"
          "  exchangectl status\n"
          "  exchangectl submit buy 1 102 --peer peer2\n"
          "  exchangectl kill peer1        # chaos: SIGKILL a peer, supervisord restarts it\n"
          "  exchangectl book peer3\n"
          "Stop it with:\n"
          "  exchangectl down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
