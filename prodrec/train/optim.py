"""Optimizer and per-step learning-rate schedule from the ``Optimizer`` config section."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import torch
from torch.optim import lr_scheduler

from prodrec.config import LRConfig, OptimizerConfig
from prodrec.utils import ProdrecError

__all__ = ["build_optimizer", "build_scheduler", "scale_schedule", "ScheduleLength"]


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    """``Momentum``/``SGD`` (L2 regulariser = SGD weight decay, as Paddle's L2Decay) or ``AdamW``
    (the regulariser's coefficient becomes AdamW's decoupled weight decay)."""
    lr = config.lr.learning_rate
    decay = config.regularizer.coeff if config.regularizer is not None else 0.0
    if config.name in ("Momentum", "SGD"):
        momentum = config.momentum if config.name == "Momentum" else 0.0
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay)
    if len(config.betas) != 2:
        raise ProdrecError(f"Optimizer.betas must be two numbers, got {config.betas}")
    return torch.optim.AdamW(params, lr=lr, betas=tuple(config.betas), weight_decay=decay)


@dataclass(frozen=True)
class ScheduleLength:
    """Where an epoch-based schedule's events fall in a run, in (fractional) epochs of that run."""

    milestones: List[float]
    warmup_epochs: float
    note: Optional[str]  # what was scaled, for the run's log; None when the schedule runs as written


def scale_schedule(config: LRConfig, epochs: int) -> ScheduleLength:
    """``config``'s milestones and warm-up moved to a run of ``epochs`` epochs.

    A schedule written for ``config.schedule_epochs`` epochs keeps its shape on a shorter or longer run:
    each milestone and the warm-up's length are multiplied by ``epochs / schedule_epochs`` (the cosine
    decay always spans the run). At the schedule's own length, or with ``scale_schedule: false``,
    nothing changes.

    Example:
        >>> from prodrec.config import LRConfig
        >>> scale_schedule(LRConfig(schedule_epochs=120), 8).milestones
        [2.0, 4.0, 4.666666666666667, 5.333333333333333, 6.0, 6.666666666666667]
    """
    milestones = sorted(config.milestones) if config.name == "MultiStepDecay" else []
    written = config.schedule_epochs
    if written == "auto" or written == epochs or not config.scale_schedule or epochs == 0:
        return ScheduleLength([float(m) for m in milestones], float(config.warmup_epoch), None)
    ratio = epochs / written
    scaled = ScheduleLength([m * ratio for m in milestones], config.warmup_epoch * ratio, None)
    parts = []
    if milestones:
        parts.append(f"milestones {_epochs(milestones)} of {written} epochs scaled to {_epochs(scaled.milestones)} "
                     f"of {epochs}")
    if config.warmup_epoch:
        parts.append(f"warm-up of {_epochs([config.warmup_epoch])} of {written} epochs scaled to "
                     f"{_epochs([scaled.warmup_epochs])} of {epochs}")
    if not parts:
        return scaled
    note = "Optimizer.lr: " + "; ".join(parts) + " (Optimizer.lr.scale_schedule=false keeps them as written)"
    return ScheduleLength(scaled.milestones, scaled.warmup_epochs, note)


def _epochs(values: Sequence[float]) -> str:
    return ",".join(f"{value:.2f}".rstrip("0").rstrip(".") for value in values)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: LRConfig, *, epochs: int, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """A schedule stepped once per training step: optional linear warm-up (``warmup_epoch``, counted in
    steps, on every schedule), then ``Cosine`` (to ``eta_min`` at the last step), ``MultiStepDecay``
    (x ``gamma`` at each milestone) or ``Constant``. Milestones and warm-up are first scaled to the run's
    length (:func:`scale_schedule`)."""
    if steps_per_epoch < 1:
        raise ProdrecError("steps_per_epoch must be >= 1 (is the training set smaller than one batch?)")
    length = scale_schedule(config, epochs)
    warmup = round(length.warmup_epochs * steps_per_epoch)
    total = max(epochs * steps_per_epoch, 1)
    if warmup >= total and epochs > 0:
        raise ProdrecError(f"Optimizer.lr.warmup_epoch ({config.warmup_epoch}, {length.warmup_epochs:.3g} epochs of this "
                           f"run) must end before the run's {epochs} epochs")
    if config.name == "Cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=config.eta_min)
    elif config.name == "MultiStepDecay":
        steps = [round(m * steps_per_epoch) for m in length.milestones]
        main = lr_scheduler.MultiStepLR(optimizer, milestones=[s - warmup for s in steps if s > warmup],
                                        gamma=config.gamma)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    start = max(config.warmup_start_lr / config.learning_rate, 1e-8)
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
