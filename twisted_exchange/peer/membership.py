"""The cluster a data directory belongs to, and when a new one may join it.

A Raft log is only meaningful inside the cluster that wrote it.  The first
start records ``(id, peers)`` in ``membership.json``, where ``peers`` is the
cluster's *initial* configuration (the peer's ``--peers``; the live one is
in the log).  Membership changes never rewrite it: ``exchangectl member
add`` starts a new peer with the same ``--peers`` and records it as
``joining`` beforehand, so every later start must match, and a data
directory of another cluster (another initial peer list) is refused.

A peer whose data directory is new could also be an old member whose data
was wiped: started again under its old id it could vote twice in one term,
or help elect a leader without entries it had acknowledged.  So every peer
remembers, durably, each peer it has heard Raft messages from
(:class:`Heard`, ``heard.json``), and a new data directory is recorded only
once *every* other member of its configuration has answered and none
counts it as a member (:func:`wiped`: one has heard from it, or a
configuration changed since the start names it).  Every, not a majority:
the one member that heard from it may be the only one left holding what it
acknowledged.  So a new cluster forms once all its initial peers have met
(after that any majority runs it), and a peer that must join while another
member is down for good is added or replaced with ``exchangectl member``.
Until then the new peer serves ``status`` but takes no part in Raft.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from twisted_exchange.wal.codec import compact_json
from twisted_exchange.wal.file_storage import replace_file

FILE = "membership.json"
HEARD = "heard.json"


class MembershipError(Exception):
    """The data directory belongs to another peer or another cluster, or
    its peer was wiped and must be replaced."""


def claim(data_dir: str | os.PathLike, node_id: str, peers: list[str]) -> bool:
    """Check that ``data_dir`` belongs to ``(node_id, peers)``; True when it
    records nothing yet (a new data directory: :func:`record` it once it may join)."""
    path = Path(data_dir) / FILE
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return True
    except (OSError, ValueError) as e:
        raise MembershipError(f"unreadable {path}: {e}") from None
    if not isinstance(found, dict) or (found.get("id"), found.get("peers")) != (node_id, sorted(peers)):
        raise MembershipError(
            f"{data_dir} belongs to peer {found.get('id')!r} of cluster {found.get('peers')}, "
            f"not to {node_id!r} of {sorted(peers)}; use another --data-dir")
    return False


def recorded(data_dir: str | os.PathLike, node_id: str) -> bool:
    """Does ``data_dir`` record peer ``node_id`` (a start or a ``member add`` before)?"""
    try:
        return json.loads((Path(data_dir) / FILE).read_text(encoding="utf-8")).get("id") == node_id
    except (OSError, ValueError, AttributeError):
        return False


def record(data_dir: str | os.PathLike, node_id: str, peers: list[str], joining: bool = False) -> None:
    """Write ``data_dir``'s membership (atomically); ``joining`` marks a peer
    that ``member add`` is adding, so its first start asks nobody."""
    path = Path(data_dir) / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, compact_json({"id": node_id, "peers": sorted(peers), **({"joining": True} if joining else {})}))


def wiped(node_id: str, status: dict) -> str | None:
    """Why a new data directory of ``node_id`` may not join, judging by
    another peer's ``status``; None when nothing says it was a member."""
    configuration = status.get("configuration")
    members = (list(configuration.get("voters", [])) + list(configuration.get("learners", []))
               if isinstance(configuration, dict) else [])
    changed = status.get("configuration_index", 0) != 0 and node_id in members
    if not changed and node_id not in (status.get("heard") or ()):
        return None
    return (f"{node_id} has a new, empty data directory but {status.get('id')} "
            f"{'has heard from it before' if not changed else 'counts it as a member'}: its data was lost, "
            f"and under its old id it could vote twice. Replace it: exchangectl member replace {node_id} NEW_NAME")


class Heard:
    """The peers this data directory has heard Raft messages from, kept in
    ``heard.json``: what lets the cluster recognise one of them wiped.

    A peer is added (and the file synced) before its first message is
    stepped, so no vote or acknowledgement from it is ever counted
    without a durable trace of it; after that ``add`` is a set lookup.
    """

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self._path = Path(data_dir) / HEARD
        try:
            found = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            found = []
        except (OSError, ValueError) as e:
            raise MembershipError(f"unreadable {self._path}: {e}") from None
        if not (isinstance(found, list) and all(isinstance(peer, str) for peer in found)):
            raise MembershipError(f"{self._path} is not a list of peer ids")
        self._peers = set(found)

    def __contains__(self, peer: str) -> bool:
        return peer in self._peers

    def __iter__(self):
        return iter(sorted(self._peers))

    def add(self, peer: str) -> None:
        """Remember ``peer``, durably, if it is new."""
        if peer not in self._peers:
            replace_file(self._path, compact_json(sorted(self._peers | {peer})))
            self._peers.add(peer)
