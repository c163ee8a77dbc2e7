"""``exchangectl bench-cluster`` (``make bench-cluster``): the cluster's figures.

In one run, on loopback: a fresh cluster as shipped (mutual TLS, a
credential per bench client; ``--plain`` drops TLS to show what it costs),
rendered with free ports into a temporary directory and started under
supervisord, loaded with crossing orders at 1 and at 64 in flight by
``loadgen.py`` (committed orders/s, p50/p99 latency); the time from
SIGKILL of the leader to the next committed order; a consistency check; and
the naive baseline (``naive.py``: match locally, broadcast, no consensus)
under the same 64-in-flight load, with how many of its books diverge; and
plain Grenache RPC at 64 in flight (``rpc_baseline``: Node's client and
server from tests/interop when node is there, else ours; see
grenache/bench.py), with ``ratio_to_rpc``, the cluster's 64-in-flight
orders/s over its requests/s.  Targets (issues 6 and 12): >= 5,000 orders/s
with p99 <= 20 ms at 64 in flight, p99 <= 5 ms at 1 in flight, failover
<= 2 s, 0 divergence, ratio to RPC >= 0.5; the naive baseline is expected
to diverge.

Figures before issue 12 (2026-11-29, 2 cores shared with two other jobs, so low
against the quiet-machine 3,864/s of issue 12; plain then TLS, one after the
other):

    cluster (plain HTTP),  1 in flight:  222 orders/s  p50 3.83 ms  p99 12.70 ms
    cluster (plain HTTP), 64 in flight: 1692 orders/s  p50 33.85 ms p99 86.27 ms
    cluster (mutual TLS),  1 in flight:  141 orders/s  p50 6.19 ms  p99 20.05 ms
    cluster (mutual TLS), 64 in flight: 1522 orders/s  p50 37.34 ms p99 152.83 ms
    failover 0.55 s (plain), 0.63 s (TLS); the naive baseline diverged 2 of 3 peers.

TLS costs 10% of throughput at 64 in flight and 2.4 ms per order at 1 in
flight (three TLS hops per order: client, forward, replicate).  Those hops
are kept-alive connections (no handshake per request: the sockets stay
ESTABLISHED through a run, TIME-WAIT only when the bench clients close),
and Nagle does not bite (one write per message each way; 0.13 ms p50 per
TLS call at 1 in flight in grenache/bench.py): the extra time is CPU, on
every hop, on a machine where peers and clients share two cores.

Issue 12 (2026-11-29, after against before = f6600c9, each pair run one
right after the other, load 1.5 to 2.5 from other jobs; absolute rates
still swing by half from one minute to the next):

    mutual TLS, 64 in flight:  1,450 -> 1,931 orders/s  p99 195 -> 136 ms
                  (2nd pair):  1,706 -> 2,674 orders/s  p99 167 ->  92 ms
    mutual TLS,  1 in flight:    185 ->   265 orders/s  p50 4.49 -> 3.37 ms  p99 16.1 -> 8.8 ms
                  (2nd pair):    222 ->   285 orders/s  p50 4.08 -> 3.27 ms  p99 10.6 -> 6.9 ms
    plain,      64 in flight:  2,241 -> 3,110 orders/s  p99 56 -> 40 ms
    plain,       1 in flight:    214 ->   367 orders/s  p50 4.29 -> 2.60 ms  p99 9.09 -> 4.67 ms
    naive baseline (our RPC, no consensus): 1,356 / 2,224 -> 4,404 / 4,476 orders/s (TLS runs)
    rpc_baseline (Node, 64 in flight): 4,897 and 3,289 req/s: ratio_to_rpc 0.39 and 0.81 (TLS),
    0.67 (plain, 4,629 req/s); failover 0.48-0.86 s before and after.

Met: ratio_to_rpc >= 0.5 in most runs, p99 <= 5 ms at 1 in flight over
plain HTTP.  NOT met: 5,000 orders/s and p99 <= 20 ms at 64 in flight, p99
<= 5 ms at 1 in flight over TLS.  Peers' CPU per committed order at 64 in
flight (TLS, /proc, interleaved runs): 0.80-0.86 ms before, 0.52-0.71 ms after;
the bench client adds ~0.25 ms, so on two shared cores ~1 ms of CPU per
order bounds the rate near 2,000-2,700/s whatever the latency.  What
changed: orjson on the wire and in the log, a lean HTTP/1.1 server, the GC
tuned for a peer, cheaper state-machine hashing.  Tried and dropped:
persisting each batch in a thread (fsync off the reactor, group commit):
more throughput while the RPC path was costly, less once CPU was the limit
(the thread hop per batch costs ~40 us of CPU).  Where a peer's time still
goes (py-spy): the pyOpenSSL memory-BIO TLS layer and socket sends (a
loopback send does the receiver's TCP work) are the largest shares, then
Twisted's reactor and Deferreds, then matching and replication; about 0.5
inter-peer RPC per order at 64 in flight (batches of ~9 entries to each
follower, ~3 forwards per batch to the leader), each with a reply that
carries nothing.

Where the time goes now (2026-11-29, shipped cluster, mutual TLS,
``exchangectl bench --clients 64``: 2,848 orders/s, p50 21.7 ms, p99 56.6
ms; one other job on the machine, 20% of both cores idle): CPU per
committed order 0.39 ms summed over the three peers (leader 43% of a core,
followers 34-35%) and 0.15 ms in the bench client, so 5,000 orders/s would
need 2.7 cores for CPU alone.  py-spy on the leader and a follower: 21-23%
of each reactor's time is fsync (0.11 ms each when the disk is idle, more
under this load), 15-19% socket sends, 12-19% epoll, and the Python work
(TLS through pyOpenSSL's memory BIO, HTTP, JSON, Raft, the state machine,
matching) is the other half.  Next: the leader's appends sent before its
own fsync (thesis 10.2.1; in Twisted that means persisting in the next
reactor turn, after the writes went out), and TLS through a C-level path
rather than pyOpenSSL's per-call cffi wrappers.

``make bench-cluster`` at the end of that session (compiled core, load
below 1): mutual TLS, 1 in flight 296 orders/s, p50 3.19 ms, p99 5.71 ms;
64 in flight 2,590 orders/s, p50 21.6 ms, p99 129 ms; failover 0.57 s;
Node's plain RPC 5,143 req/s, ratio_to_rpc 0.50; the naive baseline 4,957
orders/s with 2 of 3 books diverged.

Issue 12, next session (2026-11-30, quiet machine, mutual TLS, compiled
core; "before" is the same code without the change, run from a worktree
and interleaved with it):

- The bench clients open their connections before the clock starts
  (``bench.load``).  Before, every run's first ~150 ms were 192 TLS
  handshakes (64 clients x 3 peers): 1-2% of a 5 s run's samples at
  135-190 ms, which was most of the p99 reported at 64 in flight (129-143
  ms; 36-58 ms without them).
- Where one order's time goes at 1 in flight (timestamps in each peer, 300
  orders): sent to a follower, 6 process hops (client, follower, leader,
  followers, leader, follower, client) of 0.23-0.39 ms each and 2 fsyncs
  (leader 0.25-0.28 ms, follower 0.35-0.47 ms), 3.4 ms; sent to the leader,
  4 hops, 2.7 ms.  Most of a hop is CPU (TLS, HTTP, JSON, Twisted): the
  peers spent 3.7-4.0 ms of CPU per order at 1 in flight, about one RPC
  message in or out every 0.2 ms.
- A follower's acknowledgement now rides back as the answer to the
  ``raft.batch`` call that carried the entries (``replies``, see
  peer.transport) instead of a call of its own each way, so a replicated
  entry costs one call per follower instead of two.  Interleaved, two
  pairs: 1 in flight 302-326 -> 378-383 orders/s, p50 2.96-3.22 -> 2.50-2.54
  ms, p99 5.04-5.62 -> 4.75-4.77 ms; 64 in flight 2,778-2,838 -> 2,981-3,038
  orders/s, p99 44 -> 36-40 ms; peers' CPU per order 3.7-4.0 -> 2.9 ms at
  1 in flight and 0.39 -> 0.35 ms at 64.
- The report now shows CPU per order and the cores the 5,000 orders/s
  target would take at that cost: at 64 in flight, peers 0.35 ms + bench
  clients 0.16 ms = 2.6 cores, on a machine with 2.  That, not latency, is
  why the 64-in-flight targets are not met here: p99 <= 20 ms at 64 in
  flight needs about 5,000 orders/s by Little's law (p50 21 ms at 3,000/s).
- Tried and not kept: (1) the leader sending its appends before its own
  write (thesis 10.2.1; every event first saved the batch still unsaved,
  so no acknowledgement could count before the leader's own copy): no
  difference beyond noise in two quiet interleaved pairs (1 in flight p50
  3.12/3.23 against 3.42/3.01 ms), so not worth a second ordering rule on
  the safety path.  (2) The collector's young threshold at 700, 2,000 or
  10,000, and the middle one at 10 or 1,000: no difference beyond noise.
- What is left in the tail at 64 in flight: log compaction every 10,000
  entries costs each peer 40-50 ms under this load (the snapshot's data
  6.5 ms, its 3 MB of JSON 4.4 ms, a log rewrite and four fsyncs), all
  three at about the same index, so the cluster pauses 75-100 ms every
  10,000 orders (2.18 MB of the 3 MB are the 64 clients' session windows).

``make bench-cluster`` at the end of that session (quiet machine): mutual
TLS, 1 in flight 420 orders/s, p50 2.36 ms, p99 3.86 ms; 64 in flight 3,185
orders/s, p50 19.8 ms, p99 35.8 ms; CPU per order at 64 in flight 0.33 ms
(peers) + 0.16 ms (bench clients), 2.42 cores at 5,000 orders/s; failover
0.56 s; Node's plain RPC 5,335 req/s, ratio_to_rpc 0.60; the naive baseline
5,121 orders/s with 2 of 3 books diverged.

Issue 12, third session (2026-11-30, compiled core, mutual TLS):

- TLS through Python's ssl (grenache/tlsbio.py) instead of pyOpenSSL through
  Twisted's TLS layer.  Interleaved with the code before it, two pairs: 64
  in flight 3,001 / 3,143 -> 3,397 / 3,758 orders/s, p50 20.2-20.8 ->
  16.4-18.5 ms, p99 36.9-37.0 -> 32.7-34.0 ms; CPU per order at 64 in
  flight, peers 0.33-0.35 -> 0.28-0.32 ms, bench clients 0.16 -> 0.13-0.15
  ms; 1 in flight within noise (p99 4.1-5.0 ms either way).  TLS over
  plain: peers 0.372 against 0.277 ms per order before the change.
- Where a peer's time goes now (py-spy on the leader at 64 in flight,
  ~3,100 orders/s): 35% of its wall time in fsync (mean 0.76 ms a sync
  under this load, 0.17 ms on an idle disk), 11% socket sends, 10% epoll,
  the rest Python.  The bench client: Deferreds and coroutines a third,
  TLS 10%, uuid4 and secrets 7% (now the PRNG: wire.request_id).
- Tried and not kept: (1) the log allocated ahead (fallocate KEEP_SIZE)
  and fdatasync: alone, three writers synced 22% faster; in the cluster the
  peers' mean sync stayed 0.72-0.99 ms either way (the flush and the wait
  for a core, not the allocation).  (2) Closed orders forgotten 4,096 at a
  time in id order (core/peers/bench.py): no faster at 10^6.
- Log compaction's share of the tail, measured by running the same bench
  with ``--snapshot-every 0``: p99 40.7-40.8 -> 34.7-37.1 ms, p99.9 90-100
  -> 58-60 ms.  A compaction holds a peer's reactor 30-50 ms: the state
  machine's snapshot 16-35 ms (the exchange's rows: 0.6 us per order, with
  10,000 closed orders kept), its 3 MB of JSON 5-10 ms, the snapshot file
  3-11 ms, the log rewrite 2-5 ms.  Off the reactor it would take a fork
  (the rows are Python objects, under the GIL) and an ordering of the
  background write against an incoming InstallSnapshot in FileStorage.

- Messages leave at once when nothing is queued (grenache/writenow.py),
  instead of on the reactor's next turn after epoll says writable.  Four
  interleaved pairs, before -> after: 64 in flight 3,665 -> 4,664, 4,567
  -> 4,631, 3,739 -> 4,100 and 3,162 -> 3,857 orders/s (the machine's
  speed drifted by a third between pairs; within each pair after won); 1
  in flight 430 -> 494, 464 -> 479, 419 -> 431, 380 -> 464 orders/s.
- The leader's appends sent before its own write (branch send-first of
  the session before, rebased): measured again now that a send leaves at
  once, three interleaved pairs: 1 in flight p50 2.06-2.29 -> 1.86-2.20 ms
  but p99 3.4-3.8 -> 3.4-5.0 ms, and 64 in flight 3,921-4,350 ->
  3,544-3,775 orders/s with 10% more CPU per order (a batch's write in a
  turn of its own: more, smaller writes and syncs).  Not kept.

``make bench-cluster`` at the end of that session, twice (quiet machine):
1 in flight 402 / 374 orders/s, p50 2.37 / 2.50 ms, p99 4.37 / 4.95 ms; 64
in flight 3,767 / 3,294 orders/s, p50 16.4 / 18.6 ms, p99 33.3 / 41.1 ms;
CPU per order at 64 in flight 0.29 / 0.35 ms (peers) + 0.13 / 0.15 ms
(bench clients), 2.14 / 2.50 cores at 5,000 orders/s; failover 0.63 / 0.95
s; Node's plain RPC 5,254 / 5,200 req/s, ratio_to_rpc 0.72 / 0.63; the
naive baseline 5,780 / 5,126 orders/s with 2 of 3 books diverged.

Again after writenow.py, twice: 1 in flight 421 / 469 orders/s, p50 2.24 /
2.05 ms, p99 4.25 / 3.60 ms; 64 in flight 3,969 / 4,079 orders/s, p50 15.4
/ 15.2 ms, p99 41.1 / 32.7 ms, p99.9 98 / 86 ms; CPU per order at 64 in
flight 0.28 ms (peers) + 0.13 ms (bench clients), 2.07 / 2.06 cores at
5,000 orders/s; failover 0.72 / 0.85 s; Node's plain RPC 5,325 / 5,497
req/s, ratio_to_rpc 0.75 / 0.74; the naive baseline 5,866 / 5,949 orders/s
with 2 of 3 books diverged.  Still NOT met: 5,000 orders/s with p99 <= 20
ms at 64 in flight (the CPU bound above, and compaction's pauses in the
tail).  Met: p99 <= 5 ms at 1 in flight, ratio_to_rpc >= 0.5, failover.

Issue 12, fourth session (2026-11-30).  The machine's speed drifted more
than ever between runs: the same build cost 0.35 ms of CPU per order in one
run and 0.58 ms in the next, and Node's plain RPC did 3,475-5,249 req/s,
so every comparison below is interleaved, and a difference smaller than a
third is read from several pairs or not at all.

- Log compaction every 50,000 entries instead of 10,000: tried, kept for
  half an hour, reverted.  On one cluster, about 50,000 orders at 64 in flight:
  p99 34 -> 34 ms, p99.9 97 -> 51 ms, and a 5 s run of this bench (~20,000
  orders) no longer met a compaction at all.  But timed in the peers (the
  flush that compacts), a compaction of 50,000 entries held each peer
  78-106 ms against 28-52 ms for 10,000 (the snapshot and its file cost
  the same; freeing 50,000 log entries at once, 22 ms alone, and the longer
  log's bookkeeping make the rest; freeing them 2,000 per reactor turn
  did not measurably shorten it), all three peers at once: runs of 15 s
  had a max of 188-253 ms against 115 ms.  Fewer, longer stalls, a bench
  that no longer shows them, 30 MB more memory per peer and 0.7 s more
  from kill -9 to caught up: not a trade worth making.
- The bench client's calls without coroutines (RPCClient.request as
  callbacks; Peers.call takes the client of the grape whose lookup cache is
  fresh without awaiting it): the client's layers above the connection pool
  cost 13.6 instead of 16.3 us per call (transport faked, best of 5 x
  50,000), and callgrind counts 352k instead of 385k instructions per
  order for the whole client process (marginal over 2,000 orders, +-5%
  from run to run).  What the client costs at all: posting through
  ConnectionPool directly (same TLS, JSON, workload and histogram) 0.087-
  0.10 ms per order; through RPCClient.request_to 0.097; exchangectl's path
  0.118-0.15 (Peers, the lookups, the retry and deadline around each call).
  The floor itself is TLS, sockets, HTTP and JSON.
- Where a peer's busy time goes now (py-spy on the leader / a follower,
  fsync and epoll waits left out): replication 26 / 35% (the state
  machine with the compiled matching, sessions and digest; Raft; the WAL's
  encoding), socket sends 21 / 12%, HTTP 11 / 11%, Twisted's reactor and
  Deferreds 12 / 14%, TLS 9 / 5%, JSON 7 / 3%, the peer shell 6 / 8%,
  metrics 4 / 5%.  Each peer waits in fsync 35-40% of its wall time; the
  two cores are 88% busy (vmstat: us 75, sy 13) at 3,700-4,200 orders/s.
  No share is big enough for a 25% cut by itself.
- The peers' cyclic collector under this load (gc.callbacks, pauses over 3
  ms, 20 s at 64 in flight): young collections 3-10 ms, middle ones 5-40
  ms (one scanned 67,000 objects: 50,000 dicts, the Raft log's entries,
  which nest a dict and so are never untracked, and 13,000 lists), full
  ones 14-45 ms, a few of each per peer per 20 s.  The collector switched
  off in the peers measured no better in two interleaved pairs (p99 35 /
  38 against 40 / 31 ms): these pauses are not what holds p99 up.
- Tried and not kept, interleaved (2 x 15 s at 64 in flight per arm, 2-3
  rounds): (1) staggered compaction, each peer at its own phase of the
  interval: p99.9 90-125 -> 55-71 ms but p99 27-48 -> 41-53 ms (three
  pauses, of which the leader's still holds every order in flight, touch
  more orders than one); (2) answering a flush's finished commands before
  persisting the batch that came with them (the leader then counting as
  its own only entries handed out to persist): 3,135-4,075 against
  3,235-4,198 orders/s, p99 36-49 against 37-48 ms, so not worth a second
  rule on the commit path; (3) a follower committing what it has persisted
  of the leader's term when it and the leader are two of two or three
  voters (the leader persisted it before sending it), one message before
  the leader says so (branch local-commit): 1 in flight p50 2.47-2.60 ->
  2.37-2.39 ms, p99 5.1-5.3 -> 4.7-5.0 ms, but 64 in flight no better
  (3,231-3,803 against 3,021-4,091 orders/s, p99 42-52 against 34-50 ms),
  and its safety rests on an argument the simulator cannot check (it
  found no violation in 300 seeds for three deliberately broken variants
  of the rule either).

``make bench-cluster`` at the end of that session, twice (slow phase of
the machine: Node's plain RPC 4,273 / 4,447 req/s): 1 in flight 390 / 362
orders/s, p50 2.46 / 2.63 ms, p99 4.93 / 4.68 ms; 64 in flight 3,547 /
3,621 orders/s, p50 17.3 / 16.7 ms, p99 40.5 / 39.3 ms, p99.9 92 / 103
ms; CPU per order at 64 in flight 0.33 ms (peers) + 0.14 ms (bench
clients), 2.35 cores at 5,000 orders/s; failover 0.49 / 0.50 s;
ratio_to_rpc 0.83 / 0.81; the naive baseline 5,180 / 5,642 orders/s with
2 of 3 books diverged.  Still NOT met: 5,000 orders/s and p99 <= 20 ms at
64 in flight.  Met: p99 <= 5 ms at 1 in flight (with little margin in
slow phases), ratio_to_rpc, failover.

Issue 12, fifth session (2026-11-30): log compaction off the reactor.

- What a big book did (``exchangectl bench --resting``, orders that never
  cross, 64 in flight, 90 s, the book growing to ~300,000 orders): a
  compaction held every peer for the state's rows, JSON and file, 0.25 s
  at 10^5 orders and 2 s at 10^6 (measured alone); the run had p99.9 840
  ms, max 2.0 s, 3,205 orders/s, and the leader lost an election to one
  of those stalls.
- Now (peer/compactor.py) a forked child writes the snapshot, at nice 19,
  while the peer serves; the peer compacts when it is done (replication:
  ``Ready.snapshot_due``, ``Replica.snapshot_taken``).  Same run: p99.9 95
  ms, max 141 ms, 3,445 orders/s, no election.  And the interval grows to
  a quarter as many entries as the exchange knows orders (at 10,000 a
  snapshot of a big book cost more CPU than the orders): 4,145 orders/s,
  p99 41 ms, p99.9 85 ms, the book at 373,000 orders.
- What was left of a compaction's stall on the reactor, timed in the
  peers at 64 in flight (the usual crossing load): 14-35 ms, of which the
  log file's rewrite 3-12 ms, syncing the directory 1-9 ms and freeing the
  ~10,000 dropped entries ~10 ms.  The dropped records now stay in the log
  file until they outgrow the live ones and 64 MiB (wal/file_storage.py),
  and the entries are freed 1,000 per reactor turn: 3-8 ms, plus the fork,
  2-10 ms.  It was 30-50 ms at the start of the session.
- Interleaved with the code before (manual cluster, 2 x 15 s at 64 in
  flight per arm, 3 rounds, a slow phase of the machine), before -> after:
  orders/s median 3,367 -> 3,857 (3,296-4,064 -> 3,041-4,056), p99 median
  42.4 -> 37.1 ms, p99.9 90-124 -> 45-58 ms, max 98-141 -> 57-80 ms.
  Steps on the way, each against the code before it, the same way: the
  child at nice 0, with the log still rewritten and the entries freed at
  once, p99 median 37 -> 44.5 ms and p99.9 88-101 -> 60-74 ms (the child
  competing with the peers for the cores, the rest of the stall still
  there); at nice 19, p99 34.8 -> 37.7 ms, p99.9 91-101 -> 50-67 ms and
  5% fewer orders/s.
- ``make bench-cluster`` interleaved with the code before (2 pairs; each
  run a fresh cluster, so a compaction falls in its 5 s at 64 in flight):
  64 in flight 3,278 / 3,733 -> 3,776 / 3,842 orders/s, p99 91.8 / 91.8 ->
  38.0 / 34.8 ms (the stalls of a compaction on the reactor were the
  run's 99th percentile); 1 in flight p99 5.87 / 4.51 -> 4.70 / 3.86 ms;
  failover 0.87 / 0.53 -> 0.51 / 0.60 s; ratio_to_rpc 0.70 / 0.71 -> 0.79
  / 0.79.
- A book to 10^6: ``exchangectl bench --resting --clients 64 --duration
  270`` took it to 976,000 resting orders at 3,616 orders/s, p50 16.2 ms,
  p99 54 ms, p99.9 117 ms, max 535 ms (the collector's full pass over a
  heap with up to 250,000 log entries in it, the likeliest), no election,
  ``check`` ok; 14 snapshots, the last ones every ~200,000 entries, ~6 s
  each from fork to compaction at nice 19; 560 MB resident per peer at
  the end.
- The collector's pauses over 20 ms in that kind of run (gc.callbacks, 150
  s, --resting): per peer one full collection (22-257 ms) and six middle
  ones (21-60 ms: the middle generation holds the survivors of ten young
  collections of 10,000, gctuning.py).  Middle threshold 2 instead of 10,
  interleaved, 3 rounds at 64 in flight (crossing): 3,248-4,180 against
  3,525-4,015 orders/s, p99 32-47 against 35-42 ms, p99.9 42-63 against
  53-80 ms: within the noise, not kept.

``make bench-cluster`` at the end of that session, twice (Node's plain RPC
5,080 / 4,774 req/s): 1 in flight 461 / 444 orders/s, p50 2.09 / 2.15 ms,
p99 3.72 / 3.99 ms; 64 in flight 4,055 / 3,887 orders/s, p50 14.9 / 16.1
ms, p99 36.3 / 34.4 ms, p99.9 63.7 / 44.0 ms; CPU per order at 64 in
flight 0.294 / 0.303 ms (peers) + 0.125 / 0.128 ms (bench clients), 2.10 /
2.16 cores at 5,000 orders/s; failover 0.49 / 0.78 s; ratio_to_rpc 0.80 /
0.81.  Still NOT met: 5,000 orders/s and p99 <= 20 ms at 64 in flight.
Met: p99 <= 5 ms at 1 in flight, ratio_to_rpc, failover.

Issue 12, sixth session (2026-11-30): no change to the cluster's path,
only measurement.  ``make bench-cluster`` three times at different moments:
1 in flight 425 / 361 / 386 orders/s, p99 4.37 / 5.15 / 5.21 ms; 64 in
flight 3,134 / 3,644 / 4,093 orders/s, p50 20.3 / 15.8 / 14.3 ms, p99 40.4
/ 62.7 / 53.9 ms; CPU per order at 64 in flight 0.386 / 0.321 / 0.276 ms
(peers) + 0.169 / 0.152 / 0.130 ms (bench clients); failover 0.64 / 0.64
/ 0.71 s; Node's plain RPC 4,324 / 4,746 / 5,281 req/s, ratio_to_rpc 0.72 /
0.77 / 0.78.  Interleaved with the session's first commit (f9759e9), three
pairs, before / after: 1 in flight p99 3.14 / 4.14, 5.30 / 5.03, 5.99 /
5.07 ms; 64 in flight 4,259 / 3,597, 3,902 / 3,643, 3,434 / 3,690
orders/s, p99 36.0 / 42.5, 38.9 / 39.6, 39.8 / 37.5 ms: no change beyond
the machine's drift, which moves 1 in flight's p99 across the 5 ms line
from one run to the next.  Where the time goes (manual cluster, 20 s at 64
in flight, 3,484-3,795 orders/s): vmstat us 73, sy 15, id 7, wa 3-4, so
the two cores are the limit; py-spy on the leader (wall time, fsync and
all): the WAL's fsync 42%, TLS 14%, socket sends 9%, epoll 9%, the state
machine 7%, the peer shell 7%, Raft 4%.  Compiling replication with mypyc
as the core is was looked at, not tried: mypy finds 270 errors in it
(raft.py reads its messages, a union of TypedDicts, by keys some members
lack), so Raft's messages would need types of their own first.

Issue 12, seventh session (2026-11-30): the bench client, and per-request
bookkeeping.  On the manual cluster at 64 in flight the bench client took
50% of a core against the three peers' 120% (0.147 against 0.353 ms per
order): the load generator was almost a third of the machine.

- The bench's clients keep a route per peer (``Peers.route``: an address,
  the RPCClient of their credential, the identity to expect) and send by
  callbacks; before, every order went through ``Peers.call`` (three
  coroutines, a lookup, a retry errback).  Interleaved, ``make
  bench-cluster`` before -> after, 2 pairs: 64 in flight 3,251 / 3,208 ->
  4,271 / 4,431 orders/s, p99 101 / 114 -> 30 / 34 ms (before, the lookups
  every client made when its cache expired came all at once); CPU per
  order, bench client 0.140 / 0.167 -> 0.105 / 0.101 ms, peers 0.315 /
  0.359 -> 0.283 / 0.272 ms.
- Request deadlines on one reactor timer (grenache/deadlines.py) instead
  of a DelayedCall per request (``Deferred.addTimeout``).  Three trees
  interleaved, 2 rounds (the session's start / routes / routes and
  deadlines): 64 in flight 3,789, 4,070 / 4,164, 4,251 / 4,354, 4,495
  orders/s; bench client 0.135, 0.118 / 0.112, 0.107 / 0.102, 0.097 ms
  per order; peers 0.306, 0.287 / 0.290, 0.286 / 0.277, 0.261 ms.
- On the peers, one silence timer per connection that looks at the last
  time the connection was heard from when it fires (TimeoutMixin cancelled
  and replaced it on every request), and the request, fsync and trade
  metrics in plain numbers turned into families at scrape time
  (prometheus_client locks per increment).  Alone (timeit, best of 5):
  a metered request 2.11 -> 1.00 us, an fsync's observation 0.72 -> 0.17
  us, a fill counted 0.55 -> 0.20 us; about 1% of the peers' CPU each,
  below what bench-cluster can resolve on this machine (3 interleaved
  pairs: 3,547 / 4,381 / 3,890 against 4,340 / 3,959 / 4,260 orders/s,
  peers 0.349 / 0.276 / 0.313 against 0.279 / 0.302 / 0.286 ms per order).
- Where the 64-in-flight p99 comes from (manual cluster, each client's
  orders timed by the peer they went to, 4,010 orders/s): sent to the
  leader p50 10.6 ms, p99 24.8 ms; sent to a follower p50 17.0-17.6 ms,
  p99 44-48 ms.  A follower's order takes two reactor turns more (its
  forward to the leader, and the commit index coming back), and under
  this load a turn of a peer is a few milliseconds, its fsync included;
  so the run's p99 is the follower path's.  The report now shows it
  ("by peer sent to"; ``latency_ms_by_peer`` in --json): in one run at
  4,116 orders/s, the leader p50 10.4 / p99 22.8 ms, the followers p50
  16.1-17.9 / p99 33.5-34.0 ms.  Tried and not kept: the
  transport holding a follower's next batch, when an answer from it was
  just delivered, for the leader's flush of that turn (so the commit index
  the answer advanced goes in it, not a batch later): two interleaved
  pairs, follower p50 15.6-17.4 against 16.0-17.2 ms, no difference.

``make bench-cluster`` at the end of that session, twice (Node's plain RPC
5,135 / 5,293 req/s): 1 in flight 434 / 469 orders/s, p50 2.21 / 2.01 ms,
p99 3.98 / 3.81 ms; 64 in flight 4,572 / 4,652 orders/s, p50 13.8 / 13.5
ms, p99 31.4 / 29.0 ms; CPU per order at 64 in flight 0.262 / 0.262 ms
(peers) + 0.100 / 0.098 ms (bench clients), 1.81 / 1.80 cores at 5,000
orders/s; failover 0.48 / 0.63 s; ratio_to_rpc 0.89 / 0.88; the naive
baseline 6,632 / 7,085 orders/s with 2 of 3 books diverged.  Still NOT
met: 5,000 orders/s and p99 <= 20 ms at 64 in flight.  Met: p99 <= 5 ms at
1 in flight, ratio_to_rpc, failover.

Issue 12, eighth session (2026-11-30): the load generator.  For most of
the session the machine ran a third slower than the session before (Node's
plain RPC 3,300-3,900 req/s against 5,100-5,300; our Python RPC
11,500-16,700), so absolute figures here are not comparable with the ones
above; the ratios and the interleaved pairs are.

- ``ctl/loadgen.py``: the 1- and 64-in-flight loads and the naive
  baseline's run on blocking-free TLS sockets and one epoll, in a thread,
  instead of the Twisted client (same wire, same credentials, same
  Workload seeds, same Recorder).  The bench client's CPU per order at 64
  in flight 0.133-0.150 -> 0.075-0.099 ms (a standalone prototype of the
  same loop: 0.055-0.060).  On one warm manual cluster, the Twisted
  client (``exchangectl bench``) against the load generator, three
  interleaved pairs of 10 s: 2,965 / 3,145 / 3,228 against 3,108 / 3,473
  / 3,352 orders/s (+4 to +10%).  ``make bench-cluster`` from the tree
  before and after it, two pairs: 64 in flight 3,022 / 3,335 -> 3,541 /
  3,063 orders/s (the peers' own CPU per order moved by as much between
  runs of the same peers).  With the client this cheap the two cores are
  82-87% busy at 64 in flight, not 88-91%.
- Tried and not kept, each against the same peers without it, with the
  load generator:
  (1) the log's fsync in a thread (the reactor reads on while the disk
  syncs; a batch's messages and answers wait for its own sync), again:
  three interleaved pairs 2,859 / 2,683 / 2,743 against 3,589 / 3,132 /
  3,567 orders/s, and 0.14-0.18 against 0.11-0.15 ms of CPU per order per
  peer.  A blocking fsync batches for free (what arrives meanwhile waits
  in the socket buffers and is read in one turn); free of it, the reactor
  takes every request in a turn of its own, and the thread's wake-ups and
  GIL hand-offs come on top.  With fsync off altogether (``--fsync
  never``, not crash-safe) the same cluster did 4,133 against 3,826
  orders/s: the disk's share is about a tenth.
  (2) the log preallocated in zeroed 16 MiB extents, written in place and
  synced with fdatasync (no journal commit per sync: 0.30 against 0.46
  ms per sync for three writers alone): in the cluster the mean sync
  stayed 0.84-1.27 against 1.00-1.24 ms and the CPU per order the same
  (0.41-0.52 against 0.46-0.50 ms for the machine), so it was not worth
  a new log format.
  (3) a leader answering a raft.batch of forwards alone at once, instead
  of from its next flush: 3,026 / 2,934 / 3,106 against 3,264 / 3,010 /
  2,766 orders/s, no difference.
  (4) two raft.batch calls in flight to each peer instead of one (Raft
  takes the reordering this allows): 3,277 / 3,470 against 3,713 / 3,450
  / 3,364 orders/s, no gain.
- Where a peer's busy time goes now (py-spy, 15 s at 64 in flight, 3,659
  orders/s, fsync waits left out), leader / a follower: socket sends 16 /
  12%, Twisted 12 / 12%, epoll 10 / 16%, the peer shell 9 / 9%, sessions
  8 / 9%, HTTP server 8 / 7%, HTTP client 7 / 5%, replica 6 / 7%, state
  machine (with the compiled matching, 3.5%) 6 / 8%, TLS 7 / 7%, Raft 3 /
  1%, the WAL 3 / 4%; no line of Python above 3.5%.  The replication
  layer's own work is ~15-20 us of a peer's ~125 us per order; the rest
  is moving messages (TLS, HTTP, JSON, sockets, the reactor).

At the end of the session the machine was faster again (Node's plain RPC
4,000-6,900 req/s).  ``make bench-cluster`` from the tree before the load
generator (b796940) and from the session's last commit, interleaved, three
pairs:

                                        before                  after
    1 in flight, orders/s           331 / 315 / 339         346 / 352 / 305
      p99 ms                        4.94 / 4.97 / 5.09      4.88 / 4.92 / 6.38
    64 in flight, orders/s          3,536 / 3,689 / 3,960   4,392 / 4,604 / 4,204
      p50 ms                        17.9 / 16.6 / 15.7      14.1 / 13.6 / 14.8
      p99 ms                        31.5 / 34.7 / 33.7      30.1 / 26.9 / 32.1
      CPU per order, peers ms       0.348 / 0.332 / 0.310   0.301 / 0.292 / 0.318
      CPU per order, client ms      0.126 / 0.121 / 0.114   0.064 / 0.059 / 0.064
    naive baseline, orders/s        5,516 / 6,750 / 5,849   6,632 / 7,733 / 6,033

After: 1.76-1.91 cores at 5,000 orders/s, failover 0.62-0.75 s, 2 of 3 naive
books diverged in each run, ratio_to_rpc 1.09 / 1.01 / 0.61 (Node's RPC
4,015 / 4,573 / 6,861 req/s; the tree before had no node_modules, so its
runs measured our RPC and their ratio is not comparable).  Still NOT met:
5,000 orders/s and p99 <= 20 ms at 64 in flight; p99 <= 5 ms at 1 in
flight in two runs of three.  Met: ratio_to_rpc, failover.

Issue 12, ninth session (2026-11-30): a leader's appends leave before its
own fsync (``RaftReady.send_first``, Raft thesis 10.2.1), so that the
followers write a batch while the leader writes it, instead of after.  On
two warm manual clusters (the tree before / after), with the load
generator, three interleaved pairs: 1 in flight 349 / 362 / 360 -> 413 /
386 / 404 orders/s, mean 2.85 / 2.75 / 2.76 -> 2.41 / 2.58 / 2.46 ms,
orders sent to the leader p50 2.3 -> 1.8-2.0 ms; 64 in flight 4,552 /
4,277 / 4,476 -> 4,384 / 4,151 / 4,781 orders/s, no change beyond the
noise (there the cores set the pace, not the disk).  ``make
bench-cluster``, the tree before (4664cef) and after, interleaved, three
pairs:

                                        before                  after
    1 in flight, orders/s           362 / 352 / 334         383 / 382 / 375
      p50 ms                        2.72 / 2.73 / 2.91      2.58 / 2.51 / 2.60
      p99 ms                        4.52 / 5.39 / 4.60      4.20 / 4.54 / 4.71
    64 in flight, orders/s          5,046 / 3,980 / 3,934   4,281 / 4,320 / 4,130
      p99 ms                        27.6 / 36.6 / 33.5      37.3 / 31.7 / 38.5
      CPU per order, peers ms       0.256 / 0.327 / 0.334   0.302 / 0.304 / 0.310

The first "before" run fell in a fast phase of the machine (its peers'
CPU per order 0.256 ms, a fifth below the others): the first run of
``bench-cluster`` at or above 5,000 orders/s, still with p99 27.6 ms.
After: failover 0.51-0.64 s, ratio_to_rpc 0.77 / 0.88 / 0.82, ``check``
ok in every run.  Four more runs after, earlier: 1 in flight p99 4.50 /
4.27 / 5.10 / 15.6 ms (the last while Node's RPC did 3,163 req/s, the
machine at its slowest), 64 in flight 4,251 / 4,521 / 4,299 / 3,689
orders/s.  Tried and not
kept: no snapshots at all (``--snapshot-every 0``), to see what the forked
snapshots cost at 64 in flight: 0.419 / 0.432 against 0.430 ms of machine
CPU per order, and p99 26.6 / 44.2 / 30.5 against 31.5 / 34.1 / 38.6 ms,
no clear difference.  Still NOT met: 5,000 orders/s (except in a fast
phase) and p99 <= 20 ms at 64 in flight; p99 <= 5 ms at 1 in flight is
met in 5 runs of 7 after the change.

Issue 12, tenth session (2026-11-30): where the 64-in-flight tail comes
from.  Latencies over time (the recorder's points, 50 ms windows) showed
the orders above 20 ms bunched in stalls every ~1.7 s; a reactor-turn
probe in each peer showed all three peers descheduled together (a turn's
wall time 10-28 ms against 1-13 ms of its CPU), and ``perf sched`` the
cause: the three snapshot children (every 10,000 entries, the same index
on every peer) taking ~30 ms of CPU each, together, at nice 19.  Peers'
own scheduling delays were small otherwise (mean 0.22-0.35 ms, max 4-9
ms).  The children now run at SCHED_IDLE (peer/compactor.py).  Three
warm manual clusters (nice 19 / SCHED_IDLE / no snapshots), load
generator, three interleaved rounds of 10 s:

                        nice 19              SCHED_IDLE           no snapshots
    p99 ms              32.5 / 31.2 / 32.9   27.2 / 28.5 / 29.9   28.7 / 26.6 / 29.2
    p99.9 ms            62.3 / 73.5 / 82.2   40.5 / 42.1 / 41.1   40.0 / 47.8 / 48.1
    max ms              78 / 92 / 106        51 / 44 / 64         45 / 53 / 53

``make bench-cluster``, the tree before (8078dee) and after, interleaved,
three pairs (the "before" tree without Node's packages, so its
rpc_baseline is ours): 64 in flight 4,571 / 4,653 / 4,401 -> 4,633 /
4,222 / 5,688 orders/s, p99 37.4 / 28.2 / 30.8 -> 26.2 / 32.0 / 24.1 ms;
1 in flight p99 4.72 / 3.97 / 4.33 -> 4.02 / 4.58 / 3.53 ms; failover
0.46-0.78 s; ``check`` ok in every run.  The best run this session:
5,562 orders/s, p99 23.6 ms, p99.9 31.6 ms (orders sent to the leader
p99 16.8 ms, to the followers 24.8 / 27.1 ms).  What is left of the tail
is the forwarded two thirds: a follower's client waits two more hops
(client -> follower -> leader, and the commit back), p50 12-13 against
8-9 ms.  py-spy on the leader at 64 in flight: 35-40% of its wall time
in fsync (three logs on one ext4 journal), the rest CPU; the two cores
83-87% busy.  Tried and not kept: answering a batch's finished commands
before its fsync (the leader's, then every peer's): the leader's own
clients gained (p50 8.4 -> 7.7 ms, p99 19 -> 15 ms), the whole did not
(p99 23.4-25.8 against 24.0-24.8 ms; at 1 in flight no difference),
since in a closed loop the faster third just sends sooner.  Still NOT
met: 5,000 orders/s in every run and p99 <= 20 ms at 64 in flight.

Issue 12, eleventh session (2026-12-01): where a 64-in-flight order's time
goes inside the peers, from a probe (since removed) that stamped each
command's arrival, its forward reaching the leader, its apply on the
leader and on its entry peer, and its answer (one clock: the peers share
CLOCK_MONOTONIC), 10 s at 5,423 orders/s, p50 / p90 / p99 ms:

    sent to the leader      arrival -> applied there      5.25 / 7.91 / 11.05
    sent to a follower      arrival -> at the leader      2.58 / 4.98 /  9.98
                            at the leader -> applied there 4.43 / 7.47 / 11.33
                            applied there -> applied here 1.65 / 5.06 / 10.46
                            total                         9.18 / 13.72 / 21.92

The rest of what the bench client sees (p50 8.7 ms for the leader's
clients) is the wait for a peer's reactor to read the request and the
client's own turn.  A forward waits for the follower's batch in flight
to the leader (one per peer, answered at the leader's next flush), and
the commit comes back behind the leader's own batch in flight to that
follower: the tail of the forwarded two thirds is those two waits.  Every
commit also waited for matching: a flush applied the newly committed
entries first, then persisted and sent.  Now ``Replica.ready`` hands the
committed entries out and ``Replica.apply`` applies them after the
flush persisted and sent (etcd's order), so a follower's acknowledgement
and a leader's appends no longer wait ~20 us per entry.  Two fresh warm
clusters interleaved, 8 pairs of 8 s at 64 in flight: 5,555 -> 5,783
orders/s mean (7 of 8 pairs faster), p50 11.2 -> 10.6 ms, p99 24.3 ->
24.1 ms.  ``make bench-cluster`` before (e2ec6c4) and after, two pairs,
cannot tell them apart on this machine's drift: 64 in flight 5,535 /
5,126 -> 5,156 / 5,248 orders/s, p99 23.3 / 24.3 -> 24.2 / 27.9 ms; 1 in
flight p99 3.6-4.1 ms either way; ratio_to_rpc 0.73-0.96.  Tried and not
kept: flushing as soon as a Raft batch is stepped instead of at the end
of the reactor turn (more, smaller batches and fsyncs: 4,100-5,300 ->
3,500-4,600 orders/s); the bench client reading every ready reply before
sending any next order (no difference).  The cyclic GC is not the tail
either (gc.callbacks in each peer: no full collection during a 15 s run,
young collections 0.3-0.5 ms mean, at most 4-9 ms).

The same probe, finer, after the change (5,300-5,700 orders/s; p50 / p90
/ p99 ms).  A forwarded order: to the end of the follower's turn 0.44 /
1.8 / 3.5-4.3; waiting for the batch in flight to the leader 0.38 / 2.5 /
4.7-5.3; posted to read by the leader 0.9 / 2.2 / 4.2-5.1; there to
applied there 4.7 / 7.4-7.9 / 11.4; to applied back on the follower 0.9-1.25
/ 4.3 / 7.3-9.0.  A sending of forwards on their own while a batch is in
flight changed nothing (6 interleaved pairs).  The commit round itself,
per entry, from the leader's appends leaving to the entry applied on the
leader, through the follower whose acknowledgement came first:

    appends leave -> follower reads them              0.55 / 2.01 /  4.40
    -> follower acknowledges (its turn, its fsync)    0.66 / 1.72 /  3.21
    -> leader reads the acknowledgement               1.15 / 3.06 /  6.03
    -> leader applies the entry                       1.34 / 2.99 /  5.14
    total                                             4.49 / 7.55 / 11.30

What compiling more would buy: the session table and the state machine
(replication/sessions.py, state_machine.py) built with mypyc as the core
is, an apply took 7.1 instead of 8.2-8.8 us (60,000 generated orders, 3
alternated runs each): ~4 us of the machine's ~330 us per order, 1%.
raft.py does not type-check for mypyc yet (260 errors, its messages are
TypedDicts indexed by variable keys).

Half of the round is the leader holding an arriving acknowledgement while
it works through its turn (other requests, its fsync, applying, answering):
its CPU, with the followers' and the client's, on two cores 85% busy.  By
Little's law p99 <= 20 ms at 64 in flight wants about 6,500 orders/s at
this spread (p99 is ~2.1x the mean), ~20% less CPU per order than now.
Still NOT met: p99 <= 20 ms at 64 in flight.

Issue 12, twelfth session (2026-12-01): the peers and the bench client's
thread run under SCHED_BATCH (scheduling.py, peer ``--cpu-scheduling``).
Under SCHED_OTHER a loopback send woke its receiver, which preempted the
sender inside the call: py-spy charged 12-17% of a peer's busy time to
socket sends, 5-6% under SCHED_BATCH, and involuntary context switches
fell from 0.10-0.12 to 0.02-0.03 per order per peer.  One warm manual
cluster, the four combinations (peers, client) interleaved, 4 rounds of 7
s: OTHER+OTHER 5,485 orders/s p99 26.9 ms, BATCH+OTHER 5,490 / 24.8,
OTHER+BATCH 5,780 / 23.3, BATCH+BATCH 5,933 / 23.3 (medians).  ``make
bench-cluster``, the tree before (6f0f01e) and after, interleaved, four
pairs (the machine slowed between the second and the third):

    64 in flight orders/s   5,588 / 5,774 / 5,535 / 5,723  ->  6,426 / 6,251 / 5,983 / 5,736
    64 in flight p99 ms     23.3 / 22.2 / 22.4 / 26.4       ->  20.4 / 20.9 / 24.4 / 24.0
    peers' CPU ms/order     0.241 / 0.233 / 0.235 / 0.231   ->  0.206 / 0.214 / 0.223 / 0.233
    client CPU ms/order     0.050 / 0.049 / 0.050 / 0.047   ->  0.040 / 0.041 / 0.042 / 0.045
    1 in flight p99 ms      3.84 / 3.71 / 3.46 / 3.44       ->  3.50 / 3.51 / 3.97 / 3.99

ratio_to_rpc 0.73-0.95 -> 0.83-1.00 (Node's RPC is one process, which the
policy does not touch).  Tried and not kept: the leader at nice -5 (needs
CAP_SYS_NICE; 6 interleaved pairs, 3 faster, 3 slower).  Where the rest
is: the two cores are 84-86% busy at 64 in flight; the idle ~14% (10%
idle, 4% iowait by /proc/stat) is when every process waits on an fsync or
a reply.  Still NOT met: p99 <= 20 ms at 64 in flight in every run (the
best runs reach 20.4-20.9 ms).

The next lead, measured but not acted on: the background snapshots.  The
orders above 20 ms bunch in 50 ms windows every ~1.7 s (every 10,000
entries, the same index on every peer).  A fork write-protects the
parent's pages, and the parent then takes a fault on each page it writes:
a peer took ~12,000 more minor faults in 6 s with snapshots than without
(~4,000 per snapshot), at ~3 us each while the child lives (a 135 MB
Python process, 100,000 objects touched after a fork: 23 against 9 ms),
plus 2-3 ms for the fork itself: ~15 ms of CPU per peer, the three peers
at once.  Warm manual clusters, three interleaved pairs of 10 s: p99
24.8 / 24.8 / 27.4 ms with snapshots against 22.1 / 22.4 / 22.9 ms
without, at the same throughput.  Tried, not conclusive on this machine's
drift: peers at different intervals (9,000 / 10,000 / 11,000, so their
snapshots rarely coincide; 6 rounds, p99 median 28.4 against 30.5 ms
aligned, 26.9 with none) and 50,000 entries between snapshots (3 pairs of
17 s, mixed).  Then each peer at its own phase of the interval (a third
of it apart: peer k snapshotting near k/3 of the way, branch stagger):
6 interleaved pairs of 10 s on fresh clusters, p99 23.5 against 24.0 ms
mean (4 of 6 better), p99.9 30-62 against 34-88 ms (5 of 6 better), but
5,680 against 5,950 orders/s (6 of 6 slower): three smaller stalls in
place of one cost the closed loop more throughput than they take off the
tail, so not kept.

Kept: 30,000 entries between snapshots instead of 10,000 (peer/service.py
SNAPSHOT_EVERY; the log in memory ~1 KB an entry, so a peer's RSS 80 ->
~105 MB).  Warm manual clusters, 4 interleaved pairs of 15 s: 5,709 /
5,829 / 6,020 / 5,971 -> 5,795 / 6,025 / 6,168 / 6,085 orders/s, p99
22.5 / 22.8 / 22.5 / 23.4 -> 22.0 / 21.3 / 20.7 / 22.4 ms.  ``make
bench-cluster``, the tree before (the SCHED_BATCH one) and after,
interleaved, three pairs (a fast phase of the machine):

    64 in flight orders/s   6,193 / 6,675 / 5,954  ->  6,936 / 6,748 / 6,075
    64 in flight p99 ms     23.7 / 19.3 / 20.2     ->  17.2 / 17.9 / 20.0
    peers' CPU ms/order     0.214 / 0.199 / 0.221  ->  0.193 / 0.197 / 0.222
    1 in flight p99 ms      3.53 / 3.27 / 3.68     ->  3.01 / 3.39 / 3.69

Two more runs of the final tree at the end of the session: 6,222 / 5,173
orders/s, p99 21.1 / 21.7 ms, 1 in flight p99 3.1 / 4.0 ms, ratio_to_rpc
0.94 / 0.69.  So p99 <= 20 ms at 64 in flight is met in some runs (17.2 /
17.9 / 20.0 ms) and missed by 1-2 ms in others; warm manual clusters in
the machine's slow hours measured 23-31 ms for either tree.  Still NOT
met in every run.  Also tried again under SCHED_BATCH and not kept: two
raft.batch calls in flight per peer (5 pairs, 2 faster, 3 slower), and the
leader's fsync in a thread while it applies and answers the committed
entries (entries committed in earlier turns, so already durable on a
majority): 5 pairs, no faster and p99 no better.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.internet import defer, task

from twisted_exchange import pki
from twisted_exchange.ctl import bench, loadgen
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.peers import Peers, Route, check, leaders_everywhere, named_leader
from twisted_exchange.ctl.supervisor import Supervisor
from twisted_exchange.ctl.topology import HOST, free_ports, parse, render
from twisted_exchange.grenache import RPCClient
from twisted_exchange.grenache import bench as rpc_bench
from twisted_exchange.pki import CLIENT, Credential, Identity

CredentialOf = Callable[[str], Credential] | None
TARGETS = {"orders_per_second": 5000, "p99_ms": 20.0, "p99_1_in_flight_ms": 5.0, "failover_s": 2.0,
           "ratio_to_rpc": 0.5}
#: In-flight level of the plain-RPC yardstick, as the cluster's fast figure.
RPC_IN_FLIGHT = 64


class Direct:
    """``call(payload, peer)`` and ``route(peer)`` straight to known addresses
    (the baseline has no grape)."""

    def __init__(self, addresses: dict[str, str], reactor: Any, timeout: float = 5.0) -> None:
        self.addresses = addresses
        self.reactor = reactor
        self._client = RPCClient(link=None, reactor=reactor, timeout=timeout)

    async def route(self, peer: str) -> Route:
        return Route(self._client, self.addresses[peer], "exchange", peer)

    async def call(self, payload: dict, peer: str) -> Any:
        return await (await self.route(peer)).call(payload)

    def close(self) -> defer.Deferred:
        return self._client.close()


async def failover(peers: Peers, names: Sequence[str], supervisor: Supervisor, reactor: Any,
                   credential_of: CredentialOf = None, limit: float = 30.0) -> tuple[str, float]:
    """SIGKILL the leader; (its name, seconds until an order sent after the kill commits)."""
    leader = named_leader(await peers.statuses(names))
    if leader is None:
        raise CtlError("no leader to kill")
    survivors = [n for n in names if n != leader]
    workload = bench.Workload("failover", seed=7)
    send_as = {"credential": credential_of(workload.client)} if credential_of else {}
    killed = reactor.seconds()
    supervisor.kill(leader)
    turn = 0
    while reactor.seconds() - killed < limit:
        try:
            await peers.call(workload.next_order(), survivors[turn % len(survivors)], timeout=1.0,
                             **send_as)
        except CtlError:
            turn += 1
            await task.deferLater(reactor, 0.02, lambda: None)
        else:
            return leader, reactor.seconds() - killed
    raise CtlError(f"no order committed within {limit:g}s of killing the leader {leader}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CPUMeter:
    """CPU time of the peers (by the pids supervisord reports) and of this
    process (the bench clients) over one measurement: on one machine the
    two share its cores, so their sum per order bounds the throughput."""

    def __init__(self, supervisor: Supervisor, names: Sequence[str]) -> None:
        self._pids = [supervisor.process(name)["pid"] for name in names]
        self.start()

    def start(self) -> None:
        """Count from now."""
        self._peers = sum(map(cpu_seconds, self._pids))
        self._client = time.process_time()

    def per_order(self, orders: int) -> dict[str, float]:
        """Milliseconds of CPU per order since ``start``, and the cores that
        TARGETS' rate would take at that cost."""
        peers = sum(map(cpu_seconds, self._pids)) - self._peers
        client = time.process_time() - self._client
        per_order = {"peers": peers * 1000 / max(orders, 1), "client": client * 1000 / max(orders, 1)}
        cores = (per_order["peers"] + per_order["client"]) * TARGETS["orders_per_second"] / 1000
        return {**{k: round(v, 3) for k, v in per_order.items()}, "cores_at_target": round(cores, 2)}


