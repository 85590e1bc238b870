"""Top-k classification accuracy of an embedder and its classifier head (PaddleClas's ``TopkAcc``).

The seed's Aliproduct recipe reports top-1 accuracy on AliProducts val (85.67 %): the val images, embedded by the
model and scored by the training head over the 50,030 classes.

Ties are counted against the prediction: a sample is correct at ``k`` when fewer than ``k`` other classes score
at least as high as its true class, so a classifier with constant scores gets 0 % (not 100 %) and a tie at the
k-th place is a miss. A NaN score counts as higher than any other (a NaN true-class score is a miss).
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from prodrec.data import ImageDataset, ImageList
from prodrec.data import eval_transform
from prodrec.losses import MinedLoss, WeightedLoss
from prodrec.models import Embedder
from prodrec.utils import ProdrecError

__all__ = ["topk_accuracy", "classification_accuracy", "head_logits"]

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]


def topk_accuracy(logits: ArrayLike, labels: ArrayLike, ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """Share of samples whose true class is among the ``k`` best-scored, for each ``k`` (ties count as misses).

    Args:
        logits: Class scores ``[N, C]`` (higher is better), a tensor or array.
        labels: True classes ``[N]``, integers in ``0..C-1``.
        ks: The ``k`` values; ``k >= C`` gives 1.0.

    Returns:
        ``{"top1": ..., "top5": ...}``: fractions in ``[0, 1]``, one key ``top<k>`` per ``k``.

    Example:
        >>> topk_accuracy([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]], [1, 0], ks=(1, 2))
        {'top1': 0.5, 'top2': 1.0}
    """
    ks = _check_ks(ks)
    logits, labels = _tensor(logits), _tensor(labels)
    if logits.ndim != 2 or labels.ndim != 1 or len(labels) != len(logits) or not len(labels):
        raise ProdrecError(f"expected logits [N, C] and labels [N] with N > 0, got shapes {tuple(logits.shape)} and "
                           f"{tuple(labels.shape)}")
    _check_labels(labels, logits.shape[1])
    correct = _correct_counts(logits, labels, ks)
    return {f"top{k}": correct[k] / len(labels) for k in ks}


def classification_accuracy(
    model: Embedder,
    head: nn.Module,
    images: ImageList,
    *,
    ks: Sequence[int] = (1, 5),
    batch_size: int = 64,
    num_workers: int = 0,
    device: Union[str, torch.device, None] = None,
    channels_last: bool = True,
    progress: bool = True,
) -> Dict[str, float]:
    """Top-k accuracy of ``head`` on ``model``'s embeddings of a listing, e.g. AliProducts val.

    Images get the model's eval preprocessing; the model runs under fp16 autocast on CUDA, the head in float32.

    Args:
        model: The embedder.
        head: The classifier: see :func:`head_logits` (the training run's loss object works).
        images: The listing; its labels must index the head's classes (as AliProducts labels do).
        ks: The ``k`` values.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers.
        device: Where to run; defaults to the model's device (the head must be there too).
        channels_last: Run the model in channels-last memory format.
        progress: Show a progress bar.

    Returns:
        ``{"top1": ..., "top5": ..., "num_images": N}``.

    Example:
        >>> from prodrec.retrieval.classification import classification_accuracy  # doctest: +SKIP
        >>> classification_accuracy(model, loss, splits.query)["top1"]  # doctest: +SKIP
    """
    ks = _check_ks(ks)
    if not isinstance(images, ImageList) or not len(images):
        raise ProdrecError(f"images must be a non-empty ImageList, got {images!r}")
    scores = head_logits(head)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    head_device = next(iter(head.parameters()), torch.empty(0)).device
    if head_device != device:
        raise ProdrecError(f"the head is on {head_device} but the model runs on {device}: move it with head.to(...)")
    with torch.inference_mode():
        num_classes = scores(torch.zeros(1, model.embedding_size, device=device)).shape[1]
    _check_labels(_tensor(images.labels), num_classes)
    loader = DataLoader(ImageDataset(images, eval_transform(model.image_size, model.mean, model.std)),
                        batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")
    modes = model.training, head.training
    model.eval()
    head.eval()
    correct = dict.fromkeys(ks, 0)
    try:
        with torch.inference_mode():
            for batch, labels in tqdm(loader, desc="classify", unit="batch", disable=not progress, leave=False):
                with autocast:
                    embeddings = model(batch.to(device, non_blocking=True, memory_format=memory_format))
                found = _correct_counts(scores(embeddings.float()), labels.to(device, non_blocking=True), ks)
                correct = {k: correct[k] + found[k] for k in ks}
    finally:
        model.train(modes[0])
        head.train(modes[1])
    return {**{f"top{k}": correct[k] / len(images) for k in ks}, "num_images": len(images)}


def head_logits(head: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function from raw embeddings ``[N, D]`` to class scores ``[N, C]`` (higher is better) of a head.

    ``head`` is a module with ``get_logits``: :class:`prodrec.losses.FCClassifierLoss` (the FC head's logits),
    :class:`prodrec.losses.ArcMarginLoss` or another PML margin-softmax loss (scaled cosines, no margin), or a
    :class:`prodrec.losses.WeightedLoss` / ``MinedLoss`` holding exactly one such term.
    """
    terms = list(head.terms.values()) if isinstance(head, WeightedLoss) else [head]
    found = [term.loss if isinstance(term, MinedLoss) else term for term in terms]
    found = [term for term in found if callable(getattr(term, "get_logits", None))]
    if len(found) != 1:
        raise ProdrecError(f"cannot score classes with {type(head).__name__}: it needs exactly one classifier head "
                           f"(FC or ArcMargin, with get_logits), found {len(found)}")
    return found[0].get_logits


def _tensor(values: ArrayLike) -> torch.Tensor:
    """A tensor of ``values``, sharing memory with a writable array (torch cannot share read-only ones)."""
    if isinstance(values, torch.Tensor):
        return values
    array = np.asarray(values)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _check_ks(ks: Sequence[int]) -> list:
    ks = list(dict.fromkeys(ks))
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ProdrecError(f"ks must be positive integers, got {ks}")
    return [int(k) for k in ks]


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ProdrecError(f"labels must be integers, got {labels.dtype}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ProdrecError(f"labels must lie in 0..{num_classes - 1} (one per class score), got "
                           f"{int(labels.min())}..{int(labels.max())}")


def _correct_counts(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int]) -> Dict[int, int]:
    """Per ``k``, how many rows have fewer than ``k`` other classes scoring at least their true class."""
    true = logits.gather(1, labels.long().unsqueeze(1))
    others_not_below = (~(logits < true)).sum(dim=1) - 1  # the true class is never below itself
    return {k: int((others_not_below < k).sum()) for k in ks}
