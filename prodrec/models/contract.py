"""The embedding contract: what every image embedder in prodrec does, whatever runs it.

An :class:`ImageEmbedder` turns images into L2-normalised float32 feature rows and says what
identifies those features. Implementations only run a preprocessed batch (:meth:`embed_batch`);
preprocessing and batching live here, once. :class:`~prodrec.models.Embedder` (PyTorch) and
:class:`~prodrec.models.ExportedEmbedder` (ONNX / TorchScript) implement it, and the evaluator,
galleries and the Recognizer take any implementation. ``tests/models/test_contract.py`` runs every
implementation through the same checks.

Example (a new backend)::

    class MyEmbedder(ImageEmbedder):
        def __init__(self):
            self.image_size, self.mean, self.std = 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        embedding_size = 512
        embedder_info = {"backbone": "mine", "embedding_size": 512, "preprocessing": {...},
                         "weights_sha256": "..."}
        def embed_batch(self, batch):            # [N, 3, 224, 224] preprocessed -> [N, 512], unit rows
            return torch.nn.functional.normalize(my_model(batch), dim=1)
"""
from __future__ import annotations

import abc
import os
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from prodrec.data import as_rgb_array, eval_transform
from prodrec.utils import ProdrecError, ProdrecTypeError, check_positive_int

__all__ = ["ImageEmbedder", "ImageInput"]

ImageInput = Union[torch.Tensor, Sequence[Any]]
"""A preprocessed ``[N, 3, H, W]`` (or ``[3, H, W]``) tensor, or a list of image paths, PIL images or HWC
uint8 RGB arrays."""


class ImageEmbedder(abc.ABC):
    """Images in, L2-normalised float32 features ``[N, embedding_size]`` out (on the CPU).

    Implementations set ``image_size``, ``mean`` and ``std`` (the evaluation preprocessing: RGB, resize
    to ``image_size`` squared, normalise) and implement :attr:`embedding_size`, :attr:`embedder_info`
    and :meth:`embed_batch`.
    """

    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    input_size: Optional[int] = None
    """The only input height and width :meth:`embed_batch` takes, or None for any."""

    @property
    @abc.abstractmethod
    def embedding_size(self) -> int:
        """Width of a feature row."""

    @property
    @abc.abstractmethod
    def embedder_info(self) -> Dict[str, Any]:
        """What identifies the features: ``backbone``, ``embedding_size``, ``preprocessing`` and
        ``weights_sha256`` (a gallery records it and refuses features of another model)."""

    @abc.abstractmethod
    def embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 CPU features ``[N, D]`` of a preprocessed ``[N, 3, H, W]`` batch."""

    @property
    def preprocessing(self) -> Dict[str, Any]:
        """What an input image must go through: RGB, resize to ``image_size``, then normalise."""
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std), "color": "RGB"}

    def transform(self):
        """The evaluation preprocessing as a callable from an HWC uint8 RGB array to a ``[3, S, S]`` tensor."""
        return eval_transform(self.image_size, self.mean, self.std)

    def embed(self, images: ImageInput, *, batch_size: int = 64) -> torch.Tensor:
        """L2-normalised embeddings ``[N, D]`` (float32, on the CPU) of a tensor batch or a list of images
        (preprocessed here), ``batch_size`` images per :meth:`embed_batch`."""
        chunks = [self.embed_batch(batch) for batch in self.batches(images, batch_size)]
        return torch.cat(chunks) if chunks else torch.empty(0, self.embedding_size)

    def batches(self, images: ImageInput, batch_size: int) -> Iterator[torch.Tensor]:
        """Preprocessed ``[n, 3, S, S]`` batches of at most ``batch_size`` images."""
        check_positive_int(batch_size, "batch_size")
        if isinstance(images, torch.Tensor):
            batch = images.unsqueeze(0) if images.ndim == 3 else images
            size = self.input_size
            if batch.ndim != 4 or batch.shape[1] != 3 or (size is not None and tuple(batch.shape[2:]) != (size, size)):
                shape = "[N, 3, H, W] or [3, H, W]" if size is None else \
                    f"[N, 3, {size}, {size}] or [3, {size}, {size}] (the model's fixed input size)"
                raise ProdrecError(f"expected a {shape} tensor, got shape {tuple(images.shape)}")
            yield from batch.float().split(batch_size)
            return
        if isinstance(images, (str, os.PathLike, np.ndarray)) or not isinstance(images, Sequence):
            raise ProdrecTypeError("embed() takes a tensor batch or a list of images (paths, PIL images or HWC uint8 "
                                   f"arrays); got {type(images).__name__}: wrap a single image in a list")
        transform = self.transform()
        for start in range(0, len(images), batch_size):
            yield torch.stack([transform(as_rgb_array(item)) for item in images[start:start + batch_size]])
