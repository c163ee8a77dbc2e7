"""Are the peers healthy and do they agree?  The judge behind ``exchangectl check``.

Peers apply the same log, so two peers that report the same applied index
must report the same ``digest`` (a hash chain over every applied command and
its result); any other pair of reports tells nothing yet (one peer is
behind).  An ``Observer`` keeps every (applied, digest) report across polls,
so a divergence seen at any moment is remembered even after the peers move
on.

A divergence between peers that report different ``state_machine_code``
(peer/build.py) is named as such: after an upgrade whose code answers some
command differently, peers that applied or replayed an entry under the new
code disagree from there on with those that applied it under the old.

Agreement is not enough: a cluster whose commit index froze agrees
perfectly.  So the Observer also fails a peer that says it is unhealthy, and
a peer whose commit index stays put across polls while entries wait behind
it (its own log, or the leader's, grows past its commit).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

_HEX = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class Divergence:
    """Peers that applied the same prefix of the log and disagree on the state."""

    applied: int
    hashes: dict[str, str]

    def __str__(self) -> str:
        return f"peers diverge at applied index {self.applied}: " + ", ".join(
            f"{peer} {digest[:12]}" for peer, digest in sorted(self.hashes.items()))


@dataclass(frozen=True)
class Verdict:
    """What the last poll showed, plus every divergence and stall seen so far."""

    applied: dict[str, int]
    hashes: dict[str, str]
    unreachable: dict[str, str]
    divergences: list[Divergence] = field(default_factory=list)
    unhealthy: dict[str, list[str]] = field(default_factory=dict)
    stuck: dict[str, str] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)  # peer -> state_machine_code, if it says

    @property
    def converged(self) -> bool:
        """Every peer answered, at one applied index, with one digest, nothing pending."""
        return (not self.unreachable and len(set(self.applied.values())) == 1
                and len(set(self.hashes.values())) == 1 and not any(self.pending.values()))

    @property
    def ok(self) -> bool:
        return self.converged and not self.divergences and not self.unhealthy and not self.stuck

    def summary(self) -> str:
        """One line: the agreement, or the first reason there is none."""
        if self.divergences:
            first = self.divergences[0]
            codes = {peer: self.codes[peer] for peer in first.hashes if peer in self.codes}
            if len(set(codes.values())) < 2:
                return str(first)
            return (f"{first}; they run different state-machine code ("
                    + ", ".join(f"{peer} {code}" for peer, code in sorted(codes.items()))
                    + "): peers that apply or replay an entry under code that answers it differently "
                    "disagree from there on (see README, Upgrading)")
        if self.stuck:
            return "; ".join(f"{p}: {why}" for p, why in sorted(self.stuck.items()))
        if self.unreachable:
            return "cannot compare: " + "; ".join(
                r if r.startswith(f"{p}: ") else f"{p}: {r}" for p, r in sorted(self.unreachable.items()))
        if self.unhealthy:
            return "unhealthy: " + "; ".join(f"{p}: {', '.join(problems)}"
                                             for p, problems in sorted(self.unhealthy.items()))
        if not self.converged:
            return "peers did not reach the same applied index with nothing pending: " + ", ".join(
                f"{peer} {index}" + (f" (+{self.pending[peer]} pending)" if self.pending.get(peer) else "")
                for peer, index in sorted(self.applied.items()))
        index, digest = next(iter(self.applied.values())), next(iter(self.hashes.values()))
        return f"{len(self.applied)} peers agree at applied index {index} (digest {digest[:12]})"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "converged": self.converged, "summary": self.summary(),
                "peers": {p: {"applied": a, "digest": self.hashes[p], "pending": self.pending.get(p, 0),
                              "state_machine_code": self.codes.get(p)}
                          for p, a in self.applied.items()},
                "unreachable": self.unreachable, "unhealthy": self.unhealthy, "stuck": self.stuck,
                "divergences": [{"applied": d.applied, "hashes": d.hashes} for d in self.divergences]}


@dataclass
class _Progress:
    """A peer's commit index when first seen, and the log end it was behind then."""

    commit: int
    behind: int


class Observer:
    """Accumulates peers' status replies and judges them (pure: no I/O, no clock).

    The caller polls over time; "stuck" needs at least two polls.
    """

    def __init__(self) -> None:
        self._seen: dict[int, dict[str, str]] = {}
        self._first: dict[str, _Progress] = {}
        self._stuck: dict[str, str] = {}

    def observe(self, statuses: Mapping[str, Any]) -> Verdict:
        """Judge one poll: ``statuses`` maps peer -> status dict, or the error (any
        non-dict, shown with ``str``) that stands for a peer that did not answer."""
        applied, hashes, unreachable, unhealthy, pending, codes = {}, {}, {}, {}, {}, {}
        answered = {peer: s for peer, s in statuses.items() if isinstance(s, dict)}
        leader_end = max((s.get("last_index", 0) for s in answered.values() if s.get("role") == "leader"),
                         default=0)
        for peer, status in statuses.items():
            if peer not in answered:
                unreachable[peer] = str(status)
                continue
            applied[peer], hashes[peer] = status["applied"], status["digest"]
            code = status.get("state_machine_code")
            if isinstance(code, str) and _HEX.fullmatch(code):  # printed: nothing but hex from a peer
                codes[peer] = code
            end = max(status.get("last_index", 0), leader_end, status["applied"])
            pending[peer] = end - status["applied"]
            self._seen.setdefault(status["applied"], {})[peer] = status["digest"]
            health = status.get("health", {"ok": True})
            if not health.get("ok"):
                unhealthy[peer] = list(health.get("problems", ["unhealthy"]))
            self._track(peer, status.get("commit", status["applied"]), end)
        divergences = [Divergence(index, dict(reports)) for index, reports in sorted(self._seen.items())
                       if len(set(reports.values())) > 1]
        return Verdict(applied, hashes, unreachable, divergences, unhealthy, dict(self._stuck), pending, codes)

    def _track(self, peer: str, commit: int, end: int) -> None:
        """Stuck: the commit index has not moved since the first poll, though
        entries were waiting behind it then and more have arrived since."""
        first = self._first.setdefault(peer, _Progress(commit, end))
        if commit != first.commit or first.behind <= commit:
            self._first[peer] = _Progress(commit, end)
            self._stuck.pop(peer, None)
        elif end > first.behind:
            self._stuck[peer] = (f"commit index stays at {commit} while the log grows "
                                 f"from {first.behind} to {end}")
