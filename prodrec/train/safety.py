"""Guards for long runs: one run per output folder, stop signals, non-finite losses and gradients."""
from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch
from prodrec.utils import FileLock, ProdrecRuntimeError

__all__ = ["RunLock", "StopSignals", "NonFiniteError", "TrainingInterrupted", "all_finite"]


class NonFiniteError(ProdrecRuntimeError):
    """A loss or gradient became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after a checkpoint was written."""


class RunLock(FileLock):
    """Exclusive lock on ``folder/train.lock`` for the life of a run (:class:`prodrec.utils.FileLock`).

    Forked DataLoader workers do not hold it, and the operating system drops it the moment the run's
    process dies, even by SIGKILL while its workers are still shutting down: a killed run can be resumed
    at once, and a second live run on the same folder is refused with the first one's pid.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(Path(folder) / "train.lock", refusal=lambda owner: (
            f"another training run (pid {owner}) is using {folder}; wait for it to finish or choose another "
            "--output folder"))


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
