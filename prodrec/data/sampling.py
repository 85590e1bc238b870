"""PK batches (P items x K images each) for metric learning, on pytorch-metric-learning's MPerClassSampler."""
from __future__ import annotations

import numpy as np
from pytorch_metric_learning.samplers import MPerClassSampler

__all__ = ["SMALL_CLASS_POLICIES", "pk_sampler", "small_classes", "apply_small_class_policy"]

SMALL_CLASS_POLICIES = ("error", "repeat", "drop")
_MAX_SHOWN = 20


def pk_sampler(labels: np.ndarray, *, batch_size: int, instances: int,
               length: int | None = None) -> MPerClassSampler:
    """A sampler whose every ``batch_size`` chunk holds ``batch_size // instances`` classes x ``instances`` images.

    Classes with fewer than ``instances`` images are sampled with replacement (see
    :func:`apply_small_class_policy`). Shuffling uses numpy's global random state.

    Args:
        labels: int ``[N]`` label of each sample.
        batch_size: Samples per batch; a multiple of ``instances``.
        instances: Images per class in a batch (K; PaddleClas ``sample_per_id``).
        length: Samples per epoch, rounded down to a multiple of ``batch_size``; defaults to ``len(labels)``
            so that an epoch draws as many samples as the data set holds.

    Raises:
        ValueError: The batch cannot be formed from these labels (the message says what would work).
    """
    labels = _as_labels(labels)
    for name, value in (("batch_size", batch_size), ("instances", instances)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if batch_size % instances:
        lower = batch_size - batch_size % instances
        options = f"{lower} or {lower + instances}" if lower else f"{instances}"
        raise ValueError(f"batch_size {batch_size} is not a multiple of instances {instances}; "
                         f"use e.g. batch_size {options}")
    num_classes = len(np.unique(labels))
    if num_classes < batch_size // instances:
        raise ValueError(f"a batch of {batch_size} with {instances} images per class needs "
                         f"{batch_size // instances} classes but the data has {num_classes}; the largest "
                         f"batch_size is {num_classes * instances}")
    length = len(labels) if length is None else length
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < batch_size:
        raise ValueError(f"the epoch length must be an integer >= batch_size {batch_size}, got {length!r}"
                         f"{' (the data set is smaller than one batch)' if length == len(labels) else ''}")
    return MPerClassSampler(labels, m=instances, batch_size=batch_size,
                            length_before_new_iter=length - length % batch_size)


def small_classes(labels: np.ndarray, instances: int) -> dict[int, int]:
    """``{label: image count}`` of the classes with fewer than ``instances`` images."""
    values, counts = np.unique(_as_labels(labels), return_counts=True)
    small = counts < instances
    return dict(zip(values[small].tolist(), counts[small].tolist()))


def apply_small_class_policy(labels: np.ndarray, instances: int, policy: str) -> np.ndarray:
    """Indices of the samples to train on, given classes with fewer than ``instances`` images.

    Args:
        labels: int ``[N]`` label of each sample.
        instances: Images per class in a batch.
        policy: ``"error"`` (raise if any class is small), ``"repeat"`` (keep all; small classes are sampled
            with replacement, as PaddleClas's PKSampler does) or ``"drop"`` (leave small classes out).

    Raises:
        ValueError: Unknown policy; ``"error"`` with small classes; ``"drop"`` leaving nothing.
    """
    if policy not in SMALL_CLASS_POLICIES:
        raise ValueError(f"unknown small-class policy {policy!r}; use one of {', '.join(SMALL_CLASS_POLICIES)}")
    labels = _as_labels(labels)
    small = small_classes(labels, instances)
    if policy == "repeat" or not small:
        return np.arange(len(labels))
    if policy == "error":
        shown = ", ".join(f"{label}: {count}" for label, count in list(small.items())[:_MAX_SHOWN])
        more = f", ... and {len(small) - _MAX_SHOWN} more" if len(small) > _MAX_SHOWN else ""
        raise ValueError(
            f"{len(small)} classes have fewer than {instances} images (label: count): {shown}{more}. "
            "Lower --instances / DataLoader.sample_per_id, or set DataLoader.small_items: repeat (sample "
            "with replacement, as PaddleClas's PKSampler does) or DataLoader.small_items: drop")
    keep = np.flatnonzero(~np.isin(labels, list(small)))
    if not len(keep):
        raise ValueError(f"every class has fewer than {instances} images, so dropping them leaves nothing; "
                         "lower --instances / DataLoader.sample_per_id or use DataLoader.small_items: repeat")
    return keep


def _as_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    return labels
