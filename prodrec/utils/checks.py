"""Argument checks shared by every room, each raising :class:`~prodrec.utils.ProdrecError`."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from prodrec.utils.errors import ProdrecError

__all__ = ["check_positive_int"]


def check_positive_int(value: Any, name: str, *, minimum: int = 1, allow_none: bool = False) -> Optional[int]:
    """``value`` as an int when it is an integer (Python or numpy, not a bool) of at least ``minimum``; else a
    ProdrecError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ProdrecError(f"{name} must be {kind}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)

