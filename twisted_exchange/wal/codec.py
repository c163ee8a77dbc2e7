"""The log file's record format, and the scan that reads it back.

A record is an 8-byte header (big-endian body length, CRC32 of the body) and
the entry as canonical JSON (sorted keys, no spaces), so every body starts
with ``{"command":``.  Reading stops at the first record that cannot be
trusted; what follows decides what the damage is:

- nothing valid after it: a *torn tail*, the last write cut short by a
  crash.  It was never fsynced, so never acknowledged: cut it.
- a complete, valid record at or after it: *corruption* of data that was
  written whole and may have been acknowledged (a CRC failure in the middle
  of the log, an entry out of sequence).  The caller must treat it as lost.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import orjson

from twisted_exchange.replication.records import Entry, is_entry

HEADER = struct.Struct(">II")  # body length, CRC32 of the body
_BODY_START = b'{"command":'   # sorted keys: every body starts so


class Damaged(Exception):
    """A log record that cannot be trusted; the message says why."""


def compact_json(value: object, sort_keys: bool = False) -> bytes:
    """JSON without spaces, UTF-8; keys kept in order unless ``sort_keys``.

    orjson (the log's hot path: one record per entry); the json module for
    what orjson does not write (integers past 64 bits, keys that are not
    strings), escaping non-ASCII, which reads back the same.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys).encode()


def encode(entry: Entry) -> bytes:
    """One record: header, then the entry as canonical JSON."""
    body = compact_json(entry, sort_keys=True)
    return HEADER.pack(len(body), zlib.crc32(body)) + body


def decode(data: bytes, offset: int) -> tuple[Entry, int]:
    """The entry in the record at ``offset`` and the offset after it, or Damaged."""
    if len(data) - offset < HEADER.size:
        raise Damaged(f"torn record header ({len(data) - offset} of {HEADER.size} bytes)")
    length, crc = HEADER.unpack_from(data, offset)
    start = offset + HEADER.size
    body = data[start:start + length]
    if len(body) < length:
        raise Damaged(f"torn record body ({len(body)} of {length} bytes)")
    if zlib.crc32(body) != crc:
        raise Damaged("record fails its CRC32")
    try:
        entry = orjson.loads(body)
    except orjson.JSONDecodeError:
        entry = _slow_loads(body)
    if not is_entry(entry):
        raise Damaged("record is not an entry")
    return entry, start + length


def _slow_loads(body: bytes) -> object:
    """What orjson refuses the json module may read (numbers past a double)."""
    try:
        return json.loads(body)
    except ValueError:
        raise Damaged("record is not JSON") from None


@dataclass
class Scan:
    """The undamaged, contiguous prefix of a log file.

    ``offsets[i]`` is where ``entries[i]``'s record starts and ``end`` where
    the prefix ends; ``damage`` says why it ends before the data does, and
    ``torn`` whether that damage is only a torn tail (see the module).
    """

    entries: list[Entry]
    offsets: list[int]
    end: int
    damage: str | None = None
    torn: bool = False


def scan(data: bytes) -> Scan:
    """Read the records of a log file's ``data`` up to the first damage."""
    entries: list[Entry] = []
    offsets: list[int] = []
    offset = 0
    try:
        while offset < len(data):
            entry, after = decode(data, offset)
            if entries and entry["index"] != entries[-1]["index"] + 1:
                raise Damaged(f"entry {entry['index']} follows entry {entries[-1]['index']}")
            entries.append(entry)
            offsets.append(offset)
            offset = after
    except Damaged as damage:
        return Scan(entries, offsets, offset, f"{damage} at offset {offset}",
                    torn=not _valid_record_from(data, offset))
    return Scan(entries, offsets, offset)


def _valid_record_from(data: bytes, offset: int) -> bool:
    """Is there a complete, valid record starting at or after ``offset``?

    Only positions where a body could start are tried, so this is one pass
    of ``bytes.find`` over the rest of the file, not a decode per byte.
    """
    position = data.find(_BODY_START, offset + HEADER.size)
    while position != -1:
        try:
            decode(data, position - HEADER.size)
            return True
        except Damaged:
            position = data.find(_BODY_START, position + 1)
    return False
