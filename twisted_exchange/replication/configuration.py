"""Cluster membership as data: who votes, who only learns, and the one-server rules.

Single-server changes (Raft thesis, chapter 4.1): each change adds or
removes at most one *voter*, so any majority of the old voters and any
majority of the new ones share a server, and no two leaders can be elected
for one term across a change.  A new server first joins as a *learner*: it
receives the log but neither votes nor counts toward a commit, until it is
caught up and *promoted*.  A configuration lives in the log as the
``config`` of an entry whose ``command`` is None, and takes effect on every
server as soon as that entry is in its log (not when committed); the
snapshot carries the configuration as of its index.

Pure: no I/O, no Twisted.  ``RaftNode`` applies the rules that need the log
(one uncommitted change at a time, a commit of the leader's own term first,
a learner promoted only once caught up).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: Member ids, as the peer command line accepts them.
MEMBER_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
#: The changes an operator asks for, one server each.
ADD, PROMOTE, REMOVE = "add", "promote", "remove"
CHANGES = (ADD, PROMOTE, REMOVE)
#: Most members a configuration may list (a bound for the edge parser).
MAX_MEMBERS = 64


class ConfigurationError(ValueError):
    """A change the rules refuse; ``str()`` says why."""


@dataclass(frozen=True)
class Configuration:
    """Sorted, disjoint voter and learner ids."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()

    @classmethod
    def of(cls, voters: list[str] | tuple[str, ...], learners: list[str] | tuple[str, ...] = ()) -> Configuration:
        return cls(tuple(sorted(set(voters))), tuple(sorted(set(learners) - set(voters))))

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self.voters + self.learners))

    @property
    def quorum(self) -> int:
        """Votes (or acknowledgements) that make a majority of the voters."""
        return len(self.voters) // 2 + 1

    def to_json(self) -> dict[str, list[str]]:
        return {"voters": list(self.voters), "learners": list(self.learners)}

    def change(self, kind: str, member: str) -> Configuration:
        """This configuration after ``kind`` of ``member``, or ConfigurationError."""
        if kind == ADD:
            if member in self.members:
                raise ConfigurationError(f"{member} is already a member")
            return Configuration.of(self.voters, self.learners + (member,))
        if kind == PROMOTE:
            if member not in self.learners:
                raise ConfigurationError(f"{member} is not a learner")
            return Configuration.of(self.voters + (member,), tuple(m for m in self.learners if m != member))
        if kind == REMOVE:
            if member not in self.members:
                raise ConfigurationError(f"{member} is not a member")
            if self.voters == (member,):
                raise ConfigurationError(f"{member} is the last voter")
            return Configuration.of(tuple(v for v in self.voters if v != member),
                                    tuple(m for m in self.learners if m != member))
        raise ConfigurationError(f"unknown change {kind!r}")


def one_server_apart(old: Configuration, new: Configuration) -> bool:
    """Do ``old`` and ``new`` differ by at most one voter (thesis 4.1)?"""
    return len(set(old.voters) ^ set(new.voters)) <= 1


def is_configuration(value: Any) -> bool:
    """The stored or sent form of a Configuration: exactly voters and
    learners, lists of valid, sorted, disjoint ids, at least one voter."""
    if type(value) is not dict or value.keys() != {"voters", "learners"}:
        return False
    voters, learners = value["voters"], value["learners"]
    if type(voters) is not list or type(learners) is not list or not voters:
        return False
    ids = voters + learners
    return (len(ids) <= MAX_MEMBERS
            and all(type(i) is str and MEMBER_ID.match(i) for i in ids)
            and voters == sorted(set(voters)) and learners == sorted(set(learners))
            and not set(voters) & set(learners))


def from_json(value: dict) -> Configuration:
    """The Configuration of a value that passed ``is_configuration``."""
    return Configuration(tuple(value["voters"]), tuple(value["learners"]))
