"""Raft messages as types, and the one parser that makes them from wire data.

``RaftNode.step`` trusts its input: it reads fields without checking them,
and some of its rules act before others could fail (a higher term is adopted
first).  So every message from outside is parsed here first, completely,
into one of the TypedDicts below, and anything else is refused with
:class:`MessageError` before the node sees it: a malformed message never
changes state.  The checks are exactly what the node relies on: known type,
exactly the fields of that type, integers that are ints (not bools, not
floats) in ``[0, 2**63)``, entries that are contiguous after ``prev_index``
with non-decreasing terms no newer than the message, commands that pass
:func:`~twisted_exchange.core.commands.canonical_command`, and bounded
sizes.  Parsing is pure (no I/O), so the simulator can run every message it
delivers through it too.
"""
from __future__ import annotations

from typing import Any, Literal, TypedDict, Union

from twisted_exchange.core.commands import canonical_command
from twisted_exchange.core.errors import ExchangeError
from twisted_exchange.replication.configuration import is_configuration
from twisted_exchange.replication.records import Entry, Snapshot

#: Largest integer a message may carry (JSON numbers beyond it lose precision elsewhere).
MAX_INT = 2**63 - 1
#: Most entries one raft.append may carry (RaftConfig.max_entries_per_message stays below).
MAX_ENTRIES = 4096


class MessageError(ValueError):
    """A message that is not exactly one of ours; ``str()`` says why."""

    code = "ERR_BAD_MESSAGE"


class Vote(TypedDict):
    """raft.prevote and raft.vote: a (pre-)candidate asks for a vote."""

    type: Literal["raft.prevote", "raft.vote"]
    to: str
    term: int
    last_index: int
    last_term: int


class VoteReply(TypedDict):
    type: Literal["raft.prevote_reply", "raft.vote_reply"]
    to: str
    term: int
    granted: bool


class Append(TypedDict):
    type: Literal["raft.append"]
    to: str
    term: int
    prev_index: int
    prev_term: int
    entries: list[Entry]
    commit: int
    last_index: int
    epoch: int | None


class AppendReply(TypedDict, total=False):
    """``match`` when ``success``, else ``reject_index``, ``hint_index``, ``hint_term``."""

    type: Literal["raft.append_reply"]
    to: str
    term: int
    success: bool
    match: int
    reject_index: int
    hint_index: int
    hint_term: int | None
    epoch: int | None


class InstallSnapshot(TypedDict):
    type: Literal["raft.snapshot"]
    to: str
    term: int
    snapshot: Snapshot


class SnapshotReply(TypedDict):
    type: Literal["raft.snapshot_reply"]
    to: str
    term: int
    match: int


class Forward(TypedDict):
    """A client command a follower forwards to the leader (Replica, not RaftNode)."""

    type: Literal["raft.forward"]
    to: str
    term: int
    command: dict


Message = Union[Vote, VoteReply, Append, AppendReply, InstallSnapshot, SnapshotReply, Forward]

_HEADER = ("type", "from", "to", "term")
_FIELDS: dict[str, frozenset[str]] = {
    "raft.prevote": frozenset({"last_index", "last_term"}),
    "raft.vote": frozenset({"last_index", "last_term"}),
    "raft.prevote_reply": frozenset({"granted"}),
    "raft.vote_reply": frozenset({"granted"}),
    "raft.append": frozenset({"prev_index", "prev_term", "entries", "commit", "last_index", "epoch"}),
    "raft.snapshot": frozenset({"snapshot"}),
    "raft.snapshot_reply": frozenset({"match"}),
    "raft.forward": frozenset({"command"}),
}
_APPEND_REPLY_SUCCESS = frozenset({"success", "match", "epoch"})
_APPEND_REPLY_FAILURE = frozenset({"success", "reject_index", "hint_index", "hint_term", "epoch"})
TYPES = frozenset(_FIELDS) | {"raft.append_reply"}


def parse_message(value: Any, sender: str, receiver: str) -> Message:
    """``value`` as a Message from ``sender`` to ``receiver``, or MessageError.

    ``sender`` is who delivered it (the batch's verified sender), so a
    message cannot claim to come from anyone else.
    """
    if type(value) is not dict:
        raise MessageError("a message must be a JSON object")
    kind = value.get("type")
    if kind == "raft.append_reply":
        fields = _APPEND_REPLY_SUCCESS if value.get("success") is True else _APPEND_REPLY_FAILURE
    else:
        fields = _FIELDS.get(kind) if type(kind) is str else None
        if fields is None:
            raise MessageError(f"unknown message type {str(kind)[:40]!r}")
    _exact(value, fields.union(_HEADER), kind)
    if value["from"] != sender:
        raise MessageError(f"{kind} claims to come from {str(value['from'])[:40]!r}, not {sender!r}")
    if value["to"] != receiver:
        raise MessageError(f"{kind} is for {str(value['to'])[:40]!r}, not {receiver!r}")
    _count(value, "term")
    _PARSERS[kind](value)
    return value  # type: ignore[return-value]


