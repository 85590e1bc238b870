"""Where each query's matches rank: from a block of similarity scores (without sorting the gallery) or from
ranked lists, as :class:`MatchStatistics` that :func:`prodrec.retrieval.metric_summary` turns into Recall@K
and mAP.

The order is PaddleClas's: descending score, equal scores by ascending gallery index. From scores, a match's
rank is one plus the gallery items that come before it. :func:`match_statistics` finds them in one
comparison pass per query: only items scoring at least as high as the query's last match (its best match,
without mAP) can come before a match, and those few candidates are sorted. A query with many candidates
(a poor model ranks matches deep) is counted instead, one comparison pass per match, whichever is cheaper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from prodrec.utils import ProdrecError

__all__ = ["NO_MATCH", "LabelGroups", "MatchStatistics", "match_statistics", "list_statistics"]

NO_MATCH = np.iinfo(np.int64).max  # first-match rank of a query without any match
# Sorting a candidate costs about as much as comparing this many scores (measured: ~40 ns against ~0.2 ns).
_SORT_COST = 200
_MIN_CANDIDATES = 64  # a query may always sort this many candidates
_BLOCK_ELEMENTS = 1 << 22  # list entries held per block of queries (bounds the boolean match matrix)


class LabelGroups:
    """Gallery indices grouped by label (ascending within a label), for counting and listing matches."""

    def __init__(self, gallery_labels: np.ndarray) -> None:
        self.item_labels = np.asarray(gallery_labels)
        self.order = np.argsort(self.item_labels, kind="stable")
        self.labels, self.starts, self.counts = np.unique(self.item_labels[self.order], return_index=True,
                                                          return_counts=True)

    def _find(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        position = np.minimum(np.searchsorted(self.labels, labels), len(self.labels) - 1)
        return position, self.labels[position] == labels

    def count(self, labels: np.ndarray) -> np.ndarray:
        """Gallery items with each of ``labels`` (0 for a label the gallery lacks)."""
        position, found = self._find(labels)
        return np.where(found, self.counts[position], 0).astype(np.int64)

    def members(self, label: int) -> np.ndarray:
        """Gallery indices of ``label``, ascending (empty if the gallery lacks it)."""
        position, found = self._find(np.asarray([label]))
        if not found[0]:
            return self.order[:0]
        start = self.starts[position[0]]
        return self.order[start:start + self.counts[position[0]]]

    def matches(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, items)``: every pair of a position in ``labels`` and a gallery item with that label, by row,
        items ascending within a row."""
        position, found = self._find(labels)
        counts = np.where(found, self.counts[position], 0)
        rows = np.repeat(np.arange(len(labels)), counts)
        first = np.cumsum(counts) - counts
        within = np.arange(len(rows)) - np.repeat(first, counts)
        return rows, self.order[np.repeat(self.starts[position], counts) + within]


@dataclass
class MatchStatistics:
    """Per query: the 1-based rank of its first match (``NO_MATCH`` without one), ``sum_i precision@i * rel_i``
    over its matches, and its matches in the gallery; ``depth`` is the length of the ranked lists, or None
    when the whole gallery was ranked."""

    first_rank: np.ndarray
    precision_sum: np.ndarray
    num_relevant: np.ndarray
    depth: Optional[int] = None


