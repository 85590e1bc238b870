"""Query-vs-gallery evaluation: embed both sets, search the gallery with faiss, score the ranking.

Semantics follow PaddleClas's In-shop protocol (see :mod:`prodrec.metrics`): cosine similarity
of L2-normalised embeddings, a hit is any same-label gallery item in the top K, and queries whose
label has no gallery item are left out of the denominator (their count is reported).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from prodrec.data.dataset import ImageDataset, ImageList
from prodrec.data.transforms import eval_transform
from prodrec.metrics import retrieval_metrics
from prodrec.models import Embedder
from prodrec.search import knn_search

__all__ = ["extract_embeddings", "evaluate", "evaluate_embeddings"]

QUERY_BLOCK = 2048


def extract_embeddings(
    model: Embedder,
    images: ImageList,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    device: Union[str, torch.device, None] = None,
    channels_last: bool = True,
    progress: bool = True,
    desc: str = "embed",
) -> np.ndarray:
    """L2-normalised float32 embeddings ``[N, D]`` of a listing, with the model's eval preprocessing."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dataset = ImageDataset(images, eval_transform(model.image_size, model.mean, model.std))
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")
    was_training = model.training
    model.eval()
    features = np.empty((len(dataset), model.embedding_size), dtype=np.float32)
    start = 0
    try:
        with torch.inference_mode(), autocast:
            for batch, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
                batch = batch.to(device, non_blocking=True, memory_format=memory_format)
                out = F.normalize(model(batch).float(), dim=1).cpu().numpy()
                features[start:start + len(out)] = out
                start += len(out)
    finally:
        model.train(was_training)
    return features


def evaluate_embeddings(
    query_features: np.ndarray,
    query_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    compute_map: bool = True,
) -> Dict[str, float]:
    """Recall@K (and mAP over the full ranking) of L2-normalised query vs gallery features.

    Queries are searched in blocks so memory stays bounded when the full ranking is needed.
    """
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    if len(query_features) != len(query_labels) or len(gallery_features) != len(gallery_labels):
        raise ValueError("each feature row needs exactly one label (query and gallery)")
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    matched = np.isin(query_labels, gallery_labels)
    if not matched.any():
        raise ValueError("no query label occurs in the gallery: query and gallery must share items (labels)")
    # Recall@K with K beyond the gallery size is well defined: the whole gallery is in the top K.
    within = {k: min(k, len(gallery_labels)) for k in ks}
    depth = len(gallery_labels) if compute_map else max(within.values())
    rows = np.flatnonzero(matched)
    totals: Dict[str, float] = {}
    for start in range(0, len(rows), QUERY_BLOCK):
        block = rows[start:start + QUERY_BLOCK]
        _, ranked = knn_search(query_features[block], gallery_features, depth)
        part = retrieval_metrics(ranked, query_labels[block], gallery_labels, ks=sorted(set(within.values())),
                                 compute_map=compute_map)
        values = {f"recall@{k}": part[f"recall@{within[k]}"] for k in ks}
        if compute_map:
            values["mAP"] = part["mAP"]
        for key, value in values.items():
            totals[key] = totals.get(key, 0.0) + value * len(block)
    metrics = {key: value / len(rows) for key, value in totals.items()}
    metrics["num_queries"] = int(len(query_labels))
    metrics["num_queries_without_match"] = int((~matched).sum())
    return metrics


def evaluate(
    model: Embedder,
    query: ImageList,
    gallery: ImageList,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    compute_map: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = True,
) -> Dict[str, float]:
    """Embed ``query`` and ``gallery`` with ``model`` and return Recall@K / mAP.

    Example:
        >>> from prodrec import Embedder, evaluate  # doctest: +SKIP
        >>> from prodrec.data import read_splits  # doctest: +SKIP
        >>> splits = read_splits("inshop", "path/to/inshop")  # doctest: +SKIP
        >>> evaluate(Embedder.load("best.pt"), splits.query, splits.gallery)["recall@1"]  # doctest: +SKIP
    """
    if query.classes != gallery.classes:
        raise ValueError("query and gallery must share one label space (read them with the same reader)")
    options = dict(batch_size=batch_size, num_workers=num_workers, device=device, progress=progress)
    query_features = extract_embeddings(model, query, desc="embed query", **options)
    gallery_features = extract_embeddings(model, gallery, desc="embed gallery", **options)
    return evaluate_embeddings(
        query_features, query.labels, gallery_features, gallery.labels, ks=ks, compute_map=compute_map
    )
