"""Training batches as a pure function of (seed, epoch): PK batches (P items x K images each, on
pytorch-metric-learning's MPerClassSampler) or a plain shuffle, each sample with its own augmentation seed.

Nothing here reads or changes a global random state, so the data a run sees does not depend on the
number of loader workers, on other code drawing random numbers, or on where a run was stopped and
resumed (:meth:`EpochBatches.set_epoch` skips the finished batches of an epoch without loading them).
"""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import torch
from pytorch_metric_learning.samplers import MPerClassSampler
from pytorch_metric_learning.utils import common_functions
from prodrec.utils import ProdrecError, ProdrecTypeError

__all__ = ["SMALL_CLASS_POLICIES", "EpochBatches", "SeededSamples", "pk_sampler", "small_classes",
           "apply_small_class_policy"]

SMALL_CLASS_POLICIES = ("error", "repeat", "drop")
_MAX_SHOWN = 20


def pk_sampler(labels: np.ndarray, *, batch_size: int, instances: int,
               length: int | None = None) -> MPerClassSampler:
    """A sampler whose every ``batch_size`` chunk holds ``batch_size // instances`` classes x ``instances`` images.

    Classes with fewer than ``instances`` images are sampled with replacement (see
    :func:`apply_small_class_policy`). Shuffling uses pytorch-metric-learning's random state (numpy's
    global one); :class:`EpochBatches` draws it from ``(seed, epoch)`` instead.

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
            raise ProdrecError(f"{name} must be a positive integer, got {value!r}")
    if batch_size % instances:
        lower = batch_size - batch_size % instances
        options = f"{lower} or {lower + instances}" if lower else f"{instances}"
        raise ProdrecError(f"batch_size {batch_size} is not a multiple of instances {instances}; "
                           f"use e.g. batch_size {options}")
    num_classes = len(np.unique(labels))
    if num_classes < batch_size // instances:
        raise ProdrecError(f"a batch of {batch_size} with {instances} images per class needs "
                           f"{batch_size // instances} classes but the data has {num_classes}; the largest "
                           f"batch_size is {num_classes * instances}")
    length = len(labels) if length is None else length
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < batch_size:
        raise ProdrecError(f"the epoch length must be an integer >= batch_size {batch_size}, got {length!r}"
                           f"{' (the data set is smaller than one batch)' if length == len(labels) else ''}")
    return MPerClassSampler(labels, m=instances, batch_size=batch_size,
                            length_before_new_iter=length - length % batch_size)



class EpochBatches(torch.utils.data.Sampler):
    """A ``DataLoader(batch_sampler=...)`` whose batches are a pure function of ``(seed, epoch)``.

    Each batch is a list of ``(sample index, augmentation seed)`` pairs for :class:`SeededSamples`. The
    epoch's global batch list is cut into per-rank slices: rank ``r`` of ``world_size`` takes global
    batches ``r, r + world_size, ...`` (whole batches, so every rank sees whole P x K groups), and the
    ranks together see the ``world_size=1`` batches of that epoch (without the last global batches
    when their number is not a multiple of ``world_size``).

    Args:
        labels: int ``[N]`` label of each sample.
        batch_size: Samples per batch (per rank).
        instances: Images per class in a batch (K) for PK batches; None for a shuffle that draws every
            sample once per epoch.
        length: Samples per epoch, all ranks together (default ``len(labels)``), rounded down to whole batches.
        seed: The run's seed.
        rank: This process's rank.
        world_size: Number of processes.

    Raises:
        ValueError: The batches cannot be formed (see :func:`pk_sampler`) or a rank would get none.
    """

    def __init__(self, labels: np.ndarray, *, batch_size: int, instances: Optional[int] = None,
                 length: Optional[int] = None, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.labels = _as_labels(labels)
        length = len(self.labels) if length is None else length
        if instances is not None:
            pk_sampler(self.labels, batch_size=batch_size, instances=instances, length=length)  # checks the settings
        elif isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ProdrecError(f"batch_size must be a positive integer, got {batch_size!r}")
        elif not batch_size <= length <= len(self.labels):
            raise ProdrecError(f"a shuffle draws each of the {len(self.labels)} samples at most once per epoch, so the "
                               f"epoch length must lie in {batch_size} (batch_size)..{len(self.labels)}, got {length}")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1 \
                or not 0 <= rank < world_size:
            raise ProdrecError(f"need world_size >= 1 and 0 <= rank < world_size, got rank {rank!r} of {world_size!r}")
        if length // batch_size < world_size:
            raise ProdrecError(f"an epoch of {length // batch_size} batches cannot give each of {world_size} ranks one; "
                               "lower the batch size or use fewer processes")
        self.batch_size, self.instances, self.length = int(batch_size), instances, length - length % batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        """Iterate ``epoch``'s batches from this rank's batch ``start`` on (the earlier ones are skipped unread)."""
        self.epoch, self.start = epoch, start

    def global_batches(self, epoch: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(indices, seeds)`` of every rank's batches of ``epoch``, both int64 ``[batches, batch_size]``."""
        order_stream, seed_stream = np.random.SeedSequence([self.seed, epoch]).spawn(2)
        if self.instances is None:
            order = np.random.default_rng(order_stream).permutation(len(self.labels))[:self.length]
        else:
            order = _drawn_with(np.random.RandomState(np.random.MT19937(order_stream)), pk_sampler(
                self.labels, batch_size=self.batch_size, instances=self.instances, length=self.length))
        seeds = np.random.default_rng(seed_stream).integers(2**63 - 1, size=len(order), dtype=np.int64)
        return order.reshape(-1, self.batch_size), seeds.reshape(-1, self.batch_size)

    def __len__(self) -> int:
        return self.length // self.batch_size // self.world_size

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        indices, seeds = self.global_batches(self.epoch)
        mine = slice(self.rank, len(self) * self.world_size, self.world_size)
        for batch, batch_seeds in zip(indices[mine][self.start:], seeds[mine][self.start:]):
            yield list(zip(batch.tolist(), batch_seeds.tolist()))


