"""What a :class:`~prodrec.train.TrainingRun` trains: a task object holds the model, turns a batch into a loss,
makes the epoch's batches, evaluates and saves its own part of a checkpoint. The run around it (steps,
accumulation, AMP, DDP, the schedule, checkpoints, resume, stop signals) is the same for every task.

:class:`MetricTask` trains an embedder with its loss and head (``train_metric``); the detection room adds one
for product detectors. A new task implements :class:`TrainingTask`.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from prodrec.config import Config, model_spec
from prodrec.data import (EpochBatches, ImageDataset, RetrievalSplits, SeededSamples, apply_small_class_policy,
                          train_transform)
from prodrec.losses import build_loss
from prodrec.models import Embedder
from prodrec.train.ddp import evaluate_sharded, wrap_for_training
from prodrec.train.distributed import DistributedContext
from prodrec.train.state import data_order
from prodrec.utils import ProdrecError

__all__ = ["TrainingTask", "MetricTask", "build_model", "head_classes"]

Log = Callable[[Dict[str, Any]], None]


class TrainingTask(ABC):
    """The contract between a training run and what it trains.

    Attributes:
        model: The module that is saved and evaluated (an :class:`~prodrec.models.Embedder`, a detector).
        best_metric: The evaluation key whose highest value makes ``best.pt``.
    """

    model: nn.Module
    best_metric: str

    @abstractmethod
    def wrap(self, ctx: DistributedContext, amp_dtype: Optional[torch.dtype]) -> nn.Module:
        """The module a step calls (``total, terms = module(*batch)``), inside DDP when there are several processes."""

    @abstractmethod
    def train_loader(self, ctx: DistributedContext, workers: int, log: Log) -> Tuple[DataLoader, Any]:
        """The training loader and its batch sampler, which has ``set_epoch(epoch, start=batches_done)``."""

    @abstractmethod
    def to_device(self, batch: Any, device: torch.device, memory_format: torch.memory_format) -> Tuple[Sequence, int]:
        """A loader batch as the arguments of the wrapped module on ``device``, and its number of images."""

    @abstractmethod
    def data_order(self) -> Dict[str, Any]:
        """The settings and data that fix every epoch's batches (a resume with others is refused)."""

    @abstractmethod
    def evaluate(self, ctx: DistributedContext, workers: int, progress: bool) -> Dict[str, float]:
        """The task's metrics of the current model (every rank calls it)."""

    @abstractmethod
    def state(self) -> Dict[str, Any]:
        """The task's part of a checkpoint (model weights and anything trained beside them)."""

    @abstractmethod
    def restore(self, payload: Dict[str, Any]) -> None:
        """Load :meth:`state`'s part of ``payload``."""

    def summary(self) -> Dict[str, Any]:
        """Counts for ``summary.json`` (sizes of the data)."""
        return {}


def build_model(config: Config, num_classes: int) -> tuple:
    """The embedder and its weighted loss (which holds the head), checked against the data. Messages name
    the YAML keys; the code uses :func:`prodrec.config.model_spec`'s names."""
    spec = model_spec(config)
    model = Embedder(**spec.embedder_kwargs())
    if spec.backbone_width not in (None, model.num_features):
        raise ProdrecError(
            f"Arch.Neck.embedding_size is {spec.backbone_width} but backbone {model.backbone_name} outputs "
            f"{model.num_features} features; set it to {model.num_features} or auto"
        )
    if spec.head_input_width not in (None, model.embedding_size):
        raise ProdrecError(
            f"Arch.Head.embedding_size is {spec.head_input_width} but the neck outputs {model.embedding_size} "
            "(Arch.Neck.class_num); make them equal or set auto"
        )
    classes = head_classes(spec.head_classes, num_classes) if spec.head is not None else num_classes
    loss = build_loss(config.Loss.Train, head=config.Arch.Head, num_classes=classes,
                      embedding_size=model.embedding_size)
    return model, loss


def head_classes(configured: Optional[int], num_classes: int) -> int:
    """The head's output classes: ``configured`` (``Arch.Head.class_num``), or the data's ``num_classes``
    when it is None (auto).

    More outputs than the data has classes run as in PaddleClas (the extra logits are never a target),
    with a warning; fewer are refused, since labels would index past the head.
    """
    if configured is None or configured == num_classes:
        return num_classes
    if configured < num_classes:
        raise ProdrecError(
            f"Arch.Head.class_num is {configured} but the training data has {num_classes} classes (items), so "
            f"labels would fall outside the head; set Arch.Head.class_num to {num_classes} or auto"
        )
    warnings.warn(
        f"Arch.Head.class_num is {configured} but the training data has {num_classes} classes (items): the head "
        f"gets {configured} outputs and {configured - num_classes} of them are never a target (set "
        f"Arch.Head.class_num to auto for a head of {num_classes})", UserWarning, stacklevel=2)
    return configured


