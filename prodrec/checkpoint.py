"""Training checkpoints: written atomically, read without running code from the file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "read_torch_file"]

CHECKPOINT_FORMAT = "prodrec.checkpoint"


def save_checkpoint(path: Union[str, os.PathLike], payload: Dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` via a temporary file, fsync and rename, so a crash
    mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, **payload}, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``)."""
    path = Path(path)
    payload = read_torch_file(path, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a prodrec training checkpoint")
    return payload


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
