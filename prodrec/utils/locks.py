"""One writer at a time: an exclusive lock on a file, held by one process (and one thread in it).

The lock is a POSIX record lock (``fcntl.lockf``): it belongs to the process that took it, so forked
children (DataLoader workers) that inherit the open file do not hold it, and the operating system drops it
the moment that process dies, even by SIGKILL. Record locks do not exclude each other inside one process,
so a per-file ``threading.Lock`` does that, for a long-running process with several writing threads.
The lock file holds the owner's pid, for messages.
"""
from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from prodrec.utils.errors import ProdrecRuntimeError

__all__ = ["FileLock", "LockBusy"]


class LockBusy(ProdrecRuntimeError):
    """Another process or thread holds the lock; ``owner`` is its pid as the lock file says."""

    def __init__(self, message: str, owner: str) -> None:
        super().__init__(message)
        self.owner = owner


class FileLock:
    """Exclusive lock on ``path`` (created with its folder).

    Args:
        path: The lock file.
        refusal: ``refusal(owner_pid)`` is the message of :class:`LockBusy` when the lock is taken.

    Example:
        >>> with FileLock("gallery/write.lock").acquire(wait=True):  # doctest: +SKIP
        ...     ...  # write
    """

    _threads: Dict[Path, threading.Lock] = {}
    _owners: Dict[Path, int] = {}  # the thread holding each lock, to refuse a second take instead of hanging
    _threads_guard = threading.Lock()

    def __init__(self, path: Union[str, os.PathLike], *,
                 refusal: Callable[[str], str] = lambda owner: f"locked by pid {owner}") -> None:
        self.path = Path(path)
        self.refusal = refusal
        self._handle = None
        self._thread_lock: Optional[threading.Lock] = None

    def acquire(self, *, wait: bool = False, on_wait: Optional[Callable[[str], None]] = None) -> "FileLock":
        """Take the lock. Without ``wait``, raise :class:`LockBusy` if it is taken; with it, call
        ``on_wait(owner pid)`` once and block until the owner releases it (or dies)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        with FileLock._threads_guard:
            thread_lock = FileLock._threads.setdefault(key, threading.Lock())
            if FileLock._owners.get(key) == threading.get_ident():
                raise LockBusy(f"{self.refusal(str(os.getpid()))} (this thread holds {self.path} already: a write "
                               "inside another write of the same folder would wait for itself)", str(os.getpid()))
        if not thread_lock.acquire(blocking=False):
            if not wait:
                raise LockBusy(self.refusal(str(os.getpid())), str(os.getpid()))
            if on_wait is not None:
                on_wait(str(os.getpid()))
            thread_lock.acquire()
        handle = None
        try:
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):
                    raise
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                if not wait:
                    raise LockBusy(self.refusal(owner), owner) from None
                if on_wait is not None:
                    on_wait(owner)
                fcntl.lockf(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        except BaseException:
            if handle is not None:
                handle.close()
            thread_lock.release()
            raise
        self._handle, self._thread_lock = handle, thread_lock
        FileLock._owners[key] = threading.get_ident()
        return self

    @property
    def held(self) -> bool:
        return self._handle is not None

    def release(self) -> None:
        if self._handle is not None:
            FileLock._owners.pop(self.path.resolve(), None)
            self._handle.close()  # closing releases the record lock
            self._handle = None
            self._thread_lock.release()
            self._thread_lock = None

    def __enter__(self) -> "FileLock":
        return self if self.held else self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
