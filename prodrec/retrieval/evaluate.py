"""The evaluator: embed query and gallery, rank the gallery for each query with a searcher
(:mod:`prodrec.retrieval.search`), report Recall@K and mAP.

Semantics follow PaddleClas's In-shop protocol (see :mod:`prodrec.retrieval.metrics`): cosine similarity
of L2-normalised embeddings, a hit is any same-label gallery item in the top K, and queries whose
label has no gallery item are left out of the denominator (their count is reported). Features may be
memory maps (:mod:`prodrec.models.feature_store`); the default exact search streams them.
"""
from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Union

import numpy as np

from prodrec.models import FeatureWriter, open_features
from prodrec.retrieval.knn import check_matrix
from prodrec.retrieval.metrics import metric_summary
from prodrec.retrieval.search import ExactSearch, FaissSearch, RerankedSearch, Searcher
from prodrec.utils import ProdrecError, ProdrecTypeError

if TYPE_CHECKING:  # evaluating stored embeddings needs neither torch nor the models
    from prodrec.data import ImageList
    from prodrec.models import ImageEmbedder

__all__ = ["extract_embeddings", "evaluate", "evaluate_embeddings"]



def extract_embeddings(
    model: ImageEmbedder,
    images: ImageList,
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "embed",
    out: Union[str, os.PathLike, None] = None,
    dtype: str = "float32",
    decode_size: Optional[int] = None,
) -> np.ndarray:
    """L2-normalised embeddings ``[N, D]`` of a listing by any :class:`~prodrec.models.ImageEmbedder`
    (PyTorch on its device, or exported), with its evaluation preprocessing, in a DataLoader.

    Args:
        decode_size: Decode JPEGs at 1/2, 1/4 or 1/8 size while their shorter side stays at least this
            (:class:`prodrec.data.ImageDataset`); ``model.image_size`` is the fastest that keeps the detail
            the resize keeps, but the pixels differ slightly from a full decode (and from
            :meth:`~prodrec.models.ImageEmbedder.embed`). None decodes at full size.
        out: Write them batch by batch to this ``.npy`` file (:class:`prodrec.models.FeatureWriter`)
            and return it memory-mapped, read-only; None keeps them in memory as float32.
        dtype: Storage type of ``out``: ``"float32"`` or ``"float16"``.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from prodrec.data import ImageDataset

    dataset = ImageDataset(images, model.transform(), decode_size=decode_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=torch.cuda.is_available())
    writer = FeatureWriter(out, len(dataset), model.embedding_size, dtype=dtype) if out is not None else None
    features = np.empty((len(dataset), model.embedding_size), dtype=np.float32) if writer is None else None
    start = 0
    try:
        for batch, _ in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            rows = model.embed_batch(batch).numpy()
            if writer is None:
                features[start:start + len(rows)] = rows
            else:
                writer.write(rows)
            start += len(rows)
        if writer is not None:
            return open_features(writer.close())
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return features

_LEGACY_OPTIONS = {"block_bytes", "index_type", "search_top_k", "nprobe", "ef_search", "rerank", "rerank_top_k"}


def evaluate_embeddings(
    query_features: np.ndarray,
    query_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    compute_map: bool = True,
    searcher: Optional[Searcher] = None,
    **legacy_options: Any,
) -> Dict[str, float]:
    """Recall@K and mAP of L2-normalised query vs gallery features (arrays or memory maps, float16/32).

    The ``searcher`` ranks the gallery for each query: :class:`~prodrec.retrieval.ExactSearch` by default
    (the whole ranking; mAP over it, ties ranked by gallery index), or a list-based one
    (:class:`~prodrec.retrieval.FaissSearch`, :class:`~prodrec.retrieval.RerankedSearch`), whose Recall@K
    needs K within its lists and whose mAP is ``"mAP@N"`` over lists of N (unless N is the whole gallery).

    Args:
        ks: The K of each Recall@K; a K beyond the gallery size counts the whole gallery.
        compute_map: Whether to compute mAP (exact search: a few more candidates per query).
        searcher: A :class:`~prodrec.retrieval.Searcher`; None is ``ExactSearch()``.
        legacy_options: 0.1's ``block_bytes``, ``index_type``, ``search_top_k``, ``nprobe``, ``ef_search``,
            ``rerank`` and ``rerank_top_k`` still work, with a DeprecationWarning naming the searcher to pass.

    Returns:
        ``{"recall@K": ..., "mAP" (or "mAP@N"): ..., "num_queries": Q, "num_queries_without_match": M}``.

    Example:
        >>> import numpy as np
        >>> from prodrec.retrieval import evaluate_embeddings, FaissSearch
        >>> features = np.eye(4, dtype=np.float32)
        >>> evaluate_embeddings(features, [0, 1, 2, 3], features, [0, 1, 2, 3], ks=[1])["recall@1"]
        1.0
        >>> evaluate_embeddings(features, [0, 1, 2, 3], features, [0, 1, 2, 3], ks=[1],
        ...                     searcher=FaissSearch("Flat", top_k=2))["mAP"]
        1.0
    """
    if legacy_options:
        searcher = _legacy_searcher(searcher, legacy_options)
    searcher = ExactSearch() if searcher is None else searcher
    if not isinstance(searcher, Searcher):
        raise ProdrecTypeError(f"searcher must be a prodrec.retrieval.Searcher (ExactSearch(), FaissSearch(...), "
                               f"...), got {type(searcher).__name__}")
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    query_features = check_matrix(query_features, "query_features")
    gallery_features = check_matrix(gallery_features, "gallery_features")
    if len(query_features) != len(query_labels) or len(gallery_features) != len(gallery_labels):
        raise ProdrecError("each feature row needs exactly one label (query and gallery)")
    if query_features.shape[1] != gallery_features.shape[1]:
        raise ProdrecError(f"query features have dimension {query_features.shape[1]} but gallery features "
                           f"{gallery_features.shape[1]}; embed both with the same model")
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ProdrecError(f"ks must be positive integers, got {ks}")
    if not np.isin(query_labels, gallery_labels).any():
        raise ProdrecError("no query label occurs in the gallery: query and gallery must share items (labels)")
    statistics = searcher.statistics(query_features, query_labels, gallery_features, gallery_labels, ks=ks,
                                     compute_map=compute_map)
    return metric_summary(statistics, ks, compute_map=compute_map)


def _legacy_searcher(searcher: Optional[Searcher], options: Dict[str, Any]) -> Searcher:
    """The searcher that 0.1's keyword options describe."""
    unknown = sorted(set(options) - _LEGACY_OPTIONS)
    if unknown:
        raise ProdrecTypeError(f"evaluate_embeddings() got unexpected keyword arguments {unknown}")
    if searcher is not None:
        raise ProdrecError(f"pass a searcher or 0.1's options {sorted(options)}, not both")
    if options.get("index_type") is not None and options.get("rerank") is not None:
        raise ProdrecError("pass index_type (approximate search) or rerank, not both")
    if options.get("index_type") is not None:
        searcher = FaissSearch(options["index_type"], top_k=options.get("search_top_k", 100),
                               nprobe=options.get("nprobe", 16), ef_search=options.get("ef_search", 128))
    elif options.get("rerank") is not None:
        searcher = RerankedSearch(options["rerank"], top_k=options.get("rerank_top_k", 100))
    else:
        searcher = ExactSearch(block_bytes=options.get("block_bytes"))
    warnings.warn(f"evaluate options {sorted(options)} are deprecated; pass searcher={searcher!r}",
                  DeprecationWarning, stacklevel=3)
    return searcher


