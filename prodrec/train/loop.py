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

import torch
from tqdm.auto import tqdm

from prodrec.train.checkpoint import save_checkpoint
from prodrec.config import Config
from prodrec.train.ddp import unwrap
from prodrec.train.distributed import DistributedContext
from prodrec.train.optim import build_optimizer, build_scheduler
from prodrec.train.state import check_data_order, rng_state, seed_rank, set_rng_state
from prodrec.train.safety import NonFiniteError, StopSignals, all_finite
from prodrec.train.task import TrainingTask
from prodrec.utils import ProdrecError

__all__ = ["resolve_device", "loader_workers", "TrainingRun"]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU) or a torch device name, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProdrecError(f"Global.device is {name!r} but no CUDA GPU is available; use 'auto' or 'cpu'")
    return device


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
    """The state of one training run of a :class:`~prodrec.train.TrainingTask` (kept together so checkpoints
    can save and restore it). ``config`` needs the ``Global`` and ``Optimizer`` sections and
    ``DataLoader.num_workers``."""

    def __init__(self, config: Config, task: TrainingTask, output_dir: Path, progress: bool,
                 ctx: Optional[DistributedContext] = None) -> None:
        ctx = ctx or DistributedContext(device=resolve_device(config.Global.device))  # default: one process
        self.config, self.task, self.output_dir, self.ctx = config, task, output_dir, ctx
        self.progress = progress and ctx.is_main
        g, loader_cfg = config.Global, config.DataLoader
        self.device = ctx.device
        self.model = task.model
        self.memory_format = torch.channels_last if g.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.amp_dtype = _amp_dtype(g.amp, self.device)
        self.module = task.wrap(ctx, self.amp_dtype)
        self.workers = loader_workers(loader_cfg.num_workers, self.device)
        self.train_loader, self.batch_sampler = task.train_loader(ctx, self.workers, self.log)
        # One optimizer step: accumulate_steps batches on each of world_size ranks, all consecutive in the list.
        self.accumulate, self.step_batches = g.accumulate_steps, g.accumulate_steps * ctx.world_size
        self.steps_per_epoch = len(self.train_loader) // self.accumulate
        if self.steps_per_epoch < 1:
            raise ProdrecError(f"Global.accumulate_steps={self.accumulate} needs that many batches per process, but an "
                               f"epoch gives each of {ctx.world_size} processes {len(self.train_loader)}; lower "
                               "Global.accumulate_steps or DataLoader.batch_size")
        self.epoch_batches = self.steps_per_epoch * self.step_batches  # of the epoch's batch list
        self.data_order = task.data_order()
        self.parameters = list(unwrap(self.module).parameters())
        self.optimizer = build_optimizer(self.parameters, config.Optimizer)
        self.scheduler = self._scheduler()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step, self.batch = 0, 0, 0  # batch: batches of the epoch's list done, all ranks together
        self.epoch_sums: Dict[str, float] = {}
        self.best: Dict[str, Any] = {task.best_metric: -1.0, "epoch": None, "metrics": {}}
        self.history: List[Dict[str, Any]] = []
        self.initial_metrics: Optional[Dict[str, float]] = None
        self.train_seconds, self.images_seen, self.skipped_steps = 0.0, 0, 0
        self.last_saved = time.monotonic()
        self.stop = StopSignals()

    def _scheduler(self):
        return build_scheduler(self.optimizer, self.config.Optimizer.lr, epochs=self.config.Global.epochs,
                               steps_per_epoch=self.steps_per_epoch)

    def log(self, record: Dict[str, Any]) -> None:
        """Append ``record`` to ``log.jsonl`` (rank 0 only)."""
        if not self.ctx.is_main:
            return
        with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def evaluate(self) -> Dict[str, float]:
        """The task's metrics (every rank evaluates its share)."""
        return self.task.evaluate(self.ctx, self.workers, self.progress)

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

    def _train_step(self, micro_batches: List[Any]) -> Tuple[Dict[str, float], bool]:
        """One optimizer step over this rank's micro-batches (gradients summed, synchronised after the last);
        the loss terms averaged over them and over the ranks, and whether the step was taken."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: Dict[str, float] = {}
        for index, batch in enumerate(micro_batches):
            arguments, images = self.task.to_device(batch, self.device, self.memory_format)
            last = index == len(micro_batches) - 1
            with nullcontext() if last or self.ctx.world_size == 1 else self.module.no_sync():
                total, terms = self.module(*arguments)
                for name, value in (("loss", total), *terms.items()):
                    sums[name] = sums.get(name, 0.0) + value.item()
                self.scaler.scale(total / len(micro_batches) if len(micro_batches) > 1 else total).backward()
            self.images_seen += images * self.ctx.world_size
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
            **self.task.state(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            **{key: getattr(self, key) for key in self._COUNTERS},
            "data_order": self.data_order, "config": self.config.to_dict(), "rng": rng_state(),
            "step_batches": self.step_batches,
        }

    def restore(self, payload: Dict[str, Any], source: Path) -> None:
        """Continue from a :meth:`state` read from ``source`` (named in errors)."""
        check_data_order(payload.get("data_order"), self.data_order, source)
        self.task.restore(payload)
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

