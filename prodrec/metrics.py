"""Recall@K and mAP of a retrieval ranking, with PaddleClas's semantics.

PaddleClas (``ppcls/metric/metrics.py``, ``Recallk`` and ``mAP``) ranks the whole
gallery for each query, marks the ranked items whose label equals the query's label
(and whose ``keep_mask`` entry is true, when a mask is given), and leaves out every
query that has no such item. Recall@K is the share of the remaining queries with a
match among the first K items; mAP is the mean over them of
``sum_i precision@i * rel_i / num_relevant``. The values here are computed in
float64; PaddleClas computes in float32, so they agree to float32 rounding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["retrieval_metrics", "rank_by_similarity"]

# Ranked entries held per block of queries (bounds the boolean match matrix).
_BLOCK_ELEMENTS = 1 << 22


def _labels_1d(labels, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class id per item); got shape {array.shape}.")
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must hold integer class ids; got dtype {array.dtype}. Map labels to integers "
            "first, e.g. with np.unique(labels, return_inverse=True)."
        )
    return array


def _check_inputs(ranked_indices, query_labels, gallery_labels, ks, keep_mask):
    ranked = np.asarray(ranked_indices)
    queries = _labels_1d(query_labels, "query_labels")
    gallery = _labels_1d(gallery_labels, "gallery_labels")
    num_queries, num_gallery = len(queries), len(gallery)
    if num_queries == 0 or num_gallery == 0:
        raise ValueError(
            f"Need at least one query and one gallery item; got {num_queries} query labels "
            f"and {num_gallery} gallery labels."
        )
    if ranked.ndim != 2 or ranked.dtype.kind not in "iu":
        raise ValueError(
            f"ranked_indices must be an integer array [num_queries, k] of gallery indices; got "
            f"dtype {ranked.dtype} and shape {ranked.shape}. Pass the indices from knn_search."
        )
    depth = ranked.shape[1]
    if ranked.shape[0] != num_queries or not 1 <= depth <= num_gallery:
        raise ValueError(
            f"ranked_indices has shape {ranked.shape}; expected ({num_queries}, k) with "
            f"1 <= k <= {num_gallery} (one row per query label, at most the gallery size)."
        )
    if ranked.min() < 0 or ranked.max() >= num_gallery:
        raise ValueError(
            f"ranked_indices holds values in [{ranked.min()}, {ranked.max()}]; gallery indices must "
            f"lie in [0, {num_gallery - 1}]. A -1 means the search returned fewer than k results."
        )
    ks = tuple(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if bad:
        raise ValueError(f"ks must be positive integers; got {bad}.")
    too_deep = [k for k in ks if k > depth]
    if too_deep:
        raise ValueError(
            f"recall@{max(too_deep)} needs the top {max(too_deep)} results, but the ranking holds "
            f"only {depth} per query. Rank deeper (knn_search with k >= {max(ks)}) or drop "
            f"{too_deep} from ks."
        )
    if keep_mask is not None:
        keep_mask = np.asarray(keep_mask)
        if keep_mask.dtype != np.bool_ or keep_mask.shape != (num_queries, num_gallery):
            raise ValueError(
                f"keep_mask must be a bool array of shape ({num_queries}, {num_gallery}) "
                f"[queries, gallery]; got dtype {keep_mask.dtype} and shape {keep_mask.shape}. "
                "Convert with .astype(bool)."
            )
    return ranked, queries, gallery, ks, keep_mask


def _count_relevant(queries: np.ndarray, gallery: np.ndarray, keep_mask, rows: slice) -> np.ndarray:
    """Number of gallery items that count as matches, for the queries in ``rows``."""
    same = queries[rows, None] == gallery[None, :]
    if keep_mask is not None:
        same &= keep_mask[rows]
    return same.sum(axis=1)


def retrieval_metrics(
    ranked_indices: np.ndarray,
    query_labels: Sequence[int] | np.ndarray,
    gallery_labels: Sequence[int] | np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    keep_mask: np.ndarray | None = None,
    compute_map: bool = True,
) -> dict[str, float]:
    """Recall@K and mAP of a ranking, as PaddleClas's ``Recallk`` and ``mAP`` compute them.

    A ranked gallery item is a match when its label equals the query's label and, if
    ``keep_mask`` is given, ``keep_mask[query, item]`` is true. Queries without any
    match in the gallery are left out of every average and counted in
    ``num_queries_without_match``. Self-matches are not removed.

    For PaddleClas's re-id protocol (``keep_mask`` false for same label and same
    camera), rank ``similarity * keep_mask`` (masked pairs keep similarity 0 and stay
    in the ranking) and pass the same ``keep_mask`` here.

    Args:
        ranked_indices: Integer array [Q, k], gallery indices best first, each row
            distinct. ``k`` may be smaller than the gallery size G.
        query_labels: Integer class id of each query, length Q.
        gallery_labels: Integer class id of each gallery item, length G.
        ks: The K of each Recall@K; every K must be at most ``k``.
        keep_mask: Optional bool array [Q, G]; false pairs never count as matches.
        compute_map: Whether to compute mAP.

    Returns:
        ``{"recall@K": ..., "mAP": ..., "num_queries": Q, "num_queries_without_match": M}``.
        With ``k == G`` the key is ``"mAP"`` and equals PaddleClas's full-ranking mAP.
        With ``k < G`` it is ``"mAP@k"``: the average precision truncated at rank k,
        still divided by the full number of matches in the gallery (so a match beyond
        rank k lowers it).

    Raises:
        ValueError: On malformed input, a K deeper than the ranking, or when no query
            has a match in the gallery.
    """
    ranked, queries, gallery, ks, keep_mask = _check_inputs(
        ranked_indices, query_labels, gallery_labels, ks, keep_mask
    )
    num_queries, depth = ranked.shape
    first_hit = np.empty(num_queries, dtype=np.int64)  # rank of the first match; depth if none
    num_relevant = np.empty(num_queries, dtype=np.int64)
    average_precision = np.empty(num_queries, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // max(depth, len(gallery)))
    for start in range(0, num_queries, block):
        rows = slice(start, min(start + block, num_queries))
        hits = gallery[ranked[rows]] == queries[rows, None]
        if keep_mask is not None:
            hits &= np.take_along_axis(keep_mask[rows], ranked[rows], axis=1)
        num_relevant[rows] = _count_relevant(queries, gallery, keep_mask, rows)
        hit_rows, hit_cols = np.nonzero(hits)
        hits_per_row = np.bincount(hit_rows, minlength=hits.shape[0])
        if np.any(hits_per_row > num_relevant[rows]):
            raise ValueError(
                "ranked_indices lists some gallery index more than once in a row; each row must "
                "rank distinct gallery items."
            )
        has_hit = hits_per_row > 0
        first_hit[rows] = np.where(has_hit, hits.argmax(axis=1), depth)
        if compute_map:
            # np.nonzero walks row-major, so a hit's rank among its row's hits is its
            # position minus the position of the row's first hit, plus one.
            row_starts = np.cumsum(hits_per_row) - hits_per_row
            hit_number = np.arange(len(hit_rows)) - row_starts[hit_rows] + 1
            precision_sum = np.bincount(
                hit_rows, weights=hit_number / (hit_cols + 1.0), minlength=hits.shape[0]
            )
            average_precision[rows] = precision_sum

    valid = num_relevant > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"None of the {num_queries} queries has a matching gallery item (same label"
            f"{' and keep_mask true' if keep_mask is not None else ''}), so Recall@K and mAP are "
            "undefined. Check that query and gallery labels use the same ids."
        )
    result: dict[str, float] = {
        f"recall@{k}": float(np.count_nonzero(first_hit[valid] < k) / num_valid) for k in ks
    }
    if compute_map:
        key = "mAP" if depth == len(gallery) else f"mAP@{depth}"
        result[key] = float(np.mean(average_precision[valid] / num_relevant[valid]))
    result["num_queries"] = num_queries
    result["num_queries_without_match"] = num_queries - num_valid
    return result


def rank_by_similarity(similarity: np.ndarray, k: int | None = None) -> np.ndarray:
    """Gallery indices sorted by descending similarity (stable: ties keep index order).

    Sorts the whole [Q, G] matrix, so it suits small matrices and tests; use
    :func:`prodrec.search.knn_search` for real galleries.

    Args:
        similarity: Float array [Q, G], larger is more similar.
        k: Keep the first ``k`` columns (default: all G).

    Returns:
        int64 array [Q, k].
    """
    similarity = np.asarray(similarity)
    if similarity.ndim != 2 or similarity.dtype.kind != "f" or similarity.size == 0:
        raise ValueError(
            f"similarity must be a non-empty float array [queries, gallery]; got dtype "
            f"{similarity.dtype} and shape {similarity.shape}."
        )
    if not np.isfinite(similarity).all():
        raise ValueError("similarity holds NaN or infinite values; they have no rank.")
    num_gallery = similarity.shape[1]
    if k is None:
        k = num_gallery
    if not 1 <= k <= num_gallery:
        raise ValueError(f"k must lie in [1, {num_gallery}] (the gallery size); got {k}.")
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k].astype(np.int64, copy=False)
