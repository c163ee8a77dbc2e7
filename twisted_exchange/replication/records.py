"""What a Raft node stores: log entries, hard state and snapshots.

One definition for the raft node, the replica, the storages and the on-disk
log (``twisted_exchange.wal``), which reads them back from untrusted bytes
and checks their shape with the ``is_*`` predicates here before any layer
uses them.
"""
from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from twisted_exchange.replication.configuration import is_configuration


class Entry(TypedDict):
    """One log entry; ``command`` None is a leader's no-op, or, with
    ``config``, a cluster configuration (``configuration.Configuration.to_json``)."""

    index: int      # >= 1
    term: int       # >= 1
    command: dict[str, Any] | None
    config: NotRequired[dict[str, list[str]]]


class HardState(TypedDict):
    """Figure 2's persistent state besides the log, plus what recovery needs.

    ``commit`` rides along (it is volatile in Raft).  ``abstain_until_term``
    is present only while the node abstains from votes after it discarded
    damaged data (see ``RaftNode._abstains``): it abstains until caught up
    past this term, or by this term's leader after the restart.  Files
    written before the field existed load as not abstaining.
    """

    term: int
    vote: str | None
    commit: int
    abstain_until_term: NotRequired[int]


class Snapshot(TypedDict):
    """The state machine as of entry ``index`` (of ``term``): plain JSON-able
    ``data``, and the cluster configuration as of that entry.  A snapshot
    written before configurations existed has none: the node then takes its
    configured peer list (``--peers``)."""

    index: int
    term: int
    data: Any
    config: NotRequired[dict[str, list[str]]]


ABSTAIN = "abstain_until_term"


def empty_hard_state() -> HardState:
    """The hard state of a node that never saved one."""
    return {"term": 0, "vote": None, "commit": 0}


def abstaining(hard_state: HardState) -> HardState:
    """``hard_state`` of a node that has just lost stored data it may have
    acknowledged: it abstains from votes until caught up past its current term."""
    return {**hard_state, ABSTAIN: max(hard_state.get(ABSTAIN, 0), hard_state["term"])}


def _is_count(value: Any, least: int = 0) -> bool:
    return type(value) is int and value >= least


def is_entry(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _is_count(value.get("index"), 1)
        and _is_count(value.get("term"), 1)
        and "command" in value
        and (value["command"] is None or isinstance(value["command"], dict))
        and ("config" not in value or (value["command"] is None and is_configuration(value["config"])))
    )


def is_hard_state(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and _is_count(value.get("term"))
        and _is_count(value.get("commit"))
        and "vote" in value
        and (value["vote"] is None or isinstance(value["vote"], str))
        and (ABSTAIN not in value or _is_count(value[ABSTAIN]))
    )


def is_snapshot(value: Any) -> bool:
    return (isinstance(value, dict) and _is_count(value.get("index")) and _is_count(value.get("term"))
            and "data" in value and ("config" not in value or is_configuration(value["config"])))
