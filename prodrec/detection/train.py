"""``train_detector``: train a :class:`~prodrec.models.ProductDetector` from a
:class:`~prodrec.config.DetectionConfig`, on COCO or SKU-110K boxes or, given neither, on built-in synthetic
shelf scenes, with the embedder's training run (``run_task``): the same run folder, checkpoints, resume and
lock (``docs/detection.md``)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from prodrec.config import DetectionConfig, load_config
from prodrec.data import BoxSet, make_shelves, read_coco, read_sku110k
from prodrec.detection.task import DetectionTask, detector_settings
from prodrec.train import DistributedContext, TrainResult, run_task

__all__ = ["read_boxes", "detection_data", "train_detector"]

SYNTHETIC_FOLDER = "synthetic-shelves"


def read_boxes(coco: Optional[str], sku110k: Optional[str], images: Optional[str], on_bad_box: str) -> BoxSet:
    """The box set a COCO or SKU-110K file names (exactly one of them)."""
    reader, path = (read_coco, coco) if coco else (read_sku110k, sku110k)
    return reader(path, images, on_bad_box=on_bad_box)


def _split(boxes: BoxSet, fraction: float, seed: int) -> Tuple[BoxSet, BoxSet]:
    order = np.random.default_rng([seed, 11]).permutation(len(boxes))
    cut = max(1, int(round(fraction * len(boxes))))

    def pick(rows) -> BoxSet:
        return BoxSet(*(tuple(column[i] for i in rows) for column in (boxes.paths, boxes.sizes, boxes.boxes,
                                                                      boxes.products)), skipped_boxes=0)
    return pick(sorted(order[cut:])), pick(sorted(order[:cut]))


def detection_data(config: DetectionConfig, output_dir: Path, progress: bool = True) -> Tuple[BoxSet, BoxSet]:
    """Training and validation photos as ``config.DataLoader`` names them; with no annotation file, the
    built-in synthetic shelf scenes (written once into ``output_dir/synthetic-shelves``)."""
    loader = config.DataLoader
    if loader.coco or loader.sku110k:
        train = read_boxes(loader.coco, loader.sku110k, loader.images, loader.on_bad_box)
        if loader.val_coco or loader.val_sku110k:
            return train, read_boxes(loader.val_coco, loader.val_sku110k, loader.val_images or loader.images,
                                     loader.on_bad_box)
        return _split(train, loader.val_fraction, config.Global.seed)
    folder = output_dir / SYNTHETIC_FOLDER
    marker = {"scenes": loader.synthetic_scenes, "random_objects": loader.synthetic_random_objects,
              "seed": config.Global.seed}
    annotations = folder / "annotations.json"
    if not annotations.is_file() or _read_marker(folder) != marker:
        make_shelves(folder, scenes=loader.synthetic_scenes, random_objects=loader.synthetic_random_objects,
                     seed=config.Global.seed, progress=progress)
        (folder / "made.json").write_text(json.dumps(marker), encoding="utf-8")
    return _split(read_coco(annotations, folder), loader.val_fraction, config.Global.seed)


def _read_marker(folder: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads((folder / "made.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def train_detector(config: Union[DetectionConfig, str, os.PathLike, Dict[str, Any], None] = None, *,
                   data: Optional[Tuple[BoxSet, BoxSet]] = None, resume: Any = False, overwrite: bool = False,
                   progress: bool = True) -> TrainResult:
    """Train a product detector as ``config`` says (a :class:`DetectionConfig`, a YAML path, a built-in name or
    a dict); ``data``: (train, validation) box sets instead of the config's. ``resume`` and ``overwrite`` as
    :func:`~prodrec.train.train_metric`'s. The result's ``model`` is the detector of the last epoch.

    Example:
        >>> result = train_detector({"Global": {"epochs": 1, "output_dir": "runs/det"}})  # doctest: +SKIP
        >>> result.metrics["map_50"]  # doctest: +SKIP
    """
    config = config if isinstance(config, DetectionConfig) else load_config(config, schema=DetectionConfig)
    detector_settings(config)  # a bad Arch is refused before any data is read or made

    def task(ctx: DistributedContext, output_dir: Path) -> DetectionTask:
        train, val = data if data is not None else detection_data(config, output_dir, progress and ctx.is_main)
        return DetectionTask(config, train, val)

    return run_task(config, task, resume=resume, overwrite=overwrite, progress=progress)
