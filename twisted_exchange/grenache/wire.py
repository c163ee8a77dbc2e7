"""JSON and gzip exactly as Grenache's Node packages put them on the wire.

Node parses with ``JSON.parse`` and writes with ``JSON.stringify``: no NaN or
Infinity either way, compact separators, UTF-8.  Decompression is bounded so
that a small gzip body cannot expand past the size limit of its reader.

orjson does the common case (several times faster than the json module, and
JSON is a large share of an RPC's cost); the json module takes over for what
orjson refuses but Node accepts: integers past 64 bits on the way out, bytes
that are not UTF-8, lone surrogates, numbers past a double's range, nesting
deeper than orjson's limit.  As with ``JSON.parse`` and ``JSON.stringify``,
an integer past 64 bits reads as a float, and a float NaN writes as null.
"""
from __future__ import annotations

import json
import random
import zlib
from typing import Any

import orjson

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_ascii_encoder = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)

#: uuid.UUID(version=4): the variant and version bits cleared, then set
_UUID4_CLEAR = ~((0xc000 << 48) | (0xf000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)

# orjson writes dataclasses and datetimes the json module refuses: hand them back
_ORJSON = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def encode(value: Any) -> bytes:
    """``JSON.stringify(value)`` as UTF-8; ValueError or TypeError if not JSON."""
    try:
        return orjson.dumps(value, option=_ORJSON)
    except TypeError:  # not JSON, or JSON orjson does not write: let json decide
        pass
    try:
        return _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: escape them as Node does
        return _ascii_encoder.encode(value).encode("ascii")
    except RecursionError:
        raise ValueError("value nested too deeply for JSON") from None


def decode(data: bytes, utf8_only: bool = False) -> Any:
    """``JSON.parse(data)``; ValueError for anything Node would refuse.

    As Node reads a Buffer, bytes that are not UTF-8 become U+FFFD, unless
    ``utf8_only``: then they are a ValueError too.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # not JSON, or JSON orjson does not read: let json decide
        pass
    try:
        return _decoder.decode(data.decode("utf-8", "strict" if utf8_only else "replace"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def gzip(data: bytes) -> bytes:
    """Raw gzip, as Node's ``zlib.gzip``."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


class TooLarge(ValueError):
    """Decompressed data would exceed the caller's limit."""


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate raw gzip; zlib.error if not gzip, TooLarge past ``limit`` bytes."""
    inflater = zlib.decompressobj(31)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise TooLarge(f"inflates past {limit} bytes")
    if not inflater.eof:
        raise zlib.error("truncated gzip data")
    return out


def request_id() -> str:
    """A fresh rid in the form of Node's ``uuid.v4()``.

    A rid only pairs a reply with its request, so it must be unique, not
    secret: it comes from the process's PRNG (seeded from the OS, and again
    in a forked child) rather than ``uuid.uuid4()``'s system call per
    request, 4x the time (a client paid 2-5% of its CPU for it).
    """
    digits = f"{random.getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

