"""Albumentations pipelines for training and evaluation (PaddleClas's In-shop preprocessing)."""
from __future__ import annotations

import os
import random
from typing import Sequence

import numpy as np
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402  (the variable above must be set before the import)
from albumentations.pytorch import ToTensorV2  # noqa: E402
from prodrec.utils import ProdrecError, ProdrecTypeError

__all__ = ["ImageTransform", "train_transform", "eval_transform"]


class ImageTransform:
    """A picklable callable: ``HxWx3`` uint8 RGB array -> float32 ``CxHxW`` tensor.

    Its random state is drawn from torch's global generator when built (so ``torch.manual_seed`` makes
    augmentation reproducible) and re-drawn from the worker seed inside each DataLoader worker, so forked
    workers do not repeat each other's augmentations. :meth:`reseed` replaces both: training reseeds it
    per sample (:class:`~prodrec.data.SeededSamples`), making each augmentation a pure function
    of the sample's seed whatever worker or process runs it.

    Args:
        pipeline: The albumentations pipeline, ending in ``ToTensorV2``.
    """

    def __init__(self, pipeline: A.Compose) -> None:
        self.pipeline = pipeline
        self._seed_from(int(torch.randint(2**62, ())))
        self._worker_seed: int | None = None

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):
            described = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) \
                else type(image).__name__
            raise ProdrecTypeError(f"ImageTransform expects an HxWx3 uint8 RGB array, got {described}")
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            self._worker_seed = worker.seed
            self._seed_from(worker.seed)
        return self.pipeline(image=image)["image"]

    def reseed(self, seed: int) -> None:
        """Restart the random state from ``seed`` (an integer >= 0); the worker seed no longer overrides it."""
        self._seed_from(seed)
        worker = torch.utils.data.get_worker_info()
        self._worker_seed = None if worker is None else worker.seed

    def _seed_from(self, seed: int) -> None:
        # One generator shared by every step: Compose(seed=...) would give each step an identical stream.
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __repr__(self) -> str:
        return f"ImageTransform({self.pipeline!r})"


def train_transform(image_size: int, mean: Sequence[float], std: Sequence[float], *,
                    horizontal_flip: float = 0.5, random_erasing: float = 0.5) -> ImageTransform:
    """Resize, random horizontal flip, normalise, random erasing (value 0 after normalising), to tensor.

    Args:
        image_size: Output height and width in pixels.
        mean: Per-channel RGB mean in 0-1 units (timm's ``pretrained_cfg["mean"]``).
        std: Per-channel RGB standard deviation in 0-1 units.
        horizontal_flip: Flip probability; 0 drops the step.
        random_erasing: Erasing probability (area 2-40 %, aspect 0.3-3.33); 0 drops the step.
    """
    _check(image_size, mean, std, horizontal_flip=horizontal_flip, random_erasing=random_erasing)
    steps = [A.Resize(image_size, image_size)]
    if horizontal_flip > 0:
        steps.append(A.HorizontalFlip(p=horizontal_flip))
    steps.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    if random_erasing > 0:
        steps.append(A.Erasing(p=random_erasing, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3), fill=0))
    steps.append(ToTensorV2())
    return ImageTransform(A.Compose(steps))


def eval_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> ImageTransform:
    """Resize, normalise, to tensor (see :func:`train_transform` for the arguments)."""
    _check(image_size, mean, std)
    return ImageTransform(A.Compose([A.Resize(image_size, image_size),
                                     A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
                                     ToTensorV2()]))


def _check(image_size: int, mean: Sequence[float], std: Sequence[float], **probabilities: float) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ProdrecError(f"image_size must be a positive integer, got {image_size!r}")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != 3:
            raise ProdrecError(f"{name} must have 3 values (R, G, B) in 0-1 units, got {values!r}")
    if min(std) <= 0:
        raise ProdrecError(f"std values must be positive, got {std!r}")
    for name, p in probabilities.items():
        if not 0 <= p <= 1:
            raise ProdrecError(f"{name} is a probability in [0, 1], got {p!r}")
