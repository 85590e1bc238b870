"""Query-vs-gallery evaluation: embed both sets, score every query against the gallery, report Recall@K and mAP.

Semantics follow PaddleClas's In-shop protocol (see :mod:`prodrec.retrieval.metrics`): cosine similarity
of L2-normalised embeddings, a hit is any same-label gallery item in the top K, and queries whose
label has no gallery item are left out of the denominator (their count is reported).

The exact evaluation streams: queries (sorted by label) go in blocks whose scores against the
whole gallery take ``block_bytes``; each block's matches are ranked by counting the gallery items
that score higher (:func:`prodrec.retrieval.similarity_metrics`), so nothing is sorted and mAP covers
the full ranking. Features may be memory maps (:mod:`prodrec.models.feature_store`); memory then stays at
the features' pages plus one block (and a quarter block of float16 gallery rows being converted).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Union

import numpy as np

from prodrec.models import FeatureWriter, open_features
from prodrec.retrieval.metrics import NO_MATCH, LabelGroups, match_statistics, metric_summary, retrieval_metrics
from prodrec.retrieval.knn import check_matrix, float32_rows, import_faiss
from prodrec.utils import ProdrecError, check_positive_int

if TYPE_CHECKING:  # evaluating stored embeddings needs neither torch nor the models
    from prodrec.data import ImageList
    from prodrec.models import ImageEmbedder

__all__ = ["extract_embeddings", "evaluate", "evaluate_embeddings"]

_MIN_BLOCK, _MAX_BLOCK = 8 << 20, 256 << 20
_IVF_TRAIN_POINTS_PER_LIST = 64


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



def _similarities(queries: np.ndarray, gallery: np.ndarray, out: np.ndarray, chunk_rows: int, check: bool) -> None:
    """``out[:] = queries @ gallery.T``, converting (and with ``check``, checking) gallery rows by chunks
    unless the gallery is float32 already."""
    if gallery.dtype == np.float32 and gallery.flags.c_contiguous and not check:
        np.matmul(queries, gallery.T, out=out)
        return
    for start in range(0, len(gallery), chunk_rows):
        chunk = float32_rows(gallery[start:start + chunk_rows], "gallery_features", start)
        np.matmul(queries, chunk.T, out=out[:, start:start + len(chunk)])


def _exact_statistics(query_features, query_labels, gallery_features, gallery_labels, matched, compute_map,
                      block_bytes) -> tuple:
    rows = np.flatnonzero(matched)
    rows = rows[np.argsort(query_labels[rows], kind="stable")]  # one slice of each block per label
    num_gallery, dim = gallery_features.shape
    block_rows = max(1, block_bytes // (4 * num_gallery))
    chunk_rows = max(1, block_bytes // (16 * dim))
    scores = np.empty((min(block_rows, len(rows)), num_gallery), dtype=np.float32)
    groups = LabelGroups(gallery_labels)
    first_rank = np.full(len(query_labels), NO_MATCH, dtype=np.int64)
    precision_sum = np.zeros(len(query_labels))
    for start in range(0, len(rows), block_rows):
        block = rows[start:start + block_rows]
        queries = float32_rows(query_features[block], "query_features", block)
        block_scores = scores[:len(block)]
        _similarities(queries, gallery_features, block_scores, chunk_rows, check=start == 0)
        first_rank[block], precision_sum[block], _ = match_statistics(
            block_scores, query_labels[block], groups, compute_map)
    return first_rank, precision_sum, groups.count(query_labels)


def _approximate_search(query_features, gallery_features, index_type: str, depth: int, nprobe: int,
                        ef_search: int, chunk_rows: int) -> np.ndarray:
    """Gallery indices ``[Q, depth]`` (-1 where fewer were found) from a faiss ``index_type`` index."""
    from prodrec.retrieval.faiss_index import check_index_type, new_faiss_index, search_knob

    faiss = import_faiss()
    num_gallery, dim = gallery_features.shape
    index = new_faiss_index(dim, check_index_type(index_type, dim), "ip")
    if index_type.startswith("IVF"):
        lists = faiss.extract_index_ivf(index).nlist
        sample = np.random.default_rng(0).choice(num_gallery, min(num_gallery, lists * _IVF_TRAIN_POINTS_PER_LIST),
                                                 replace=False)
        index.train(float32_rows(gallery_features[np.sort(sample)], "gallery_features", np.sort(sample)))
        search_knob(index, index_type, "IVF").nprobe = nprobe
    elif index_type.startswith("HNSW"):
        search_knob(index, index_type, "HNSW").efSearch = max(ef_search, depth)
    for start in range(0, num_gallery, chunk_rows):
        chunk = float32_rows(gallery_features[start:start + chunk_rows], "gallery_features", start)
        index.add_with_ids(chunk, np.arange(start, start + len(chunk), dtype=np.int64))
    found = np.empty((len(query_features), depth), dtype=np.int64)
    for start in range(0, len(query_features), chunk_rows):
        queries = float32_rows(query_features[start:start + chunk_rows], "query_features", start)
        found[start:start + len(queries)] = index.search(queries, depth)[1]
    return found


def evaluate_embeddings(
    query_features: np.ndarray,
    query_labels: np.ndarray,
    gallery_features: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    compute_map: bool = True,
    block_bytes: Optional[int] = None,
    index_type: Optional[str] = None,
    search_top_k: int = 100,
    nprobe: int = 16,
    ef_search: int = 128,
    rerank: Optional[str] = None,
    rerank_top_k: int = 100,
) -> Dict[str, float]:
    """Recall@K and mAP of L2-normalised query vs gallery features (arrays or memory maps, float16/32).

    By default the search is exact and mAP covers the whole ranking (ties ranked by gallery index).
    With ``index_type`` or ``rerank``, each query gets a list of ``search_top_k`` / ``rerank_top_k``
    gallery items, Recall@K needs K within it, and mAP is computed over the list: the key is then
    ``"mAP@N"`` (N the list length, unless it is the whole gallery), the average precision truncated at
    rank N, divided by all of the query's matches in the gallery.

    Args:
        ks: The K of each Recall@K; a K beyond the gallery size counts the whole gallery.
        compute_map: Whether to compute mAP (exact search: one pass per query instead of one per match).
        block_bytes: Memory of one block of query-vs-gallery scores; default a quarter of the features'
            size, between 8 MiB and 256 MiB.
        index_type: Approximate search with this faiss index (:mod:`prodrec.retrieval.faiss_index`: ``"HNSW32"``,
            ``"IVF1024,Flat"``, ``"IVF1024,PQ64"``; ``"Flat"`` is exact but still list-based).
        search_top_k: List length of the ``index_type`` search.
        nprobe: Inverted lists an IVF index visits per query.
        ef_search: HNSW search breadth (at least ``search_top_k``).
        rerank: Re-rank with :func:`prodrec.retrieval.rerank` (``"k-reciprocal"`` or ``"qe"``).
        rerank_top_k: List length of the re-ranking.

    Returns:
        ``{"recall@K": ..., "mAP" (or "mAP@N"): ..., "num_queries": Q, "num_queries_without_match": M}``.
    """
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
    if index_type is not None and rerank is not None:
        raise ProdrecError("pass index_type (approximate search) or rerank, not both")
    matched = np.isin(query_labels, gallery_labels)
    if not matched.any():
        raise ProdrecError("no query label occurs in the gallery: query and gallery must share items (labels)")
    num_gallery = len(gallery_labels)
    if block_bytes is None:
        block_bytes = min(_MAX_BLOCK, max(_MIN_BLOCK, (query_features.nbytes + gallery_features.nbytes) // 4))
    block_bytes = check_positive_int(block_bytes, "block_bytes")
    if index_type is None and rerank is None:
        statistics = _exact_statistics(query_features, query_labels, gallery_features, gallery_labels, matched,
                                       compute_map, block_bytes)
        return metric_summary(*statistics, ks, "mAP" if compute_map else None, "same label")

    if rerank is None:
        depth = min(check_positive_int(search_top_k, "search_top_k"), num_gallery)
        _check_depth(ks, depth, num_gallery, "search_top_k")
        ranked = _approximate_search(query_features, gallery_features, index_type, depth,
                                     check_positive_int(nprobe, "nprobe"), check_positive_int(ef_search, "ef_search"),
                                     max(1, block_bytes // (4 * gallery_features.shape[1])))
    else:
        from prodrec.retrieval.rerank import rerank as rerank_lists

        depth = min(check_positive_int(rerank_top_k, "rerank_top_k"), num_gallery)
        _check_depth(ks, depth, num_gallery, "rerank_top_k")
        ranked = rerank_lists(np.asarray(query_features, dtype=np.float32),
                              np.asarray(gallery_features, dtype=np.float32), method=rerank, top_k=depth)[1]
    within = {k: min(k, num_gallery) for k in ks}
    result = retrieval_metrics(ranked, query_labels, gallery_labels, ks=sorted(set(within.values())),
                               compute_map=compute_map, missing_ok=True)
    recalls = {f"recall@{k}": result[f"recall@{within[k]}"] for k in ks}
    return {**recalls, **{key: value for key, value in result.items() if not key.startswith("recall@")}}


def _check_depth(ks: Sequence[int], depth: int, num_gallery: int, option: str) -> None:
    if min(max(ks), num_gallery) > depth:
        raise ProdrecError(f"recall@{max(ks)} needs lists of {max(ks)} gallery items, but they hold {depth}; raise "
                           f"{option} or drop the larger ks")


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
    block_bytes: Optional[int] = None,
    index_type: Optional[str] = None,
    search_top_k: int = 100,
    nprobe: int = 16,
    ef_search: int = 128,
    rerank: Optional[str] = None,
    rerank_top_k: int = 100,
) -> Dict[str, float]:
    """Embed ``query`` and ``gallery`` with ``model`` (any :class:`~prodrec.models.ImageEmbedder`; a PyTorch
    model embeds on its device) and return Recall@K / mAP (see :func:`evaluate_embeddings` for the search
    options).

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
        block_bytes=block_bytes, index_type=index_type, search_top_k=search_top_k, nprobe=nprobe,
        ef_search=ef_search, rerank=rerank, rerank_top_k=rerank_top_k)
