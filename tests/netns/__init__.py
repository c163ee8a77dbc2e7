"""The exchange across hosts under a nemesis (issue 13, item 4), bottom-up:

- ``hosts``: hosts as network namespaces on one switch; kernel faults
  (a cable pulled, blackhole routes); processes started and killed by PID.
- ``proxy``: a Toxiproxy-like TCP proxy (latency, jitter, drops, cuts).
- ``archive``: every version of every peer's log file, hard-linked as it
  appears (compaction rewrites them), and the committed log rebuilt.
- ``cluster``: grapes, peers and their link proxies on those hosts, from
  the topology renderer's per-machine configs; reading each peer's files
  and the archive back.
- ``workload``: clients trading crossing orders, recording a history.
- ``checker``: the history against the replayed log (pure).
- ``nemesis``: the seeded schedule of faults, and the figures of its runs.
- ``run``: one run end to end (``make nemesis``; ``test_nemesis`` in CI).
"""
