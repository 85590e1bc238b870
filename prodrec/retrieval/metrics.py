"""Recall@K and mAP of a retrieval ranking, with PaddleClas's semantics.

PaddleClas (``ppcls/metric/metrics.py``, ``Recallk`` and ``mAP``) ranks the whole
gallery for each query, marks the ranked items whose label equals the query's label
(and whose ``keep_mask`` entry is true, when a mask is given), and leaves out every
query that has no such item. Recall@K is the share of the remaining queries with a
match among the first K items; mAP is the mean over them of
``sum_i precision@i * rel_i / num_relevant``. The values here are computed in
float64; PaddleClas computes in float32, so they agree to float32 rounding.

:func:`retrieval_metrics` scores a ranking (e.g. faiss's top k). :func:`similarity_metrics` scores a
similarity matrix without sorting it: a match's rank is one plus the number of gallery items that score
higher, or equally high at a smaller gallery index (the order :func:`rank_by_similarity` gives), counted
with one comparison pass per match; the evaluation runs it on blocks of queries
(:mod:`prodrec.retrieval.evaluate`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from prodrec.retrieval.ranks import LabelGroups, MatchStatistics, list_statistics, match_statistics
from prodrec.utils import ProdrecError

__all__ = ["retrieval_metrics", "similarity_metrics", "rank_by_similarity", "metric_summary"]


def _labels_1d(labels, name: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ProdrecError(f"{name} must be 1-D (one class id per item); got shape {array.shape}.")
    if array.dtype.kind not in "iu":
        raise ProdrecError(f"{name} must hold integer class ids; got dtype {array.dtype}. Map labels to integers "
                           "first, e.g. with np.unique(labels, return_inverse=True).")
    return array


def _check_ks(ks) -> tuple:
    ks = tuple(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if bad or not ks:
        raise ProdrecError(f"ks must be positive integers; got {bad or 'none'}.")
    return ks


def _check_inputs(ranked_indices, query_labels, gallery_labels, ks, keep_mask, missing_ok):
    ranked = np.asarray(ranked_indices)
    queries = _labels_1d(query_labels, "query_labels")
    gallery = _labels_1d(gallery_labels, "gallery_labels")
    num_queries, num_gallery = len(queries), len(gallery)
    if num_queries == 0 or num_gallery == 0:
        raise ProdrecError(f"Need at least one query and one gallery item; got {num_queries} query labels "
                           f"and {num_gallery} gallery labels.")
    if ranked.ndim != 2 or ranked.dtype.kind not in "iu":
        raise ProdrecError(f"ranked_indices must be an integer array [num_queries, k] of gallery indices; got "
                           f"dtype {ranked.dtype} and shape {ranked.shape}. Pass the indices from knn_search.")
    depth = ranked.shape[1]
    if ranked.shape[0] != num_queries or not 1 <= depth <= num_gallery:
        raise ProdrecError(f"ranked_indices has shape {ranked.shape}; expected ({num_queries}, k) with "
                           f"1 <= k <= {num_gallery} (one row per query label, at most the gallery size).")
    lowest = -1 if missing_ok else 0
    if ranked.min() < lowest or ranked.max() >= num_gallery:
        raise ProdrecError(
            f"ranked_indices holds values in [{ranked.min()}, {ranked.max()}]; gallery indices must "
            f"lie in [{lowest}, {num_gallery - 1}]. A -1 means the search returned fewer than k results "
            "(pass missing_ok=True to count it as a miss)."
        )
    ks = _check_ks(ks)
    too_deep = [k for k in ks if k > depth]
    if too_deep:
        raise ProdrecError(f"recall@{max(too_deep)} needs the top {max(too_deep)} results, but the ranking holds "
                           f"only {depth} per query. Rank deeper (knn_search with k >= {max(ks)}) or drop "
                           f"{too_deep} from ks.")
    if keep_mask is not None:
        keep_mask = np.asarray(keep_mask)
        if keep_mask.dtype != np.bool_ or keep_mask.shape != (num_queries, num_gallery):
            raise ProdrecError(f"keep_mask must be a bool array of shape ({num_queries}, {num_gallery}) "
                               f"[queries, gallery]; got dtype {keep_mask.dtype} and shape {keep_mask.shape}. "
                               "Convert with .astype(bool).")
    return ranked, queries, gallery, ks, keep_mask


def metric_summary(statistics: MatchStatistics, ks: Sequence[int], *, compute_map: bool = True,
                   no_match_reason: str = "same label") -> dict[str, float]:
    """Recall@K (a K beyond a full ranking counts the whole gallery) and mAP (``"mAP@N"`` over lists of N)
    from :class:`~prodrec.retrieval.ranks.MatchStatistics`; queries without a match are left out and counted."""
    num_relevant = statistics.num_relevant
    valid = num_relevant > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ProdrecError(f"None of the {len(num_relevant)} queries has a matching gallery item ({no_match_reason}), "
                           "so Recall@K and mAP are undefined. Check that query and gallery labels use the same ids.")
    result: dict[str, float] = {f"recall@{k}": float(np.count_nonzero(statistics.first_rank[valid] <= k) / num_valid)
                                for k in ks}
    if compute_map:
        key = "mAP" if statistics.depth is None else f"mAP@{statistics.depth}"
        result[key] = float(np.mean(statistics.precision_sum[valid] / num_relevant[valid]))
    result["num_queries"] = len(num_relevant)
    result["num_queries_without_match"] = len(num_relevant) - num_valid
    return result


def retrieval_metrics(
    ranked_indices: np.ndarray,
    query_labels: Sequence[int] | np.ndarray,
    gallery_labels: Sequence[int] | np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    keep_mask: np.ndarray | None = None,
    compute_map: bool = True,
    missing_ok: bool = False,
) -> dict[str, float]:
    """Recall@K and mAP of a ranking, as PaddleClas's ``Recallk`` and ``mAP`` compute them.

    A ranked gallery item is a match when its label equals the query's label and, if ``keep_mask`` is given,
    ``keep_mask[query, item]`` is true. Queries without any match in the gallery are left out of every
    average and counted in ``num_queries_without_match``. Self-matches are not removed.

    For PaddleClas's re-id protocol (``keep_mask`` false for same label and same camera), rank
    ``similarity * keep_mask`` (masked pairs keep similarity 0 and stay in the ranking) and pass the same
    ``keep_mask`` here.

    Args:
        ranked_indices: Integer array [Q, k], gallery indices best first, each row distinct. ``k`` may be
            smaller than the gallery size G.
        query_labels: Integer class id of each query, length Q.
        gallery_labels: Integer class id of each gallery item, length G.
        ks: The K of each Recall@K; every K must be at most ``k``.
        keep_mask: Optional bool array [Q, G]; false pairs never count as matches.
        compute_map: Whether to compute mAP.
        missing_ok: Accept ``-1`` entries (a search that found fewer than k items) as misses.

    Returns:
        ``{"recall@K": ..., "mAP": ..., "num_queries": Q, "num_queries_without_match": M}``. With ``k == G``
        the key is ``"mAP"`` and equals PaddleClas's full-ranking mAP. With ``k < G`` it is ``"mAP@k"``: the
        average precision truncated at rank k, still divided by the full number of matches in the gallery
        (so a match beyond rank k lowers it).

    Raises:
        ValueError: On malformed input, a K deeper than the ranking, or when no query has a match.
    """
    ranked, queries, gallery, ks, keep_mask = _check_inputs(ranked_indices, query_labels, gallery_labels, ks,
                                                            keep_mask, missing_ok)
    statistics = list_statistics(ranked, queries, gallery, compute_map=compute_map, keep_mask=keep_mask)
    reason = "same label and keep_mask true" if keep_mask is not None else "same label"
    return metric_summary(statistics, ks, compute_map=compute_map, no_match_reason=reason)


def similarity_metrics(
    similarity: np.ndarray,
    query_labels: Sequence[int] | np.ndarray,
    gallery_labels: Sequence[int] | np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10, 20),
    compute_map: bool = True,
) -> dict[str, float]:
    """Recall@K and full-ranking mAP straight from a similarity matrix, without sorting it.

    Equal to ``retrieval_metrics(rank_by_similarity(similarity), ...)`` (ties ranked by gallery
    index), at the cost of one comparison pass over a query's row per match instead of a sort.
    A K beyond the gallery size counts the whole gallery.

    Args:
        similarity: Float array [Q, G], larger is more similar.
        query_labels: Integer class id of each query, length Q.
        gallery_labels: Integer class id of each gallery item, length G.
        ks: The K of each Recall@K.
        compute_map: Whether to compute mAP (without it, one pass per query).

    Returns:
        ``{"recall@K": ..., "mAP": ..., "num_queries": Q, "num_queries_without_match": M}``.
    """
    similarity = _similarity_2d(similarity)
    queries = _labels_1d(query_labels, "query_labels")
    gallery = _labels_1d(gallery_labels, "gallery_labels")
    if similarity.shape != (len(queries), len(gallery)):
        raise ProdrecError(f"similarity has shape {similarity.shape}; expected ({len(queries)}, {len(gallery)}) "
                           "[query labels, gallery labels].")
    ks = _check_ks(ks)
    statistics = match_statistics(similarity, queries, LabelGroups(gallery), compute_map)
    return metric_summary(statistics, ks, compute_map=compute_map)


def _similarity_2d(similarity) -> np.ndarray:
    similarity = np.asarray(similarity)
    if similarity.ndim != 2 or similarity.dtype.kind != "f" or similarity.size == 0:
        raise ProdrecError(f"similarity must be a non-empty float array [queries, gallery]; got dtype "
                           f"{similarity.dtype} and shape {similarity.shape}.")
    if not np.isfinite(similarity).all():
        raise ProdrecError("similarity holds NaN or infinite values; they have no rank.")
    return similarity


def rank_by_similarity(similarity: np.ndarray, k: int | None = None) -> np.ndarray:
    """Gallery indices sorted by descending similarity (stable: ties keep index order).

    Sorts the whole [Q, G] matrix, so it suits small matrices and tests; use
    :func:`prodrec.retrieval.knn_search` for real galleries.

    Args:
        similarity: Float array [Q, G], larger is more similar.
        k: Keep the first ``k`` columns (default: all G).

    Returns:
        int64 array [Q, k].
    """
    similarity = _similarity_2d(similarity)
    num_gallery = similarity.shape[1]
    if k is None:
        k = num_gallery
    if not 1 <= k <= num_gallery:
        raise ProdrecError(f"k must lie in [1, {num_gallery}] (the gallery size); got {k}.")
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k].astype(np.int64, copy=False)
