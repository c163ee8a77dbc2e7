"""The membership a data directory belongs to.

A Raft log is only meaningful inside the cluster that wrote it: starting a
peer on a data directory written under another peer list (say, the 5-peer
topology on the 3-peer one's data) would change membership without joint
consensus, which Raft does not survive.  The first start records the
membership; every later start must match it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

FILE = "membership.json"


class MembershipError(Exception):
    """The data directory belongs to another peer or another cluster."""


def claim(data_dir: str | os.PathLike, node_id: str, peers: list[str]) -> None:
    """Record ``(node_id, peers)`` in ``data_dir``, or check it matches what is there."""
    path = Path(data_dir) / FILE
    wanted = {"id": node_id, "peers": sorted(peers)}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(wanted), encoding="utf-8")
        os.replace(temporary, path)
        return
    except (OSError, ValueError) as e:
        raise MembershipError(f"unreadable {path}: {e}") from None
    if found != wanted:
        raise MembershipError(
            f"{data_dir} belongs to peer {found.get('id')!r} of cluster {found.get('peers')}, "
            f"not to {node_id!r} of {wanted['peers']}; use another --data-dir")
