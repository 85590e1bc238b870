"""A compact, read-only sequence of path strings, for listings of millions of images.

A tuple of 2.5 M absolute paths holds 2.5 M ``str`` objects, about 130 bytes each, and every ``DataLoader`` worker
that touches one copies the memory page it lives on (reference counts are written). :class:`PackedPaths` keeps the
paths as UTF-8 bytes in blocks of at most 65,536, each block stored after a prefix common to its paths (the data
root; found, or given by the reader): about 50 bytes an AliProducts path in a few hundred objects. ``paths[i]``
decodes one path.
"""
from __future__ import annotations

import operator
import os
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate, chain, islice
from typing import Iterable, Iterator

__all__ = ["PackedPaths", "PathPacker"]

_BLOCK = 1 << 16  # paths per block at most


class PackedPaths(Sequence):
    """A read-only sequence of ``str`` paths, stored packed; equal to the tuple of the same paths.

    Args:
        paths: The paths (any iterable of ``str``; consumed a block at a time).
    """

    __slots__ = ("_starts", "_prefixes", "_data", "_ends")

    def __init__(self, paths: Iterable[str] = ()) -> None:
        packer, paths = PathPacker(), iter(paths)
        while block := list(islice(paths, _BLOCK)):
            packer.extend(block)
        self._starts, self._prefixes, self._data, self._ends = packer._parts()

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        i = operator.index(index)
        if i < 0:
            i += len(self._ends)
        if not 0 <= i < len(self._ends):
            raise IndexError(f"PackedPaths index {index} out of range for {len(self)} paths")
        block = bisect_right(self._starts, i) - 1
        start = self._ends[i - 1] if i != self._starts[block] else 0
        return self._prefixes[block] + _decode(self._data[block][start:self._ends[i]])

    def __iter__(self) -> Iterator[str]:
        for first, last, prefix, data in zip(self._starts, self._starts[1:] + [len(self)], self._prefixes, self._data):
            ends = self._ends[first:last]
            text = _decode(data)
            if len(text) == len(data):  # ASCII: byte offsets are character offsets
                yield from (prefix + text[start:end] for start, end in zip(chain((0,), ends), ends))
            else:
                yield from (prefix + _decode(data[start:end]) for start, end in zip(chain((0,), ends), ends))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (PackedPaths, tuple)):
            return NotImplemented
        return len(self) == len(other) and all(map(operator.eq, self, other))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        shown = ", ".join(map(repr, self[:3])) + (", ..." if len(self) > 3 else "")
        return f"PackedPaths([{shown}], {len(self)} paths)"


class PathPacker:
    """Builds a :class:`PackedPaths` from paths given a batch at a time (a reader's chunks)."""

    def __init__(self) -> None:
        self._starts: list[int] = []  # index of the first path of each block
        self._prefixes: list[str] = []
        self._data: list[bytes] = []
        self._ends = array("I")  # end of each path in its block's bytes

    def extend(self, paths: Sequence[str], prefix: str | None = None) -> None:
        """Append ``prefix + path`` for each of ``paths``.

        Args:
            paths: ``str`` each.
            prefix: What every path is relative to; None: the paths are whole (their common prefix is found).
        """
        for first in range(0, len(paths), _BLOCK):
            block = paths[first:first + _BLOCK]
            if prefix is None:
                common = os.path.commonprefix([min(block), max(block)])  # every path between those starts with it
                self._append(common, [path[len(common):] for path in block])
            else:
                self._append(prefix, block)

    def packed(self) -> PackedPaths:
        """The paths appended so far."""
        packed = PackedPaths.__new__(PackedPaths)
        packed._starts, packed._prefixes, packed._data, packed._ends = self._parts()
        return packed

    def _append(self, prefix: str, suffixes: Sequence[str]) -> None:
        joined = "".join(suffixes)
        data = _encode(joined)
        self._starts.append(len(self._ends))
        self._prefixes.append(prefix)
        self._data.append(data)
        self._ends.extend(accumulate(map(len, suffixes) if len(data) == len(joined) else
                                     (len(_encode(suffix)) for suffix in suffixes)))

    def _parts(self) -> tuple[list[int], list[str], list[bytes], array]:
        return list(self._starts), list(self._prefixes), list(self._data), array("I", self._ends)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # any str round-trips, os.fsdecode's escapes included


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")
