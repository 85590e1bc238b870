"""The Milvus gallery backend: a gallery's images in a Milvus collection (``pip install "prodrec[milvus]"``).

One collection per gallery: an auto-assigned int64 ``id``, the L2-normalised ``vector``, and the scalar fields
``label``, ``name`` and ``path`` (``""`` = none), so every process on the same Milvus sees the same images.
What belongs to the whole gallery (the embedder record, the calibration, the change count) is kept in the
collection's properties under ``prodrec.*``, with ``prodrec.generation``, a token that changes with each
committed change of them. Every call is strongly consistent: a search sees each acknowledged add and remove.

The same code runs on Milvus Lite (``uri`` = a local ``.db`` folder, one process at a time), a Milvus server
(``http://host:19530``, or ``milvus-lite server`` on a port) or a cluster. Credentials for a server come from
``PRODREC_MILVUS_TOKEN`` (``user:password`` or an API key) or the file named by ``PRODREC_MILVUS_TOKEN_FILE``.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Dict, Iterable, Optional, Sequence, Union

import numpy as np

from prodrec.gallery.calibrate import Calibration
from prodrec.gallery.filters import GalleryFilter, parse_filter
from prodrec.gallery.columns import row_strings
from prodrec.gallery.index import SearchResult
from prodrec.gallery.milvus_client import (MILVUS_INDEX_TYPES, check_collection_name, check_milvus_index_type,
                                           is_milvus_lite, milvus_call, milvus_client)
from prodrec.retrieval import METRICS, l2_normalize
from prodrec.utils import ProdrecError, check_positive_int

__all__ = ["MilvusGallery", "DEFAULT_COLLECTION"]

DEFAULT_COLLECTION = "prodrec_gallery"
_SIZES = {"label": 512, "name": 1024, "path": 4096}
_PAGE = 4096  # rows per insert, delete and query page
_FLUSH_ROWS = 10_000  # an add of this many rows is flushed: a bulk load, not a shop's new product


class MilvusGallery:
    """A gallery in a Milvus collection, with the search, add and remove of
    :class:`~prodrec.gallery.GalleryIndex` (the gallery contract); open one with
    :func:`prodrec.gallery.open_gallery` or make one with :meth:`create`.

    Example:
        >>> gallery = MilvusGallery.create("shop.db", "shop", dim=512)  # doctest: +SKIP
        >>> gallery.add(features, labels); gallery.search(queries, k=5, filter='label in ["cola"]')  # doctest: +SKIP
    """

    backend = "milvus"
    keep_features = True  # Milvus keeps every vector
    is_trained = True

    def __init__(self, uri: str, collection: str) -> None:
        self.uri, self.collection = uri, collection
        self._client = milvus_client(uri)
        described = milvus_call(lambda: self._client.describe_collection(collection), self._where("open"),
                                missing=self._missing)
        properties = described.get("properties") or {}
        if properties.get("prodrec.format") != "prodrec.gallery":
            raise ProdrecError(f"the Milvus collection {collection!r} at {uri} was not made by prodrec (it has no "
                               "prodrec.format property); name another --collection, or build it with prodrec index build")
        vector = next(field for field in described["fields"] if field["name"] == "vector")
        self.dim = int(vector["params"]["dim"])
        self._read_properties(properties)
        self._lite = is_milvus_lite(self._client)
        milvus_call(lambda: self._client.load_collection(collection), self._where("load"))

    @classmethod
    def create(cls, uri: str, collection: str = DEFAULT_COLLECTION, *, dim: int, index_type: str = "FLAT",
               metric: str = "ip", replace: bool = False) -> "MilvusGallery":
        """A new empty gallery collection (``replace``: drop one of that name first; else one is refused)."""
        from pymilvus import DataType, MilvusClient

        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ProdrecError(f"dim must be a positive integer (the feature dimension), got {dim!r}")
        if metric not in METRICS:
            raise ProdrecError(f"metric must be one of {METRICS}, got {metric!r}")
        client = milvus_client(uri)
        index_type = check_milvus_index_type(index_type, client)
        check_collection_name(collection)
        where = f"creating the collection {collection!r} at {uri}"
        if milvus_call(lambda: client.has_collection(collection), where):
            if not replace:
                raise ProdrecError(f"the Milvus collection {collection!r} already exists at {uri}; replace it with "
                                   "--force, or name another with --collection")
            milvus_call(lambda: client.drop_collection(collection), where)
        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        for field, size in _SIZES.items():
            schema.add_field(field, DataType.VARCHAR, max_length=size)
        index = client.prepare_index_params()
        index.add_index("vector", index_type=index_type, metric_type=metric.upper(),
                        params=dict(MILVUS_INDEX_TYPES.get(index_type, {})))
        properties = {"prodrec.format": "prodrec.gallery", "prodrec.metric": metric, "prodrec.index_type": index_type,
                      "prodrec.changes": "0", "prodrec.generation": uuid.uuid4().hex, "prodrec.embedder": "null",
                      "prodrec.calibration": "null", "prodrec.search": "{}"}
        milvus_call(lambda: client.create_collection(collection, schema=schema, index_params=index,
                                                     consistency_level="Strong", properties=properties), where)
        return cls(uri, collection)

    # -- the gallery-wide record --------------------------------------------------------------------------

    @property
    def threshold(self) -> Optional[float]:
        """The calibrated acceptance threshold, or None when the gallery has none."""
        return None if self.calibration is None else self.calibration.threshold

    def _read_properties(self, properties: Dict[str, str]) -> None:
        where = f"the Milvus collection {self.collection!r} at {self.uri}"
        try:
            self.metric, self.index_type = properties["prodrec.metric"], properties["prodrec.index_type"]
            self.embedder_info = json.loads(properties["prodrec.embedder"])
            calibration = json.loads(properties["prodrec.calibration"])
            self.changes = int(properties["prodrec.changes"])
            self._search_params = json.loads(properties["prodrec.search"])
            self.generation: Optional[str] = properties["prodrec.generation"]
        except (KeyError, ValueError) as error:
            raise ProdrecError(f"{where}: its prodrec properties are damaged ({error!r}); rebuild the gallery") from None
        self.calibration = None if calibration is None else Calibration.from_json(calibration, where)

    def commit(self) -> str:
        """Store the gallery-wide record (embedder, calibration, changes, search parameters) under a new
        generation token, which tells other processes to re-read it; returns the token."""
        self.generation = uuid.uuid4().hex
        properties = {"prodrec.embedder": json.dumps(self.embedder_info), "prodrec.changes": str(self.changes),
                      "prodrec.calibration": json.dumps(None if self.calibration is None else self.calibration.to_json()),
                      "prodrec.search": json.dumps(self._search_params), "prodrec.generation": self.generation}
        milvus_call(lambda: self._client.alter_collection_properties(self.collection, properties=properties),
                    self._where("save"))
        return self.generation

    def stored_generation(self) -> Optional[str]:
        """The generation token in Milvus now (another process's commit changes it)."""
        described = milvus_call(lambda: self._client.describe_collection(self.collection), self._where("read"),
                                missing=self._missing)
        return (described.get("properties") or {}).get("prodrec.generation")

    nprobe = property(lambda self: self._knob("nprobe", "IVF", 16), lambda self, value: self._set("nprobe", "IVF", value),
                      doc="IVF lists searched per query (default 16; None for other types).")
    ef_search = property(lambda self: self._knob("ef", "HNSW", 64), lambda self, value: self._set("ef", "HNSW", value),
                         doc="HNSW search depth (default 64; None for other types).")

    def _knob(self, name: str, kind: str, default: int) -> Optional[int]:
        return self._search_params.get(name, default) if self.index_type.startswith(kind) else None

    def _set(self, name: str, kind: str, value: int) -> None:
        if not self.index_type.startswith(kind):
            raise ProdrecError(f"this search parameter applies to {kind} indexes; this one is {self.index_type}")
        self._search_params[name] = check_positive_int(value, name)

    # -- rows ------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        rows = milvus_call(lambda: self._client.query(self.collection, filter="", output_fields=["count(*)"],
                                                      consistency_level="Strong"), self._where("count"))
        return int(rows[0]["count(*)"])

    def __repr__(self) -> str:
        return f"MilvusGallery({self.collection!r} at {self.uri}, dim={self.dim}, index_type={self.index_type!r})"

    def _column(self, field: str) -> np.ndarray:
        return self._rows(["id", field])[field]

    ids = property(lambda self: self._rows(["id"])["id"], doc="int64 image ids, ascending.")
    labels = property(lambda self: self._column("label"), doc="Product label per image (by id).")
    names = property(lambda self: self._column("name"), doc="Product name per image or None (by id).")
    paths = property(lambda self: self._column("path"), doc="Image path per image or None (by id).")
    features = property(lambda self: self._column("vector"), doc="L2-normalised features [N, dim] (by id).")

    def _rows(self, fields: Sequence[str], expression: str = "") -> Dict[str, np.ndarray]:
        """Every row's ``fields`` (matching ``expression``), ordered by id; each page becomes arrays as it comes."""
        names = ["id", *[field for field in fields if field != "id"]]

        def read() -> Dict[str, list]:
            pages = self._client.query_iterator(self.collection, batch_size=_PAGE, filter=expression,
                                                output_fields=names, consistency_level="Strong")
            parts: Dict[str, list] = {field: [] for field in names}
            while page := pages.next():
                for field in names:
                    parts[field].append(_array(field, [row[field] for row in page], self.dim))
            pages.close()
            return parts
        parts = milvus_call(read, self._where("read"))
        columns = {field: np.concatenate([_array(field, [], self.dim), *chunks]) for field, chunks in parts.items()}
        order = np.argsort(columns["id"], kind="stable")
        return {field: column[order] for field, column in columns.items()}

    def add(self, features: np.ndarray, labels: Sequence[str], *, names: Optional[Sequence[Optional[str]]] = None,
            paths: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
        """Add features ``[N, dim]`` (L2-normalised here) with labels and optional names and paths; returns the
        ids Milvus gave them. Each page of rows is acknowledged (durable) before the next is sent; a bulk add
        (10,000 rows or more) is flushed, so that Milvus builds the index over it."""
        features = self._check_features(features, "features")
        count = len(features)
        columns = {name: row_strings(values, count, name, optional=name != "labels")
                   for values, name in ((labels, "labels"), (names, "names"), (paths, "paths"))}
        for field, column in zip(("label", "name", "path"), columns.values()):
            long = [value for value in column if value is not None and len(value.encode()) > _SIZES[field]]
            if long:
                raise ProdrecError(f"a Milvus gallery stores {field}s of up to {_SIZES[field]} bytes; {len(long)} are "
                                   f"longer, e.g. {long[0][:60]!r}...; shorten them")
        ids = []
        for start in range(0, count, _PAGE):
            rows = [{"vector": features[row].tolist(), "label": columns["labels"][row],
                     "name": columns["names"][row] or "", "path": columns["paths"][row] or ""}
                    for row in range(start, min(start + _PAGE, count))]
            done = milvus_call(lambda rows=rows: self._client.insert(self.collection, rows), self._where("add to"))
            ids.extend(done["ids"])
        if count >= _FLUSH_ROWS:
            self._index_now()
        self.changes += count
        return np.asarray(ids, dtype=np.int64)

    def _index_now(self) -> None:
        """Seal the added rows so that Milvus indexes them. A server indexes sealed segments by itself; Milvus Lite
        builds segment indexes only when a collection is loaded (until then it scans their rows), so it is
        reloaded: searches wait for the index build meanwhile."""
        milvus_call(lambda: self._client.flush(self.collection), self._where("flush"))
        if self._lite:
            milvus_call(lambda: self._client.release_collection(self.collection), self._where("index"))
            milvus_call(lambda: self._client.load_collection(self.collection), self._where("index"))

    def remove(self, ids: Optional[Iterable[int]] = None, label: Union[str, Iterable[str], None] = None, *,
               rebuild: bool = False) -> int:
        """Remove images by id, or every image of one or more labels; returns how many. Unknown ids or labels
        raise ValueError and nothing is removed. ``rebuild`` is accepted for the contract: Milvus removes
        from any index type."""
        if (ids is None) == (label is None):
            raise ProdrecError("remove() takes either ids or label (not both, not neither)")
        field = "id" if ids is not None else "label"
        wanted = (sorted({int(value) for value in ids}) if ids is not None
                  else sorted({label} if isinstance(label, str) else set(label)))
        found = set()
        for start in range(0, len(wanted), _PAGE):
            page = wanted[start:start + _PAGE]
            found.update(self._rows([field], f"{field} in {json.dumps(page)}")[field].tolist())
        missing = [value for value in wanted if value not in found]
        if missing:
            raise ProdrecError(f"not in the gallery: {field if ids is not None else 'labels'} {missing[:20]} "
                               f"({len(missing)} in all); nothing was removed")
        removed = 0
        for start in range(0, len(wanted), _PAGE):
            page = json.dumps(wanted[start:start + _PAGE])
            done = milvus_call(lambda page=page: self._client.delete(self.collection, filter=f"{field} in {page}"),
                               self._where("remove from"))
            removed += done["delete_count"] if isinstance(done, dict) else len(done)
        self.changes += removed
        return removed

    def search(self, features: np.ndarray, k: int = 5, *, block_size: int = 1024, device: str = "auto",
               rerank: Optional[str] = None, rerank_options: Optional[Dict[str, Any]] = None,
               filter: Union[str, GalleryFilter, None] = None) -> SearchResult:
        """The ``k`` best images of each query, as :meth:`GalleryIndex.search <prodrec.gallery.GalleryIndex.search>`
        answers (Milvus searches on its own device: ``device`` is accepted for the contract)."""
        k, block_size = check_positive_int(k, "k"), check_positive_int(block_size, "block_size")
        if rerank is not None:
            raise ProdrecError("re-ranking reads gallery vectors in this process and runs on faiss galleries; migrate "
                               "the gallery to faiss (prodrec index migrate --to faiss) or search without --rerank")
        expression = "" if filter is None else (filter if isinstance(filter, GalleryFilter) else parse_filter(filter)).expression
        queries = self._check_features(np.asarray(features), "features")
        worst = -np.inf if self.metric == "ip" else np.inf
        scores = np.full((len(queries), k), worst, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        labels, names = np.full(ids.shape, None, dtype=object), np.full(ids.shape, None, dtype=object)
        params = {"metric_type": self.metric.upper(), "params": {name: value for name, value in
                                                                  (("nprobe", self.nprobe), ("ef", self.ef_search))
                                                                  if value is not None}}
        if "ef" in params["params"]:
            params["params"]["ef"] = max(params["params"]["ef"], k)
        for start in range(0, len(queries), block_size):
            block = queries[start:start + block_size]
            found = milvus_call(lambda block=block: self._client.search(
                self.collection, data=block.tolist(), limit=k, filter=expression, output_fields=["label", "name"],
                search_params=params, consistency_level="Strong"), self._where("search"))
            for row, hits in enumerate(found, start=start):
                for rank, hit in enumerate(hits[:k]):
                    scores[row, rank], ids[row, rank] = hit["distance"], hit["id"]
                    labels[row, rank], names[row, rank] = hit["entity"]["label"], hit["entity"]["name"] or None
        return SearchResult(scores=scores, ids=ids, labels=labels, names=names)

    def _check_features(self, features: np.ndarray, name: str) -> np.ndarray:
        array = l2_normalize(features)
        if array.shape[1] != self.dim:
            raise ProdrecError(f"{name} have dimension {array.shape[1]}, but the Milvus collection {self.collection!r} "
                               f"holds {self.dim}-d vectors; use the model the gallery was built with")
        return array

    def _where(self, action: str) -> str:
        return f"{action} the Milvus collection {self.collection!r} at {self.uri}"

    def _missing(self) -> str:
        return (f"the gallery's Milvus collection {self.collection!r} does not exist at {self.uri} (dropped, or "
                "another server or .db?); rebuild it with prodrec index build --backend milvus --force, or correct "
                "the gallery folder's backend.json")


def _array(field: str, values: list, dim: int) -> np.ndarray:
    """A page of one field as an array: ids int64, vectors float32 ``[n, dim]``, strings objects (``""``: None)."""
    if field == "id":
        return np.asarray(values, dtype=np.int64)
    if field == "vector":
        return np.asarray(values, dtype=np.float32).reshape(len(values), dim)
    array = np.empty(len(values), dtype=object)
    array[:] = [value or None for value in values]
    return array
