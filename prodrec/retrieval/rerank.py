"""Re-ranking of retrieval results: k-reciprocal encoding (Zhong et al., CVPR 2017) and query expansion.

``k-reciprocal`` follows Zhong et al.'s code as fast-reid and torchreid ship it (``k1=20, k2=6,
lambda_value=0.3``): the distance ``d`` of two unit vectors is their squared Euclidean distance ``2 - 2 cos``
(that code squares the Euclidean distances it is given) over the largest ``d`` of the row; a vector's
k-reciprocal neighbours, expanded by those neighbours' ``k1/2``-reciprocal sets that they overlap by more than
2/3, get weights ``exp(-d)`` summing to one; weights are averaged over the ``k2`` nearest neighbours; and the
re-ranked distance is ``(1 - lambda) * Jaccard + lambda * d``. Unlike that code, each query is re-ranked
against the gallery alone (the classic code puts all queries into one graph, so a result depends on the
batch), and only its ``top_k`` best candidates are re-ranked: no dense ``N x N`` matrices; faiss finds the
neighbour lists of just the gallery rows within the few hops the method reads. Scores are ``1 -`` the
re-ranked distance, in [0, 1].

``qe`` is alpha query expansion (Radenovic et al.; fast-reid's ``aqe`` defaults ``qe_k=10, alpha=3``): the
query plus its ``qe_k`` (at most the gallery size) nearest gallery vectors weighted by ``max(cos, 0) ** alpha`` (``alpha=0``: their plain
average, Chum et al.'s AQE), re-normalised and searched again. Scores are cosine similarities to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from prodrec.retrieval.knn import as_matrix, knn_search, l2_normalize
from prodrec.utils import ProdrecError, ProdrecTypeError


__all__ = ["RERANK_METHODS", "rerank", "rerank_gallery"]

RERANK_METHODS = {"k-reciprocal": {"k1": 20, "k2": 6, "lambda_value": 0.3}, "qe": {"qe_k": 10, "alpha": 3.0}}
"""Method -> its options with their defaults."""


@dataclass(frozen=True)
class _Gallery:
    """``size`` unit vectors; ``search(vectors, k)`` -> similarities and rows ``[n, k]``, best first, row -1
    where fewer were found; ``vectors(rows)`` -> their float32 vectors."""

    size: int
    search: Callable[[np.ndarray, int], Tuple[np.ndarray, np.ndarray]]
    vectors: Callable[[np.ndarray], np.ndarray]


def rerank(query: np.ndarray, gallery: np.ndarray, *, method: str = "k-reciprocal", top_k: int = 100,
           **options: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Re-ranked ``top_k`` gallery matches of each query, with exact (faiss) neighbour search.

    Args:
        query: Query features ``[Q, dim]`` (L2-normalised here).
        gallery: Gallery features ``[G, dim]`` (L2-normalised here).
        method: ``"k-reciprocal"`` or ``"qe"``.
        top_k: Candidates re-ranked and returned per query, at most ``G``.
        **options: The method's options (:data:`RERANK_METHODS` lists them with their defaults).

    Returns:
        ``(scores, indices)``: float32 ``[Q, top_k]`` descending and int64 ``[Q, top_k]`` gallery rows.

    Raises:
        ValueError: Malformed or non-finite features, another dimension, zero rows, bad method or options.
        TypeError: An option the method does not take.
    """
    query, gallery = as_matrix(query, "query"), as_matrix(gallery, "gallery")
    if query.shape[1] != gallery.shape[1]:
        raise ProdrecError(f"query has dimension {query.shape[1]} but gallery has {gallery.shape[1]}; "
                           "embed both with the same model")
    gallery = l2_normalize(gallery)
    exact = _Gallery(len(gallery), lambda vectors, k: knn_search(vectors, gallery, k), lambda rows: gallery[rows])
    return _rerank(query, exact, method=method, top_k=top_k, **options)


