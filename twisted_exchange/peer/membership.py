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
or help elect a leader without entries it had acknowledged.  So a new data
directory is recorded only once the running cluster has been asked
(:func:`wiped`): a peer the cluster already counts (a configuration changed
since the start names it, or the leader has stored entries on it) is
refused and must be replaced (``exchangectl member replace OLD NEW``).  A
peer that starts late in a brand-new cluster is neither, and joins.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

FILE = "membership.json"


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
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"id": node_id, "peers": sorted(peers), **({"joining": True} if joining else {})}),
                         encoding="utf-8")
    os.replace(temporary, path)


def wiped(node_id: str, status: dict) -> str | None:
    """Why a new data directory of ``node_id`` may not join, judging by
    another peer's ``status``; None when nothing says it was a member."""
    configuration = status.get("configuration")
    if not isinstance(configuration, dict):
        return None
    members = list(configuration.get("voters", [])) + list(configuration.get("learners", []))
    stored = (status.get("match") or {}).get(node_id, 0)
    if node_id not in members or (status.get("configuration_index", 0) == 0 and not stored):
        return None
    return (f"{node_id} has a new, empty data directory but {status.get('id')} counts it as a member"
            f"{f' holding entries up to {stored}' if stored else ''}: its data was lost, and under its old id "
            f"it could vote twice. Replace it: exchangectl member replace {node_id} NEW_NAME")
