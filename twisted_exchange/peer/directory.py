"""Where the other peers are: ``exchange:<peer_id>`` looked up on the grapes.

Each peer is looked up on the first grape that knows it (the grapes share
announcements through their DHT; a dead one is skipped).

A grape may return several addresses for one peer (the Node grape never
forgets an announcement, so a restarted peer leaves stale ones behind, and
anyone may announce anything).  The directory keeps every candidate, prefers
the one that last answered as that peer, and rotates to the next candidate
when a call fails.  An address whose last call failed goes behind every
other on a refresh until it answers again: otherwise a restarted peer's
new address could stay behind its old, dead ones for as long as the grape
lists them (a flaky test caught it: the leader never reached the peer).
New candidates come in random order: an order an announcer could choose
(by string, or the grape's) would let a fake always go first.

The address that last answered as the peer (its *proven* address) is kept
whether or not a lookup lists it: a grape returns at most 100 of a name's
announcements, at random, so a flood of fake ones would otherwise push the
real address out of nearly every refresh, and the peers away from each
other (a drill with 2,000 fakes per name left the cluster without a
leader).  It comes first while it answers; while it fails (the peer
restarting, or moved), calls alternate between it and the other
candidates, so the peer is found again at its old address or at a new one,
which then becomes the proven address.  Only an answer from another
identity there ends its place.  The proven addresses are kept in the data
directory too (:class:`ProvenFile`), so a peer restarted during such a flood
starts from where its peers were, not from the grapes' lottery.

A peer may also say where it serves (a ``peer.hello``, signed by its
certificate, see :mod:`twisted_exchange.peer.service`): that *claimed*
address comes first, ahead of the proven one, until a call there is
answered (it is then the proven address) or fails (the claim ends).  So
a peer added or moved during a flood is reached at once by every peer it
could reach itself.

Nothing here blocks: lookups refresh in the background and callers read
the current view.
"""
from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from twisted_exchange.grenache import GrenacheError, Link
from twisted_exchange.grenache.errors import ERR_GRAPE_LOOKUP_EMPTY
from twisted_exchange.peer.protocol import service_name
from twisted_exchange.wal.codec import compact_json
from twisted_exchange.wal.file_storage import replace_file

#: The file in a peer's data directory that keeps its proven addresses.
PROVEN = "addresses.json"


