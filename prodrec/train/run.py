"""``train_metric``: train an :class:`~prodrec.models.Embedder` from a :class:`~prodrec.config.Config`.

One run writes to ``Global.output_dir``: ``config.yaml`` (the resolved config), ``log.jsonl``
(one JSON line per logged step, checkpoint and evaluation), ``checkpoints/last.pt`` (with the one it
replaced kept as ``last.prev.pt``) and ``checkpoints/best.pt`` (best Recall@1), and ``summary.json``
(metrics of the final model). A run killed at any point continues with ``resume=True``; see
``docs/reliability.md``. Under ``torchrun`` every process runs ``train_metric`` and rank 0 alone writes the
run folder; see ``docs/distributed.md``.
"""
from __future__ import annotations

import json
import os
import shutil
import random
import sys
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from prodrec.train.checkpoint import load_checkpoint, load_latest_checkpoint, remove_checkpoint_temporaries
from prodrec.config import Config, load_config
from prodrec.data import RetrievalSplits, read_splits
from prodrec.train.distributed import DistributedContext, init_distributed
from prodrec.models import Embedder
from prodrec.train.optim import scale_schedule
from prodrec.train.safety import RunLock, TrainingInterrupted
from prodrec.train.loop import TrainingRun, loader_workers, resolve_device
from prodrec.train.task import MetricTask, TrainingTask, build_model
from prodrec.utils import ProdrecError

__all__ = ["train_metric", "run_task", "TrainResult", "resolve_device", "build_model"]

