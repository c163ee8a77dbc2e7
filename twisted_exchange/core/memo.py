"""Bounded caches of pure functions on the command path.

Prices, quantities, clients and symbols repeat from command to command, so
their checks and conversions are cached.  A cache is a plain dict, emptied
when it is full: a hit is one dict lookup, a fraction of what a
``functools.lru_cache`` call costs once the core is compiled (the call
builds an argument tuple and reorders the cache's list on every hit), and
the results are the same whatever was forgotten.
"""
from __future__ import annotations

from typing import Final, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: Entries per cache: far more distinct prices and sizes than a book uses at a time.
SIZE: Final = 1 << 16


def remember(cache: dict[K, V], key: K, value: V) -> V:
    """Store ``value`` for ``key``, emptying ``cache`` first if it is full; return ``value``."""
    if len(cache) >= SIZE:
        cache.clear()
    cache[key] = value
    return value
