"""``exchangectl member``: change the cluster's membership through Raft, one peer at a time.

Adding a peer: the leader appends it as a learner, its program is written
into the supervisord config and started (supervisord's reread + update), it
catches up from the leader, and once one message would bring it up to date
the leader promotes it to voter.  Removing one: the leader appends the
configuration without it (a leader removing itself steps down once that
commits), then its program is stopped and removed.  Every step waits until
the change is committed and says so.  Each change is sent to the leader and
retried while leadership moves or a rule says "not yet" (one uncommitted
change at a time, a learner not caught up); a change already made counts
as done, so a command interrupted half-way can simply be run again.
"""
from __future__ import annotations

from typing import Any, Callable

from twisted.internet import task

from twisted_exchange.ctl.errors import CtlError
from twisted_exchange.ctl.peers import TRANSPORT_CODES, Peers
from twisted_exchange.peer.protocol import ERR_MEMBERSHIP, ERR_NO_LEADER, ERR_NOT_LEADER, MEMBER
from twisted_exchange.replication.configuration import ADD, PROMOTE, REMOVE

#: Refusals that mean "not yet": wait and ask again.
NOT_YET = ("not committed yet", "no entry of term", "not caught up")
RETRY_SECONDS = 0.5
#: Seconds to wait for a leader before saying there is none.
LEADER_WAIT_SECONDS = 15.0


async def leader_status(peers: Peers, names: list[str], wait: float = LEADER_WAIT_SECONDS) -> dict:
    """The status of the peer that the answering peers name as leader, asked
    again for up to ``wait`` seconds while there is none (an election after a
    leader removed itself, or a restart, takes a second or two)."""
    deadline = peers.reactor.seconds() + wait
    while True:
        found = await _leader_or_why_not(peers, names)
        if isinstance(found, dict):
            return found
        if peers.reactor.seconds() >= deadline:
            raise CtlError(f"no leader reachable: {found}")
        await task.deferLater(peers.reactor, RETRY_SECONDS, lambda: None)


async def _leader_or_why_not(peers: Peers, names: list[str]) -> dict | str:
    statuses = await peers.statuses(names)
    answered = {name: s for name, s in statuses.items() if isinstance(s, dict)}
    for status in answered.values():
        leader = status.get("leader")
        if leader and leader in answered and answered[leader].get("role") == "leader":
            return answered[leader]
        if leader and leader not in answered:
            try:
                found = await peers.call({"action": "status"}, leader)
            except CtlError:
                continue
            if found.get("role") == "leader":
                return found
    return ", ".join(f"{n} {s.get('role') if isinstance(s, dict) else 'unreachable'}"
                     for n, s in statuses.items())


def _done(kind: str, member: str, configuration: dict) -> bool:
    if kind == ADD:
        return member in configuration["voters"] + configuration["learners"]
    if kind == PROMOTE:
        return member in configuration["voters"]
    return member not in configuration["voters"] + configuration["learners"]


async def change(peers: Peers, names: list[str], kind: str, member: str, timeout: float,
                 say: Callable[[str], None]) -> dict:
    """Make one change at the leader and wait until it is committed; the new configuration."""
    deadline = peers.reactor.seconds() + timeout
    while True:
        try:
            leader = await leader_status(peers, names)
            if _done(kind, member, leader["configuration"]) and leader["commit"] >= leader["configuration_index"]:
                return leader["configuration"]
            reply = await peers.call({"action": MEMBER, "change": kind, "peer": member}, leader["id"],
                                     timeout=max(5.0, deadline - peers.reactor.seconds()))
            return reply["configuration"]
        except CtlError as e:
            retry = (e.code in (ERR_NOT_LEADER, ERR_NO_LEADER) or e.code in TRANSPORT_CODES or e.code is None
                     or (e.code == ERR_MEMBERSHIP and any(reason in str(e) for reason in NOT_YET)))
            if not retry or peers.reactor.seconds() >= deadline:
                raise CtlError(f"{kind} {member}: {e}", e.code) from None
            say(f"{kind} {member}: waiting ({e})")
        await task.deferLater(peers.reactor, RETRY_SECONDS, lambda: None)


async def add(peers: Peers, names: list[str], member: str, start: Callable[[], None], timeout: float,
              say: Callable[[str], None]) -> dict:
    """Add ``member`` as a learner, ``start()`` its program, let it catch up, promote it."""
    configuration = await change(peers, names, ADD, member, timeout, say)
    say(f"{member} is a learner (voters {', '.join(configuration['voters'])}); starting its program")
    start()
    names = [*names, member]
    last = None
    while True:
        leader = await leader_status(peers, names)
        stored = (leader.get("match") or {}).get(member, 0)
        line = f"{member} catching up: {stored} of {leader['last_index']} entries"
        if line != last:
            say(line)
            last = line
        if stored > 0:
            break
        await task.deferLater(peers.reactor, RETRY_SECONDS, lambda: None)
    configuration = await change(peers, names, PROMOTE, member, timeout, say)
    say(f"{member} is a voter: voters {', '.join(configuration['voters'])}")
    return configuration


async def remove(peers: Peers, names: list[str], member: str, timeout: float,
                 say: Callable[[str], None]) -> dict:
    """Remove ``member``, and wait for a leader among the others (a leader
    that removed itself steps down once the removal commits)."""
    configuration = await change(peers, names, REMOVE, member, timeout, say)
    say(f"{member} removed: voters {', '.join(configuration['voters'])}")
    leader = await leader_status(peers, [name for name in names if name != member], wait=timeout)
    say(f"leader: {leader['id']}")
    return configuration


def table(status: dict[str, Any]) -> str:
    """``member list`` for people: one line per member, its role and what the leader knows."""
    configuration, match = status["configuration"], status.get("match") or {}
    lines = [f"{'MEMBER':<12} {'ROLE':<8} STORED"]
    for member in sorted(configuration["voters"] + configuration["learners"]):
        role = ("leader" if member == status["id"] else "voter") if member in configuration["voters"] else "learner"
        stored = status["last_index"] if member == status["id"] else match.get(member, "-")
        lines.append(f"{member:<12} {role:<8} {stored}")
    return "\n".join(lines)
