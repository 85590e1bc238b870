"""Training a product detector with the embedder's training run (:class:`~prodrec.train.TrainingTask`): the
same steps, schedule, AMP, DDP, checkpoints, resume and run lock; batches of photos with their boxes, the
detector's own losses, COCO mAP on the validation photos."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from prodrec.config import DetectionConfig
from prodrec.data import (BoxDataset, BoxSet, EpochBatches, SeededSamples, collate_boxes, detection_train_transform)
from prodrec.detection.evaluate import evaluate_detector
from prodrec.models import DetectorSettings, ProductDetector
from prodrec.train import DistributedContext, TrainingTask
from prodrec.utils import ProdrecError

__all__ = ["DetectorWithLoss", "DetectionTask", "detector_settings"]


def detector_settings(config: DetectionConfig) -> DetectorSettings:
    """The detector ``config.Arch`` describes (an unknown name or a bad value is refused here)."""
    arch = config.Arch
    return DetectorSettings(arch.name, image_size=arch.image_size, max_detections=arch.max_detections,
                            score_threshold=arch.score_threshold, nms_iou=arch.nms_iou)


class DetectorWithLoss(nn.Module):
    """The detector in training mode as one module: ``forward(images, targets)`` -> ``(total, {name: loss})``,
    under autocast when ``amp_dtype`` is set."""

    def __init__(self, detector: ProductDetector, amp_dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.detector, self.amp_dtype = detector, amp_dtype

    def forward(self, images, targets) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        with torch.autocast(images[0].device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            losses = self.detector(images, targets)
        losses = {name: value.float() for name, value in losses.items()}
        return sum(losses.values()), losses


class DetectionTask(TrainingTask):
    """A :class:`~prodrec.models.ProductDetector` on shuffled batches of ``train`` photos, evaluated by COCO mAP
    on ``val``; ``best.pt`` keeps the highest mAP@[.5:.95]."""

    best_metric = "map"

    def __init__(self, config: DetectionConfig, train: BoxSet, val: BoxSet) -> None:
        if not len(train) or not len(val):
            raise ProdrecError(f"a detector needs training and validation photos; got {len(train)} and {len(val)}")
        self.config, self.train, self.val = config, train, val
        self.model = ProductDetector(detector_settings(config))
        if config.Arch.pretrained:
            self.model.load_pretrained(config.Arch.pretrained)

    def wrap(self, ctx: DistributedContext, amp_dtype: Optional[torch.dtype]) -> nn.Module:
        module = DetectorWithLoss(self.model.to(ctx.device), amp_dtype)
        if ctx.world_size == 1:
            return module
        return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    def train_loader(self, ctx: DistributedContext, workers: int, log) -> Tuple[DataLoader, Any]:
        loader, arch = self.config.DataLoader, self.config.Arch
        if len(self.train) < loader.batch_size * ctx.world_size:
            raise ProdrecError(f"{len(self.train)} training photos make no batch of DataLoader.batch_size="
                               f"{loader.batch_size} for each of {ctx.world_size} processes; lower the batch size")
        transform = detection_train_transform(arch.image_size, horizontal_flip=loader.horizontal_flip,
                                              color_jitter=loader.color_jitter, scale=loader.scale)
        seed = self.config.Global.seed
        sampler = EpochBatches(torch.zeros(len(self.train), dtype=torch.int64).numpy(), batch_size=loader.batch_size,
                               seed=seed, rank=ctx.rank, world_size=ctx.world_size)
        return DataLoader(SeededSamples(BoxDataset(self.train, transform), transform), batch_sampler=sampler,
                          num_workers=workers, collate_fn=collate_boxes, persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(seed)), sampler

    def to_device(self, batch: Any, device: torch.device, memory_format: torch.memory_format) -> Tuple[Sequence, int]:
        images, targets, _ = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{key: value.to(device, non_blocking=True) for key, value in target.items()} for target in targets]
        return (images, targets), len(images)

    def data_order(self) -> Dict[str, Any]:
        loader = self.config.DataLoader
        return {"Global.seed": self.config.Global.seed, "DataLoader.batch_size": loader.batch_size,
                "training photos": len(self.train)}

    def evaluate(self, ctx: DistributedContext, workers: int, progress: bool) -> Dict[str, float]:
        """COCO metrics on the validation photos (every rank computes them; they are identical)."""
        metrics = evaluate_detector(self.model, self.val, batch_size=self.config.DataLoader.eval_batch_size,
                                    progress=progress)
        self.model.train()
        return metrics

    def state(self) -> Dict[str, Any]:
        return {"detector": self.model.to_payload()}

    def restore(self, payload: Dict[str, Any]) -> None:
        self.model.load_state_dict(payload["detector"]["state_dict"])

    def summary(self) -> Dict[str, Any]:
        return {"num_train_photos": len(self.train), "num_train_boxes": self.train.num_boxes,
                "num_val_photos": len(self.val), "num_val_boxes": self.val.num_boxes}
