"""BEP5 compact encodings: peers (6 bytes) and nodes (20-byte id + 6 bytes).

Decoders are as forgiving as bittorrent-dht's: entries with port 0 are
skipped and a truncated tail is dropped, never raised on, because the bytes
come from the network.
"""
from __future__ import annotations

import socket
import struct

from twisted_exchange.grape.routing import ID_LENGTH, Contact

_PORT = struct.Struct(">H")
NODE_LENGTH = ID_LENGTH + 6


def encode_peer(host: str, port: int) -> bytes:
    """IPv4 address and port, 6 bytes big-endian."""
    return socket.inet_aton(host) + _PORT.pack(port)


def _decode_address(blob: bytes) -> tuple[str, int]:
    return socket.inet_ntoa(blob[:4]), _PORT.unpack(blob[4:6])[0]


def decode_peers(values: object) -> list[tuple[str, int]]:
    """The ``values`` list of a ``get_peers`` reply as (host, port) pairs."""
    if not isinstance(values, list):
        return []
    peers = []
    for value in values:
        if not isinstance(value, bytes) or len(value) < 6:
            break
        host, port = _decode_address(value)
        if port:
            peers.append((host, port))
    return peers


def encode_nodes(contacts: list[Contact]) -> bytes:
    """Concatenated compact node infos."""
    return b"".join(c.id + encode_peer(c.host, c.port) for c in contacts)


def decode_nodes(blob: object) -> list[Contact]:
    """The ``nodes`` string of a reply as contacts (port 0 entries skipped)."""
    if not isinstance(blob, bytes):
        return []
    contacts = []
    for start in range(0, len(blob) - NODE_LENGTH + 1, NODE_LENGTH):
        entry = blob[start:start + NODE_LENGTH]
        host, port = _decode_address(entry[ID_LENGTH:])
        if port:
            contacts.append(Contact(entry[:ID_LENGTH], host, port))
    return contacts
