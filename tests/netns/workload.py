"""Clients that trade while the nemesis works, and the history they record.

Each client has its own credential and one command in flight, with
increasing request ids: submits, and cancels and amends of its own recent
orders (:data:`CANCEL`, :data:`AMEND`), which race the fills of the other
clients' submits.  An attempt that fails in transport (timeout,
refused, reset, no leader, lookup failed, busy) is retried on the next peer,
through the next grape, with the *same* request id: the replicated session
table makes that safe.  As in Jepsen, every operation is recorded as
invoked, then completed ``ok`` (acknowledged, with the reply), ``fail`` (a
definite refusal) or ``info`` (gave up after ``give_up`` seconds: it may or
may not have executed, now or later).

Late duplicates, on purpose: now and then (:data:`REPLAY`) a client sends
one of its acknowledged submits again, same request id and payload, as a
client does that lost the reply and retries long after.  The session
table must never execute it again, however many snapshots, restarts and
snapshot installs came in between.  Half the replays pick among the
client's last :data:`REPLAY_FROM` acknowledged submits, within the table's
window (``sessions.WINDOW``), so they must get the original reply; the
other half pick among all of them, mostly older than the window and than
the last snapshot, so ERR_STALE_REQUEST is a right answer too (and what a
replica that restored its sessions wrongly would execute instead).  A
replay is recorded as an op of its own (``replay=True``, ``stale_ok``)
with the same (client, request).  The first client is sparse (one op per
:data:`SPARSE_PAUSE` seconds, :data:`SPARSE_REPLAY` of them replays): a
busy client's window refills from the log within a second of a replica's
restore, hiding a restore that lost it; a sparse one's takes minutes.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from twisted.internet import defer, reactor, task

from twisted_exchange.grenache import GrenacheError, RPCClient
from twisted_exchange.pki import PEER, Identity

SYMBOL = "BTCUSD"
PRICES = ("99", "99.5", "100", "100.5", "101")
#: Errors after which the command may still be unexecuted *and* may be retried as is.
RETRY = frozenset({"ERR_TIMEOUT", "ERR_REQUEST_GENERIC", "ERR_NO_LEADER", "ERR_GRAPE_LOOKUP_EMPTY",
                   "ERR_REPLY_EMPTY", "ERR_BUSY", "ERR_TLS_IDENTITY"})
#: Share of a client's operations that replay one of its acknowledged submits.
REPLAY = 0.05
#: A replay picks among the client's last this many acknowledged submits.
REPLAY_FROM = 32
#: Share of operations that cancel one of the client's last CANCEL_FROM orders,
#: resting, filled or cancelled already: a cancel races the fills of other
#: clients' submits, and every answer (the cancelled rest, or ERR_ORDER_CLOSED)
#: must be the one the log's order gives.
CANCEL = 0.15
CANCEL_FROM = 20
#: Share of operations that amend one of them: a new price (it requeues and
#: may trade at once) or a new quantity (ERR_INVALID_ORDER if not above what
#: has filled); fills are then checked against what the amend left.
AMEND = 0.05
#: Seconds the first client waits between operations, and its share of replays.
SPARSE_PAUSE = 1.0
SPARSE_REPLAY = 0.3


@dataclass
class Op:
    """One submit as the client saw it; times are ``time.monotonic()``."""

    process: str
    request: str
    command: dict
    invoked: float
    completed: float | None = None
    outcome: str = "invoke"  # then "ok", "fail" or "info"
    result: dict | None = None
    error: str | None = None
    attempts: int = 0
    replay: bool = False  # a late duplicate of an acknowledged op with this (process, request)
    stale_ok: bool = False  # a replay that may be older than the session window


class Workload:
    """``clients[name]`` are that client's RPC clients, one per grape."""

    def __init__(self, clients: dict[str, list[RPCClient]], peers: list[str], seed: int,
                 attempt_timeout: float = 2.0, give_up: float = 15.0) -> None:
        self.clients = clients
        self.peers = peers
        self.rng = random.Random(seed)
        self.attempt_timeout = attempt_timeout
        self.give_up = give_up
        self.history: list[Op] = []
        self._running = False
        self._done: defer.Deferred | None = None

    def start(self) -> None:
        self._running = True
        self._done = defer.gatherResults([defer.ensureDeferred(self._client(i, name))
                                          for i, name in enumerate(self.clients)], consumeErrors=True)

    def stop(self) -> defer.Deferred:
        """Fires once every client has finished the operation it is in."""
        self._running = False
        return self._done

    def _order(self, name: str, n: int) -> dict:
        return {"action": "submit", "client": name, "request": f"r{n}", "symbol": SYMBOL,
                "side": self.rng.choice(["buy", "sell"]), "type": "limit",
                "price": self.rng.choice(PRICES), "quantity": str(self.rng.randint(1, 3))}

    def _amend(self, name: str, n: int, order_id: str) -> dict:
        """A new price (the order requeues and may trade) or a new quantity."""
        change = ({"price": self.rng.choice(PRICES)} if self.rng.random() < 0.5
                  else {"quantity": str(self.rng.randint(1, 5))})
        return {"action": "amend", "client": name, "request": f"r{n}", "order_id": order_id, **change}

    def _next(self, name: str, n: int, acked: list[dict], placed: list[str], sparse: bool) -> tuple[Op, int]:
        """The client's next op (a replay, or a new command numbered ``n + 1``) and its last number."""
        roll = self.rng.random()
        replays = SPARSE_REPLAY if sparse else REPLAY
        if acked and roll < replays:
            old = self.rng.random() < 0.5
            command = self.rng.choice(acked if old else acked[-REPLAY_FROM:])
            return Op(name, command["request"], command, time.monotonic(), replay=True, stale_ok=old), n
        n += 1
        if placed and roll < replays + CANCEL:
            command = {"action": "cancel", "client": name, "request": f"r{n}",
                       "order_id": self.rng.choice(placed[-CANCEL_FROM:])}
        elif placed and roll < replays + CANCEL + AMEND:
            command = self._amend(name, n, self.rng.choice(placed[-CANCEL_FROM:]))
        else:
            command = self._order(name, n)
        return Op(name, command["request"], command, time.monotonic()), n

    async def _client(self, index: int, name: str) -> None:
        rpcs = self.clients[name]
        attempt = index
        n = 0
        acked: list[dict] = []  # this client's acknowledged submits, oldest first
        placed: list[str] = []  # ids of the orders they placed
        sparse = index == 0
        while self._running:
            op, n = self._next(name, n, acked, placed, sparse)
            self.history.append(op)
            attempt = await self._complete(op, rpcs, attempt)
            if op.outcome == "ok" and not op.replay and op.command["action"] == "submit":
                acked.append(op.command)
                placed.append(op.result["order"]["id"])
            if sparse and self._running:
                await task.deferLater(reactor, SPARSE_PAUSE, lambda: None)

    async def _complete(self, op: Op, rpcs: list[RPCClient], attempt: int) -> int:
        """Send ``op`` until it is answered, refused or given up, each attempt
        to the next peer through the next grape; the attempt count so far."""
        while True:
            peer = self.peers[attempt % len(self.peers)]
            rpc = rpcs[attempt % len(rpcs)]
            op.attempts += 1
            try:
                op.result = await rpc.request(f"exchange:{peer}", op.command, timeout=self.attempt_timeout,
                                              retry=0, expect=Identity(PEER, peer))
                op.outcome = "ok"
                break
            except GrenacheError as e:
                op.error = str(e)
                if e.code not in RETRY:
                    op.outcome = "fail"
                    break
            except Exception as e:  # a transport failure outside Grenache's vocabulary
                op.error = repr(e)
            attempt += 1
            if time.monotonic() - op.invoked > self.give_up:
                op.outcome = "info"
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        op.completed = time.monotonic()
        return attempt