async def measure_cluster(peers: Peers, names: Sequence[str], supervisor: Supervisor,
                          duration: float, say: Callable[[str], None],
                          credential_of: CredentialOf = None) -> dict[str, Any]:
    """Load at 1 and 64 in flight (with the CPU each order cost), then
    failover, then check."""
    results: dict[str, Any] = {}
    results["leader"] = named_leader(await peers.statuses(names))
    for in_flight in (1, 64):
        say(f"cluster: {in_flight} in flight for {duration:g}s")
        meter = CPUMeter(supervisor, names)
        recorder = await loadgen.load(peers, names, in_flight, duration=duration, count=None,
                                      reactor=peers.reactor, seed=in_flight, credential_of=credential_of,
                                      on_start=meter.start)
        results[f"in_flight_{in_flight}"] = {**recorder.summary(), "cpu_ms_per_order": meter.per_order(recorder.count)}
    say("cluster: SIGKILL of the leader")
    leader, seconds = await failover(peers, names, supervisor, peers.reactor, credential_of)
    results["failover"] = {"killed": leader, "seconds": round(seconds, 3)}
    await peers.watch(names, leaders_everywhere, 30)
    results["check"] = (await check(peers, names, 30)).to_json()
    return results


async def measure_baseline(reactor: Any, peer_count: int, duration: float,
                           say: Callable[[str], None]) -> dict[str, Any]:
    """The naive peers as child processes under the 64-in-flight load; divergence after."""
    ports = free_ports(peer_count)
    names = [f"naive{i + 1}" for i in range(peer_count)]
    addresses = {name: f"{HOST}:{port}" for name, port in zip(names, ports)}
    children = []
    direct = Direct(addresses, reactor)
    try:
        for name, port in zip(names, ports):
            others = ",".join(a for n, a in addresses.items() if n != name)
            children.append(subprocess.Popen(
                [sys.executable, "-m", "twisted_exchange.ctl.naive", "--id", name, "--port", str(port),
                 "--others", others], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        await _until(reactor, lambda: _all_answer(direct, names), 15, "the baseline peers did not start")
        say(f"baseline: 64 in flight for {duration:g}s")
        recorder = await loadgen.load(direct, names, 64, duration=duration, count=None, reactor=reactor)
        total = recorder.count * peer_count
        await _until(reactor, lambda: _all_applied(direct, names, total), 15, None)
        statuses = [await direct.call({"action": "status"}, name) for name in names]
        hashes = Counter(s["digest"] for s in statuses)
        return {**recorder.summary(), "peers": peer_count,
                "diverged_peers": peer_count - hashes.most_common(1)[0][1],
                "distinct_books": len(hashes)}
    finally:
        await direct.close()
        for child in children:
            child.terminate()
        for child in children:
            child.wait(10)


async def _all_answer(direct: Direct, names: Sequence[str]) -> bool:
    try:
        for name in names:
            await direct.call({"action": "status"}, name)
    except CtlError:
        return False
    return True


async def _all_applied(direct: Direct, names: Sequence[str], total: int) -> bool:
    for name in names:
        if (await direct.call({"action": "status"}, name))["applied"] < total:
            return False
    return True


async def _until(reactor: Any, condition: Callable, timeout: float, failure: str | None) -> None:
    """Poll the async ``condition`` until true; at the deadline raise ``failure`` (or just return)."""
    deadline = reactor.seconds() + timeout
    while not await condition():
        if reactor.seconds() >= deadline:
            if failure:
                raise CtlError(failure)
            return
        await task.deferLater(reactor, 0.1, lambda: None)


def run(peer_count: int, duration: float, say: Callable[[str], None],
        secure: bool = True) -> dict[str, Any]:
    """The whole benchmark; the cluster and its directory are gone afterwards.

    ``secure`` (the default, as shipped) runs the cluster in mutual TLS, each
    bench client with its own credential; without it, plain HTTP shows what
    TLS costs.
    """
    from twisted_exchange.ctl.peers import run as in_reactor
    directory = Path(tempfile.mkdtemp(prefix="tx-bench-"))
    supervisor = None
    try:
        ports = free_ports(4 + peer_count)
        config = directory / "cluster.conf"
        config.write_text(render(peer_count, grape_ports=[tuple(ports[0:2]), tuple(ports[2:4])],
                                 peer_ports=ports[4:], admin_ports=[0] * (2 + peer_count), secure=secure))
        topology = parse(config)
        topology.run_dir.mkdir()
        pki_dir = topology.pki

        def credential_of(name: str) -> Credential:
            return pki.obtain(pki_dir, Identity(CLIENT, name))
        supervisor = Supervisor(topology.socket)
        say(f"starting a {peer_count}-peer cluster in {directory}")
        supervisor.launch(config)

        async def work(peers: Peers) -> dict[str, Any]:
            if not leaders_everywhere(await peers.watch(topology.peers, leaders_everywhere, 60)):
                raise CtlError("the benchmark cluster elected no leader within 60s")
            cluster = await measure_cluster(peers, topology.peers, supervisor, duration, say,
                                            credential_of if pki_dir else None)
            baseline = await measure_baseline(peers.reactor, peer_count, duration, say)
            say(f"plain Grenache RPC: {RPC_IN_FLIGHT} in flight")
            rpc = await rpc_bench.baseline(peers.reactor, RPC_IN_FLIGHT)
            fast = cluster["in_flight_64"]["orders_per_second"]
            return {"cluster": {**cluster, "tls": secure}, "baseline": baseline,
                    "rpc_baseline": rpc, "ratio_to_rpc": round(fast / rpc["requests_per_second"], 3),
                    "targets": TARGETS}

        return in_reactor(work, topology.grapes, credential=credential_of("bench") if pki_dir else None)
    finally:
        if supervisor is not None and supervisor.is_running():
            supervisor.shutdown()
            supervisor.wait_until(lambda: not supervisor.is_running(), 60, "supervisord did not stop")
        shutil.rmtree(directory, ignore_errors=True)


def report(results: dict[str, Any]) -> str:
    """Figures against the targets, then the baseline beside them."""
    cluster, baseline = results["cluster"], results["baseline"]
    lines = []
    mode = "mutual TLS" if cluster.get("tls") else "plain HTTP"
    for in_flight in (1, 64):
        s = cluster[f"in_flight_{in_flight}"]
        lines.append(f"cluster ({mode}), {in_flight:>2} in flight: {s['orders_per_second']:>8.0f} orders/s"
                     f"  p50 {s['latency_ms']['p50']:.2f} ms  p99 {s['latency_ms']['p99']:.2f} ms"
                     f"  ({s['committed']} committed, {s['failed']} failed)")
    fast = cluster["in_flight_64"]
    if fast.get("latency_ms_by_peer"):
        lines.append("  64 in flight, " + bench.by_peer(fast["latency_ms_by_peer"], cluster.get("leader"),
                                                         " (leader)"))
    cpu = fast.get("cpu_ms_per_order")
    if cpu:
        lines.append(f"CPU per order at 64 in flight: peers {cpu['peers']:.3f} ms + clients {cpu['client']:.3f} ms"
                     f" (at {TARGETS['orders_per_second']:,} orders/s: {cpu['cores_at_target']:.2f} cores,"
                     f" this machine has {os.cpu_count()})")
    lines.append(f"failover: {cluster['failover']['seconds']:.3f} s from SIGKILL of "
                 f"{cluster['failover']['killed']} to the next commit")
    lines.append(f"check: {cluster['check']['summary']}")
    lines.append(f"baseline (naive, no consensus), 64 in flight: {baseline['orders_per_second']:.0f} orders/s,"
                 f" {baseline['diverged_peers']} of {baseline['peers']} peers diverged"
                 f" ({baseline['distinct_books']} distinct books)")
    ratio = fast["orders_per_second"] / baseline["orders_per_second"] if baseline["orders_per_second"] else 0
    lines.append(f"cluster / baseline throughput: {ratio:.2f}")
    rpc = results["rpc_baseline"]
    lines.append(f"plain Grenache RPC ({rpc['impl']}), {rpc['in_flight']} in flight: "
                 f"{rpc['requests_per_second']:.0f} requests/s; cluster / RPC: {results['ratio_to_rpc']:.2f}")
    verdicts = [("orders/s (64 in flight) >= 5000", fast["orders_per_second"] >= TARGETS["orders_per_second"]),
                ("p99 (64 in flight) <= 20 ms", fast["latency_ms"]["p99"] <= TARGETS["p99_ms"]),
                ("p99 (1 in flight) <= 5 ms",
                 cluster["in_flight_1"]["latency_ms"]["p99"] <= TARGETS["p99_1_in_flight_ms"]),
                ("cluster / RPC >= 0.5", results["ratio_to_rpc"] >= TARGETS["ratio_to_rpc"]),
                ("failover <= 2 s", cluster["failover"]["seconds"] <= TARGETS["failover_s"]),
                ("0 divergence", cluster["check"]["ok"])]
    lines.append("targets: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in verdicts))
    return "\n".join(lines)
