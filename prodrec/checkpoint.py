"""Training checkpoint files: written atomically (the previous one kept), read without running code
from the file, and the newest readable one found for a resume."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

__all__ = ["CHECKPOINT_FORMAT", "CheckpointWriteError", "save_checkpoint", "load_checkpoint",
           "load_latest_checkpoint", "previous_path", "remove_temporaries", "read_torch_file"]

CHECKPOINT_FORMAT = "prodrec.checkpoint"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (the disk is full, ...); the file it would replace is unchanged."""


def previous_path(path: Union[str, os.PathLike]) -> Path:
    """Where :func:`save_checkpoint` keeps the file it replaces: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Union[str, os.PathLike], payload: Dict[str, Any], *, keep_previous: bool = False) -> Path:
    """Write ``payload`` to ``path`` via a temporary file, fsync and rename, so a crash mid-write leaves
    the previous file intact.

    Args:
        path: The checkpoint file.
        payload: Tensors and plain containers.
        keep_previous: Move the file being replaced to :func:`previous_path` first (a fallback should
            the new one ever be unreadable).

    Raises:
        CheckpointWriteError: Writing failed (a full disk is named as such, with the free space).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, **payload}, stream)
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if _disk_full(error):
            raise CheckpointWriteError(
                f"the disk is full: cannot write checkpoint {path} ({shutil.disk_usage(path.parent).free} bytes free "
                f"on the file system of {path.parent}); {path.name} is unchanged. Free space there or train into "
                "another --output folder, then resume"
            ) from error
        raise
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    os.replace(temporary, path)
    _fsync_folder(path.parent)
    return path


def remove_temporaries(folder: Union[str, os.PathLike]) -> List[Path]:
    """Delete what :func:`save_checkpoint` writes in ``folder`` before its rename (a killed process leaves it
    behind); only while no other process writes there (the run's lock). Returns the files deleted."""
    stale = sorted(Path(folder).glob(".*.pt.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _disk_full(error: BaseException) -> bool:
    """Whether ``error`` or an error it was raised from is ENOSPC/EDQUOT (torch.save re-raises a failed
    write as a RuntimeError)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return True
        error = error.__cause__ or error.__context__
    return False


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable (POSIX; folders cannot be opened on Windows)."""
    if os.name == "posix":
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def load_checkpoint(path: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    payload = read_torch_file(path, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a prodrec training checkpoint")
    return payload


def load_latest_checkpoint(path: Union[str, os.PathLike]) -> Tuple[Optional[Path], Optional[Dict[str, Any]], List[str]]:
    """The first readable checkpoint of ``path`` and :func:`previous_path` ``(path)``.

    Returns:
        ``(file, payload, refused)``: the file used and its contents (both None when neither exists or
        loads) and, for each file that exists but failed to load, the error (which names the file).
    """
    refused = []
    for candidate in (Path(path), previous_path(path)):
        if candidate.is_file():
            try:
                return candidate, load_checkpoint(candidate), refused
            except ValueError as error:
                refused.append(str(error))
    return None, None, refused


def read_torch_file(path: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong: a missing
    file, or one that is corrupt or holds more than tensors and plain containers."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file {str(path)!r} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"{path} cannot be read as tensors and plain containers ({type(error).__name__}: {error}); "
            "it may be corrupt or not a PyTorch file"
        ) from error
