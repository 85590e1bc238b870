"""One config object for a run, with the seed's section names.

The YAML sections follow PaddleClas's product-recognition recipe: ``Global``, ``Arch``
(``Backbone`` / ``BackboneStopLayer`` / ``Neck`` / ``Head``), ``Loss`` (``Train`` / ``Eval``
lists), ``Optimizer``, ``DataLoader`` and ``Metric``. A file only needs the keys it changes;
everything else takes the defaults below (the seed's In-shop recipe). Unknown keys and values
of the wrong type are errors that name the key.

Example:
    >>> from prodrec.config import Config
    >>> Config.from_dict({"Global": {"epochs": 2}}).Global.epochs
    2
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

from prodrec.config.checks import check_config
from prodrec.config.schema import ConfigError, merge_into

__all__ = ["Config", "GlobalConfig", "ArchConfig", "BackboneConfig", "StopLayerConfig", "NeckConfig", "HeadConfig",
           "LossConfig", "OptimizerConfig", "LRConfig", "RegularizerConfig", "DataLoaderConfig", "MetricConfig",
           "ConfigError", "SPLITS"]

Auto = Literal["auto"]
LossList = List[Dict[str, Optional[Dict[str, Any]]]]


@dataclass
class GlobalConfig:
    epochs: int = 120
    eval_interval: int = 1
    save_interval: int = 1
    checkpoint_steps: int = 0
    checkpoint_minutes: float = 10.0
    print_batch_step: int = 10
    output_dir: str = "./output"
    device: str = "auto"
    seed: int = 0
    deterministic: bool = False
    image_size: int = 224
    eval_mode: Literal["retrieval"] = "retrieval"
    eval_before_train: bool = False
    channels_last: bool = True
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"
    on_nonfinite: Literal["error", "skip"] = "error"
    accumulate_steps: int = 1
    compile: bool = False
    cross_rank_mining: bool = False
    sync_batchnorm: bool = False


@dataclass
class BackboneConfig:
    name: str = "ResNet50_vd"
    pretrained: Union[bool, str] = False


@dataclass
class StopLayerConfig:
    name: Literal["flatten", "flatten_0"] = "flatten"


@dataclass
class NeckConfig:
    name: Literal["FC"] = "FC"
    embedding_size: Union[int, Auto] = "auto"
    class_num: int = 512


@dataclass
class HeadConfig:
    name: Literal["ArcMargin", "FC"] = "ArcMargin"
    embedding_size: Union[int, Auto] = "auto"
    class_num: Union[int, Auto] = "auto"
    margin: Optional[float] = None
    scale: Optional[float] = None
    easy_margin: bool = False


@dataclass
class ArchConfig:
    name: Literal["RecModel"] = "RecModel"
    infer_output_key: Literal["features"] = "features"
    infer_add_softmax: bool = False
    Backbone: BackboneConfig = field(default_factory=BackboneConfig)
    BackboneStopLayer: StopLayerConfig = field(default_factory=StopLayerConfig)
    Neck: NeckConfig = field(default_factory=NeckConfig)
    Head: Optional[HeadConfig] = field(default_factory=HeadConfig)


def _default_train_losses() -> LossList:
    return [{"CELoss": {"weight": 1.0}}, {"TripletLossV2": {"weight": 1.0, "margin": 0.5}}]


@dataclass
class LossConfig:
    Train: LossList = field(default_factory=_default_train_losses)
    Eval: LossList = field(default_factory=lambda: [{"CELoss": {"weight": 1.0}}])


@dataclass
class LRConfig:
    name: Literal["MultiStepDecay", "Cosine", "Constant"] = "MultiStepDecay"
    learning_rate: float = 0.04
    milestones: List[int] = field(default_factory=lambda: [30, 60, 70, 80, 90, 100])
    gamma: float = 0.5
    warmup_epoch: float = 0.0
    warmup_start_lr: float = 0.0
    eta_min: float = 0.0
    # The run length that milestones and warmup_epoch are written for (load_config fills it in from the
    # config file); a run of another length scales them unless scale_schedule is false.
    schedule_epochs: Union[int, Auto] = "auto"
    scale_schedule: bool = True


@dataclass
class RegularizerConfig:
    name: Literal["L2"] = "L2"
    coeff: float = 5e-4


@dataclass
class OptimizerConfig:
    name: Literal["Momentum", "SGD", "AdamW"] = "Momentum"
    momentum: float = 0.9
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    lr: LRConfig = field(default_factory=LRConfig)
    regularizer: Optional[RegularizerConfig] = field(default_factory=RegularizerConfig)


SPLITS = ("train", "query", "gallery")


@dataclass
class DataLoaderConfig:
    dataset: Literal["inshop", "list", "folder", "aliproducts"] = "inshop"
    root: Optional[str] = None
    train_list: Optional[str] = None
    query_list: Optional[str] = None
    gallery_list: Optional[str] = None
    train_image_root: Optional[str] = None
    query_image_root: Optional[str] = None
    gallery_image_root: Optional[str] = None
    sampler: Literal["pk", "random"] = "pk"
    batch_size: int = 64
    sample_per_id: int = 2
    small_items: Literal["error", "repeat", "drop"] = "error"
    num_workers: Union[int, Auto] = "auto"
    eval_batch_size: int = 64
    horizontal_flip: float = 0.5
    random_erasing: float = 0.5
    on_bad_image: Literal["error", "skip"] = "error"
    confine_to_root: bool = False

    def split_files(self) -> Tuple[Dict[str, str], Dict[str, str]]:
        """``({split: list file}, {split: image root})`` of the ``*_list`` / ``*_image_root`` keys that are set."""
        lists = {split: getattr(self, f"{split}_list") for split in SPLITS}
        roots = {split: getattr(self, f"{split}_image_root") for split in SPLITS}
        return ({k: v for k, v in lists.items() if v is not None}, {k: v for k, v in roots.items() if v is not None})


def _default_metrics() -> LossList:
    return [{"Recallk": {"topk": [1, 5, 10, 20]}}, {"mAP": {}}]


@dataclass
class MetricConfig:
    Eval: LossList = field(default_factory=_default_metrics)


@dataclass
class Config:
    """All settings of one run. Build it with :func:`load_config`."""

    Global: GlobalConfig = field(default_factory=GlobalConfig)
    Arch: ArchConfig = field(default_factory=ArchConfig)
    Loss: LossConfig = field(default_factory=LossConfig)
    Optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    DataLoader: DataLoaderConfig = field(default_factory=DataLoaderConfig)
    Metric: MetricConfig = field(default_factory=MetricConfig)

    def to_dict(self) -> Dict[str, Any]:
        """Plain nested dict (YAML/JSON ready); ``Config.from_dict(c.to_dict()) == c``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Config":
        """Defaults updated by ``data``; raises :class:`ConfigError` naming any bad key."""
        config = cls()
        merge_into(config, data, "")
        check_config(config)
        return config

    def recall_ks(self) -> List[int]:
        """The K values of the ``Recallk`` metric (sorted)."""
        for entry in self.Metric.Eval:
            if "Recallk" in entry:
                return sorted((entry["Recallk"] or {}).get("topk", [1, 5]))
        return []

    def wants_map(self) -> bool:
        return any("mAP" in entry for entry in self.Metric.Eval)

    def topk_accuracy_ks(self) -> List[int]:
        """The K values of the ``TopkAcc`` metric (classification accuracy of the head; sorted), or []."""
        for entry in self.Metric.Eval:
            if "TopkAcc" in entry:
                return sorted((entry["TopkAcc"] or {}).get("topk", [1, 5]))
        return []
