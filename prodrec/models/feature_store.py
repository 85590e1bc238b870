"""Embeddings on disk: written in chunks, read back memory-mapped, so no copy of them needs to fit in memory.

The format is NumPy's own ``.npy`` (a header with shape, dtype and order, then the rows; see
``numpy.lib.format``), so ``numpy.load(path, mmap_mode="r")`` reads a file anywhere. A file being written is
named ``<name>.partial`` and takes its final name only once every row is written, so a crashed extraction
never leaves a file that looks complete.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "gallery.npy"
    >>> with FeatureWriter(path, num_rows=3, dim=2, dtype="float16") as writer:
    ...     writer.write(np.eye(2))
    ...     writer.write([[0.6, 0.8]])
    >>> open_features(path).shape
    (3, 2)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from prodrec.utils import ProdrecError, check_positive_int, replace_durably

__all__ = ["FEATURE_DTYPES", "FeatureWriter", "open_features"]

FEATURE_DTYPES = ("float32", "float16")
"""Storage types: float16 halves the size (embeddings of unit norm lose about 3 decimal digits)."""

PathLike = Union[str, "os.PathLike[str]"]



class FeatureWriter:
    """Writes ``num_rows`` embeddings of ``dim`` values to a ``.npy`` file, a chunk at a time, in row order.

    Use it as a context manager: leaving the block normally checks that every row was written and gives the
    file its final name; leaving it with an exception deletes the partial file.

    Args:
        path: The ``.npy`` file to create (replaced if it exists).
        num_rows: Rows the file will hold.
        dim: Values per row.
        dtype: ``"float32"`` or ``"float16"``.
    """

    def __init__(self, path: PathLike, num_rows: int, dim: int, *, dtype: str = "float32") -> None:
        self.num_rows = check_positive_int(num_rows, "num_rows")
        self.dim = check_positive_int(dim, "dim")
        if dtype not in FEATURE_DTYPES:
            raise ProdrecError(f"FeatureWriter: dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"FeatureWriter: folder {self.path.parent} does not exist; create it first")
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._rows = np.lib.format.open_memmap(self._partial, mode="w+", dtype=dtype, shape=(self.num_rows, self.dim))
        self.rows_written = 0

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` (``[n, dim]``, any real type; cast to the file's dtype).

        Raises:
            ValueError: Wrong shape, more rows than the file holds, or values that are not finite in the
                file's dtype (e.g. beyond float16's 65504).
        """
        if self._rows is None:
            raise ProdrecError(f"FeatureWriter: {self.path} is already closed")
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.dim or rows.dtype.kind not in "fiu":
            raise ProdrecError(f"FeatureWriter: rows must be a real array [n, {self.dim}], got dtype {rows.dtype} and "
                               f"shape {rows.shape}")
        stop = self.rows_written + len(rows)
        if stop > self.num_rows:
            raise ProdrecError(f"FeatureWriter: {self.path} holds {self.num_rows} rows; writing {len(rows)} more after "
                               f"{self.rows_written} would exceed it")
        target = self._rows[self.rows_written:stop]
        with np.errstate(over="ignore"):  # reported below, by row
            target[...] = rows
        bad = np.flatnonzero(~np.isfinite(target).all(axis=1))
        if len(bad):
            raise ProdrecError(f"FeatureWriter: {len(bad)} rows are not finite as {self._rows.dtype} (NaN, infinite "
                               f"or out of range), first rows {(bad[:20] + self.rows_written).tolist()}")
        self.rows_written = stop

    def close(self) -> Path:
        """Flush, check that all ``num_rows`` rows were written and give the file its final name.

        Raises:
            ValueError: Fewer rows were written than declared (the partial file is deleted).
        """
        if self._rows is None:
            return self.path
        complete = self.rows_written == self.num_rows
        self._rows.flush()
        self._rows = None
        if not complete:
            self._partial.unlink(missing_ok=True)
            raise ProdrecError(f"FeatureWriter: {self.path} got {self.rows_written} of {self.num_rows} rows; "
                               "the file was not kept")
        replace_durably(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial file."""
        self._rows = None
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"FeatureWriter({str(self.path)!r}, {self.rows_written}/{self.num_rows} rows x {self.dim})"


def open_features(path: PathLike) -> np.memmap:
    """A read-only memory map ``[N, D]`` of embeddings written by :class:`FeatureWriter` (or any 2-D float
    ``.npy`` file).

    Raises:
        FileNotFoundError: No such file (a ``.partial`` file beside it means its writing did not finish).
        ValueError: Not a ``.npy`` file, or not a 2-D float16/float32 array.
    """
    path = Path(path)
    if not path.is_file():
        partial = path.with_name(path.name + ".partial")
        hint = f" ({partial.name} exists: its writing did not finish)" if partial.exists() else ""
        raise FileNotFoundError(f"embeddings file {path} not found{hint}")
    try:
        features = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise ProdrecError(f"{path}: not a .npy embeddings file ({error})") from error
    if not isinstance(features, np.memmap) or features.ndim != 2 or features.dtype.name not in FEATURE_DTYPES:
        raise ProdrecError(f"{path}: expected a 2-D float32 or float16 array, got {getattr(features, 'dtype', '?')} "
                           f"of shape {getattr(features, 'shape', '?')}")
    return features
