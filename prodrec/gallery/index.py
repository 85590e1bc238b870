"""A searchable gallery of product images: a faiss index plus each image's product label, name and path.

Images get stable int64 ids (never reused after a removal). Features are L2-normalised on the way in, so
with ``metric="ip"`` a score is the cosine similarity (PP-ShiTu's inner-product index). Index types:
:mod:`prodrec.retrieval.faiss_index`; the folder format of :meth:`GalleryIndex.save`: :mod:`prodrec.gallery.store`;
building from images: :mod:`prodrec.gallery.build`.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

from prodrec.retrieval import METRICS, check_index_type, faiss_message, new_faiss_index, search_knob
from prodrec.retrieval import rerank_gallery
from prodrec.gallery.calibrate import Calibration
from prodrec.gallery.columns import read_only, row_strings
from prodrec.gallery.filters import GalleryFilter, exact_search, filter_columns, parse_filter
from prodrec.gallery.folder import GalleryFolder
from prodrec.retrieval import import_faiss, use_faiss_gpu, l2_normalize
from prodrec.utils import ProdrecError, ProdrecRuntimeError, check_positive_int


__all__ = ["GalleryIndex", "SearchResult"]


@dataclass(frozen=True)
class SearchResult:
    """Best gallery matches of each query, best first: ``scores`` float32 ``[Q, k]`` (``ip``: cosine
    similarity, larger is better; ``l2``: squared distance of unit vectors, smaller is better), ``ids`` int64,
    ``labels`` (str) and ``names`` (str or None) object arrays. Rows with fewer than k matches are padded
    with id ``-1``, label and name None, and score ``-inf`` (``ip``) or ``inf`` (``l2``). Re-ranked results
    score as :func:`prodrec.retrieval.rerank_gallery` says."""

    scores: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    names: np.ndarray


class GalleryIndex:
    """Gallery images' features in a faiss index, with their product labels, names and paths.

    Args:
        dim: Feature dimension (the embedder's ``embedding_size``).
        index_type: faiss ``index_factory`` name: ``Flat`` (exact), ``HNSW{M}``, ``IVF{nlist},Flat`` or
            ``IVF{nlist},PQ{m}``. IVF types must be trained (:meth:`train`) before vectors are added.
        metric: ``"ip"`` (inner product = cosine; PP-ShiTu's) or ``"l2"``.
        keep_features: Keep a float32 copy of every added feature (``4 * dim`` bytes per image), which
            :meth:`rebuild` needs (HNSW cannot remove vectors in place; PQ stores them lossily).

    Example:
        >>> gallery = GalleryIndex(4)
        >>> ids = gallery.add(np.eye(4), ["cola", "cola", "tea", "milk"])
        >>> gallery.search(np.array([[0.9, 0.1, 0, 0]]), k=2).labels.tolist()
        [['cola', 'cola']]
    """

    backend = "faiss"

    def __init__(self, dim: int, *, index_type: str = "Flat", metric: str = "ip", keep_features: bool = True) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ProdrecError(f"dim must be a positive integer (the feature dimension), got {dim!r}")
        if metric not in METRICS:
            raise ProdrecError(f"metric must be one of {METRICS}, got {metric!r}")
        self.dim, self.metric, self.keep_features = int(dim), metric, bool(keep_features)
        self.index_type = check_index_type(index_type, self.dim)
        self.embedder_info: Optional[Dict[str, Any]] = None
        """Backbone, embedding size, preprocessing and weights hash of the model that embedded the images."""
        self._index = new_faiss_index(self.dim, self.index_type, metric)
        self._columns = {"ids": np.empty(0, dtype=np.int64), "labels": np.empty(0, dtype=object),
                         "names": np.empty(0, dtype=object), "paths": np.empty(0, dtype=object)}
        if self.keep_features:
            self._columns["features"] = np.empty((0, self.dim), dtype=np.float32)
        self._next_id = 0
        self._gpu = None
        self.generation: Optional[str] = None
        """The saved generation this gallery was loaded from or last saved as (None: not from a saved one,
        or from a 0.1 folder)."""
        self.changes = 0
        """Images added and removed since the gallery was made (saved with it)."""
        self.calibration: Optional[Calibration] = None
        """The stored acceptance threshold and how it was chosen (:func:`prodrec.gallery.calibrate_gallery`)."""

    @property
    def threshold(self) -> Optional[float]:
        """The calibrated acceptance threshold, or None when the gallery has none."""
        return None if self.calibration is None else self.calibration.threshold

    def save(self, directory: Union[str, os.PathLike], *, wait: bool = True) -> Path:
        """Write the gallery into a folder as its new current generation (:mod:`prodrec.gallery.folder`;
        file format: :mod:`prodrec.gallery.store`), waiting for (``wait=False``: refusing) another writer.
        A failed write leaves the folder's gallery as it was. Returns the gallery folder."""
        folder = GalleryFolder(directory)
        with folder.writing(wait=wait):
            folder.save(self)
        return folder.directory

    @classmethod
    def load(cls, directory: Union[str, os.PathLike]) -> "GalleryIndex":
        """Read a folder's current generation, after checking its format, version and checksums."""
        return GalleryFolder(directory).load(cls)

    @classmethod
    @contextmanager
    def update(cls, directory: Union[str, os.PathLike], *, wait: bool = True,
               on_wait: Optional[Callable[[str], None]] = None) -> Iterator["GalleryIndex"]:
        """Change a saved gallery, one writer at a time: hold its write lock, load its current generation,
        let the ``with`` block change it, and save it as the next generation (nothing is saved if the
        block raises). Another writer waits meanwhile (``on_wait(its pid)`` is called once) or, with
        ``wait=False``, is refused.

        Example:
            >>> with GalleryIndex.update("shop-gallery") as gallery:  # doctest: +SKIP
            ...     gallery.remove(label="discontinued-sku")
        """
        folder = GalleryFolder(directory)
        with folder.writing(wait=wait, on_wait=on_wait):
            gallery = folder.load(cls)
            yield gallery
            folder.save(gallery)

    def __len__(self) -> int:
        return len(self._columns["ids"])

    def __repr__(self) -> str:
        return (f"GalleryIndex({len(self)} images of {len(set(self.labels))} products, dim={self.dim}, "
                f"index_type={self.index_type!r}, metric={self.metric!r})")

    @property
    def is_trained(self) -> bool:
        """False for an IVF index until :meth:`train` has run."""
        return bool(self._index.is_trained)

    ids = property(lambda self: read_only(self._columns["ids"]), doc="int64 image ids, ascending (read-only).")
    labels = property(lambda self: read_only(self._columns["labels"]), doc="Product label per image (read-only).")
    names = property(lambda self: read_only(self._columns["names"]), doc="Product name per image or None.")
    paths = property(lambda self: read_only(self._columns["paths"]), doc="Image path per image or None.")
    features = property(lambda self: read_only(self._columns["features"]) if self.keep_features else None,
                        doc="Kept L2-normalised features [N, dim], or None (keep_features=False); read-only.")

    @property
    def nprobe(self) -> Optional[int]:
        """IVF lists visited per query (faiss's default 1; None for other types). Saved with the index."""
        return int(search_knob(self._index, self.index_type, "IVF").nprobe) if "IVF" in self.index_type else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        search_knob(self._index, self.index_type, "IVF").nprobe = check_positive_int(value, "nprobe")

    @property
    def ef_search(self) -> Optional[int]:
        """HNSW search depth (faiss's default 16; None for other types). Saved with the index."""
        return int(search_knob(self._index, self.index_type, "HNSW").efSearch) if "HNSW" in self.index_type else None

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        search_knob(self._index, self.index_type, "HNSW").efSearch = check_positive_int(value, "ef_search")

    def train(self, sample_features: np.ndarray) -> None:
        """Train an IVF index (coarse centroids, PQ codebooks) on a representative feature sample, before
        any :meth:`add`; a sample too small for the index type raises ValueError."""
        if len(self):
            raise ProdrecError(f"train() must run before vectors are added; this index holds {len(self)}. "
                               "Use rebuild() to retrain on the kept features")
        sample = self._check_features(sample_features, "sample_features")
        try:
            self._index.train(sample)
        except RuntimeError as error:
            raise ProdrecError(f"training the {self.index_type} index on {len(sample)} vectors failed: "
                               f"{faiss_message(error)}; train on more vectors or pick a smaller nlist / m") from error

    def add(self, features: np.ndarray, labels: Sequence[str], *, names: Optional[Sequence[Optional[str]]] = None,
            paths: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        """Add features ``[N, dim]`` (L2-normalised here) with each row's product label (a non-empty str)
        and optional product name and image path (str or None); returns the rows' new ids."""
        self._require_trained()
        features = self._check_features(features, "features")
        count = len(features)
        labels, names, paths = (row_strings(values, count, name, optional=name != "labels")
                                for values, name in ((labels, "labels"), (names, "names"), (paths, "paths")))
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        self._index.add_with_ids(features, ids)
        new = {"ids": ids, "labels": labels, "names": names, "paths": paths, "features": features}
        self._columns = {key: np.concatenate([column, new[key]]) for key, column in self._columns.items()}
        self._next_id += count
        self.changes += count
        self._gpu = None
        return ids

    def remove(self, ids: Optional[Iterable[int]] = None, label: Union[str, Iterable[str], None] = None, *,
               rebuild: bool = False) -> int:
        """Remove images by id, or every image of one or more product labels; returns how many.

        HNSW cannot remove vectors in place (faiss does not implement it); ``rebuild=True`` rebuilds the
        index from the kept features without them (:meth:`rebuild`). Unknown ids or labels raise ValueError.
        """
        if (ids is None) == (label is None):
            raise ProdrecError("remove() takes either ids or label (not both, not neither)")
        if ids is not None:
            wanted = np.unique(np.asarray(list(ids), dtype=np.int64))
            found, where = np.isin(wanted, self.ids), np.isin(self.ids, wanted)
        else:
            wanted = np.unique(np.asarray([label] if isinstance(label, str) else list(label), dtype=object))
            found, where = np.isin(wanted, self.labels), np.isin(self.labels, wanted)
        if not found.all():
            raise ProdrecError(f"not in the gallery: {'ids' if ids is not None else 'labels'} "
                               f"{wanted[~found][:20].tolist()} ({int((~found).sum())} in all); nothing was removed")
        if rebuild:
            self._rebuild(self.index_type, keep=~where)
            self.changes += int(where.sum())
            return int(where.sum())
        try:
            removed = self._index.remove_ids(self.ids[where])
        except RuntimeError as error:
            raise ProdrecError(f"a {self.index_type} index cannot remove vectors in place (faiss: "
                               f"{faiss_message(error)}); call remove(..., rebuild=True), which rebuilds it "
                               "from the kept features, or rebuild the gallery from its images") from error
        if removed != where.sum():
            raise ProdrecRuntimeError(f"the faiss index removed {removed} of the {int(where.sum())} images its metadata "
                                      "lists: index and metadata disagree; rebuild the gallery")
        self._columns = {key: column[~where] for key, column in self._columns.items()}
        self.changes += int(removed)
        self._gpu = None
        return int(removed)

    def rebuild(self, *, index_type: Optional[str] = None) -> None:
        """Recreate the faiss index from the kept features (same ids), optionally as another index type;
        IVF types are retrained on them. Without kept features, or too few to train: ValueError, no change."""
        self._rebuild(check_index_type(self.index_type if index_type is None else index_type, self.dim),
                      keep=np.ones(len(self), dtype=bool))

    def _rebuild(self, index_type: str, keep: np.ndarray) -> None:
        if not self.keep_features:
            raise ProdrecError("rebuild() needs the features, but this index was made with keep_features=False; "
                               "rebuild the gallery from its images (prodrec.gallery.build_gallery)")
        columns = {key: column[keep] for key, column in self._columns.items()}
        fresh = new_faiss_index(self.dim, index_type, self.metric)
        if not fresh.is_trained:
            try:
                fresh.train(columns["features"])
            except RuntimeError as error:
                raise ProdrecError(f"cannot rebuild as {index_type}: training on the {len(columns['ids'])} kept "
                                   f"features failed ({faiss_message(error)})") from error
        fresh.add_with_ids(columns["features"], columns["ids"])
        knobs = {"nprobe": self.nprobe, "ef_search": self.ef_search} if index_type == self.index_type else {}
        self._index, self.index_type, self._columns, self._gpu = fresh, index_type, columns, None
        for name, value in knobs.items():  # the same type keeps the search parameters set on it
            if value is not None:
                setattr(self, name, value)

    def search(self, features: np.ndarray, k: int = 5, *, block_size: int = 4096, device: str = "auto",
               rerank: Optional[str] = None, rerank_options: Optional[Dict[str, Any]] = None,
               filter: Union[str, GalleryFilter, None] = None) -> SearchResult:
        """The ``k`` best gallery images of each query feature (L2-normalised here), in query blocks.

        Args:
            features: ``[Q, dim]`` query features.
            k: Matches per query (rows are padded when the gallery has fewer).
            block_size: Queries per faiss call: memory beyond the input and result is ``O(block_size * dim)``.
            device: ``"auto"`` (GPU for ``Flat`` when faiss is a GPU build and sees one), ``"cpu"``, ``"cuda"``.
            rerank: ``None``, ``"qe"`` or ``"k-reciprocal"``: re-rank the best matches with neighbours found
                in this index; see :func:`prodrec.retrieval.rerank_gallery` for the scores and the index types.
            rerank_options: ``top_k`` (candidates re-ranked, default ``max(k, 100)``) and the method's options.
            filter: Only images this expression accepts (:mod:`prodrec.gallery.filters`), searched exactly:
                over their kept features (or, without them, a Flat index limited to their ids), so a filtered
                search on an HNSW or IVF gallery is exact and costs a scan of the images that pass.
        """
        k, block_size = check_positive_int(k, "k"), check_positive_int(block_size, "block_size")
        self._require_trained()
        if filter is not None:
            if rerank is not None:
                raise ProdrecError("a filtered search cannot be re-ranked (re-ranking reads the whole gallery); "
                                   "drop one of the two")
            scores, ids = self._filtered_search(features, k, filter if isinstance(filter, GalleryFilter)
                                                else parse_filter(filter))
        elif rerank is not None and len(self):
            scores, ids = rerank_gallery(self, features, k, method=rerank, device=device, **(rerank_options or {}))
        else:
            features, index = np.asarray(features), self._search_index(k, device)
            scores = np.empty((len(features), k), dtype=np.float32)
            ids = np.empty((len(features), k), dtype=np.int64)
            for start in range(0, len(features), block_size):
                block = slice(start, start + block_size)
                index.search(self._check_features(features[block], "features"), k, D=scores[block], I=ids[block])
        found = ids >= 0
        scores[~found] = -np.inf if self.metric == "ip" else np.inf
        rows = np.searchsorted(self.ids, ids[found])
        if not np.array_equal(self.ids[np.minimum(rows, len(self) - 1)], ids[found]):
            raise ProdrecRuntimeError("the faiss index returned image ids its metadata does not hold: index and "
                                      "metadata disagree; rebuild the gallery")
        labels, names = np.full(ids.shape, None, dtype=object), np.full(ids.shape, None, dtype=object)
        labels[found], names[found] = self.labels[rows], self.names[rows]
        return SearchResult(scores=scores, ids=np.where(found, ids, -1), labels=labels, names=names)

    def _filtered_search(self, features: np.ndarray, k: int, where: GalleryFilter) -> Tuple[np.ndarray, np.ndarray]:
        """Exact scores and ids ``[Q, k]`` among the images ``where`` accepts (ids -1 beyond them)."""
        rows = np.flatnonzero(where.mask(filter_columns(self)))
        if self.keep_features:
            vectors = self.features[rows]
        elif self.index_type == "Flat" or (self.index_type.startswith("HNSW") and "PQ" not in self.index_type):
            vectors = self._index.reconstruct_batch(self.ids[rows])  # these keep the vectors exactly
        else:
            raise ProdrecError(f"a filtered search on a {self.index_type} gallery needs its kept features, but it was "
                               "built with --no-features; rebuild it without that option, or as Flat")
        return exact_search(vectors, self.ids[rows], self._check_features(np.asarray(features), "features"), k,
                            self.metric)

    def _search_index(self, k: int, device: str):
        """The index, or for Flat a copy on the GPU (made once, dropped when the gallery changes)."""
        if device not in ("auto", "cpu", "cuda") or (device == "cuda" and self.index_type != "Flat"):
            raise ProdrecError(f"device must be 'auto', 'cpu' or 'cuda' (for Flat indexes), got {device!r} for a "
                               f"{self.index_type} index")
        faiss = import_faiss()
        if self.index_type != "Flat" or not use_faiss_gpu(faiss, device, k):
            return self._index
        if self._gpu is None:
            resources = faiss.StandardGpuResources()
            self._gpu = (resources, faiss.index_cpu_to_gpu(resources, 0, self._index))
        return self._gpu[1]

    def _require_trained(self) -> None:
        if not self.is_trained:
            raise ProdrecError(f"the {self.index_type} index is not trained: call train(sample_features) with a "
                               "representative sample first (build_gallery trains on the gallery itself)")

    def _check_features(self, features: np.ndarray, name: str) -> np.ndarray:
        array = l2_normalize(features)
        if array.shape[1] != self.dim:
            raise ProdrecError(f"{name} have dimension {array.shape[1]}, but this index holds {self.dim}-d features")
        return array
