"""exchangectl's calls to the peers, over Grenache through the configured grapes.

A peer is reached by its service name, ``exchange:<peer_id>`` (or
``exchange`` for any peer), looked up on the first grape that answers, so
one grape being down costs nothing, and one that hangs costs
``LOOKUP_HEDGE_SECONDS`` (the next grape is asked then too).  In secure mode (a client
``credential``) every call is mutual TLS and ``exchange:<peer_id>`` must
prove it is that peer, so a fake announced on a grape costs a retry.
Anyone may announce, so a grape may hand out only fakes (a flood of them):
a peer whose address the cluster's config fixes (``pinned``) is called
there first, with no lookup, and looked up only if that address fails in
transport (refused, silent, not that peer) within the call's time; a
bench's ``route`` to it is pinned too.  Every failure becomes a ``CtlError``
with the line the user sees: an ``ERR_...`` reply from a peer exactly as the
peer sent it, a transport failure with the peer it concerns.

``run`` drives one such conversation in the reactor with ``task.react`` and
hands its result back to the synchronous click command.
"""
from __future__ import annotations

import random
from functools import lru_cache
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

from twisted.internet import defer, task

from twisted_exchange.ctl.consistency import Observer, Verdict
from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.grenache import GrenacheError, Link, RPCClient
from twisted_exchange.grenache.errors import (
    ERR_GRAPE_LOOKUP_EMPTY, ERR_REMOTE, ERR_REPLY_EMPTY, ERR_REPLY_ENCODING_COMPRESSION,
    ERR_REQUEST_GENERIC, ERR_TIMEOUT, RETRYABLE,
)
from twisted_exchange.peer.protocol import service_name
from twisted_exchange.pki import PEER, Credential, Identity

T = TypeVar("T")
#: Codes the Grenache layer itself produces; any other ERR_ came from the peer.
TRANSPORT_CODES = frozenset({ERR_TIMEOUT, ERR_REQUEST_GENERIC, ERR_REPLY_EMPTY,
                             ERR_REPLY_ENCODING_COMPRESSION, ERR_GRAPE_LOOKUP_EMPTY, ERR_REMOTE})


def ctl_error(error: GrenacheError, peer: str | None) -> CtlError:
    """The line the user sees for ``error``: a peer's ERR_ reply as it sent
    it, a transport failure with the peer it concerns."""
    if error.code in TRANSPORT_CODES:
        return CtlError(f"{peer or 'any peer'}: {error}", error.code)
    return CtlError(str(error), error.code)


class Route:
    """Calls to one peer at one address, each a single request (see ``Peers.route``);
    ``unreachable()`` is called when one fails in transport."""

    def __init__(self, client: RPCClient, address: str, key: str, peer: str,
                 expect: Identity | None = None, unreachable: Callable[[], None] | None = None) -> None:
        self._client = client
        self.address = address
        self.key = key
        self.peer = peer
        self.expect = expect
        self._unreachable = unreachable

    def call(self, payload: dict, timeout: float | None = None) -> defer.Deferred[Any]:
        """The peer's reply to ``payload``, or CtlError (as ``Peers.call``)."""
        return self._client.request_to(self.address, self.key, payload, timeout,
                                       self.expect).addErrback(self._failed)

    def _failed(self, failure: Any) -> Any:
        failure.trap(GrenacheError)
        if self._unreachable is not None and failure.value.code in RETRYABLE:
            self._unreachable()
        raise ctl_error(failure.value, self.peer)


#: Seconds a grape that failed is asked after the others.
GRAPE_DOWN_SECONDS = 10.0
#: Seconds a lookup waits for a grape before it also asks the next one: a
#: hung grape (stopped, or its host silent) costs this, not the whole timeout.
LOOKUP_HEDGE_SECONDS = 0.3


