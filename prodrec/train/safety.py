"""Guards for long runs: one run per output folder, stop signals, non-finite losses and gradients."""
from __future__ import annotations

import errno
import math
import os
import signal
import threading
from pathlib import Path
from typing import Dict, Iterable, Optional, Set

import torch
from prodrec.utils import ProdrecRuntimeError

__all__ = ["RunLock", "StopSignals", "NonFiniteError", "TrainingInterrupted", "all_finite"]


class NonFiniteError(ProdrecRuntimeError):
    """A loss or gradient became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint was written."""


class RunLock:
    """Exclusive lock on ``folder/train.lock`` for the life of a run.

    The lock is a POSIX record lock (``fcntl.lockf``): it belongs to this process alone, so forked
    DataLoader workers, which inherit the open file, do not hold it, and the operating system drops it
    the moment this process dies, even by SIGKILL while its workers are still shutting down. A killed
    run can therefore be resumed at once, and a second live run on the same folder is refused.
    Record locks do not conflict inside one process, so this process's own locks are tracked here.
    """

    _held: Set[Path] = set()

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "train.lock"
        self._handle = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        if key in RunLock._held:  # opening the file again and closing it would drop this process's lock
            raise self._refusal(str(os.getpid()))
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                handle.close()
                raise
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise self._refusal(owner) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        RunLock._held.add(key)
        return self

    def _refusal(self, owner: str) -> ProdrecRuntimeError:
        return ProdrecRuntimeError(f"another training run (pid {owner}) is using {self.path.parent}; wait for it to finish "
                                   "or choose another --output folder")

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            RunLock._held.discard(self.path.resolve())
            self._handle.close()  # closing releases the lock
            self._handle = None


class StopSignals:
    """Turns SIGINT/SIGTERM into a request the training loop honours after the current step."""

    def __init__(self) -> None:
        self.received: Optional[str] = None
        self._previous: Dict[int, object] = {}

    def _handle(self, number: int, _frame) -> None:
        self.received = signal.Signals(number).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


def all_finite(values: Dict[str, float], parameters: Optional[Iterable[torch.nn.Parameter]] = None) -> bool:
    """Whether every loss value and (when given) every gradient is finite."""
    if not all(math.isfinite(v) for v in values.values()):
        return False
    if parameters is None:
        return True
    grads = [p.grad for p in parameters if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.stack([g.detach().float().norm() for g in grads]).sum()))
