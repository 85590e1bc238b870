"""``train_metric``: train an :class:`~prodrec.models.Embedder` from a :class:`~prodrec.config.Config`.

One run writes to ``Global.output_dir``: ``config.yaml`` (the resolved config), ``log.jsonl``
(one JSON line per logged step and per evaluation), ``checkpoints/last.pt`` and
``checkpoints/best.pt`` (best Recall@1), and ``summary.json`` (metrics of the final model).
"""
from __future__ import annotations

import json
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, RandomSampler, Subset
from tqdm.auto import tqdm

from prodrec.checkpoint import load_checkpoint, save_checkpoint
from prodrec.config import Config, load_config
from prodrec.data import ImageDataset, RetrievalSplits, read_splits
from prodrec.data.sampling import apply_small_class_policy, pk_sampler
from prodrec.data.transforms import train_transform
from prodrec.evaluation import evaluate
from prodrec.losses import build_loss
from prodrec.models import Embedder
from prodrec.optim import build_optimizer, build_scheduler
from prodrec.safety import NonFiniteError, RunLock, StopSignals, TrainingInterrupted, all_finite

__all__ = ["train_metric", "TrainResult", "resolve_device", "build_model"]


@dataclass
class TrainResult:
    """What a run produced. ``metrics`` are those of the final model (``last.pt``)."""

    model: Embedder
    metrics: Dict[str, float]
    best_metrics: Dict[str, float]
    initial_metrics: Optional[Dict[str, float]]
    history: List[Dict[str, Any]] = field(default_factory=list)
    output_dir: Optional[Path] = None
    summary: Dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Global.device is {name!r} but no CUDA GPU is available; use 'auto' or 'cpu'")
    return device


def build_model(config: Config, num_classes: int) -> tuple:
    """The embedder and its weighted loss (which holds the head), checked against the data."""
    arch = config.Arch
    model = Embedder(
        arch.Backbone.name,
        embedding_size=arch.Neck.class_num,
        pretrained=arch.Backbone.pretrained,
        image_size=config.Global.image_size,
    )
    if arch.Neck.embedding_size not in ("auto", model.num_features):
        raise ValueError(
            f"Arch.Neck.embedding_size is {arch.Neck.embedding_size} but backbone {model.backbone_name} outputs "
            f"{model.num_features} features; set it to {model.num_features} or auto"
        )
    head = arch.Head
    if head is not None:
        if head.embedding_size not in ("auto", model.embedding_size):
            raise ValueError(
                f"Arch.Head.embedding_size is {head.embedding_size} but the neck outputs {model.embedding_size} "
                "(Arch.Neck.class_num); make them equal or set auto"
            )
        if head.class_num not in ("auto", num_classes):
            raise ValueError(
                f"Arch.Head.class_num is {head.class_num} but the training data has {num_classes} classes (items); "
                f"set Arch.Head.class_num to {num_classes} or auto"
            )
    loss = build_loss(config.Loss.Train, head=head, num_classes=num_classes, embedding_size=model.embedding_size)
    return model, loss


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)  # PML's MPerClassSampler draws from numpy's global generator
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _num_workers(setting: Union[int, str], device: torch.device) -> int:
    if setting != "auto":
        return int(setting)
    cores = os.cpu_count() or 1
    # On a CPU run the loader's workers compete with the model for the same cores.
    return min(8, cores) if device.type == "cuda" else (0 if cores <= 4 else 2)


def _amp_dtype(setting: str, device: torch.device) -> Optional[torch.dtype]:
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp16": torch.float16, "bf16": torch.bfloat16}[setting]


