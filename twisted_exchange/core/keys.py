"""The sorted keys of one side's price levels.

A side needs its level keys in order for three things: the best key after
the best level empties, the next levels for ``fok`` and depth queries, and
the priority order of a snapshot.  :class:`SortedKeys` is a list of sorted
chunks of at most ``2 * LOAD`` keys, with the last key of every chunk kept
beside them, as ``sortedcontainers.SortedList`` is, but compiled with the
rest of the core: ``SortedList``'s methods are interpreted Python, and once
the core was compiled, adding and removing levels through them cost an
eighth of all the time.  So, for P levels:

- ``add`` and ``remove``: a bisection of the chunks' last keys (O(log P)),
  one in the chunk, and a move of at most ``2 * LOAD`` keys (C ``memmove``);
- ``first``: O(1); iteration: O(P).
"""
from __future__ import annotations

from bisect import bisect_left, insort
from typing import Final, Iterator

#: Half the largest chunk: big enough that a chunk is one memmove away from
#: any edit, small enough that the move stays far below a microsecond.
LOAD: Final = 512


class SortedKeys:
    """Distinct int keys, smallest first."""

    __slots__ = ("chunks", "lasts")

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []
        self.lasts: list[int] = []  # the last key of each chunk, for the bisection

    def __iter__(self) -> Iterator[int]:
        for chunk in self.chunks:
            yield from chunk

    def first(self, default: int) -> int:
        """The smallest key, or ``default`` when there is none."""
        chunks = self.chunks
        return chunks[0][0] if chunks else default

    def add(self, key: int) -> None:
        """Insert ``key``, which is not there yet."""
        chunks, lasts = self.chunks, self.lasts
        if not chunks:
            chunks.append([key])
            lasts.append(key)
            return
        index = bisect_left(lasts, key)
        if index == len(chunks):  # beyond every key: last in the last chunk
            index -= 1
            chunks[index].append(key)
            lasts[index] = key
        else:
            insort(chunks[index], key)
        chunk = chunks[index]
        if len(chunk) > 2 * LOAD:
            chunks.insert(index + 1, chunk[LOAD:])
            del chunk[LOAD:]
            lasts.insert(index, chunk[-1])

    def remove(self, key: int) -> None:
        """Delete ``key``, which is there."""
        chunks, lasts = self.chunks, self.lasts
        index = bisect_left(lasts, key)
        chunk = chunks[index]
        del chunk[bisect_left(chunk, key)]
        if not chunk:
            del chunks[index]
            del lasts[index]
        else:
            lasts[index] = chunk[-1]