def _drawn_with(state: np.random.RandomState, sampler: MPerClassSampler) -> np.ndarray:
    """The sampler's index list drawn with ``state`` in place of the library's random state (a fresh sampler
    each time: MPerClassSampler keeps its label order from one pass to the next)."""
    previous = common_functions.NUMPY_RANDOM
    common_functions.NUMPY_RANDOM = state
    try:
        return np.fromiter(sampler, dtype=np.int64, count=len(sampler))
    finally:
        common_functions.NUMPY_RANDOM = previous


class SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` for the ``(index, seed)`` items of :class:`EpochBatches`, with ``transform`` (the
    :class:`~prodrec.data.ImageTransform` the dataset applies) reseeded by ``seed`` first, so a
    sample's augmentation depends on its seed only, whichever worker loads it.
    """

    def __init__(self, dataset: torch.utils.data.Dataset, transform: Any) -> None:
        if not callable(getattr(transform, "reseed", None)):
            raise ProdrecTypeError(f"SeededSamples: transform needs a reseed(seed) method, got "
                                   f"{type(transform).__name__}")
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: Tuple[int, int]) -> Any:
        index, seed = item
        self.transform.reseed(seed)
        return self.dataset[index]


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
        raise ProdrecError(f"unknown small-class policy {policy!r}; use one of {', '.join(SMALL_CLASS_POLICIES)}")
    labels = _as_labels(labels)
    small = small_classes(labels, instances)
    if policy == "repeat" or not small:
        return np.arange(len(labels))
    if policy == "error":
        shown = ", ".join(f"{label}: {count}" for label, count in list(small.items())[:_MAX_SHOWN])
        more = f", ... and {len(small) - _MAX_SHOWN} more" if len(small) > _MAX_SHOWN else ""
        raise ProdrecError(
            f"{len(small)} classes have fewer than {instances} images (label: count): {shown}{more}. "
            "Lower --instances / DataLoader.sample_per_id, or set DataLoader.small_items: repeat (sample "
            "with replacement, as PaddleClas's PKSampler does) or DataLoader.small_items: drop")
    keep = np.flatnonzero(~np.isin(labels, list(small)))
    if not len(keep):
        raise ProdrecError(f"every class has fewer than {instances} images, so dropping them leaves nothing; "
                           "lower --instances / DataLoader.sample_per_id or use DataLoader.small_items: repeat")
    return keep


def _as_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ProdrecError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    return labels