class _Run:
    """The state of one training run (kept together so checkpoints can save and restore it)."""

    def __init__(self, config: Config, data: RetrievalSplits, output_dir: Path, progress: bool) -> None:
        self.config, self.data, self.output_dir, self.progress = config, data, output_dir, progress
        g, loader_cfg = config.Global, config.DataLoader
        self.device = resolve_device(g.device)
        self.model, self.loss = build_model(config, data.train.num_classes)
        self.memory_format = torch.channels_last if g.channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format)
        self.loss.to(self.device)
        self.workers = _num_workers(loader_cfg.num_workers, self.device)
        self.train_loader = self._train_loader()
        self.parameters = list(self.model.parameters()) + list(self.loss.parameters())
        self.optimizer = build_optimizer(self.parameters, config.Optimizer)
        self.scheduler = build_scheduler(
            self.optimizer, config.Optimizer.lr, epochs=g.epochs, steps_per_epoch=len(self.train_loader)
        )
        self.amp_dtype = _amp_dtype(g.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step = 0, 0
        self.best: Dict[str, Any] = {"recall@1": -1.0, "epoch": None, "metrics": {}}
        self.history: List[Dict[str, Any]] = []
        self.initial_metrics: Optional[Dict[str, float]] = None
        self.train_seconds, self.images_seen, self.skipped_steps = 0.0, 0, 0
        self.stop = StopSignals()

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
            sampler = pk_sampler(labels, batch_size=cfg.batch_size, instances=cfg.sample_per_id)
        else:
            sampler = RandomSampler(dataset)
        if len(dataset) < cfg.batch_size:
            raise ValueError(
                f"the training set has {len(dataset)} images, fewer than one batch (DataLoader.batch_size="
                f"{cfg.batch_size}); lower the batch size"
            )
        return DataLoader(
            dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True, num_workers=self.workers,
            pin_memory=self.device.type == "cuda", persistent_workers=self.workers > 0,
        )

    def log(self, record: Dict[str, Any]) -> None:
        with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def evaluate(self) -> Dict[str, float]:
        return evaluate(
            self.model, self.data.query, self.data.gallery, ks=self.config.recall_ks() or [1],
            compute_map=self.config.wants_map(), batch_size=self.config.DataLoader.eval_batch_size,
            num_workers=self.workers, device=self.device, progress=self.progress,
        )

    def train_epoch(self) -> Dict[str, float]:
        self.model.train()
        self.loss.train()
        sums: Dict[str, float] = {}
        batches = 0
        started = time.perf_counter()
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.config.Global.epochs}",
                   unit="batch", disable=not self.progress, leave=False)
        for images, labels in bar:
            images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            labels = labels.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                embeddings = self.model(images)
            total, terms = self.loss(embeddings, labels)
            values = {"loss": total.item(), **{name: value.item() for name, value in terms.items()}}
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            # With fp16 the scaler itself skips steps whose gradients overflow; only the loss is checked then.
            checked = None if self.scaler.is_enabled() else self.parameters
            if all_finite(values, checked):
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self._non_finite(values)
            self.scheduler.step()
            self.step += 1
            batches += 1
            self.images_seen += len(images)
            if self.stop.received:
                break
            if not all_finite(values):
                continue
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + value
            bar.set_postfix(loss=f"{values['loss']:.4f}")
            if self.step % self.config.Global.print_batch_step == 0:
                self.log({"event": "step", "epoch": self.epoch + 1, "step": self.step,
                          "lr": self.optimizer.param_groups[0]["lr"], **values})
        self.train_seconds += time.perf_counter() - started
        return {name: value / max(batches, 1) for name, value in sums.items()}

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

    def state(self) -> Dict[str, Any]:
        return {
            "embedder": self.model.to_payload(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step": self.step, "best": self.best, "history": self.history,
            "initial_metrics": self.initial_metrics, "train_seconds": self.train_seconds,
            "images_seen": self.images_seen, "skipped_steps": self.skipped_steps, "config": self.config.to_dict(),
            "rng": {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state()},
        }

    def restore(self, payload: Dict[str, Any]) -> None:
        self.model.load_state_dict(payload["embedder"]["state_dict"])
        self.loss.load_state_dict(payload["loss"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        for key in ("epoch", "step", "best", "history", "initial_metrics", "train_seconds", "images_seen",
                    "skipped_steps"):
            setattr(self, key, payload[key])
        random.setstate(_tuples(payload["rng"]["python"]))
        kind, keys, pos, has_gauss, cached = payload["rng"]["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(payload["rng"]["torch"])

    def save(self, name: str) -> None:
        save_checkpoint(self.output_dir / "checkpoints" / name, self.state())


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def train_metric(
    config: Union[Config, str, os.PathLike, Dict[str, Any], None] = None,
    *,
    data: Optional[RetrievalSplits] = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train and evaluate an embedder as ``config`` says.

    Args:
        config: a :class:`Config`, a YAML path, a built-in config name or a dict (see
            :func:`prodrec.config.load_config`).
        data: the train/query/gallery listings; read from ``DataLoader.dataset`` /
            ``DataLoader.root`` when not given.
        resume: continue from ``output_dir/checkpoints/last.pt`` when it exists.
        progress: show progress bars.

    Example:
        >>> from prodrec import load_config, make_synthetic_inshop, train_metric  # doctest: +SKIP
        >>> make_synthetic_inshop("synthetic", items=40, views=4)  # doctest: +SKIP
        >>> cfg = load_config("inshop_ce_triplet", overrides=["DataLoader.root=synthetic",
        ...     "Global.epochs=2", "Global.image_size=64", "Global.output_dir=runs/demo"])  # doctest: +SKIP
        >>> train_metric(cfg).metrics["recall@1"]  # doctest: +SKIP
    """
    config = config if isinstance(config, Config) else load_config(config)
    g = config.Global
    if data is None:
        lists, image_roots = config.DataLoader.split_files()
        if config.DataLoader.root is None and not lists:
            raise ValueError("no data: set DataLoader.root (CLI: --data-root) or pass data= to train_metric")
        data = read_splits(config.DataLoader.dataset, config.DataLoader.root, lists=lists, image_roots=image_roots)
    _seed_everything(g.seed, g.deterministic)
    output_dir = Path(g.output_dir)
    with RunLock(output_dir):
        return _train(config, data, output_dir, resume, progress)


def _train(config: Config, data: RetrievalSplits, output_dir: Path, resume: bool, progress: bool) -> TrainResult:
    g = config.Global
    last = output_dir / "checkpoints" / "last.pt"
    if not resume:
        (output_dir / "log.jsonl").unlink(missing_ok=True)
    run = _Run(config, data, output_dir, progress)
    if resume and last.is_file():
        run.restore(load_checkpoint(last, map_location=run.device))
    (output_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

    if run.epoch == 0 and (g.epochs == 0 or g.eval_before_train) and run.initial_metrics is None:
        run.initial_metrics = metrics = run.evaluate()
        run.log({"event": "eval", "epoch": 0, **metrics})
        run.best = {"recall@1": metrics.get("recall@1", 0.0), "epoch": 0, "metrics": metrics}
        run.save("best.pt")
    with run.stop:
        while run.epoch < g.epochs:
            losses = run.train_epoch()
            if run.stop.received:
                run.save("last.pt")
                raise TrainingInterrupted(
                    f"{run.stop.received} at step {run.step} (epoch {run.epoch + 1}); saved {last}; continue with "
                    "--resume (the interrupted epoch restarts from its beginning with the saved weights)"
                )
            run.epoch += 1
            _finish_epoch(run, losses, progress)
    if g.epochs == 0 or not last.is_file():
        run.save("last.pt")
    return _summarise(run, data, output_dir)


def _finish_epoch(run: _Run, losses: Dict[str, float], progress: bool) -> None:
    g = run.config.Global
    record: Dict[str, Any] = {"epoch": run.epoch, "loss": losses, "lr": run.optimizer.param_groups[0]["lr"]}
    if run.epoch % g.eval_interval == 0 or run.epoch == g.epochs:
        metrics = run.evaluate()
        record["metrics"] = metrics
        run.log({"event": "eval", "epoch": run.epoch, **metrics})
        if progress:
            tqdm.write(f"epoch {run.epoch}: loss {losses.get('loss', float('nan')):.4f} " + _format(metrics))
    run.history.append(record)
    if "metrics" in record and record["metrics"].get("recall@1", 0.0) > run.best["recall@1"]:
        run.best = {"recall@1": record["metrics"].get("recall@1", 0.0), "epoch": run.epoch, "metrics": record["metrics"]}
        run.save("best.pt")
    if run.epoch % g.save_interval == 0 or run.epoch == g.epochs:
        run.save("last.pt")


def _summarise(run: _Run, data: RetrievalSplits, output_dir: Path) -> TrainResult:
    evaluated = [h["metrics"] for h in run.history if "metrics" in h]
    metrics = dict(evaluated[-1]) if evaluated else dict(run.initial_metrics or {})
    summary = {
        **metrics,
        "epochs": run.epoch,
        "train_seconds": round(run.train_seconds, 3),
        "train_images_per_second": round(run.images_seen / run.train_seconds, 3) if run.train_seconds else 0.0,
        "skipped_steps": run.skipped_steps,
        "best_epoch": run.best["epoch"],
        "best": run.best["metrics"],
        "initial": run.initial_metrics,
        "device": str(run.device),
        "num_train_images": len(data.train),
        "num_train_classes": data.train.num_classes,
        "num_query": len(data.query),
        "num_gallery": len(data.gallery),
    }
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return TrainResult(run.model, metrics, run.best["metrics"], run.initial_metrics, run.history, output_dir, summary)


def _format(metrics: Dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("recall@", "mAP")))