class Peers:
    """Grenache RPC to the cluster's peers via ``grapes`` (tried in order)."""

    def __init__(self, grapes: Sequence[str], reactor: Any = None, timeout: float = 5.0,
                 credential: Credential | None = None, pinned: Mapping[str, str] | None = None) -> None:
        if not grapes:
            raise ValueError("at least one grape")
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self._timeout = timeout
        self._credential = credential
        self._links = [Link(url, reactor=reactor, timeout=timeout) for url in grapes]
        self._clients: dict[tuple[int, Credential | None], RPCClient] = {}
        self._down_until: dict[int, float] = {}
        self._found: dict[str, int] = {}  # key -> the grape that last found it
        self._pinned = dict(pinned or {})  # peer id -> the "host:port" the config gives it
        self._unpinned: set[str] = set()  # pinned peers whose last pinned route failed in transport

    async def call(self, payload: dict, peer: str | None = None, timeout: float | None = None,
                   credential: Credential | None = None) -> Any:
        """The reply of ``peer`` (None: any peer) to ``payload``, sent with
        ``credential`` (default: the one given at creation; several bench
        clients each send with their own)."""
        credential = credential or self._credential
        chosen = peer if peer is not None or not self._pinned else random.choice(list(self._pinned))
        address = self._pinned.get(chosen) if chosen is not None else None
        if address is not None:  # "any peer" tries a random pinned one, then looks "exchange" up
            started = self.reactor.seconds()
            try:
                return await self._client(0, credential).request_to(
                    address, service_name(chosen), payload, timeout, self._expect(chosen, credential))
            except GrenacheError as e:
                if e.code not in RETRYABLE:
                    raise ctl_error(e, chosen) from None
                timeout = (self._timeout if timeout is None else timeout) - (self.reactor.seconds() - started)
                if timeout <= 0:
                    raise ctl_error(e, chosen) from None
        key = service_name(peer)
        client = await self._client_for(key, peer, credential)
        try:
            return await client.request(key, payload, timeout=timeout, expect=self._expect(peer, credential))
        except GrenacheError as e:
            raise ctl_error(e, peer) from None

    async def route(self, peer: str, credential: Credential | None = None) -> Route:
        """A fixed way to ``peer``, called without a lookup or a retry per
        call (the bench's clients: what a call costs the client is CPU the
        peers do not get): its pinned address, or one of the addresses
        announcing it now if it has none or its last pinned route failed in
        transport (the route after that one is pinned again).  Unlike
        ``call``, a failed call over a route is not retried: the caller
        takes a new route then."""
        credential = credential or self._credential
        key = service_name(peer)
        expect = self._expect(peer, credential)
        address = self._pinned.get(peer)
        if address is not None and peer not in self._unpinned:
            return Route(self._client(0, credential), address, key, peer, expect,
                         unreachable=lambda: self._unpinned.add(peer))
        self._unpinned.discard(peer)
        client = await self._client_for(key, peer, credential)
        try:
            addresses = await self._links[self._found[key]].lookup(key)
        except GrenacheError as e:
            raise ctl_error(e, peer) from None
        return Route(client, random.choice(addresses), key, peer, expect)

    def _expect(self, peer: str | None, credential: Credential | None) -> Identity | None:
        """The identity ``peer`` must prove: in secure mode, when a peer is named."""
        return self._identity(peer) if credential is not None and peer is not None else None

    async def _client_for(self, key: str, peer: str | None, credential: Credential | None) -> RPCClient:
        """The ``credential``'s client of the grape that last found ``key``
        while its lookup cache is fresh, else of the first grape that knows
        someone announcing it; a grape that failed is asked last for a while."""
        found = self._found.get(key)
        if found is not None and self._links[found].knows(key):
            return self._client(found, credential)  # the common case: no lookup to wait for
        now = self.reactor.seconds()
        order = sorted(range(len(self._links)), key=lambda i: self._down_until.get(i, 0) > now)
        index, reasons = await self._first_to_find(key, order)
        if index is not None:
            return self._client(index, credential)
        if None in reasons:
            who = f"{peer} is" if peer is not None else "no peer is"
            raise CtlError(f"{who} announced on no grape (is it running? see: exchangectl status)")
        raise CtlError(f"no grape reachable ({'; '.join(reasons)}); are the grapes running? "
                       "(exchangectl status; exchangectl start all)")

    def _first_to_find(self, key: str, order: list[int]) -> defer.Deferred[tuple[int | None, list]]:
        """Ask the grapes in ``order`` to look ``key`` up, each the moment the
        one before it fails or has not answered for LOOKUP_HEDGE_SECONDS.

        Fires with ``(index, [])`` of the first grape that finds someone (later
        answers only update which grapes are down), or with ``(None, reasons)``
        once every grape has failed: None for "nobody announces it", else
        what went wrong.
        """
        done: defer.Deferred[tuple[int | None, list]] = defer.Deferred()
        waiting = list(order)
        unanswered: set[int] = set()
        reasons: list = []
        hedge: list = []  # the pending call of ask_next, if any

        def ask_next() -> None:
            while hedge:
                call = hedge.pop()
                if call.active():
                    call.cancel()
            if done.called or not waiting:
                return
            index = waiting.pop(0)
            unanswered.add(index)
            self._links[index].lookup(key).addCallbacks(
                found, failed, callbackArgs=(index,), errbackArgs=(index,))
            if waiting and not done.called:
                hedge.append(self.reactor.callLater(LOOKUP_HEDGE_SECONDS, ask_next))

        def found(_: object, index: int) -> None:
            unanswered.discard(index)
            self._down_until.pop(index, None)
            if not done.called:
                self._found[key] = index
                done.callback((index, []))
                ask_next()  # cancels the hedge

        def failed(failure: Any, index: int) -> None:
            unanswered.discard(index)
            if not failure.check(GrenacheError):  # a bug, not a grape's answer: the caller sees it
                if not done.called:
                    done.errback(failure)
                return
            error = failure.value
            if error.code == ERR_GRAPE_LOOKUP_EMPTY:
                reasons.append(None)
            else:
                self._down_until[index] = self.reactor.seconds() + GRAPE_DOWN_SECONDS
                reasons.append(str(error))
            if done.called:
                return
            if waiting:
                ask_next()
            elif not unanswered:
                done.callback((None, reasons))

        ask_next()
        return done

    @staticmethod
    @lru_cache(maxsize=256)
    def _identity(peer: str) -> Identity:
        return Identity(PEER, peer)

    def _client(self, index: int, credential: Credential | None) -> RPCClient:
        client = self._clients.get((index, credential))
        if client is None:
            client = self._clients[index, credential] = RPCClient(
                self._links[index], reactor=self.reactor, timeout=self._timeout, tls=credential)
        return client

    async def statuses(self, peers: Sequence[str]) -> dict[str, dict | CtlError]:
        """Every peer's ``status`` reply, or the CtlError saying why there is none."""
        async def one(peer: str) -> dict | CtlError:
            try:
                return await self.call({"action": "status"}, peer)
            except CtlError as e:
                return e
        replies = await defer.gatherResults([defer.ensureDeferred(one(p)) for p in peers])
        return dict(zip(peers, replies))

    async def watch(self, peers: Sequence[str], until: Callable[[dict], bool], timeout: float,
                    interval: float = 0.25) -> dict[str, dict | CtlError]:
        """Poll ``statuses(peers)`` until ``until(statuses)`` holds or ``timeout``
        seconds passed; the last statuses.  ``until`` sees every poll (progress)."""
        deadline = self.reactor.seconds() + timeout
        while True:
            statuses = await self.statuses(peers)
            if until(statuses) or self.reactor.seconds() >= deadline:
                return statuses
            await task.deferLater(self.reactor, interval, lambda: None)

    async def close(self) -> None:
        """Close every connection, so the reactor can stop cleanly."""
        for client in self._clients.values():
            await client.close()
        for link in self._links:
            await link.close()


