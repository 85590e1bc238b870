"""Searchers: how the evaluator finds where each query's matches rank in the gallery.

:func:`prodrec.retrieval.evaluate_embeddings` takes one, the way pytorch-metric-learning's
``AccuracyCalculator(knn_func=...)`` takes its k-NN. Each turns query and gallery features (arrays or memory
maps, float16/32, L2-normalised) and their labels into :class:`~prodrec.retrieval.ranks.MatchStatistics`:

* :class:`ExactSearch` ranks the whole gallery, streaming blocks of queries (the default; full-ranking mAP);
* :class:`FaissSearch` searches a faiss index (``"HNSW32"``, ``"IVF1024,Flat"``, ...) for each query's top k;
* :class:`RerankedSearch` re-ranks each query's top k (k-reciprocal or query expansion).

Searchers that return lists derive from :class:`ListSearch` and implement :meth:`ListSearch.rank`;
``docs/extend.md`` adds one. Across processes, :class:`prodrec.train.ShardedSearch` wraps any of them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Sequence

import numpy as np

from prodrec.retrieval.faiss_index import check_index_type, new_faiss_index, search_knob
from prodrec.retrieval.knn import float32_rows, import_faiss
from prodrec.retrieval.ranks import NO_MATCH, LabelGroups, MatchStatistics, list_statistics, match_statistics
from prodrec.retrieval.rerank import RERANK_METHODS, rerank
from prodrec.utils import ProdrecError, check_positive_int

__all__ = ["Searcher", "ExactSearch", "ListSearch", "FaissSearch", "RerankedSearch"]

_MIN_BLOCK, _MAX_BLOCK = 8 << 20, 256 << 20
_CHUNK_BYTES = 64 << 20  # feature rows converted to float32 at a time
_IVF_TRAIN_POINTS_PER_LIST = 64


class Searcher(ABC):
    """Turns query and gallery features into where each query's matches rank."""

    @abstractmethod
    def statistics(self, query_features: np.ndarray, query_labels: np.ndarray, gallery_features: np.ndarray,
                   gallery_labels: np.ndarray, *, ks: Sequence[int], compute_map: bool) -> MatchStatistics:
        """Statistics of every query. The evaluator has checked the inputs: 2-D real features of one width,
        one integer label per row, ``ks`` sorted positive integers; the rows are not converted yet."""


