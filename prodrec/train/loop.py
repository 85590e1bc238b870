"""One training run's parts and its step loop: model, loss, optimizer, schedule, the data order, the
position in the epoch, and the checkpoints that capture all of it (see ``docs/reliability.md``).

Under torchrun each process holds a ``TrainingRun``: DDP keeps the copies identical, rank ``r`` of ``N`` trains
batches ``r, r + N, ...`` of the epoch's batch list, and only rank 0 writes (see ``docs/distributed.md``)."""
from __future__ import annotations

import json
import os
import time
import warnings
from contextlib import nullcontext
from itertools import islice
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from prodrec.train.checkpoint import save_checkpoint
from prodrec.config import Config, model_spec
from prodrec.data import ImageDataset, RetrievalSplits
from prodrec.data import EpochBatches, SeededSamples, apply_small_class_policy
from prodrec.data import train_transform
from prodrec.train.ddp import evaluate_sharded, unwrap, wrap_for_training
from prodrec.train.distributed import DistributedContext
from prodrec.losses import build_loss
from prodrec.models import Embedder
from prodrec.train.optim import build_optimizer, build_scheduler
from prodrec.train.state import check_data_order, data_order, rng_state, seed_rank, set_rng_state
from prodrec.train.safety import NonFiniteError, StopSignals, all_finite
from prodrec.utils import ProdrecError

__all__ = ["resolve_device", "build_model", "loader_workers", "TrainingRun"]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU) or a torch device name, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProdrecError(f"Global.device is {name!r} but no CUDA GPU is available; use 'auto' or 'cpu'")
    return device


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


def loader_workers(setting: Union[int, str], device: torch.device) -> int:
    """``DataLoader.num_workers``: a number, or ``auto`` (see ``docs/config.md``)."""
    if setting != "auto":
        return int(setting)
    cores = os.cpu_count() or 1
    # On a CPU run the loader's workers compete with the model for the same cores.
    return min(8, cores) if device.type == "cuda" else (0 if cores <= 4 else 2)


def _schedule_settings(config: Dict[str, Any]) -> tuple:
    """What decides the LR schedule in a config dict: the run length and the ``Optimizer.lr`` section."""
    return config.get("Global", {}).get("epochs"), config.get("Optimizer", {}).get("lr")


def _amp_dtype(setting: str, device: torch.device) -> Optional[torch.dtype]:
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[setting]


