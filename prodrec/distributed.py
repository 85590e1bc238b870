"""torch.distributed building blocks: torchrun launch, DDP over embedder + loss, cross-rank mining, gathers.

``with init_distributed() as ctx:`` starts the process group of a torchrun launch (NCCL on ``cuda:LOCAL_RANK``,
gloo on CPU) and destroys it on the way out, errors included; outside torchrun ``ctx`` is a single process
whose collectives are no-ops, so the same code runs either way. See ``docs/distributed.md``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, TypeVar, Union

import numpy as np
import torch
import torch.distributed as dist
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from prodrec.losses import MinedLoss, WeightedLoss

__all__ = ["LaunchEnv", "read_launch_env", "DistributedContext", "init_distributed", "EmbedderWithLoss",
           "CrossRankMinedLoss", "cross_rank_loss", "wrap_for_training", "unwrap"]

T = TypeVar("T")
Rows = Union[np.ndarray, torch.Tensor]
_LAUNCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun tells each process through its environment."""

    rank: int
    world_size: int
    local_rank: int


def read_launch_env(environ: Optional[Mapping[str, str]] = None) -> Optional[LaunchEnv]:
    """The torchrun launch described by ``environ`` (default ``os.environ``); ``None`` outside torchrun.

    Raises:
        ValueError: RANK / WORLD_SIZE / LOCAL_RANK (and MASTER_ADDR / MASTER_PORT for several processes)
            are set in part, or are not consistent integers; the message lists every problem.
    """
    environ = os.environ if environ is None else environ
    present = [key for key in _LAUNCH_KEYS if key in environ]
    if not present:
        return None
    problems = [f"{key} is not set" for key in _LAUNCH_KEYS if key not in environ]
    values: Dict[str, int] = {}
    for key in present:
        try:
            values[key] = int(environ[key])
        except ValueError:
            problems.append(f"{key}={environ[key]!r} is not an integer")
    if not problems:
        rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
        if world < 1 or not 0 <= rank < world or not 0 <= local <= rank:
            problems.append(f"need WORLD_SIZE >= 1 and 0 <= LOCAL_RANK <= RANK < WORLD_SIZE, got RANK={rank} "
                            f"WORLD_SIZE={world} LOCAL_RANK={local}")
        elif world > 1:
            problems += [f"{key} is not set" for key in ("MASTER_ADDR", "MASTER_PORT") if key not in environ]
    if problems:
        raise ValueError("incomplete torch.distributed launch environment: " + "; ".join(problems)
                         + ". Launch with torchrun (python -m torch.distributed.run), which sets them all, or unset "
                           "RANK, WORLD_SIZE and LOCAL_RANK for a single process")
    return LaunchEnv(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: ``rank`` (0, the main process, logs and writes checkpoints),
    ``world_size``, ``local_rank`` (the GPU index on GPU runs), ``device`` and ``backend`` (``"nccl"``,
    ``"gloo"``, or ``None`` for a single process, where every collective is a no-op).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world_size > 1:
            dist.barrier()

    def any_rank(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (e.g. a stop signal, a non-finite loss)."""
        value = torch.tensor([int(bool(flag))], device=self._comm_device)
        if self.world_size > 1:
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, values: Mapping[str, float]) -> Dict[str, float]:
        """Per-key mean over processes of numbers that every process holds under the same keys."""
        keys = sorted(values)
        total = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=self._comm_device)
        if self.world_size > 1:
            dist.all_reduce(total)
        return dict(zip(keys, (total / self.world_size).tolist()))

    def broadcast(self, obj: T, *, src: int = 0) -> T:
        """``obj`` as process ``src`` holds it, on every process (any picklable object)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src, device=self._comm_device)
        return box[0]

    def main_only(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Optional[T]:
        """Call ``fn`` on the main process only (logging, checkpoint writing); ``None`` elsewhere."""
        return fn(*args, **kwargs) if self.is_main else None

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Run the block on the main process first, then on the others (e.g. write a file, then all read it)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def shard(self, length: int) -> range:
        """This process's contiguous share of ``range(length)``; shares differ in size by at most one."""
        return range(self.rank * length // self.world_size, (self.rank + 1) * length // self.world_size)

    def gather_rows(self, shard: Rows, *, dst: Optional[int] = 0, chunk_rows: int = 65536) -> Optional[Rows]:
        """Every process's ``shard`` (numpy array or tensor) concatenated along dim 0 in rank order, on rank
        ``dst`` (every rank when ``None``; the others get ``None``), as ``shard``'s type and device.

        Shards may differ in length (zero included), not in dtype or trailing shape (``ValueError`` on every
        rank). Rows travel ``chunk_rows`` per shard at a time, which bounds the communication buffers.
        """
        if not isinstance(shard, (np.ndarray, torch.Tensor)) or shard.ndim < 1:
            raise TypeError(f"gather_rows takes a numpy array or tensor with at least one dim, got {type(shard)}")
        if (dst is not None and not 0 <= dst < self.world_size) or chunk_rows < 1:
            raise ValueError(f"need dst in 0..{self.world_size - 1} or None and chunk_rows >= 1, got dst={dst} "
                             f"chunk_rows={chunk_rows}")
        if self.world_size == 1:
            return shard
        tensor = torch.from_numpy(np.ascontiguousarray(shard)) if isinstance(shard, np.ndarray) else shard
        layouts = [None] * self.world_size
        dist.all_gather_object(layouts, (len(tensor), tuple(tensor.shape[1:]), str(tensor.dtype)))
        if len({layout[1:] for layout in layouts}) > 1:
            raise ValueError("gather_rows: shards must share dtype and trailing shape, got (rows, shape, dtype) "
                             f"per rank {layouts}")
        counts = [layout[0] for layout in layouts]
        offsets = np.concatenate([[0], np.cumsum(counts)])
        receives = dst is None or dst == self.rank
        result = tensor.new_empty((int(offsets[-1]), *tensor.shape[1:])) if receives else None
        for start in range(0, max(counts), chunk_rows):
            size = min(chunk_rows, max(counts) - start)
            piece = tensor.new_zeros((size, *tensor.shape[1:]), device=self._comm_device)
            piece[:max(0, min(size, len(tensor) - start))] = tensor[start:start + size]
            pieces = [torch.empty_like(piece) for _ in counts] if receives else None
            if dst is None:
                dist.all_gather(pieces, piece)
            else:
                dist.gather(piece, pieces, dst=dst)
            if receives:
                for rank, received in enumerate(pieces):
                    rows = max(0, min(size, counts[rank] - start))
                    result[offsets[rank] + start:offsets[rank] + start + rows] = received[:rows]
        return result.numpy() if result is not None and isinstance(shard, np.ndarray) else result


def _device(name: Union[str, torch.device], launch: Optional[LaunchEnv]) -> torch.device:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r} asks for a GPU but none is available; use 'auto' or 'cpu'")
    if device.type != "cuda" or launch is None:
        return device
    if device.index is not None:
        raise ValueError(f"under torchrun each process uses cuda:LOCAL_RANK; set the device to 'cuda' or 'auto', "
                         f"not {str(name)!r}")
    if launch.local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {launch.local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                         "launch at most that many processes per machine (--nproc_per_node)")
    return torch.device("cuda", launch.local_rank)


@contextmanager
def init_distributed(device: Union[str, torch.device] = "auto", *,
                     timeout: Optional[timedelta] = None) -> Iterator[DistributedContext]:
    """Start the process group of a torchrun launch, yield this process's context, destroy the group at the end.

    Args:
        device: ``"auto"`` (GPU when available), ``"cpu"`` or ``"cuda"`` (under torchrun ``cuda:LOCAL_RANK``
            with NCCL; gloo on CPU). With one process no group starts.
        timeout: how long a collective waits for the other processes (torch's default when ``None``).

    Example:
        >>> with init_distributed("cpu") as ctx:  # outside torchrun: one process
        ...     (ctx.rank, ctx.world_size, ctx.is_main)
        (0, 1, True)
    """
    launch = read_launch_env()
    resolved = _device(device, launch)
    if launch is None or launch.world_size == 1:
        yield DistributedContext(local_rank=launch.local_rank if launch else 0, device=resolved)
        return
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(resolved)
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size, timeout=timeout,
                            device_id=resolved if backend == "nccl" else None)
    try:
        yield DistributedContext(launch.rank, launch.world_size, launch.local_rank, resolved, backend)
    finally:
        dist.destroy_process_group()


class EmbedderWithLoss(nn.Module):
    """The embedder and its loss (which holds the ArcMargin/FC head) as one module, so DDP averages both.
    ``forward(images, labels)`` returns the loss's ``(total, {name: term})``; the embedder runs under autocast
    when ``amp_dtype`` is set, the loss outside it (it computes in float32).
    """

    def __init__(self, model: nn.Module, loss: nn.Module, *, amp_dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.model, self.loss, self.amp_dtype = model, loss, amp_dtype

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        with torch.autocast(images.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            embeddings = self.model(images)
        return self.loss(embeddings, labels)


class CrossRankMinedLoss(nn.Module):
    """A stateless :class:`~prodrec.losses.MinedLoss` that mines and scores over the global batch.

    Every rank gathers all ranks' embeddings (PML ``DistributedMinerWrapper`` / ``DistributedLossWrapper``)
    and computes the loss over every anchor of the global batch; gradients reach this rank's embeddings
    only. The returned value is the global-batch loss, its gradient ``world_size`` times that, so that
    DDP's gradient averaging yields the global-batch gradient. One process: the plain mined loss.
    """

    def __init__(self, term: MinedLoss) -> None:
        super().__init__()
        self.loss = DistributedLossWrapper(term.loss)
        self.miner = None if term.miner is None else DistributedMinerWrapper(term.miner)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not dist.is_initialized():
            indices = None if self.miner is None else self.miner.miner(embeddings, labels)
            return self.loss.loss(embeddings, labels, indices)
        indices = None if self.miner is None else self.miner(embeddings, labels)
        scaled = self.loss(embeddings, labels, indices)  # PML returns world_size x the global-batch loss
        return scaled.detach() / dist.get_world_size() + (scaled - scaled.detach())


def cross_rank_loss(loss: WeightedLoss) -> WeightedLoss:
    """``loss`` with its pair/triplet terms mining over the global batch; other terms (CE heads) unchanged.
    The result shares ``loss``'s modules and its ``state_dict``.

    Raises:
        ValueError: A mined term holds parameters or buffers (a parameter's gradient would be counted
            ``world_size`` times), or no term mines pairs or triplets.
    """
    terms: Dict[str, nn.Module] = {}
    for name, term in loss.terms.items():
        if isinstance(term, MinedLoss):
            if term.state_dict():
                raise ValueError(f"Loss.Train {name}: cross-rank mining takes stateless pair/triplet losses; this "
                                 f"one holds {list(term.state_dict())} (a proxy loss?). Turn cross-rank mining off")
            term = CrossRankMinedLoss(term)
        terms[name] = term
    if not any(isinstance(term, CrossRankMinedLoss) for term in terms.values()):
        raise ValueError(f"cross-rank mining needs a pair or triplet loss (e.g. TripletLossV2) in Loss.Train; it has "
                         f"only {sorted(terms)}")
    return WeightedLoss(terms, loss.weights)


def wrap_for_training(model: nn.Module, loss: WeightedLoss, ctx: DistributedContext, *, cross_rank: bool = False,
                      sync_batchnorm: bool = False, amp_dtype: Optional[torch.dtype] = None) -> nn.Module:
    """``model`` + ``loss`` (which holds the head) as one :class:`EmbedderWithLoss` on ``ctx.device``, inside
    ``DistributedDataParallel`` when there are several processes; call it as ``total, terms = module(x, y)``.

    Args:
        cross_rank: mine pairs/triplets over the global batch (:func:`cross_rank_loss`).
        sync_batchnorm: batch-norm statistics over the global batch (GPU runs only).
        amp_dtype: autocast dtype of the embedder's forward, ``None`` for float32.
    """
    if sync_batchnorm and ctx.device.type != "cuda":
        raise ValueError("sync_batchnorm needs GPUs (torch's SyncBatchNorm runs on CUDA only); turn it off on CPU")
    if cross_rank:
        loss = cross_rank_loss(loss)
    module = EmbedderWithLoss(model, loss, amp_dtype=amp_dtype).to(ctx.device)
    if ctx.world_size == 1:
        return module
    if sync_batchnorm:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def unwrap(module: nn.Module) -> EmbedderWithLoss:
    """The :class:`EmbedderWithLoss` inside what :func:`wrap_for_training` returned."""
    return module.module if isinstance(module, DistributedDataParallel) else module
