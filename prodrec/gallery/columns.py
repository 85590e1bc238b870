"""Per-image columns of a gallery (labels, names, paths): the checks both gallery backends apply on the way in."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from prodrec.utils import ProdrecError

__all__ = ["row_strings", "read_only"]


def read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view



def row_strings(values: Optional[Sequence[Any]], count: int, name: str, *, optional: bool) -> np.ndarray:
    """``values`` (one per feature row; None when ``optional``) as an object array of non-empty strings / None."""
    if values is None and optional:
        return np.full(count, None, dtype=object)
    values = values if values is None or isinstance(values, str) else list(values)
    if values is None or isinstance(values, str) or len(values) != count:
        raise ProdrecError(f"{name} must be a sequence of {count} entries, one per feature row; got {values!r:.80}")
    allowed = (type(None),) if optional else ()
    bad = [i for i, v in enumerate(values) if not (isinstance(v, str) and v) and not isinstance(v, allowed)]
    if bad:
        raise ProdrecError(f"{name} must be non-empty strings{' or None' if optional else ''}; rows {bad[:20]} "
                           f"({len(bad)} in all) are not, e.g. {values[bad[0]]!r}")
    array = np.empty(count, dtype=object)
    array[:] = [None if v is None else str(v) for v in values]
    return array
