"""Detection samples: a photo and its product boxes, resized and augmented together with albumentations
(``BboxParams``), as a detector's training and evaluation inputs."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import albumentations as A
import numpy as np
import torch

from prodrec.data.boxes import BoxSet
from prodrec.data.decode import load_image
from prodrec.data.transforms import ImageTransform
from prodrec.utils import ProdrecTypeError

__all__ = ["BoxTransform", "detection_train_transform", "detection_eval_transform", "BoxDataset", "collate_boxes"]

MIN_VISIBILITY = 0.3  # a box cut by a crop or the border keeps at least this share of its area, or is dropped


class BoxTransform(ImageTransform):
    """``(HxWx3 uint8 RGB, boxes [n, 4])`` -> ``(float [3, H', W'] in [0, 1], boxes [m, 4] float32)``, seeded as
    :class:`~prodrec.data.ImageTransform` is."""

    def __call__(self, image: np.ndarray, boxes: np.ndarray = None) -> Tuple[torch.Tensor, np.ndarray]:  # type: ignore[override]
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
            raise ProdrecTypeError("BoxTransform expects an HxWx3 uint8 RGB array")
        boxes = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self._seed_from(worker.seed)
        out = self.pipeline(image=image, bboxes=boxes, labels=np.ones(len(boxes), np.int64))
        kept = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        return torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1).float().div_(255), kept


def _boxes() -> A.BboxParams:
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=MIN_VISIBILITY, clip=True)


def detection_train_transform(image_size: int, *, horizontal_flip: float = 0.5, color_jitter: float = 0.5,
                              scale: float = 0.25) -> BoxTransform:
    """The photo's longer side to ``image_size``, then a random zoom of +-``scale`` (cropped or padded back),
    flips, and colour, blur and JPEG changes; boxes follow."""
    return BoxTransform(A.Compose([
        A.LongestMaxSize(max_size=image_size),
        A.Affine(scale=(1 - scale, 1 + scale), translate_percent=(-0.05, 0.05), border_mode=0, p=1.0 if scale else 0.0),
        A.HorizontalFlip(p=horizontal_flip),
        A.ColorJitter(0.3, 0.3, 0.3, 0.05, p=color_jitter),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.ImageCompression(quality_range=(50, 95))], p=0.3),
    ], bbox_params=_boxes()))


def detection_eval_transform(image_size: int) -> BoxTransform:
    """The photo's longer side to ``image_size``; nothing random."""
    return BoxTransform(A.Compose([A.LongestMaxSize(max_size=image_size)], bbox_params=_boxes()))


class BoxDataset(torch.utils.data.Dataset):
    """``dataset[i]`` = (image tensor, ``{"boxes", "labels"}`` target, scale from the photo to the tensor)."""

    def __init__(self, boxes: BoxSet, transform: BoxTransform) -> None:
        self.boxes, self.transform = boxes, transform

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], float]:
        image = load_image(self.boxes.paths[index])
        tensor, kept = self.transform(image, self.boxes.boxes[index])
        target = {"boxes": torch.from_numpy(kept).reshape(-1, 4),
                  "labels": torch.ones(len(kept), dtype=torch.int64)}
        return tensor, target, tensor.shape[2] / image.shape[1]


def collate_boxes(batch: List[Any]) -> Tuple[List[torch.Tensor], List[Dict[str, torch.Tensor]], List[float]]:
    """A detection batch stays lists: photos differ in size and box count."""
    images, targets, scales = zip(*batch)
    return list(images), list(targets), list(scales)