def evaluate(
    model: ImageEmbedder,
    query: ImageList,
    gallery: ImageList,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    compute_map: bool = True,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    features_dir: Union[str, os.PathLike, None] = None,
    feature_dtype: str = "float32",
    searcher: Optional[Searcher] = None,
    **legacy_options: Any,
) -> Dict[str, float]:
    """Embed ``query`` and ``gallery`` with ``model`` (any :class:`~prodrec.models.ImageEmbedder`; a PyTorch
    model embeds on its device) and return Recall@K / mAP with ``searcher`` (see :func:`evaluate_embeddings`).

    Args:
        features_dir: Write the embeddings to ``query.npy`` and ``gallery.npy`` there (memory-mapped,
            ``feature_dtype``) instead of holding them in memory.
        feature_dtype: ``"float32"`` or ``"float16"`` (with ``features_dir``).

    Example:
        >>> from prodrec import Embedder, evaluate  # doctest: +SKIP
        >>> from prodrec.data import read_splits  # doctest: +SKIP
        >>> splits = read_splits("inshop", "path/to/inshop")  # doctest: +SKIP
        >>> evaluate(Embedder.load("best.pt"), splits.query, splits.gallery)["recall@1"]  # doctest: +SKIP
    """
    if query.classes != gallery.classes:
        raise ProdrecError("query and gallery must share one label space (read them with the same reader)")
    options = dict(batch_size=batch_size, num_workers=num_workers, progress=progress)
    features = {}
    for name, images in (("query", query), ("gallery", gallery)):
        out = None if features_dir is None else os.path.join(features_dir, f"{name}.npy")
        features[name] = extract_embeddings(model, images, desc=f"embed {name}", out=out, dtype=feature_dtype,
                                            **options)
    return evaluate_embeddings(
        features["query"], query.labels, features["gallery"], gallery.labels, ks=ks, compute_map=compute_map,
        searcher=searcher, **legacy_options)