class MetricTask(TrainingTask):
    """An embedder with its loss and head on P x K batches, evaluated by Recall@K / mAP on query vs gallery."""

    best_metric = "recall@1"

    def __init__(self, config: Config, data: RetrievalSplits, *, skipped_images: int = 0) -> None:
        self.config, self.data, self.skipped_images = config, data, skipped_images
        self.model, self.loss = build_model(config, data.train.num_classes)

    def wrap(self, ctx: DistributedContext, amp_dtype: Optional[torch.dtype]) -> nn.Module:
        g = self.config.Global
        return wrap_for_training(self.model, self.loss, ctx, cross_rank=g.cross_rank_mining,
                                 sync_batchnorm=g.sync_batchnorm, amp_dtype=amp_dtype, compile=g.compile)

    def train_loader(self, ctx: DistributedContext, workers: int, log: Log) -> Tuple[DataLoader, Any]:
        cfg, labels = self.config.DataLoader, self.data.train.labels
        transform = train_transform(self.model.image_size, self.model.mean, self.model.std,
                                    horizontal_flip=cfg.horizontal_flip, random_erasing=cfg.random_erasing)
        dataset = ImageDataset(self.data.train, transform)
        if cfg.sampler == "pk":
            keep = apply_small_class_policy(labels, cfg.sample_per_id, cfg.small_items)
            if len(keep) < len(labels):
                dropped = len(labels) - len(keep)
                log({"event": "dropped_small_items", "images": dropped,
                     "items": int(len(np.unique(labels)) - len(np.unique(labels[keep])))})
                warnings.warn(f"DataLoader.small_items=drop: {dropped} training images of items with fewer than "
                              f"{cfg.sample_per_id} images are left out")
                dataset, labels = Subset(dataset, keep.tolist()), labels[keep]
        if len(dataset) < cfg.batch_size:
            raise ProdrecError(
                f"the training set has {len(dataset)} images, fewer than one batch (DataLoader.batch_size="
                f"{cfg.batch_size}); lower the batch size"
            )
        seed = self.config.Global.seed
        sampler = EpochBatches(labels, batch_size=cfg.batch_size, seed=seed,
                               instances=cfg.sample_per_id if cfg.sampler == "pk" else None,
                               rank=ctx.rank, world_size=ctx.world_size)
        # The loader draws its workers' base seed from its own generator, not torch's global one.
        loader = DataLoader(SeededSamples(dataset, transform), batch_sampler=sampler, num_workers=workers,
                            pin_memory=ctx.device.type == "cuda", persistent_workers=workers > 0,
                            generator=torch.Generator().manual_seed(seed))
        return loader, sampler

    def to_device(self, batch: Any, device: torch.device, memory_format: torch.memory_format) -> Tuple[Sequence, int]:
        images, labels = batch
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        return (images, labels.to(device, non_blocking=True)), len(images)

    def data_order(self) -> Dict[str, Any]:
        return data_order(self.config, self.data.train)

    def evaluate(self, ctx: DistributedContext, workers: int, progress: bool) -> Dict[str, float]:
        """Recall@K / mAP (and ``TopkAcc``'s ``top<k>``), the query and gallery embedded in shards by the ranks."""
        config = self.config
        return evaluate_sharded(self.model, self.data.query, self.data.gallery, ctx, ks=config.recall_ks() or [1],
                                compute_map=config.wants_map(), head=self.loss, topk=config.topk_accuracy_ks(),
                                batch_size=config.DataLoader.eval_batch_size, num_workers=workers, progress=progress)

    def state(self) -> Dict[str, Any]:
        return {"embedder": self.model.to_payload(), "loss": self.loss.state_dict()}

    def restore(self, payload: Dict[str, Any]) -> None:
        self.model.load_state_dict(payload["embedder"]["state_dict"])
        self.loss.load_state_dict(payload["loss"])

    def summary(self) -> Dict[str, Any]:
        return {"skipped_images": self.skipped_images,
                "num_train_images": len(self.data.train), "num_train_classes": self.data.train.num_classes,
                "num_query": len(self.data.query), "num_gallery": len(self.data.gallery)}
