"""The config of a product-detector run (``prodrec detect train``), in the embedder's YAML conventions: the same
``Global`` and ``Optimizer`` sections, an ``Arch`` naming a detector and a ``DataLoader`` naming box data.

Example:
    >>> DetectionConfig.from_dict({"Arch": {"name": "fcos_resnet18"}}).Arch.image_size
    384
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional

from prodrec.config.schema import ConfigError, merge_into
from prodrec.config.sections import GlobalConfig, LRConfig, OptimizerConfig

__all__ = ["DetectionConfig", "DetectorArchConfig", "DetectionDataConfig"]


@dataclass
class DetectorArchConfig:
    name: str = "ssdlite_mobilenet_v3"
    image_size: int = 384
    max_detections: int = 300
    score_threshold: float = 0.2
    nms_iou: float = 0.5
    pretrained: Optional[str] = None


@dataclass
class DetectionDataConfig:
    """Training and validation boxes: COCO (``coco`` + ``images``) or SKU-110K (``sku110k`` + ``images``); with
    neither, ``synthetic_scenes`` built-in shelf scenes of synthetic products and ``synthetic_random_objects``
    random objects (``val_*`` likewise, else ``val_fraction`` of the scenes)."""

    coco: Optional[str] = None
    sku110k: Optional[str] = None
    images: Optional[str] = None
    val_coco: Optional[str] = None
    val_sku110k: Optional[str] = None
    val_images: Optional[str] = None
    val_fraction: float = 0.1
    synthetic_scenes: int = 400
    synthetic_random_objects: int = 200
    batch_size: int = 4
    eval_batch_size: int = 4
    num_workers: Any = "auto"
    horizontal_flip: float = 0.5
    color_jitter: float = 0.5
    scale: float = 0.25
    on_bad_box: Literal["error", "skip"] = "error"


def _detector_optimizer() -> OptimizerConfig:
    return OptimizerConfig(name="AdamW", lr=LRConfig(name="Cosine", learning_rate=1e-3, warmup_epoch=1.0,
                                                     schedule_epochs=20), regularizer=None)


def _detector_global() -> GlobalConfig:
    # About 18 minutes on 2 CPU cores with the built-in scenes (docs/benchmarks.md, "Product detection").
    return GlobalConfig(epochs=20, output_dir="./detector", image_size=384, channels_last=False)


@dataclass
class DetectionConfig:
    """All settings of one detector run."""

    Global: GlobalConfig = field(default_factory=_detector_global)
    Arch: DetectorArchConfig = field(default_factory=DetectorArchConfig)
    Optimizer: OptimizerConfig = field(default_factory=_detector_optimizer)
    DataLoader: DetectionDataConfig = field(default_factory=DetectionDataConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DetectionConfig":
        """Defaults updated by ``data``; raises :class:`ConfigError` naming any bad key or value."""
        config = cls()
        merge_into(config, data, "")
        loader = config.DataLoader
        if loader.coco and loader.sku110k:
            raise ConfigError("DataLoader: give coco or sku110k, not both")
        if (loader.coco or loader.sku110k) and not loader.images:
            raise ConfigError("DataLoader.images: the folder the annotation file's images are in is needed")
        if not 0 < loader.val_fraction < 1:
            raise ConfigError(f"DataLoader.val_fraction must be in (0, 1), got {loader.val_fraction!r}")
        for name in ("batch_size", "eval_batch_size", "synthetic_scenes"):
            if getattr(loader, name) < 1:
                raise ConfigError(f"DataLoader.{name} must be at least 1, got {getattr(loader, name)!r}")
        if loader.synthetic_random_objects < 0:
            raise ConfigError("DataLoader.synthetic_random_objects must be 0 or more, got "
                              f"{loader.synthetic_random_objects!r}")
        if config.Global.cross_rank_mining:
            raise ConfigError("Global.cross_rank_mining mines embedding pairs; a detector has none: set it to false")
        return config
