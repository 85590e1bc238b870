"""torch.distributed launch and collectives: the torchrun environment, the process group, and a context whose
collectives (stop agreement, means, broadcasts, row gathers) are no-ops in a single process.

``with init_distributed() as ctx:`` starts the process group of a torchrun launch (NCCL on ``cuda:LOCAL_RANK``,
gloo on CPU) and destroys it on the way out, errors included; outside torchrun ``ctx`` is a single process
whose collectives are no-ops, so the same code runs either way. See ``docs/distributed.md``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, TypeVar, Union

import numpy as np
import torch
import torch.distributed as dist
from prodrec.utils import ProdrecError, ProdrecTypeError
__all__ = ["LaunchEnv", "read_launch_env", "DistributedContext", "init_distributed"]

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
        raise ProdrecError("incomplete torch.distributed launch environment: " + "; ".join(problems)
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
            raise ProdrecTypeError(f"gather_rows takes a numpy array or tensor with at least one dim, got "
                                   f"{type(shard)}")
        if (dst is not None and not 0 <= dst < self.world_size) or chunk_rows < 1:
            raise ProdrecError(f"need dst in 0..{self.world_size - 1} or None and chunk_rows >= 1, got dst={dst} "
                               f"chunk_rows={chunk_rows}")
        if self.world_size == 1:
            return shard
        tensor = torch.from_numpy(np.ascontiguousarray(shard)) if isinstance(shard, np.ndarray) else shard
        layouts = [None] * self.world_size
        dist.all_gather_object(layouts, (len(tensor), tuple(tensor.shape[1:]), str(tensor.dtype)))
        if len({layout[1:] for layout in layouts}) > 1:
            raise ProdrecError("gather_rows: shards must share dtype and trailing shape, got (rows, shape, dtype) "
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
        raise ProdrecError(f"device {str(name)!r} asks for a GPU but no CUDA GPU is available; use 'auto' or 'cpu'")
    if device.type != "cuda" or launch is None:
        return device
    if device.index is not None:
        raise ProdrecError(f"under torchrun each process uses cuda:LOCAL_RANK; set the device to 'cuda' or 'auto', "
                           f"not {str(name)!r}")
    if launch.local_rank >= torch.cuda.device_count():
        raise ProdrecError(f"LOCAL_RANK {launch.local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
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