class ExactSearch(Searcher):
    """The whole gallery ranked for every query (ties by gallery index), in blocks of queries whose scores
    against the whole gallery take ``block_bytes`` (default: a quarter of the features, 8 to 256 MiB).

    Memory stays at the features' pages plus one block and its candidate mask (a quarter block): memory-mapped
    features are never loaded whole.
    """

    def __init__(self, *, block_bytes: Optional[int] = None) -> None:
        self.block_bytes = None if block_bytes is None else check_positive_int(block_bytes, "block_bytes")

    def __repr__(self) -> str:
        return f"ExactSearch(block_bytes={self.block_bytes})"

    def statistics(self, query_features, query_labels, gallery_features, gallery_labels, *, ks, compute_map):
        block_bytes = self.block_bytes or min(_MAX_BLOCK, max(_MIN_BLOCK, (query_features.nbytes
                                                                           + gallery_features.nbytes) // 4))
        groups = LabelGroups(gallery_labels)
        num_relevant = groups.count(query_labels)
        rows = np.flatnonzero(num_relevant)
        rows = rows[np.argsort(query_labels[rows], kind="stable")]  # a label's matches stay in few blocks
        num_gallery, dim = gallery_features.shape
        block_rows = max(1, block_bytes // (4 * num_gallery))
        chunk_rows = max(1, block_bytes // (16 * dim))
        scores = np.empty((min(block_rows, len(rows)), num_gallery), dtype=np.float32)
        first_rank = np.full(len(query_labels), NO_MATCH, dtype=np.int64)
        precision_sum = np.zeros(len(query_labels))
        for start in range(0, len(rows), block_rows):
            block = rows[start:start + block_rows]
            queries = float32_rows(query_features[block], "query_features", block)
            block_scores = scores[:len(block)]
            _similarities(queries, gallery_features, block_scores, chunk_rows, check=start == 0)
            found = match_statistics(block_scores, query_labels[block], groups, compute_map)
            first_rank[block], precision_sum[block] = found.first_rank, found.precision_sum
        return MatchStatistics(first_rank, precision_sum, num_relevant)


def _similarities(queries: np.ndarray, gallery: np.ndarray, out: np.ndarray, chunk_rows: int, check: bool) -> None:
    """``out[:] = queries @ gallery.T``, converting (and with ``check``, checking) gallery rows by chunks
    unless the gallery is float32 already."""
    if gallery.dtype == np.float32 and gallery.flags.c_contiguous and not check:
        np.matmul(queries, gallery.T, out=out)
        return
    for start in range(0, len(gallery), chunk_rows):
        chunk = float32_rows(gallery[start:start + chunk_rows], "gallery_features", start)
        np.matmul(queries, chunk.T, out=out[:, start:start + len(chunk)])


class ListSearch(Searcher):
    """A searcher that lists each query's ``top_k`` gallery items; Recall@K needs K within the list, and mAP
    is computed over it (``"mAP@N"``: average precision truncated at rank N, divided by all of the query's
    matches in the gallery)."""

    def __init__(self, *, top_k: int = 100) -> None:
        self.top_k = check_positive_int(top_k, "top_k")

    @abstractmethod
    def rank(self, query_features: np.ndarray, gallery_features: np.ndarray, depth: int) -> np.ndarray:
        """Gallery indices ``[Q, depth]``, best first, distinct within a row (-1 where fewer were found)."""

    def statistics(self, query_features, query_labels, gallery_features, gallery_labels, *, ks, compute_map):
        num_gallery = len(gallery_labels)
        depth = min(self.top_k, num_gallery)
        if min(max(ks), num_gallery) > depth:
            raise ProdrecError(f"recall@{max(ks)} needs lists of {max(ks)} gallery items, but {self!r} lists "
                               f"{depth}; raise its top_k or drop the larger ks")
        ranked = (self.rank(query_features, gallery_features, depth) if len(query_labels)
                  else np.empty((0, depth), dtype=np.int64))  # a sharded search's share may be empty
        return list_statistics(ranked, query_labels, gallery_labels, compute_map=compute_map)


class FaissSearch(ListSearch):
    """Each query's ``top_k`` from a faiss index built on the gallery (:mod:`prodrec.retrieval.faiss_index`
    names: ``"HNSW32"``, ``"IVF1024,Flat"``, ``"IVF1024,PQ64"``; ``"Flat"`` is exact but list-based).

    Args:
        nprobe: Inverted lists an IVF index visits per query.
        ef_search: HNSW search breadth (at least ``top_k``).
    """

    def __init__(self, index_type: str = "Flat", *, top_k: int = 100, nprobe: int = 16, ef_search: int = 128) -> None:
        super().__init__(top_k=top_k)
        self.index_type = index_type
        self.nprobe = check_positive_int(nprobe, "nprobe")
        self.ef_search = check_positive_int(ef_search, "ef_search")

    def __repr__(self) -> str:
        return (f"FaissSearch({self.index_type!r}, top_k={self.top_k}, nprobe={self.nprobe}, "
                f"ef_search={self.ef_search})")

    def rank(self, query_features, gallery_features, depth):
        faiss = import_faiss()
        num_gallery, dim = gallery_features.shape
        index = new_faiss_index(dim, check_index_type(self.index_type, dim), "ip")
        if self.index_type.startswith("IVF"):
            lists = faiss.extract_index_ivf(index).nlist
            sample = np.sort(np.random.default_rng(0).choice(
                num_gallery, min(num_gallery, lists * _IVF_TRAIN_POINTS_PER_LIST), replace=False))
            index.train(float32_rows(gallery_features[sample], "gallery_features", sample))
            search_knob(index, self.index_type, "IVF").nprobe = self.nprobe
        elif self.index_type.startswith("HNSW"):
            search_knob(index, self.index_type, "HNSW").efSearch = max(self.ef_search, depth)
        chunk_rows = max(1, _CHUNK_BYTES // (4 * dim))
        for start in range(0, num_gallery, chunk_rows):
            chunk = float32_rows(gallery_features[start:start + chunk_rows], "gallery_features", start)
            index.add_with_ids(chunk, np.arange(start, start + len(chunk), dtype=np.int64))
        found = np.empty((len(query_features), depth), dtype=np.int64)
        for start in range(0, len(query_features), chunk_rows):
            queries = float32_rows(query_features[start:start + chunk_rows], "query_features", start)
            found[start:start + len(queries)] = index.search(queries, depth)[1]
        return found


class RerankedSearch(ListSearch):
    """Each query's ``top_k`` re-ranked with :func:`prodrec.retrieval.rerank` (``"k-reciprocal"`` or ``"qe"``;
    both hold the features in memory as float32)."""

    def __init__(self, method: str = "k-reciprocal", *, top_k: int = 100) -> None:
        super().__init__(top_k=top_k)
        if method not in RERANK_METHODS:
            raise ProdrecError(f"unknown re-ranking {method!r}; choose one of {sorted(RERANK_METHODS)}")
        self.method = method

    def __repr__(self) -> str:
        return f"RerankedSearch({self.method!r}, top_k={self.top_k})"

    def rank(self, query_features, gallery_features, depth):
        return rerank(float32_rows(query_features, "query_features"),
                      float32_rows(gallery_features, "gallery_features"), method=self.method, top_k=depth)[1]