def match_statistics(similarity: np.ndarray, query_labels: np.ndarray, groups: LabelGroups,
                     compute_map: bool) -> MatchStatistics:
    """Statistics of each row of a finite similarity block ``[rows, gallery]`` over the whole ranking
    (``precision_sum`` zero without ``compute_map``)."""
    num_rows, num_gallery = similarity.shape
    num_relevant = groups.count(query_labels)
    rows, items = groups.matches(query_labels)
    match_scores = similarity[rows, items]
    matched = num_relevant > 0
    threshold = np.full(num_rows, np.inf, dtype=similarity.dtype)  # rows without a match get no candidates
    if len(rows):
        reduce = np.minimum if compute_map else np.maximum
        threshold[matched] = reduce.reduceat(match_scores, (np.cumsum(num_relevant) - num_relevant)[matched])
    candidates = similarity >= threshold[:, None]
    passes = num_relevant if compute_map else np.minimum(num_relevant, 1)  # counting: passes over the row
    affordable = np.maximum(_MIN_CANDIDATES, passes * (num_gallery // _SORT_COST))
    heavy = np.zeros(num_rows, dtype=bool)
    if np.count_nonzero(candidates) > affordable.sum():
        heavy = np.count_nonzero(candidates, axis=1) > affordable
        candidates[heavy] = False
    first_rank, precision_sum = _sorted_candidates(similarity, candidates, query_labels, groups.item_labels,
                                                   compute_map)
    if heavy.any():
        counted = np.flatnonzero(heavy)
        subset = similarity if len(counted) == num_rows else similarity[counted]
        first_rank[counted], precision_sum[counted] = _counted(subset, query_labels[counted], groups, compute_map)
    return MatchStatistics(first_rank, precision_sum, num_relevant)


def _row_order(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Stable order of entries (given by row, then gallery index) by row, then descending value."""
    if values.dtype == np.float32:  # one sort of (row, value) packed into uint64; + 0 makes -0.0 equal 0.0
        bits = (values + np.float32(0)).view(np.uint32)
        ascending = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))
        keys = (rows.astype(np.uint64) << np.uint64(32)) | (~ascending).astype(np.uint64)
        return np.argsort(keys, kind="stable")
    order = np.argsort(-values, kind="stable")
    return order[np.argsort(rows[order], kind="stable")]


def _sorted_candidates(similarity, candidates, query_labels, item_labels, compute_map):
    num_rows, num_gallery = similarity.shape
    flat = np.flatnonzero(candidates)
    rows, items = np.divmod(flat, num_gallery)
    order = _row_order(rows, similarity[rows, items])
    rows, items = rows[order], items[order]
    per_row = np.bincount(rows, minlength=num_rows)
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row) + 1
    hit = item_labels[items] == query_labels[rows]
    hit_rows, hit_rank = rows[hit], rank[hit]
    hits_per_row = np.bincount(hit_rows, minlength=num_rows)
    first_hit = np.cumsum(hits_per_row) - hits_per_row
    first_rank = np.full(num_rows, NO_MATCH, dtype=np.int64)
    first_rank[hits_per_row > 0] = hit_rank[first_hit[hits_per_row > 0]]
    precision_sum = np.zeros(num_rows)
    if compute_map:
        hit_number = np.arange(len(hit_rows)) - first_hit[hit_rows] + 1
        precision_sum[:] = np.bincount(hit_rows, weights=hit_number / hit_rank, minlength=num_rows)
    return first_rank, precision_sum


def _beating(rows: np.ndarray, item: int, scores: np.ndarray, buffer: np.ndarray) -> np.ndarray:
    """Per row, the gallery items ranked before ``item`` whose score is ``scores``."""
    beaten, threshold = buffer[:len(rows)], scores[:, None]
    np.greater_equal(rows[:, :item], threshold, out=beaten[:, :item])
    np.greater(rows[:, item:], threshold, out=beaten[:, item:])
    return np.array([np.count_nonzero(row) for row in beaten], dtype=np.int64)  # faster than axis=1


def _counted(similarity: np.ndarray, query_labels: np.ndarray, groups: LabelGroups, compute_map: bool):
    """First rank and precision sum by counting, one pass per match (rows of one label share the passes)."""
    num_rows = len(query_labels)
    first_rank = np.full(num_rows, NO_MATCH, dtype=np.int64)
    precision_sum = np.zeros(num_rows, dtype=np.float64)
    order = np.argsort(query_labels, kind="stable")
    in_order = bool(np.all(order == np.arange(num_rows)))  # the evaluator's blocks are sorted by label
    sorted_labels = query_labels[order]
    bounds = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1
    starts, stops = np.array([0, *bounds]), np.array([*bounds, num_rows])
    buffer = np.empty((int((stops - starts).max()), similarity.shape[1]), dtype=bool)
    for start, stop in zip(starts, stops):
        items = groups.members(int(sorted_labels[start]))
        if not len(items):
            continue
        rows_index = order[start:stop]
        rows = similarity[start:stop] if in_order else similarity[rows_index]
        scores = rows[:, items]
        if compute_map:
            ranks = np.empty(scores.shape, dtype=np.int64)
            for j, item in enumerate(items):
                ranks[:, j] = _beating(rows, item, scores[:, j], buffer)
            ranks.sort(axis=1)
            ranks += 1
            first_rank[rows_index] = ranks[:, 0]
            precision_sum[rows_index] = (np.arange(1, len(items) + 1) / ranks).sum(axis=1)
            continue
        best = scores.argmax(axis=1)  # the first of tied scores: the smallest gallery index
        for j in np.unique(best):
            chosen = best == j
            subset = rows if chosen.all() else rows[chosen]
            first_rank[rows_index[chosen]] = _beating(subset, items[j], scores[chosen, j], buffer) + 1
    return first_rank, precision_sum


def list_statistics(ranked: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, *,
                    compute_map: bool, keep_mask: Optional[np.ndarray] = None) -> MatchStatistics:
    """Statistics of ranked lists ``[Q, depth]`` of distinct gallery indices (-1: nothing found), checked;
    with ``keep_mask`` ``[Q, G]``, only its true pairs count as matches. ``depth`` is None when the lists
    rank the whole gallery."""
    num_queries, depth = ranked.shape
    first_rank = np.empty(num_queries, dtype=np.int64)
    precision_sum = np.zeros(num_queries, dtype=np.float64)
    if keep_mask is None:
        num_relevant = LabelGroups(gallery_labels).count(query_labels)
    else:
        num_relevant = (np.equal.outer(query_labels, gallery_labels) & keep_mask).sum(axis=1)
    block = max(1, _BLOCK_ELEMENTS // depth)
    for start in range(0, num_queries, block):
        rows = slice(start, min(start + block, num_queries))
        found = ranked[rows] >= 0
        hits = (gallery_labels[ranked[rows]] == query_labels[rows, None]) & found
        if keep_mask is not None:
            hits &= np.take_along_axis(keep_mask[rows], np.where(found, ranked[rows], 0), axis=1)
        hit_rows, hit_cols = np.nonzero(hits)
        hits_per_row = np.bincount(hit_rows, minlength=hits.shape[0])
        if np.any(hits_per_row > num_relevant[rows]):
            raise ProdrecError("ranked_indices lists some gallery index more than once in a row; each row must "
                               "rank distinct gallery items.")
        first_rank[rows] = np.where(hits_per_row > 0, hits.argmax(axis=1) + 1, NO_MATCH)
        if compute_map:
            # np.nonzero walks row-major, so a hit's rank among its row's hits is its
            # position minus the position of the row's first hit, plus one.
            row_starts = np.cumsum(hits_per_row) - hits_per_row
            hit_number = np.arange(len(hit_rows)) - row_starts[hit_rows] + 1
            precision_sum[rows] = np.bincount(hit_rows, weights=hit_number / (hit_cols + 1.0),
                                              minlength=hits.shape[0])
    return MatchStatistics(first_rank, precision_sum, num_relevant, None if depth == len(gallery_labels) else depth)