def named_leader(statuses: dict) -> str | None:
    """The leader the first peer that answered and knows one names, else None."""
    return next((s["leader"] for s in statuses.values() if isinstance(s, dict) and s.get("leader")), None)


def leaders_everywhere(statuses: dict) -> bool:
    """Every peer answered and names a leader."""
    return all(isinstance(s, dict) and s.get("leader") for s in statuses.values())


async def check(peers: Peers, names: Sequence[str], wait: float) -> Verdict:
    """Poll the peers' status until they agree, a divergence shows, or ``wait`` ends."""
    observer = Observer()
    verdicts: list[Verdict] = []

    def settled(statuses: dict) -> bool:
        verdicts.append(observer.observe(statuses))
        return verdicts[-1].ok or bool(verdicts[-1].divergences)

    await peers.watch(names, settled, wait)
    return verdicts[-1]


def run(work: Callable[[Peers], Awaitable[T]], grapes: Sequence[str], timeout: float = 5.0,
        credential: Credential | None = None, pinned: Mapping[str, str] | None = None) -> T:
    """Run ``work(peers)`` in the reactor and return its result (or raise its error).

    ``task.react`` ends with ``SystemExit``; this keeps the outcome instead, so
    the click command formats it and picks the exit status.  The reactor can
    only run once per process, hence one ``run`` per command.
    """
    outcome: list[tuple[bool, Any]] = []

    async def main(reactor: Any) -> None:
        peers = Peers(grapes, reactor, timeout, credential, pinned)
        try:
            outcome.append((True, await work(peers)))
        except Exception as e:
            outcome.append((False, e))
        finally:
            await peers.close()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit:
        pass
    if not outcome:
        raise CtlError("interrupted")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