class PeerDirectory:
    """Current best address per peer id, refreshed from the grape."""

    log = Logger()

    def __init__(self, links: list[Link], peer_ids: list[str],
                 rng: random.Random | None = None, proven: dict[str, str] | None = None,
                 on_proven: Callable[[dict[str, str]], None] | None = None) -> None:
        """``proven`` are addresses that answered as their peers before (a
        restart's :class:`ProvenFile`), tried first; ``on_proven`` is told
        every change of them."""
        self._links = links
        self._proven: dict[str, str] = dict(proven or {})  # peer -> the address that last answered as it
        self._claimed: dict[str, str] = {}  # peer -> where it said it serves, not called there yet
        self._candidates: dict[str, list[str]] = {}
        self._failing: dict[str, set[str]] = {}  # peer -> addresses whose last call failed
        self._on_proven = on_proven
        self._rng = rng or random.Random()
        self.track(peer_ids)

    def address(self, peer_id: str) -> str | None:
        """The preferred address of ``peer_id``, or None while unknown."""
        candidates = self._candidates.get(peer_id)
        return candidates[0] if candidates else None

    def track(self, peer_ids: list[str]) -> None:
        """Look up ``peer_ids`` too from now on (members added since the start)."""
        for peer_id in peer_ids:
            if peer_id not in self._candidates:
                proven = self._proven.get(peer_id)
                self._candidates[peer_id] = [proven] if proven else []

    def unproven(self) -> list[str]:
        """The peers with candidates but no address that has answered as them."""
        return [p for p, candidates in self._candidates.items() if candidates and p not in self._proven]

    def known(self) -> dict[str, str | None]:
        return {p: self.address(p) for p in self._candidates}

    def claimed(self, peer_id: str, address: str) -> None:
        """``peer_id`` itself says it serves at ``address``: try that first
        (tracking ``peer_id`` from now on if it was not)."""
        self.track([peer_id])
        if self._claimed.get(peer_id) != address and self._proven.get(peer_id) != address:
            self.log.info("{peer} says it serves at {address}", peer=peer_id, address=address)
        self._claimed[peer_id] = address
        self._failing.get(peer_id, set()).discard(address)
        candidates = self._candidates[peer_id]
        if address in candidates:
            candidates.remove(address)
        candidates.insert(0, address)

    def failed(self, peer_id: str, address: str) -> None:
        """A call to ``address`` failed: try the peer's next candidate first,
        then its proven address again if that was not the one."""
        self._end_claim(peer_id, address)
        self._failing.setdefault(peer_id, set()).add(address)
        candidates = self._candidates.get(peer_id, [])
        if len(candidates) > 1 and candidates[0] == address:
            candidates.append(candidates.pop(0))
            proven = self._proven.get(peer_id)
            if proven is not None and proven != address and proven in candidates:
                candidates.remove(proven)
                candidates.insert(0, proven)

    def answered(self, peer_id: str, address: str) -> None:
        """A call to ``address`` was answered by ``peer_id``."""
        self._end_claim(peer_id, address)
        failing = self._failing.get(peer_id)
        if failing:
            failing.discard(address)
        if self._proven.get(peer_id) != address:
            self._proven[peer_id] = address
            self._proven_changed()

    def forget(self, peer_id: str, address: str) -> None:
        """``address`` answered as another peer: it is not ``peer_id``'s."""
        self._end_claim(peer_id, address)
        if self._proven.get(peer_id) == address:
            del self._proven[peer_id]
            self._proven_changed()
        candidates = self._candidates.get(peer_id, [])
        if address in candidates:
            candidates.remove(address)

    def _end_claim(self, peer_id: str, address: str) -> None:
        """A call to ``address`` settled what ``peer_id``'s claim of it was worth."""
        if self._claimed.get(peer_id) == address:
            del self._claimed[peer_id]

    def _proven_changed(self) -> None:
        if self._on_proven is not None:
            self._on_proven(dict(self._proven))

    @inlineCallbacks
    def refresh(self):
        """Look every peer up once; first where the peer said it serves and
        the address that last answered as it, else the preferred one if
        still listed."""
        for peer_id, current in list(self._candidates.items()):
            found = yield self._lookup(service_name(peer_id))
            if not found:
                continue
            failing = self._failing.get(peer_id, set())
            kept = list(dict.fromkeys(a for a in (self._claimed.get(peer_id), self._proven.get(peer_id)) if a))
            if kept:
                preferred = kept
            else:
                preferred = [a for a in current if a in found and a not in failing][:1]
            others = [a for a in found if a not in preferred]
            self._rng.shuffle(others)
            others.sort(key=lambda address: address in failing)  # stable: the failing ones last
            fresh = preferred + others
            self._failing[peer_id] = failing & set(fresh)
            if fresh[:1] != current[:1]:
                self.log.info("{peer} at {address} ({others} other candidates)", peer=peer_id,
                              address=fresh[0], others=len(fresh) - 1)
            self._candidates[peer_id] = fresh

    @inlineCallbacks
    def _lookup(self, name: str):
        """Addresses of ``name`` on the first grape that has some, else []."""
        for link in self._links:
            try:
                found = yield link.lookup(name)
            except GrenacheError as e:
                if e.code != ERR_GRAPE_LOOKUP_EMPTY:
                    self.log.warn("lookup of {name} on {grape} failed: {error}",
                                  name=name, grape=link.grape_url, error=e)
                continue
            return found
        return []


class ProvenFile:
    """A peer's proven addresses in its data directory, ``addresses.json``.

    Hints, not state: each address must still answer as its peer over
    verified TLS before anything is sent to it, so the file is replaced
    without an fsync, and one that cannot be read is ignored (with a
    warning), never a reason not to start.
    """

    log = Logger()

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self._path = Path(data_dir) / PROVEN

    def load(self) -> dict[str, str]:
        """The addresses saved last, or {} (none, or unreadable)."""
        try:
            found = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self.log.warn("ignored {path}: {error}", path=str(self._path), error=e)
            return {}
        if not (isinstance(found, dict) and all(isinstance(v, str) for v in found.values())):
            self.log.warn("ignored {path}: not an object of peer ids to addresses", path=str(self._path))
            return {}
        return found

    def save(self, proven: dict[str, str]) -> None:
        """Replace the file by ``proven``; a failure is a warning (see the class)."""
        try:
            replace_file(self._path, compact_json(proven, sort_keys=True), sync=None)
        except OSError as e:
            self.log.warn("could not save {path}: {error}", path=str(self._path), error=e)
