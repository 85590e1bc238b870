"""Argument checks shared by every room, each raising :class:`~prodrec.utils.ProdrecError`."""
from __future__ import annotations

import reprlib
from typing import Any, Optional

import numpy as np

from prodrec.utils.errors import ProdrecError

__all__ = ["check_positive_int", "brief"]

_BRIEF = reprlib.Repr()  # keyword arguments need Python 3.12
for _name in ("maxtuple", "maxlist", "maxarray", "maxdict", "maxset", "maxfrozenset", "maxdeque"):
    setattr(_BRIEF, _name, 6)
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxlong, _BRIEF.maxother = 3, 80, 40, 80


def brief(value: Any) -> str:
    """``repr(value)`` cut short (a few items per level, a few levels, long strings and numbers elided), for
    error messages that quote what a user gave: a huge or deeply shared value must not fill the message."""
    return _BRIEF.repr(value)


def check_positive_int(value: Any, name: str, *, minimum: int = 1, allow_none: bool = False) -> Optional[int]:
    """``value`` as an int when it is an integer (Python or numpy, not a bool) of at least ``minimum``; else a
    ProdrecError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ProdrecError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {brief(value)}")
    return int(value)

