"""Argument checks shared by every room, each raising :class:`~prodrec.utils.ProdrecError`."""
from __future__ import annotations

from typing import Any, Optional

from prodrec.utils.errors import ProdrecError

__all__ = ["check_positive_int", "check_probability"]


def check_positive_int(value: Any, name: str, *, minimum: int = 1, allow_none: bool = False) -> Optional[int]:
    """``value`` when it is an integer (not a bool) of at least ``minimum``; else a ProdrecError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ProdrecError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_probability(value: Any, name: str) -> float:
    """``value`` as a float in [0, 1]; else a ProdrecError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ProdrecError(f"{name} is a probability in [0, 1], got {value!r}")
    return float(value)
