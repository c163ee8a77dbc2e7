"""Do the peers agree?  The comparison behind ``exchangectl check`` and ``status``.

Peers apply the same log, so two peers that report the same applied index
must report the same ``state_hash``; any other pair of reports tells
nothing yet (one peer is behind).  An ``Observer`` keeps every
(applied, state_hash) report across polls, so a divergence seen at any
moment is remembered even after the peers move on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


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
    """What the last poll showed, plus every divergence seen so far."""

    applied: dict[str, int]
    hashes: dict[str, str]
    unreachable: dict[str, str]
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """Every peer answered, at one applied index, with one state_hash."""
        return (not self.unreachable and len(set(self.applied.values())) == 1
                and len(set(self.hashes.values())) == 1)

    @property
    def ok(self) -> bool:
        return self.converged and not self.divergences

    def summary(self) -> str:
        """One line: the agreement, or the first reason there is none."""
        if self.divergences:
            return str(self.divergences[0])
        if self.unreachable:
            return "cannot compare: " + "; ".join(f"{p}: {r}" for p, r in sorted(self.unreachable.items()))
        if not self.converged:
            return "peers did not reach the same applied index: " + ", ".join(
                f"{peer} {index}" for peer, index in sorted(self.applied.items()))
        index, digest = next(iter(self.applied.values())), next(iter(self.hashes.values()))
        return f"{len(self.applied)} peers agree at applied index {index} (state_hash {digest[:12]})"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "converged": self.converged, "summary": self.summary(),
                "peers": {p: {"applied": a, "state_hash": self.hashes[p]} for p, a in self.applied.items()},
                "unreachable": self.unreachable,
                "divergences": [{"applied": d.applied, "hashes": d.hashes} for d in self.divergences]}


class Observer:
    """Accumulates peers' status replies and judges them (pure: no I/O, no clock)."""

    def __init__(self) -> None:
        self._seen: dict[int, dict[str, str]] = {}

    def observe(self, statuses: Mapping[str, Any]) -> Verdict:
        """Judge one poll: ``statuses`` maps peer -> status dict, or the error (any
        non-dict, shown with ``str``) that stands for a peer that did not answer."""
        applied, hashes, unreachable = {}, {}, {}
        for peer, status in statuses.items():
            if isinstance(status, dict):
                applied[peer], hashes[peer] = status["applied"], status["state_hash"]
                self._seen.setdefault(status["applied"], {})[peer] = status["state_hash"]
            else:
                unreachable[peer] = str(status)
        divergences = [Divergence(index, dict(reports)) for index, reports in sorted(self._seen.items())
                       if len(set(reports.values())) > 1]
        return Verdict(applied, hashes, unreachable, divergences)