def rerank_gallery(gallery: Any, features: np.ndarray, k: int, *, method: str = "k-reciprocal",
                   top_k: Optional[int] = None, device: str = "auto", **options: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Scores and ids ``[Q, k]`` of :meth:`GalleryIndex.search <prodrec.gallery.GalleryIndex.search>` with
    re-ranking of the ``top_k`` (default ``max(k, 100)``, at most the gallery size) best matches; neighbours
    are searched in the gallery's own index (an approximate one gives approximate neighbour lists).

    Gallery vectors come from the kept features or, without them, from faiss, which stores them in Flat and
    HNSW indexes but not in IVF ones (ValueError). Scores follow the gallery's metric: ``k-reciprocal``
    gives ``1 -`` the re-ranked distance (``l2``: the distance), ``qe`` the cosine (``l2``: squared distance)
    to the expanded query. Ids beyond the gallery size are -1.
    """
    if not gallery.keep_features and gallery.index_type.startswith("IVF"):
        raise ProdrecError(f"re-ranking reads gallery vectors, but this {gallery.index_type} index was made with "
                           "keep_features=False and faiss cannot return IVF vectors; rebuild the gallery with "
                           "keep_features=True, or use a Flat or HNSW index")
    top_k = max(k, 100) if top_k is None else top_k
    _check_number("top_k", top_k, k, math.inf, integer=True)

    def search(vectors: np.ndarray, count: int) -> Tuple[np.ndarray, np.ndarray]:
        found = gallery.search(vectors, count, device=device)
        rows = np.where(found.ids >= 0, np.searchsorted(gallery.ids, found.ids), -1)
        return (found.scores if gallery.metric == "ip" else 1 - found.scores / 2), rows

    vectors = (lambda rows: gallery.features[rows]) if gallery.keep_features else \
        (lambda rows: gallery._index.reconstruct_batch(gallery.ids[rows]))
    scores, rows = _rerank(features, _Gallery(len(gallery), search, vectors), method=method,
                           top_k=min(top_k, len(gallery)), **options)
    if gallery.metric == "l2":
        scores = 1 - scores if method == "k-reciprocal" else 2 - 2 * scores
    padding = ((0, 0), (0, max(0, k - rows.shape[1])))
    ids = np.where(rows[:, :k] >= 0, gallery.ids[rows[:, :k]], -1)
    return np.pad(scores[:, :k], padding), np.pad(ids, padding, constant_values=-1)


def _rerank(query: np.ndarray, gallery: _Gallery, *, method: str, top_k: int, block_size: int = 1024,
            **options: Any) -> Tuple[np.ndarray, np.ndarray]:
    if method not in RERANK_METHODS:
        raise ProdrecError(f"unknown re-ranking method {method!r}; use one of {sorted(RERANK_METHODS)}")
    unknown = sorted(set(options) - set(RERANK_METHODS[method]))
    if unknown:
        raise ProdrecTypeError(f"re-ranking method {method!r} takes the options {sorted(RERANK_METHODS[method])}, "
                               f"not {unknown}")
    options = {**RERANK_METHODS[method], **options}
    _check_number("top_k", top_k, 1, gallery.size, integer=True)
    if method == "k-reciprocal":
        _check_number("k1", options["k1"], 1, math.inf, integer=True)
        _check_number("k2", options["k2"], 1, options["k1"] + 1, integer=True)
        _check_number("lambda_value", options["lambda_value"], 0, 1)
    else:
        _check_number("qe_k", options["qe_k"], 1, math.inf, integer=True)
        _check_number("alpha", options["alpha"], 0, math.inf)
    query = l2_normalize(as_matrix(query, "query"))
    scores = np.empty((len(query), top_k), dtype=np.float32)
    indices = np.empty((len(query), top_k), dtype=np.int64)
    graph = _Graph(gallery, options["k1"], options["k2"]) if method == "k-reciprocal" else None
    for start in range(0, len(query), block_size):
        block = slice(start, start + block_size)
        if graph is None:
            scores[block], indices[block] = _expand_query(query[block], gallery, top_k, **options)
        else:
            scores[block], indices[block] = _k_reciprocal(query[block], graph, top_k, **options)
    return scores, indices


def _check_number(name: str, value: Any, low: float, high: float, *, integer: bool = False) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or not low <= value <= high:
        note = {"top_k": " (the gallery size)", "k2": " (k1 + 1)"}.get(name, "")
        span = f">= {low}" if math.isinf(high) else f"in [{low}, {high}]{note}"
        raise ProdrecError(f"{name} must be {'an integer' if integer else 'a number'} {span}, got {value!r}")


def _search(gallery: _Gallery, vectors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """``gallery.search`` with ``k`` capped at the gallery size and padded back to ``k`` (row -1, similarity -inf)."""
    sims, rows = gallery.search(vectors, min(k, gallery.size))
    padding = ((0, 0), (0, k - rows.shape[1]))
    rows = np.pad(np.asarray(rows, dtype=np.int64), padding, constant_values=-1)
    return np.where(rows >= 0, np.pad(sims, padding), -np.inf).astype(np.float32), rows


def _expand_query(query: np.ndarray, gallery: _Gallery, top_k: int, *, qe_k: int,
                  alpha: float) -> Tuple[np.ndarray, np.ndarray]:
    sims, rows = _search(gallery, query, qe_k)
    weights = np.where(rows >= 0, np.maximum(sims, 0) ** alpha, 0)
    neighbours = gallery.vectors(np.maximum(rows, 0).ravel()).reshape(*rows.shape, -1)
    expanded = l2_normalize(query + np.einsum("qk,qkd->qd", weights, neighbours))
    return _search(gallery, expanded, top_k)


class _Graph:
    """The gallery's kNN graph, built on demand and kept: each row's ``k1 + 1`` nearest gallery rows (itself
    first) and lowest similarity. Only the rows that some query's re-ranking reads are ever searched."""

    def __init__(self, gallery: _Gallery, k1: int, k2: int) -> None:
        self.gallery, self.width, self.half, self.k2 = gallery, k1 + 1, int(np.around(k1 / 2)) + 1, k2
        self.where = np.full(gallery.size, -1, dtype=np.int64)  # gallery row -> position in the arrays below
        self.rows = np.empty((0, self.width), dtype=np.int64)
        self.sims = np.empty((0, self.width), dtype=np.float32)
        self.lowest = np.empty(0, dtype=np.float32)

    def lists(self, nodes: np.ndarray, width: int) -> np.ndarray:
        return self.rows[self.where[nodes], :width]

    def closure(self, nodes: np.ndarray, *, search: bool = False) -> np.ndarray:
        """The valid ``nodes``, their ``k2`` nearest, these rows' list members and the first ``half`` of those
        members' lists: the rows whose lists re-ranking reads for candidates ``nodes`` (searched if ``search``)."""
        nodes = self.ensure(nodes) if search else np.unique(nodes[nodes >= 0])
        for width in (self.k2, self.width, self.half):
            more = self.lists(nodes, width).ravel()
            nodes = np.union1d(nodes, self.ensure(more) if search else more[more >= 0])
        return nodes

    def ensure(self, nodes: np.ndarray) -> np.ndarray:
        """Search the lists of the ``nodes`` (gallery rows; -1 is ignored) not yet searched; return the valid
        ``nodes``, sorted and unique."""
        nodes = np.unique(nodes[nodes >= 0])
        new = nodes[self.where[nodes] < 0]
        if len(new):
            vectors = self.gallery.vectors(new)
            sims, rows = _search(self.gallery, vectors, self.width)
            # Each row goes first in its own list, as in an exact search (ties and approximate ones may differ).
            rows = np.concatenate([new[:, None], rows], 1)
            sims = np.concatenate([np.full((len(new), 1), np.inf, dtype=np.float32), sims], 1)
            repeat = np.zeros(rows.shape, dtype=bool)
            repeat[:, 1:] = rows[:, 1:] == new[:, None]
            keep = np.argsort(repeat, axis=1, kind="stable")[:, :self.width]
            self.where[new] = len(self.lowest) + np.arange(len(new))
            self.rows = np.concatenate([self.rows, np.take_along_axis(rows, keep, 1)])
            self.sims = np.concatenate([self.sims, np.take_along_axis(sims, keep, 1)])
            self.lowest = np.concatenate([self.lowest, -_search(self.gallery, -vectors, 1)[0][:, 0]])
        return nodes


def _local(nodes: np.ndarray, rows: np.ndarray, query: int) -> np.ndarray:
    """``rows`` of gallery rows renumbered: a row in the sorted ``nodes`` -> its position, ``query`` ->
    ``len(nodes)``, other rows and -1 -> ``len(rows)``: the row appended last, which lists nothing."""
    position = np.searchsorted(nodes, rows)
    inside = (rows >= 0) & (nodes[np.minimum(position, len(nodes) - 1)] == rows)
    local = np.where(inside, position, len(rows))
    local[rows == query] = len(nodes)
    return np.vstack([local, np.full((1, rows.shape[1]), -1)])


def _members(weighted: np.ndarray, lists: np.ndarray, half: int) -> Tuple[np.ndarray, np.ndarray]:
    """Expanded k-reciprocal sets of the nodes ``weighted`` in a graph of local ``lists`` (from :func:`_local`),
    as pairs (index into ``weighted``, member)."""
    span = len(lists)  # node numbers are below it; a pair is coded as index * span + member
    forward = lists[weighted]
    reciprocal = np.where((lists[forward] == weighted[:, None, None]).any(-1), forward, -1)
    halves = lists[:, :half]
    hubs, which = np.unique(reciprocal, return_inverse=True)
    hub_sets = np.where((halves[halves[hubs]] == hubs[:, None, None]).any(-1), halves[hubs], -1)
    candidate = hub_sets[which.reshape(reciprocal.shape)]  # each reciprocal neighbour's k1/2-reciprocal set
    index = np.arange(len(weighted))[:, None]
    own = np.sort(np.where(reciprocal >= 0, index * span + reciprocal, -1), axis=None)
    keys = index[..., None] * span + candidate
    shared = (candidate >= 0) & (own[np.minimum(np.searchsorted(own, keys), len(own) - 1)] == keys)
    expands = (reciprocal >= 0) & (3 * shared.sum(-1) > 2 * (candidate >= 0).sum(-1))
    pairs = np.concatenate([own, np.where(expands[..., None] & (candidate >= 0), keys, -1).ravel()])
    return np.divmod(np.unique(pairs[pairs >= 0]), span)


def _weights(index: np.ndarray, same: np.ndarray, sims: np.ndarray, largest: np.ndarray) -> np.ndarray:
    """``exp(-d / largest d of the row)`` per pair, normalised to sum 1 per ``index``; ``same``: d is 0."""
    distance = np.where(same, 0, np.maximum(2 - 2 * sims.astype(np.float64), 0)) / np.where(largest > 0, largest, 1)
    weights = np.exp(-distance)
    return weights / np.bincount(index, weights)[index]


def _k_reciprocal(query: np.ndarray, graph: _Graph, top_k: int, *, k1: int, k2: int,
                  lambda_value: float) -> Tuple[np.ndarray, np.ndarray]:
    sims, candidates = _search(graph.gallery, query, max(top_k, k1))
    lowest = -_search(graph.gallery, -query, 1)[0][:, 0]
    graph.closure(candidates.ravel(), search=True)
    scores = np.full((len(query), top_k), -np.inf, dtype=np.float32)
    indices = np.full((len(query), top_k), -1, dtype=np.int64)
    for row in range(len(query)):
        found = candidates[row, :top_k][candidates[row, :top_k] >= 0]
        if len(found):
            distance = _rerank_query(query[row], lowest[row], candidates[row, :k1], found, sims[row, :len(found)],
                                     graph, k2=k2, lambda_value=lambda_value)
            order = np.argsort(distance, kind="stable")
            scores[row, :len(found)], indices[row, :len(found)] = 1 - distance[order], found[order]
    return scores, indices


def _rerank_query(query: np.ndarray, lowest: float, neighbours: np.ndarray, found: np.ndarray, sims: np.ndarray,
                  graph: _Graph, *, k2: int, lambda_value: float) -> np.ndarray:
    """Re-ranked distances of one query to its candidates ``found`` (similarities ``sims``) in the graph of the
    gallery and this query: the query is the local node ``me``; gallery rows are numbered by :func:`_local`."""
    nodes = graph.closure(np.concatenate([found, neighbours]))
    me, width, half = len(nodes), graph.width, graph.half
    vectors = np.concatenate([graph.gallery.vectors(nodes), query[None]])
    to_query = vectors[:me] @ query
    # A gallery row's list in this graph: the query enters it, before the rows farther from the row.
    rows = np.concatenate([graph.lists(nodes, width), np.full((me, 1), graph.gallery.size)], 1)
    closer = np.argsort(-np.concatenate([graph.sims[graph.where[nodes]], to_query[:, None]], 1), 1, kind="stable")
    rows = np.take_along_axis(rows, closer[:, :width], 1)
    own = np.concatenate([[graph.gallery.size], neighbours])
    rows = np.concatenate([rows, np.pad(own, (0, width - len(own)), constant_values=-1)[None]])
    lists = _local(nodes, rows, graph.gallery.size)
    gallery_lowest = graph.lowest[graph.where[nodes]]
    largest = 2 - 2 * np.append(np.minimum(gallery_lowest, to_query), lowest)

    averaged = lists[np.concatenate([[me], np.searchsorted(nodes, found)]), :k2]  # the query, then candidates
    weighted = np.unique(averaged[averaged <= me])
    index, members = _members(weighted, lists, half)
    sims_members = np.einsum("nd,nd->n", vectors[weighted[index]], vectors[members])
    weights = _weights(index, weighted[index] == members, sims_members, largest[weighted[index]])

    # Jaccard distances of the encodings averaged over k2 neighbours, on the members where the query's is non-zero.
    position = np.full(len(lists), -1)
    position[weighted] = np.arange(len(weighted))
    rows_averaged = position[averaged]
    query_members = np.unique(members[np.isin(index, rows_averaged[0])])
    column = np.full(len(lists), -1)
    column[query_members] = np.arange(len(query_members))
    encoding = np.zeros((len(weighted) + 1, len(query_members)))  # the last row: zeros, for padding
    keep = column[members] >= 0
    encoding[index[keep], column[members[keep]]] = weights[keep]
    mean = encoding[rows_averaged].sum(1) / np.maximum((rows_averaged >= 0).sum(1), 1)[:, None]
    overlap = np.minimum(mean[1:], mean[0]).sum(1)
    jaccard = 1 - overlap / (2 - overlap)
    original = np.maximum(2 - 2 * sims.astype(np.float64), 0) / (largest[me] if largest[me] > 0 else 1)
    return (1 - lambda_value) * jaccard + lambda_value * original
