"""Guards for long runs: one run per output folder, stop signals, non-finite losses and gradients."""
from __future__ import annotations

import math
import os
import signal
import threading
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

__all__ = ["RunLock", "StopSignals", "NonFiniteError", "TrainingInterrupted", "all_finite"]


class NonFiniteError(RuntimeError):
    """A loss or gradient became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint was written."""


class RunLock:
    """Exclusive lock on ``folder/train.lock`` for the life of a run.

    The operating system releases it when the process dies, so a crashed run never leaves a
    stale lock behind; a second run on the same folder is refused while the first is alive.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / "train.lock"
        self._handle = None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise RuntimeError(
                f"another training run (pid {owner}) is using {self.path.parent}; wait for it to finish or "
                "choose another --output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
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