class TrainingRun:
    """The state of one training run (kept together so checkpoints can save and restore it)."""

    def __init__(self, config: Config, data: RetrievalSplits, output_dir: Path, progress: bool,
                 ctx: Optional[DistributedContext] = None) -> None:
        ctx = ctx or DistributedContext(device=resolve_device(config.Global.device))  # default: one process
        self.config, self.data, self.output_dir, self.ctx = config, data, output_dir, ctx
        self.progress = progress and ctx.is_main
        g, loader_cfg = config.Global, config.DataLoader
        self.device = ctx.device
        self.model, self.loss = build_model(config, data.train.num_classes)
        self.memory_format = torch.channels_last if g.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.amp_dtype = _amp_dtype(g.amp, self.device)
        self.module = wrap_for_training(self.model, self.loss, ctx, cross_rank=g.cross_rank_mining,
                                        sync_batchnorm=g.sync_batchnorm, amp_dtype=self.amp_dtype, compile=g.compile)
        self.workers = loader_workers(loader_cfg.num_workers, self.device)
        self.train_loader = self._train_loader()
        # One optimizer step: accumulate_steps batches on each of world_size ranks, all consecutive in the list.
        self.accumulate, self.step_batches = g.accumulate_steps, g.accumulate_steps * ctx.world_size
        self.steps_per_epoch = len(self.train_loader) // self.accumulate
        if self.steps_per_epoch < 1:
            raise ProdrecError(f"Global.accumulate_steps={self.accumulate} needs that many batches per process, but an "
                               f"epoch gives each of {ctx.world_size} processes {len(self.train_loader)}; lower "
                               "Global.accumulate_steps or DataLoader.batch_size")
        self.epoch_batches = self.steps_per_epoch * self.step_batches  # of the epoch's batch list
        self.data_order = data_order(config, data.train)
        self.parameters = list(unwrap(self.module).parameters())
        self.optimizer = build_optimizer(self.parameters, config.Optimizer)
        self.scheduler = self._scheduler()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step, self.batch = 0, 0, 0  # batch: batches of the epoch's list done, all ranks together
        self.epoch_sums: Dict[str, float] = {}
        self.best: Dict[str, Any] = {"recall@1": -1.0, "epoch": None, "metrics": {}}
        self.history: List[Dict[str, Any]] = []
        self.initial_metrics: Optional[Dict[str, float]] = None
        self.train_seconds, self.images_seen, self.skipped_steps = 0.0, 0, 0
        self.last_saved = time.monotonic()
        self.stop = StopSignals()

    def _scheduler(self):
        return build_scheduler(self.optimizer, self.config.Optimizer.lr, epochs=self.config.Global.epochs,
                               steps_per_epoch=self.steps_per_epoch)

    def _train_loader(self) -> DataLoader:
        cfg, labels = self.config.DataLoader, self.data.train.labels
        transform = train_transform(
            self.model.image_size, self.model.mean, self.model.std,
            horizontal_flip=cfg.horizontal_flip, random_erasing=cfg.random_erasing,
        )
        dataset = ImageDataset(self.data.train, transform)
        if cfg.sampler == "pk":
            keep = apply_small_class_policy(labels, cfg.sample_per_id, cfg.small_items)
            if len(keep) < len(labels):
                dropped = len(labels) - len(keep)
                self.log({"event": "dropped_small_items", "images": dropped,
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
        self.batch_sampler = EpochBatches(labels, batch_size=cfg.batch_size, seed=seed,
                                          instances=cfg.sample_per_id if cfg.sampler == "pk" else None,
                                          rank=self.ctx.rank, world_size=self.ctx.world_size)
        # The loader draws its workers' base seed from its own generator, not torch's global one.
        return DataLoader(
            SeededSamples(dataset, transform), batch_sampler=self.batch_sampler, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def log(self, record: Dict[str, Any]) -> None:
        """Append ``record`` to ``log.jsonl`` (rank 0 only)."""
        if not self.ctx.is_main:
            return
        with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def evaluate(self) -> Dict[str, float]:
        """Recall@K / mAP (and ``TopkAcc``'s ``top<k>``), the query and gallery embedded in shards by the ranks."""
        config = self.config
        return evaluate_sharded(self.model, self.data.query, self.data.gallery, self.ctx, ks=config.recall_ks() or [1],
                                compute_map=config.wants_map(), head=self.loss, topk=config.topk_accuracy_ks(),
                                batch_size=config.DataLoader.eval_batch_size, num_workers=self.workers,
                                progress=self.progress)

    def train_epoch(self) -> Dict[str, float]:
        """Train the rest of the current epoch (from batch ``self.batch``); the mean loss terms of the epoch.

        Stops after the step in which SIGINT/SIGTERM arrived; writes ``last.pt`` when a step or time
        checkpoint is due.
        """
        self.module.train()
        if self.ctx.world_size > 1:
            seed_rank(self.config.Global.seed, self.epoch, self.ctx.rank)
        self.batch -= self.batch % self.step_batches  # a checkpoint of another world size: redo a partial step
        done = self.batch // self.step_batches
        self.batch_sampler.set_epoch(self.epoch, start=done * self.accumulate)
        started = time.perf_counter()
        batches = iter(self.train_loader)
        bar = tqdm(desc=f"epoch {self.epoch + 1}/{self.config.Global.epochs}", unit="step", initial=done,
                   total=self.steps_per_epoch, disable=not self.progress, leave=False)
        while len(micro_batches := list(islice(batches, self.accumulate))) == self.accumulate:
            values, finite = self._train_step(micro_batches)
            bar.update()
            self.step += 1
            self.batch += self.step_batches
            if finite:
                for name, value in values.items():
                    self.epoch_sums[name] = self.epoch_sums.get(name, 0.0) + value * self.step_batches
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                if self.step % self.config.Global.print_batch_step == 0:
                    self.log({"event": "step", "epoch": self.epoch + 1, "step": self.step,
                              "lr": self.optimizer.param_groups[0]["lr"], **values})
            if self.ctx.any_rank(self.stop.received is not None):
                self.stop.received = self.stop.received or "a stop signal to another process"
                break
            epoch_end_saves = self.batch == self.epoch_batches and self.saves_after(self.epoch + 1)
            if self._checkpoint_due() and not epoch_end_saves:
                self.save("last.pt")
        bar.close()
        self.train_seconds += time.perf_counter() - started
        return {name: value / max(self.batch, 1) for name, value in self.epoch_sums.items()}

    def _train_step(self, micro_batches: List[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[Dict[str, float], bool]:
        """One optimizer step over this rank's micro-batches (gradients summed, synchronised after the last);
        the loss terms averaged over them and over the ranks, and whether the step was taken."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: Dict[str, float] = {}
        for index, (images, labels) in enumerate(micro_batches):
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            labels = labels.to(self.device, non_blocking=True)
            last = index == len(micro_batches) - 1
            with nullcontext() if last or self.ctx.world_size == 1 else self.module.no_sync():
                total, terms = self.module(images, labels)
                for name, value in (("loss", total), *terms.items()):
                    sums[name] = sums.get(name, 0.0) + value.item()
                self.scaler.scale(total / len(micro_batches) if len(micro_batches) > 1 else total).backward()
            self.images_seen += len(images) * self.ctx.world_size
        local = {name: value / len(micro_batches) for name, value in sums.items()}
        values = self.ctx.mean(local) if self.ctx.world_size > 1 else local
        values = {name: values[name] for name in local}
        # With fp16 the scaler itself skips steps whose gradients overflow; only the loss is checked then.
        finite = not self.ctx.any_rank(not all_finite(local, None if self.scaler.is_enabled() else self.parameters))
        if finite:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self._non_finite(values)
        self.scheduler.step()
        return values, finite

    def _checkpoint_due(self) -> bool:
        g = self.config.Global
        return bool(g.checkpoint_steps and self.step % g.checkpoint_steps == 0) or bool(
            g.checkpoint_minutes and time.monotonic() - self.last_saved >= 60 * g.checkpoint_minutes)

    def saves_after(self, epoch: int) -> bool:
        """Whether ``last.pt`` is written when ``epoch`` (1-based) ends (``Global.save_interval``, and the last)."""
        return epoch % self.config.Global.save_interval == 0 or epoch == self.config.Global.epochs

    def next_epoch(self) -> None:
        """Mark the current epoch finished."""
        self.epoch, self.batch, self.epoch_sums = self.epoch + 1, 0, {}

    def _non_finite(self, values: Dict[str, float]) -> None:
        terms = ", ".join(f"{name} {value:.4g}" for name, value in values.items())
        last = self.output_dir / "checkpoints" / "last.pt"
        if self.config.Global.on_nonfinite == "error":
            raise NonFiniteError(
                f"non-finite loss or gradient at step {self.step + 1} (epoch {self.epoch + 1}): {terms}. "
                f"Last good checkpoint: {last if last.is_file() else 'none yet'}. Lower the learning rate, check the "
                "data, or set Global.on_nonfinite=skip to skip such steps"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.log({"event": "skipped_step", "epoch": self.epoch + 1, "step": self.step + 1, **values})

    _COUNTERS = ("epoch", "step", "batch", "epoch_sums", "best", "history", "initial_metrics", "train_seconds",
                 "images_seen", "skipped_steps")

    def state(self) -> Dict[str, Any]:
        """Everything :meth:`restore` needs to continue exactly where this run is."""
        return {
            "embedder": self.model.to_payload(), "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            **{key: getattr(self, key) for key in self._COUNTERS},
            "data_order": self.data_order, "config": self.config.to_dict(), "rng": rng_state(),
            "step_batches": self.step_batches,
        }

    def restore(self, payload: Dict[str, Any], source: Path) -> None:
        """Continue from a :meth:`state` read from ``source`` (named in errors)."""
        check_data_order(payload.get("data_order"), self.data_order, source)
        self.model.load_state_dict(payload["embedder"]["state_dict"])
        self.loss.load_state_dict(payload["loss"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        for key in self._COUNTERS:
            setattr(self, key, payload[key])
        set_rng_state(payload["rng"])
        if payload.get("step_batches", 1) == self.step_batches and \
                _schedule_settings(payload.get("config") or {}) == _schedule_settings(self.config.to_dict()):
            self.scheduler.load_state_dict(payload["scheduler"])
            return
        # Another global batch (world size x accumulate_steps) or another schedule (a run extended with --epochs
        # scales it anew): start the new schedule from the base LR and place it by the training done.
        for group in self.optimizer.param_groups:
            group["lr"] = group.pop("initial_lr", group["lr"])
        self.scheduler = self._scheduler()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()"
            for _ in range(self.epoch * self.steps_per_epoch + self.batch // self.step_batches):
                self.scheduler.step()

    def save(self, name: str) -> None:
        """Write ``checkpoints/<name>`` (``last.pt`` keeps the file it replaces as ``last.prev.pt``); rank 0 only."""
        if not self.ctx.is_main:
            return
        save_checkpoint(self.output_dir / "checkpoints" / name, self.state(), keep_previous=name == "last.pt")
        if name == "last.pt":
            self.last_saved = time.monotonic()
            self.log({"event": "checkpoint", "epoch": self.epoch + 1, "batch": self.batch, "step": self.step})

