"""The model across processes: DistributedDataParallel over the embedder and its loss (which holds the ArcMargin/FC
head), optionally with pair/triplet mining over the global batch (pytorch-metric-learning's distributed wrappers),
and evaluation with each rank embedding and searching a shard (the one evaluator with a :class:`ShardedSearch`).
See ``docs/distributed.md``.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from prodrec.data import ImageList
from prodrec.losses import MinedLoss, WeightedLoss
from prodrec.models import Embedder
from prodrec.retrieval import (ExactSearch, MatchStatistics, Searcher, classification_accuracy, evaluate_embeddings,
                               extract_embeddings)
from prodrec.train.distributed import DistributedContext
from prodrec.utils import ProdrecError

__all__ = ["EmbedderWithLoss", "CrossRankMinedLoss", "cross_rank_loss", "wrap_for_training", "unwrap",
           "broadcast_buffers", "ShardedSearch", "evaluate_sharded"]


class EmbedderWithLoss(nn.Module):
    """The embedder and its loss (which holds the ArcMargin/FC head) as one module, so DDP averages both.
    ``forward(images, labels)`` returns the loss's ``(total, {name: term})``; the embedder runs under autocast
    when ``amp_dtype`` is set, the loss outside it (it computes in float32). With ``compile`` the embedder's
    forward runs through ``torch.compile`` (the module, its parameters and state-dict keys stay the same).
    """

    def __init__(self, model: nn.Module, loss: nn.Module, *, amp_dtype: Optional[torch.dtype] = None,
                 compile: bool = False) -> None:
        super().__init__()
        self.model, self.loss, self.amp_dtype = model, loss, amp_dtype
        # Not a submodule: the compiled wrapper would list the embedder's parameters a second time.
        object.__setattr__(self, "embed", torch.compile(model) if compile else model)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            embeddings = self.embed(images)
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
                raise ProdrecError(f"Loss.Train {name}: cross-rank mining takes stateless pair/triplet losses; this "
                                   f"one holds {list(term.state_dict())} (a proxy loss?). Turn cross-rank mining off")
            term = CrossRankMinedLoss(term)
        terms[name] = term
    if not any(isinstance(term, CrossRankMinedLoss) for term in terms.values()):
        raise ProdrecError(f"cross-rank mining needs a pair or triplet loss (e.g. TripletLossV2) in Loss.Train; it has "
                           f"only {sorted(terms)}")
    return WeightedLoss(terms, loss.weights)


def wrap_for_training(model: nn.Module, loss: WeightedLoss, ctx: DistributedContext, *, cross_rank: bool = False,
                      sync_batchnorm: bool = False, amp_dtype: Optional[torch.dtype] = None,
                      compile: bool = False) -> nn.Module:
    """``model`` + ``loss`` (which holds the head) as one :class:`EmbedderWithLoss` on ``ctx.device``, inside
    ``DistributedDataParallel`` when there are several processes; call it as ``total, terms = module(x, y)``.

    Args:
        cross_rank: mine pairs/triplets over the global batch (:func:`cross_rank_loss`).
        sync_batchnorm: batch-norm statistics over the global batch (GPU runs only).
        amp_dtype: autocast dtype of the embedder's forward, ``None`` for float32.
        compile: run the embedder's forward through ``torch.compile``.
    """
    if sync_batchnorm and ctx.device.type != "cuda":
        raise ProdrecError("sync_batchnorm needs GPUs (torch's SyncBatchNorm runs on CUDA only); turn it off on CPU")
    if cross_rank:
        loss = cross_rank_loss(loss)
    if sync_batchnorm and ctx.world_size > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the BN layers inside model in place
    module = EmbedderWithLoss(model.to(ctx.device), loss.to(ctx.device), amp_dtype=amp_dtype, compile=compile)
    if ctx.world_size == 1:
        return module
    return DistributedDataParallel(module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def unwrap(module: nn.Module) -> EmbedderWithLoss:
    """The :class:`EmbedderWithLoss` inside what :func:`wrap_for_training` returned."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def broadcast_buffers(module: nn.Module, ctx: DistributedContext) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) into ``module`` on every rank.

    DDP does so only before each training forward, which then updates each rank's copy with its own batch:
    after the last step the ranks' statistics differ, so call this before the ranks evaluate their shards.
    """
    if ctx.world_size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


class ShardedSearch(Searcher):
    """``searcher`` (default :class:`~prodrec.retrieval.ExactSearch`) over this process's contiguous share of the
    queries against the whole gallery; every process gets every query's statistics, so the evaluator reports the
    same metrics on every rank. In one process it is ``searcher`` itself.

    Example:
        >>> metrics = evaluate_embeddings(queries, query_labels, gallery, gallery_labels,  # doctest: +SKIP
        ...                               searcher=ShardedSearch(ctx))
    """

    def __init__(self, ctx: DistributedContext, searcher: Optional[Searcher] = None) -> None:
        self.ctx, self.searcher = ctx, ExactSearch() if searcher is None else searcher

    def __repr__(self) -> str:
        return f"ShardedSearch(rank {self.ctx.rank} of {self.ctx.world_size}, {self.searcher!r})"

    def statistics(self, query_features, query_labels, gallery_features, gallery_labels, *, ks, compute_map):
        part = self.ctx.shard(len(query_labels))
        mine = self.searcher.statistics(query_features[part.start:part.stop], query_labels[part.start:part.stop],
                                        gallery_features, gallery_labels, ks=ks, compute_map=compute_map)
        gathered = (self.ctx.gather_rows(np.ascontiguousarray(getattr(mine, name)), dst=None)
                    for name in ("first_rank", "precision_sum", "num_relevant"))
        return MatchStatistics(*gathered, depth=mine.depth)


def evaluate_sharded(model: Embedder, query: ImageList, gallery: ImageList, ctx: DistributedContext, *,
                     ks: Sequence[int] = (1, 5), compute_map: bool = True, head: Optional[nn.Module] = None,
                     topk: Sequence[int] = (), batch_size: int = 64, num_workers: int = 0,
                     progress: bool = True) -> Dict[str, float]:
    """Recall@K / mAP of ``model`` (and top-k accuracy of ``head`` on ``query`` for each of ``topk``, as
    ``top<k>``), the same on every rank. Each rank embeds its ``ctx.shard`` of both listings (after taking rank 0's
    batch-norm statistics); every rank gets all features and searches its share of the queries
    (:class:`ShardedSearch`) in :func:`~prodrec.retrieval.evaluate_embeddings`, the one evaluator.
    """
    broadcast_buffers(model, ctx)
    options = dict(batch_size=batch_size, num_workers=num_workers, progress=progress)
    features = {name: ctx.gather_rows(extract_embeddings(model, _shard(images, ctx), desc=f"embed {name}", **options),
                                      dst=None)
                for name, images in (("query", query), ("gallery", gallery))}
    metrics = evaluate_embeddings(features["query"], query.labels, features["gallery"], gallery.labels, ks=ks,
                                  compute_map=compute_map, searcher=ShardedSearch(ctx))
    if topk:
        mine = _shard(query, ctx)
        found = classification_accuracy(model, head, mine, ks=topk, **options) if len(mine) else {}
        correct = ctx.mean({f"top{k}": found.get(f"top{k}", 0.0) * len(mine) for k in topk})
        metrics.update({name: value * ctx.world_size / len(query) for name, value in correct.items()})
    return metrics


def _shard(images: ImageList, ctx: DistributedContext) -> ImageList:
    """This process's contiguous share of a listing (the listing itself in a single process)."""
    if ctx.world_size == 1:
        return images
    part = ctx.shard(len(images))
    return ImageList(images.paths[part.start:part.stop], images.labels[part.start:part.stop], images.classes)
