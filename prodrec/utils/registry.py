"""Where names meet code: a config key or a command-line flag names a component, a registry holds what builds it.

Like open-metric-learning's registries (``oml/registry``): each room keeps one for the components it
builds by name (``prodrec.data.DATASET_READERS``, ``prodrec.losses.LOSSES``), and its tests build every
registered name.
"""
from __future__ import annotations

from typing import Dict, Generic, Iterator, Mapping, Optional, TypeVar

from prodrec.utils.errors import ProdrecError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named components of one ``kind``; a read-only mapping from name to what builds the component.

    Example:
        >>> readers = Registry("dataset layout")
        >>> @readers.register("csv")
        ... def read_csv(root): ...
        >>> sorted(readers), readers.get("csv") is read_csv
        (['csv'], True)
        >>> readers.get("tsv")
        Traceback (most recent call last):
        prodrec.utils.errors.ProdrecError: unknown dataset layout 'tsv'; choose one of ['csv']
    """

    def __init__(self, kind: str, entries: Optional[Mapping[str, T]] = None) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.register(name, entry)

    def register(self, name: str, entry: Optional[T] = None):
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds what it decorates."""
        def add(item: T) -> T:
            if name in self._entries:
                raise ProdrecError(f"{self.kind} {name!r} is registered already ({self._entries[name]!r})")
            self._entries[name] = item
            return item

        return add if entry is None else add(entry)

    def get(self, name: str) -> T:  # type: ignore[override]
        """The entry of ``name``; an unknown name is a ProdrecError listing the known ones."""
        if name in self._entries:
            return self._entries[name]
        raise ProdrecError(f"unknown {self.kind} {name!r}; choose one of {sorted(self._entries)}")

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"

