"""Optimizer and per-step learning-rate schedule from the ``Optimizer`` config section."""
from __future__ import annotations

from typing import Iterable

import torch
from torch.optim import lr_scheduler

from prodrec.config import LRConfig, OptimizerConfig

__all__ = ["build_optimizer", "build_scheduler"]


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimizerConfig) -> torch.optim.Optimizer:
    """``Momentum``/``SGD`` (L2 regulariser = SGD weight decay, as Paddle's L2Decay) or ``AdamW``
    (the regulariser's coefficient becomes AdamW's decoupled weight decay)."""
    lr = config.lr.learning_rate
    decay = config.regularizer.coeff if config.regularizer is not None else 0.0
    if config.name in ("Momentum", "SGD"):
        momentum = config.momentum if config.name == "Momentum" else 0.0
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay)
    if len(config.betas) != 2:
        raise ValueError(f"Optimizer.betas must be two numbers, got {config.betas}")
    return torch.optim.AdamW(params, lr=lr, betas=tuple(config.betas), weight_decay=decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: LRConfig, *, epochs: int, steps_per_epoch: int
) -> lr_scheduler.LRScheduler:
    """A schedule stepped once per training step: optional linear warm-up, then
    ``Cosine`` (to ``eta_min`` at the last step), ``MultiStepDecay`` (x ``gamma`` at each
    milestone epoch) or ``Constant``."""
    if steps_per_epoch < 1:
        raise ValueError("steps_per_epoch must be >= 1 (is the training set smaller than one batch?)")
    warmup = config.warmup_epoch * steps_per_epoch
    total = max(epochs * steps_per_epoch, 1)
    if warmup >= total and epochs > 0:
        raise ValueError(f"Optimizer.lr.warmup_epoch ({config.warmup_epoch}) must be below Global.epochs ({epochs})")
    if config.name == "Cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=config.eta_min)
    elif config.name == "MultiStepDecay":
        milestones = [m * steps_per_epoch - warmup for m in sorted(config.milestones) if m * steps_per_epoch > warmup]
        main = lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=config.gamma)
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    start = max(config.warmup_start_lr / config.learning_rate, 1e-8)
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
