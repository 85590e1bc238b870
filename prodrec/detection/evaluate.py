"""COCO detection metrics of a product detector, computed by torchmetrics' ``MeanAveragePrecision`` (the
pycocotools backend): mAP@[.5:.95], AP50, AP75 and recall at 100 and 300 detections."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from tqdm.auto import tqdm

from prodrec.data import BoxSet, load_image
from prodrec.models import Detections, ProductDetector
from prodrec.utils import check_positive_int

__all__ = ["DETECTION_METRICS", "detection_metrics", "evaluate_detector"]

DETECTION_METRICS = ("map", "map_50", "map_75", "mar_100", "mar_300")


def _mean_average_precision():
    try:
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError as error:
        raise ImportError("detection metrics need torchmetrics and pycocotools: pip install 'prodrec[detect]'") from error
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", max_detection_thresholds=[1, 100, 300],
                                backend="pycocotools")


def detection_metrics(found: List[Detections], truth: List[np.ndarray]) -> Dict[str, float]:
    """COCO metrics of ``found`` against the ground-truth boxes ``[n, 4]`` of the same photos (one class)."""
    metric = _mean_average_precision()
    metric.update([{"boxes": torch.from_numpy(d.boxes).reshape(-1, 4), "scores": torch.from_numpy(d.scores),
                    "labels": torch.ones(len(d.scores), dtype=torch.int64)} for d in found],
                  [{"boxes": torch.as_tensor(t, dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.ones(len(t), dtype=torch.int64)} for t in truth])
    values = metric.compute()
    return {"map": float(values["map"]), "map_50": float(values["map_50"]), "map_75": float(values["map_75"]),
            "mar_100": float(values["mar_100"]), "mar_300": float(values["mar_300"])}


def evaluate_detector(detector: ProductDetector, boxes: BoxSet, *, batch_size: int = 4,
                      progress: bool = True) -> Dict[str, float]:
    """Detect the products of every photo of ``boxes`` and score them (:func:`detection_metrics`)."""
    batch_size = check_positive_int(batch_size, "batch_size")
    detector.eval()
    found: List[Detections] = []
    for start in tqdm(range(0, len(boxes), batch_size), disable=not progress, desc="detect", unit="batch",
                      leave=False):
        found += detector.detect([load_image(path) for path in boxes.paths[start:start + batch_size]],
                                 batch_size=batch_size)
    return detection_metrics(found, list(boxes.boxes))