Resume = Union[bool, str, os.PathLike, None]


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


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def train_metric(
    config: Union[Config, str, os.PathLike, Dict[str, Any], None] = None,
    *,
    data: Optional[RetrievalSplits] = None,
    resume: Resume = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train and evaluate an embedder as ``config`` says.

    Args:
        config: a :class:`Config`, a YAML path, a built-in config name or a dict (see
            :func:`prodrec.config.load_config`).
        data: the train/query/gallery listings; read from ``DataLoader.dataset`` /
            ``DataLoader.root`` when not given.
        resume: ``False``: a new run. ``True`` or ``"auto"``: continue from
            ``output_dir/checkpoints/last.pt`` (an unreadable one is refused with a warning and
            ``last.prev.pt`` used; a new run when there is none). A path: continue from that checkpoint.
        overwrite: a new run in an output folder that holds another run replaces it (its checkpoints and
            log are deleted first); without it, that is refused (CLI ``--force``).
        progress: show progress bars.

    Example:
        >>> from prodrec import load_config, make_synthetic_inshop, train_metric  # doctest: +SKIP
        >>> make_synthetic_inshop("synthetic", items=40, views=4)  # doctest: +SKIP
        >>> cfg = load_config("inshop_ce_triplet", overrides=["DataLoader.root=synthetic",
        ...     "Global.epochs=2", "Global.image_size=64", "Global.output_dir=runs/demo"])  # doctest: +SKIP
        >>> train_metric(cfg).metrics["recall@1"]  # doctest: +SKIP
    """
    config = config if isinstance(config, Config) else load_config(config)
    loader = config.DataLoader
    if data is None:
        lists, image_roots = loader.split_files()
        if loader.root is None and not lists:
            raise ProdrecError("no data: set DataLoader.root (CLI: --data-root) or pass data= to train_metric")
        data = read_splits(loader.dataset, loader.root, lists=lists, image_roots=image_roots,
                           confine_to_root=loader.confine_to_root)

    def metric_task(ctx: DistributedContext, output_dir: Path) -> MetricTask:
        checked, skipped = _drop_bad_images(config, data, output_dir, progress, ctx)
        return MetricTask(config, checked, skipped_images=skipped)

    return run_task(config, metric_task, resume=resume, overwrite=overwrite, progress=progress)


def run_task(config: Any, build_task: Callable[[DistributedContext, Path], TrainingTask], *, resume: Resume = False,
             overwrite: bool = False, progress: bool = True) -> TrainResult:
    """Train what ``build_task(ctx, output_dir)`` returns, as ``config``'s ``Global`` and ``Optimizer`` say, with
    everything a run has (run lock, checkpoints, resume, stop signals, DDP, ``summary.json``): the one loop
    behind :func:`train_metric` and the detector's trainer."""
    g = config.Global
    _seed_everything(g.seed, g.deterministic)
    output_dir = Path(g.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ProdrecError(f"Global.output_dir {output_dir} is a file; give a folder for the run (CLI --output)")
    replace = (resume is False or resume is None) and _holds_a_run(output_dir, overwrite)
    with init_distributed(g.device) as ctx, RunLock(output_dir) if ctx.is_main else nullcontext():
        if replace and ctx.is_main:  # under the run lock: never another live run's files
            shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
        return _train(config, build_task(ctx, output_dir), output_dir, resume, progress, ctx)


def _holds_a_run(output_dir: Path, overwrite: bool) -> bool:
    """Whether a new run would replace another run's files (refused without ``overwrite``)."""
    found = [path for path in (output_dir / "checkpoints" / "last.pt", output_dir / "checkpoints" / "last.prev.pt",
                               output_dir / "log.jsonl") if path.is_file()]
    if found and not overwrite:
        raise ProdrecError(f"{output_dir} holds another training run ({found[0].relative_to(output_dir)}); continue it "
                           "with --resume (resume=True), replace it with --force (overwrite=True), or choose another "
                           "--output folder")
    return bool(found)


def _drop_bad_images(config: Config, data: RetrievalSplits, output_dir: Path, progress: bool,
                     ctx: DistributedContext) -> Tuple[RetrievalSplits, int]:
    """With ``DataLoader.on_bad_image: skip``, the listings without unreadable images (listed in
    ``skipped_images.txt`` by rank 0; every rank checks) and how many were dropped."""
    if config.DataLoader.on_bad_image != "skip":
        return data, 0
    from prodrec.data import check_splits

    workers = loader_workers(config.DataLoader.num_workers, ctx.device)
    data, skipped = check_splits(data, policy="skip", workers=workers, progress=progress and ctx.is_main)
    if not ctx.is_main:
        return data, len(skipped)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "skipped_images.txt").write_text("".join(f"{path}\t{reason}\n" for path, reason in skipped),
                                                   encoding="utf-8")
    return data, len(skipped)


def _checkpoint_to_resume(resume: Resume, output_dir: Path) -> Optional[Tuple[Path, Dict[str, Any], Optional[str]]]:
    """``(file, payload, why not last.pt)`` to continue from, or None for a new run."""
    if resume is False or resume is None:
        return None
    if resume is not True and resume != "auto":
        return Path(resume), load_checkpoint(resume), None
    last = output_dir / "checkpoints" / "last.pt"
    used, payload, refused = load_latest_checkpoint(last)
    if used is None and refused:
        raise ProdrecError(f"cannot resume: no readable checkpoint in {last.parent}: {'; '.join(refused)}. Resume from "
                           "another checkpoint with --resume PATH, or move these away to start a new run")
    if used is None:
        warnings.warn(f"resume: no checkpoint in {last.parent}; starting a new run")
        return None
    if refused:  # keep the refused file for inspection, and out of the way of the next rotation
        os.replace(last, last.with_name("last.refused.pt"))
        return used, payload, f"{'; '.join(refused)} (moved to last.refused.pt)"
    return used, payload, None if used == last else f"{last} is missing"


def _last_logged_step(log: Path) -> int:
    """The step of the last ``log.jsonl`` record that has one (0 if none; its last MiB is read); completes
    a line cut off by a kill."""
    if not log.is_file():
        return 0
    with open(log, "rb") as handle:
        handle.seek(max(log.stat().st_size - 2**20, 0))
        text, step = handle.read().decode("utf-8", errors="replace"), 0
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            step = record["step"]
    if text and not text.endswith("\n"):
        with open(log, "a", encoding="utf-8") as handle:
            handle.write("\n")
    return step


def _resume_point(resume: Resume, output_dir: Path,
                  ctx: DistributedContext) -> Optional[Tuple[Path, Dict[str, Any], Optional[str]]]:
    """:func:`_checkpoint_to_resume` as rank 0 decides it (it may move a refused ``last.pt`` away), on every rank."""
    chosen = _checkpoint_to_resume(resume, output_dir) if ctx.is_main else None
    if ctx.world_size == 1:
        return chosen
    where = ctx.broadcast(None if chosen is None else (str(chosen[0]), chosen[2]))
    if ctx.is_main or where is None:
        return chosen
    return Path(where[0]), load_checkpoint(where[0]), where[1]


def _train(config: Any, task: TrainingTask, output_dir: Path, resume: Resume, progress: bool,
           ctx: DistributedContext) -> TrainResult:
    g = config.Global
    last = output_dir / "checkpoints" / "last.pt"
    if ctx.is_main:
        remove_checkpoint_temporaries(last.parent)
    chosen = _resume_point(resume, output_dir, ctx)
    if chosen is None and ctx.is_main:
        (output_dir / "log.jsonl").unlink(missing_ok=True)
    run = TrainingRun(config, task, output_dir, progress, ctx)
    if chosen is not None:
        used, payload, fallback = chosen
        run.restore(payload, used)
        if run.epoch > g.epochs or (run.epoch == g.epochs and run.batch > 0):
            raise ProdrecError(f"{used} is at epoch {run.epoch + 1} (batch {run.batch}), past Global.epochs={g.epochs}; "
                               f"set Global.epochs (--epochs) to at least {run.epoch + 1} to continue this run")
        if ctx.is_main:
            lost = max(_last_logged_step(output_dir / "log.jsonl") - run.step, 0)
            run.log({"event": "resume", "checkpoint": str(used), "epoch": run.epoch + 1, "batch": run.batch,
                     "step": run.step, "steps_lost": lost, "fallback": fallback})
            if fallback:
                warnings.warn(f"{fallback}. Resumed from {used} (step {run.step}); {lost} steps logged after it are "
                              "lost and trained again")
    note = scale_schedule(config.Optimizer.lr, g.epochs).note
    if chosen is None and ctx.is_main and note:
        run.log({"event": "schedule", "note": note})
        if progress:
            print(f"prodrec train: {note}", file=sys.stderr)
    if ctx.is_main:
        (output_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")

    if run.epoch == 0 and (g.epochs == 0 or g.eval_before_train) and run.initial_metrics is None:
        run.initial_metrics = metrics = run.evaluate()
        run.log({"event": "eval", "epoch": 0, "step": 0, **metrics})
        run.best = {run.task.best_metric: metrics.get(run.task.best_metric, 0.0), "epoch": 0, "metrics": metrics}
        run.save("best.pt")
    with run.stop:
        while run.epoch < g.epochs:
            losses = run.train_epoch()
            if run.stop.received:
                run.save("last.pt")
                raise TrainingInterrupted(
                    f"{run.stop.received} at step {run.step} (epoch {run.epoch + 1}, batch {run.batch}); saved {last}; "
                    "continue with --resume"
                )
            run.next_epoch()
            _finish_epoch(run, losses, progress)
    if g.epochs == 0 or not last.is_file():
        run.save("last.pt")
    return _summarise(run, output_dir)


def _finish_epoch(run: TrainingRun, losses: Dict[str, float], progress: bool) -> None:
    g = run.config.Global
    record: Dict[str, Any] = {"epoch": run.epoch, "loss": losses, "lr": run.optimizer.param_groups[0]["lr"]}
    if run.epoch % g.eval_interval == 0 or run.epoch == g.epochs:
        metrics = run.evaluate()
        record["metrics"] = metrics
        run.log({"event": "eval", "epoch": run.epoch, "step": run.step, **metrics})
        if progress and run.ctx.is_main:
            tqdm.write(f"epoch {run.epoch}: loss {losses.get('loss', float('nan')):.4f} " + _format(metrics))
    run.history.append(record)
    key = run.task.best_metric
    if "metrics" in record and record["metrics"].get(key, 0.0) > run.best[key]:
        run.best = {key: record["metrics"].get(key, 0.0), "epoch": run.epoch, "metrics": record["metrics"]}
        run.save("best.pt")
    if run.saves_after(run.epoch):
        run.save("last.pt")


def _summarise(run: TrainingRun, output_dir: Path) -> TrainResult:
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
        "world_size": run.ctx.world_size,
        **run.task.summary(),
    }
    if run.ctx.is_main:
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return TrainResult(run.model, metrics, run.best["metrics"], run.initial_metrics, run.history, output_dir, summary)


def _format(metrics: Dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("recall@", "mAP", "top")))