def parse_entry(value: Any) -> Entry:
    """``value`` as a log entry: index and term >= 1, command None or
    canonical; or command None and a configuration."""
    if type(value) is not dict:
        raise MessageError("an entry must be a JSON object")
    _exact(value, _ENTRY | ({"config"} if "config" in value else set()), "entry")
    _count(value, "index", 1)
    _count(value, "term", 1)
    if "config" in value:
        _configuration(value)
        if value["command"] is not None:
            raise MessageError("a configuration entry has no command")
    elif value["command"] is not None:
        value["command"] = _command(value["command"])
    return value  # type: ignore[return-value]


def _vote(message: dict) -> None:
    _count(message, "last_index")
    _count(message, "last_term")


def _vote_reply(message: dict) -> None:
    _flag(message, "granted")


def _append(message: dict) -> None:
    prev_index = _count(message, "prev_index")
    floor = _count(message, "prev_term")
    _count(message, "commit")
    entries = message["entries"]
    if type(entries) is not list or len(entries) > MAX_ENTRIES:
        raise MessageError(f"entries must be a list of at most {MAX_ENTRIES}")
    if _count(message, "last_index") < prev_index + len(entries):
        raise MessageError("last_index is below the entries sent")
    _epoch(message)
    ceiling = message["term"]
    for offset, entry in enumerate(entries):
        parse_entry(entry)
        if entry["index"] != prev_index + 1 + offset:
            raise MessageError(f"entry {entry['index']} is not at {prev_index + 1 + offset}")
        if not floor <= entry["term"] <= ceiling:
            raise MessageError(f"entry term {entry['term']} outside [{floor}, {ceiling}]")
        floor = entry["term"]


def _append_reply(message: dict) -> None:
    _flag(message, "success")
    _epoch(message)
    if message["success"]:
        _count(message, "match")
        return
    _count(message, "reject_index")
    _count(message, "hint_index")
    if message["hint_term"] is not None:
        _count(message, "hint_term")


def _install_snapshot(message: dict) -> None:
    snapshot = message["snapshot"]
    if type(snapshot) is not dict:
        raise MessageError("snapshot must be a JSON object")
    _exact(snapshot, _SNAPSHOT | ({"config"} if "config" in snapshot else set()), "snapshot")
    if "config" in snapshot:
        _configuration(snapshot)
    _count(snapshot, "index", 1)
    _count(snapshot, "term", 1)
    if type(snapshot["data"]) is not dict:
        raise MessageError("snapshot data must be a JSON object")


def _snapshot_reply(message: dict) -> None:
    _count(message, "match")


def _forward(message: dict) -> None:
    message["command"] = _command(message["command"])


_PARSERS = {
    "raft.prevote": _vote, "raft.vote": _vote,
    "raft.prevote_reply": _vote_reply, "raft.vote_reply": _vote_reply,
    "raft.append": _append, "raft.append_reply": _append_reply,
    "raft.snapshot": _install_snapshot, "raft.snapshot_reply": _snapshot_reply,
    "raft.forward": _forward,
}


_ENTRY = frozenset({"index", "term", "command"})
_SNAPSHOT = frozenset({"index", "term", "data"})


def _configuration(value: dict) -> None:
    if not is_configuration(value["config"]):
        raise MessageError("config must hold exactly voters (at least one) and learners: "
                           "sorted, disjoint lists of peer ids")


def _exact(value: dict, fields: frozenset[str] | set[str], what: str) -> None:
    if value.keys() != fields:
        missing = sorted(fields - value.keys())
        unknown = sorted(str(k)[:40] for k in value.keys() - fields)
        raise MessageError(f"{what}: missing {missing}, unknown {unknown}")


def _count(value: dict, field: str, least: int = 0) -> int:
    number = value[field]
    if type(number) is not int or not least <= number <= MAX_INT:
        raise MessageError(f"{field} must be an integer in [{least}, 2**63)")
    return number


def _epoch(value: dict) -> None:
    if value["epoch"] is not None:
        _count(value, "epoch")


def _flag(value: dict, field: str) -> None:
    if type(value[field]) is not bool:
        raise MessageError(f"{field} must be true or false")


def _command(value: Any) -> dict:
    try:
        return canonical_command(value)
    except ExchangeError as error:
        raise MessageError(f"command refused: {error}") from None
