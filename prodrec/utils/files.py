"""Files that survive crashes: the one atomic writer, checksums, and safe reading of torch files.

Every file prodrec writes for keeps (checkpoints, galleries, exports, feature stores) goes through
:func:`atomic_write` or :func:`replace_durably`: the bytes go to a temporary file in the target's
folder, which is flushed and fsynced, renamed over the target, and the folder is fsynced, so a crash
or a full disk leaves either the old file or the new one, never a part of one.
"""
from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, List, Optional, Union

__all__ = ["atomic_write", "replace_durably", "fsync_folder", "remove_temporaries", "temporary_path",
           "is_disk_full", "write_failure", "file_sha256", "read_torch_file"]

PathLike = Union[str, os.PathLike]
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def temporary_path(path: PathLike) -> Path:
    """A new, empty temporary file beside ``path`` (``.NAME.<random>.tmp``), for a write to rename over it."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(temporary)


def atomic_write(path: PathLike, write: Callable[[Path], Any], *, keep_previous: Optional[PathLike] = None) -> Path:
    """Write ``path`` all or nothing: ``write(temporary)`` fills a temporary file beside it, which then
    replaces ``path`` durably (:func:`replace_durably`). On any error the temporary file is removed and
    ``path`` is unchanged.

    Args:
        path: The file to write; its folder is created.
        write: Writes the file it is given (a path; open it yourself or hand it to ``torch.save``,
            ``faiss.write_index``, ...).
        keep_previous: Move the file being replaced here first (a fallback should the new one ever
            prove unreadable).

    Example:
        >>> atomic_write("notes.txt", lambda tmp: tmp.write_text("hello"))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        write(temporary)
        return replace_durably(temporary, path, keep_previous=keep_previous)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def replace_durably(temporary: PathLike, path: PathLike, *, keep_previous: Optional[PathLike] = None) -> Path:
    """Fsync the finished file ``temporary``, rename it over ``path`` (in the same folder) and fsync the
    folder, so the rename survives a power cut. ``keep_previous``: see :func:`atomic_write`."""
    temporary, path = Path(temporary), Path(path)
    with open(temporary, "rb") as stream:
        os.fsync(stream.fileno())
    if keep_previous is not None and path.exists():
        os.replace(path, keep_previous)
    os.replace(temporary, path)
    fsync_folder(path.parent)
    return path


def fsync_folder(folder: PathLike) -> None:
    """Make renames in ``folder`` durable (POSIX; folders cannot be opened on Windows)."""
    if os.name == "posix":
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def remove_temporaries(folder: PathLike, name: str = "*") -> List[Path]:
    """Delete the temporary files of writes to ``folder/<name>`` that a killed process left behind; only
    while no other process writes there. Returns the files deleted."""
    stale = sorted(Path(folder).glob(f".{name}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is ENOSPC/EDQUOT (``torch.save`` re-raises a
    failed write as a RuntimeError)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in _DISK_FULL:
            return True
        error = error.__cause__ or error.__context__
    return False


def write_failure(error: BaseException) -> str:
    """What made a write fail, in words a user can act on (from the first ``OSError`` in the chain)."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    if error is None:
        return "the write failed"
    reasons = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
               errno.EFBIG: "a file would pass the file-size limit (ulimit -f)",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               errno.EROFS: "the file system is read-only"}
    reason = reasons.get(error.errno) or (os.strerror(error.errno) if error.errno else str(error))
    return f"{reason} ({error.filename})" if getattr(error, "filename", None) else reason


def file_sha256(path: PathLike) -> str:
    """The SHA-256 of a file's bytes as hex, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_torch_file(path: PathLike, *, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong: a missing
    file, or one that is corrupt or holds more than tensors and plain containers."""
    import torch

    from prodrec.utils.errors import ProdrecError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file {str(path)!r} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ProdrecError(
            f"{path} cannot be read as tensors and plain containers ({type(error).__name__}: {error}); "
            "it may be corrupt or not a PyTorch file"
        ) from error
