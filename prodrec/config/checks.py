"""Checks of a whole :class:`~prodrec.config.Config` beyond types: values in range, known metrics, and
settings that must go together (a head for TopkAcc, list files only for the list layout)."""
from __future__ import annotations

from typing import Any, Dict, List

from prodrec.config.schema import ConfigError
from prodrec.utils import brief

__all__ = ["check_config"]


def _check_entries(entries: List[Dict[str, Any]], section: str) -> None:
    for index, entry in enumerate(entries):
        if len(entry) != 1:
            raise ConfigError(
                f"{section}[{index}]: each entry is one name with its parameters, e.g. "
                f"'- CELoss: {{weight: 1.0}}'; got keys {list(entry)}"
            )


def check_config(config: Any) -> None:
    """Raise :class:`ConfigError` naming the first value of a :class:`~prodrec.config.Config` out of range, or a
    setting that does not fit the others."""
    _check_entries(config.Loss.Train, "Loss.Train")
    _check_entries(config.Loss.Eval, "Loss.Eval")
    _check_entries(config.Metric.Eval, "Metric.Eval")
    if not config.Loss.Train:
        raise ConfigError("Loss.Train is empty; add at least one loss, e.g. '- CELoss: {weight: 1.0}'")
    for entry in config.Metric.Eval:
        (name,) = entry
        if name not in ("Recallk", "mAP", "TopkAcc"):
            raise ConfigError(f"Metric.Eval: unknown metric {brief(name)}; use Recallk (with topk), mAP or TopkAcc "
                              "(with topk)")
    for metric, ks in (("Recallk", config.recall_ks()), ("TopkAcc", config.topk_accuracy_ks())):
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ConfigError(f"Metric.Eval.{metric}.topk: {brief(k)} is not a positive integer")
    if config.topk_accuracy_ks() and config.Arch.Head is None:
        raise ConfigError("Metric.Eval.TopkAcc scores the classifier head, but Arch.Head is null; add a head "
                          "(FC or ArcMargin) or remove TopkAcc")
    positive = {
        "Global.epochs": (config.Global.epochs, 0),
        "Global.eval_interval": (config.Global.eval_interval, 1),
        "Global.save_interval": (config.Global.save_interval, 1),
        "Global.checkpoint_steps": (config.Global.checkpoint_steps, 0),
        "Global.checkpoint_minutes": (config.Global.checkpoint_minutes, 0),
        "Global.seed": (config.Global.seed, 0),
        "Global.print_batch_step": (config.Global.print_batch_step, 1),
        "Global.accumulate_steps": (config.Global.accumulate_steps, 1),
        "Global.image_size": (config.Global.image_size, 16),
        "DataLoader.batch_size": (config.DataLoader.batch_size, 2),
        "DataLoader.sample_per_id": (config.DataLoader.sample_per_id, 1),
        "DataLoader.eval_batch_size": (config.DataLoader.eval_batch_size, 1),
        "Arch.Neck.class_num": (config.Arch.Neck.class_num, 1),
    }
    for key, (value, minimum) in positive.items():
        if value < minimum:
            raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    lists, image_roots = config.DataLoader.split_files()
    if (lists or image_roots) and config.DataLoader.dataset != "list":
        keys = [f"DataLoader.{split}_list" for split in lists]
        keys += [f"DataLoader.{split}_image_root" for split in image_roots]
        raise ConfigError(f"{', '.join(keys)} apply to DataLoader.dataset: list only (it is "
                          f"{brief(config.DataLoader.dataset)}); set DataLoader.dataset=list or remove them")
    lr = config.Optimizer.lr
    if lr.warmup_epoch < 0 or (lr.schedule_epochs != "auto" and lr.schedule_epochs < 1):
        raise ConfigError(f"Optimizer.lr.warmup_epoch must be >= 0 and Optimizer.lr.schedule_epochs >= 1 (or auto), "
                          f"got {lr.warmup_epoch} and {lr.schedule_epochs}")
    for key in ("horizontal_flip", "random_erasing"):
        value = getattr(config.DataLoader, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"DataLoader.{key} is a probability in [0, 1], got {value}")
    head = config.Arch.Head
    if head is not None and head.name == "FC" and (head.margin is not None or head.scale is not None):
        raise ConfigError("Arch.Head: margin and scale belong to the ArcMargin head; remove them for the FC head")
