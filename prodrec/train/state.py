"""What a training checkpoint holds beside weights and counters: the random-number state of the
process, as plain containers that ``torch.load(weights_only=True)`` reads back, and the data-order
fingerprint without which a position inside an epoch would be meaningless."""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from prodrec.config import Config
from prodrec.data import ImageList
from prodrec.utils import ProdrecError

__all__ = ["rng_state", "set_rng_state", "seed_rank", "data_order", "check_data_order"]


def rng_state() -> Dict[str, Any]:
    """Python's, numpy's and torch's global generator states (and every CUDA device's once CUDA is in use)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_rank(seed: int, epoch: int, rank: int) -> None:
    """Seed python's, numpy's and torch's global generators from ``(seed, epoch, rank)``: a distributed run's
    per-process random state (dropout, drop-path) is rebuilt at each epoch start rather than checkpointed, so
    that a run may resume on another number of processes."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2)
    random.seed(int(state[0]))
    np.random.seed(int(state[1]))
    torch.manual_seed((int(state[0]) << 32) | int(state[1]))


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def data_order(config: Config, train: ImageList) -> Dict[str, Any]:
    """The settings and data that fix every epoch's batches (see :class:`~prodrec.data.EpochBatches`).

    The training listing enters as a hash of its paths below their common folder (the data may move
    between runs) and class names.
    """
    loader = config.DataLoader
    root = len(os.path.dirname(os.path.commonprefix(train.paths)))
    listing = "\n".join(f"{path[root:]}\t{train.classes[label]}" for path, label in zip(train.paths, train.labels))
    return {"Global.seed": config.Global.seed, "DataLoader.sampler": loader.sampler,
            "DataLoader.batch_size": loader.batch_size, "DataLoader.sample_per_id": loader.sample_per_id,
            "DataLoader.small_items": loader.small_items,
            "training images": f"{len(train)} (sha256 {hashlib.sha256(listing.encode()).hexdigest()[:16]})"}


def check_data_order(saved: Optional[Dict[str, Any]], current: Dict[str, Any], source: Path) -> None:
    """Refuse to resume from the checkpoint ``source`` when its :func:`data_order` differs from ``current``.

    Raises:
        ValueError: naming each setting that differs, with both values.
    """
    saved = saved or {}
    changed = [f"{key}: {saved.get(key, 'not recorded')} in the checkpoint, {value} now"
               for key, value in current.items() if saved.get(key) != value]
    if changed:
        raise ProdrecError(f"cannot resume from {source}: it was written for other batches ({'; '.join(changed)}); "
                           "resume with the settings and data it was written with, or train into a new output folder")
