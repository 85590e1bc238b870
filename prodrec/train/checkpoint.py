"""Training checkpoint files: written atomically (the previous one kept), read without running code
from the file, and the newest readable one found for a resume."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from prodrec.utils import ProdrecError, ProdrecRuntimeError
from prodrec.utils import atomic_write, is_disk_full, read_torch_file, remove_temporaries

__all__ = ["CHECKPOINT_FORMAT", "CheckpointWriteError", "save_checkpoint", "load_checkpoint",
           "load_latest_checkpoint", "previous_path", "remove_checkpoint_temporaries"]

CHECKPOINT_FORMAT = "prodrec.checkpoint"


class CheckpointWriteError(ProdrecRuntimeError):
    """A checkpoint could not be written (the disk is full, ...); the file it would replace is unchanged."""


def previous_path(path: Union[str, os.PathLike]) -> Path:
    """Where :func:`save_checkpoint` keeps the file it replaces: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Union[str, os.PathLike], payload: Dict[str, Any], *, keep_previous: bool = False) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`prodrec.utils.atomic_write`), so a crash
    mid-write leaves the previous file intact.

    Args:
        path: The checkpoint file.
        payload: Tensors and plain containers.
        keep_previous: Move the file being replaced to :func:`previous_path` first (a fallback should
            the new one ever be unreadable).

    Raises:
        CheckpointWriteError: Writing failed (a full disk is named as such, with the free space).
    """
    path = Path(path)
    content = {"format": CHECKPOINT_FORMAT, "format_version": 1, **payload}
    try:
        return atomic_write(path, lambda temporary: _torch_save(content, temporary),
                            keep_previous=previous_path(path) if keep_previous else None)
    except BaseException as error:
        if is_disk_full(error):
            raise CheckpointWriteError(
                f"the disk is full: cannot write checkpoint {path} ({shutil.disk_usage(path.parent).free} bytes free "
                f"on the file system of {path.parent}); {path.name} is unchanged. Free space there or train into "
                "another --output folder, then resume"
            ) from error
        raise


def _torch_save(content: Dict[str, Any], path: Path) -> None:
    with open(path, "wb") as stream:
        torch.save(content, stream)


def remove_checkpoint_temporaries(folder: Union[str, os.PathLike]) -> List[Path]:
    """Delete what :func:`save_checkpoint` writes in ``folder`` before its rename (a killed process leaves it
    behind); only while no other process writes there (the run's lock). Returns the files deleted."""
    return remove_temporaries(folder, "*.pt")


def load_checkpoint(path: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    payload = read_torch_file(path, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ProdrecError(f"{path} is not a prodrec training checkpoint")
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
