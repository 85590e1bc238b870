"""The on-disk format of one saved generation of a :class:`~prodrec.gallery.GalleryIndex`: a folder of three
files (:mod:`prodrec.gallery.folder` keeps the generations).

- ``index.faiss``: the faiss index (``faiss.write_index``; IVF ``nprobe`` / HNSW ``efSearch`` included).
- ``meta.npz``: ``ids`` (int64), ``labels``, ``names``, ``paths`` (unicode; ``""`` = none) and, when kept,
  ``features`` (float32 ``[N, dim]``); read with ``allow_pickle=False``.
- ``meta.json``: ``format`` (``prodrec.gallery.build``), ``version``, ``dim``, ``metric``, ``index_type``, ``count``,
  ``next_id``, ``keep_features``, ``embedder`` (backbone, embedding size, preprocessing, weights hash, or
  null), ``changes`` (images added and removed since it was made), ``calibration`` (the stored threshold and
  how it was chosen, or null; both added in 0.2 and optional) and ``files``: the sha256 and size of the two
  other files.

Each file is written to a temporary name, fsynced and renamed; ``meta.json`` goes last. Loading checks format,
version and checksums before faiss reads a byte, then that dimension, metric, count and ids agree across the
three files; anything else is a :class:`~prodrec.utils.ProdrecError` saying what to do.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from prodrec import __version__
from prodrec.gallery.calibrate import Calibration
from prodrec.retrieval import METRICS, check_index_type, import_faiss
from prodrec.utils import ProdrecError, atomic_write, file_sha256

__all__ = ["GALLERY_FORMAT", "GALLERY_VERSION", "GALLERY_FILES", "write_generation", "read_generation"]

GALLERY_FORMAT = "prodrec.gallery"
GALLERY_VERSION = 1
_INDEX_FILE, _ARRAYS_FILE, _META_FILE = "index.faiss", "meta.npz", "meta.json"
GALLERY_FILES = (_INDEX_FILE, _ARRAYS_FILE, _META_FILE)  # in the order they are written
_ARRAYS = ("ids", "labels", "names", "paths")
_RECOVERY = ("rebuild it (prodrec index build --force) or make the previous generation current (write its "
             "folder's name, gen-NNNNNN, into the gallery's CURRENT file)")


def write_generation(gallery: Any, directory: Union[str, os.PathLike]) -> Path:
    """Write ``gallery``'s three files into ``directory`` (created if needed; each written atomically). OSError
    (disk full, file-size limit) when a write fails; faiss's index is serialised here and written by Python,
    so its failures carry their errno too."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"ids": gallery.ids, "labels": _unicode(gallery.labels), "names": _unicode(gallery.names),
              "paths": _unicode(gallery.paths)}
    if gallery.features is not None:
        arrays["features"] = gallery.features
    faiss = import_faiss()
    files = {
        _INDEX_FILE: _write_atomic(directory / _INDEX_FILE,
                                   lambda path: path.write_bytes(faiss.serialize_index(gallery._index).tobytes())),
        _ARRAYS_FILE: _write_atomic(directory / _ARRAYS_FILE, lambda path: _savez(path, arrays)),
    }
    meta = {"format": GALLERY_FORMAT, "version": GALLERY_VERSION, "prodrec_version": __version__,
            "dim": gallery.dim, "metric": gallery.metric, "index_type": gallery.index_type, "count": len(gallery),
            "next_id": gallery._next_id, "keep_features": gallery.features is not None,
            "embedder": gallery.embedder_info, "changes": gallery.changes,
            "calibration": None if gallery.calibration is None else gallery.calibration.to_json(), "files": files}
    text = json.dumps(meta, indent=2) + "\n"
    _write_atomic(directory / _META_FILE, lambda path: Path(path).write_text(text, encoding="utf-8"))
    return directory


def read_generation(directory: Union[str, os.PathLike], gallery_class: Callable[..., Any]) -> Any:
    """Read a gallery written by :func:`write_generation` into a new ``gallery_class`` (GalleryIndex), checking it first.

    Raises:
        FileNotFoundError: The folder or one of its three files is missing.
        ValueError: Not a prodrec gallery, a newer version, a checksum mismatch (a truncated or edited
            file, named in the message) or files that disagree with ``meta.json``.
    """
    directory = Path(directory)
    meta_path = directory / _META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: {directory} is not a saved gallery "
                                f"(GalleryIndex.save writes {_INDEX_FILE}, {_ARRAYS_FILE} and {_META_FILE})")
    meta = _read_meta(meta_path)
    for name in (_INDEX_FILE, _ARRAYS_FILE):
        _verify_file(directory / name, meta["files"][name], meta_path)
    gallery = gallery_class(meta["dim"], index_type=meta["index_type"], metric=meta["metric"],
                           keep_features=meta["keep_features"])
    try:
        index = import_faiss().read_index(str(directory / _INDEX_FILE))
    except RuntimeError as error:  # faiss's reader raises RuntimeError on bytes it cannot parse
        raise ProdrecError(f"{directory / _INDEX_FILE} is not a faiss index that this faiss reads ({str(error)[:200]}); "
                           f"{_RECOVERY}") from None
    if index.d != meta["dim"] or index.ntotal != meta["count"] or not _same_kind(index, gallery._index):
        raise ProdrecError(f"{directory / _INDEX_FILE} holds {index.ntotal} vectors of dimension {index.d} in an "
                           f"{_describe(index)}, but {meta_path} says {meta['count']} of dimension {meta['dim']} in "
                           f"a {meta['index_type']} ({_describe(gallery._index)}); the gallery folder is inconsistent")
    try:
        with np.load(directory / _ARRAYS_FILE, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as error:
        raise ProdrecError(f"{directory / _ARRAYS_FILE} is not a readable archive of arrays ({str(error)[:200]}); "
                           f"{_RECOVERY}") from None
    _check_arrays(arrays, meta, directory / _ARRAYS_FILE)
    stored_ids = _index_ids(index)
    if stored_ids is not None and not np.array_equal(np.sort(stored_ids), arrays["ids"]):
        raise ProdrecError(f"{directory / _INDEX_FILE} holds other image ids than {directory / _ARRAYS_FILE} lists "
                           f"(the index and its metadata come from different saves); {_RECOVERY}")
    gallery._index = index
    gallery._columns = {"ids": arrays["ids"].astype(np.int64), **{key: _objects(arrays[key]) for key in _ARRAYS[1:]}}
    if meta["keep_features"]:
        gallery._columns["features"] = np.ascontiguousarray(arrays["features"], dtype=np.float32)
    gallery._next_id = meta["next_id"]
    gallery.embedder_info = meta["embedder"]
    gallery.changes = meta["changes"]
    gallery.calibration = None if meta["calibration"] is None else Calibration.from_json(meta["calibration"], str(meta_path))
    return gallery


def _parts(index: Any) -> list:
    """The faiss index and, for an id map, the index it wraps, as their concrete classes."""
    faiss = import_faiss()
    outer = faiss.downcast_index(index)
    return [outer] + ([faiss.downcast_index(outer.index)] if isinstance(outer, faiss.IndexIDMap2) else [])


def _index_ids(index: Any) -> Any:
    """The ids a faiss index holds (id map or inverted lists), or None for an index that keeps none."""
    faiss = import_faiss()
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexIDMap2):
        return faiss.vector_to_array(outer.id_map)
    try:
        lists = faiss.extract_index_ivf(outer).invlists
    except RuntimeError:  # not an IVF index
        return None
    return np.concatenate([np.empty(0, dtype=np.int64)] + [
        faiss.rev_swig_ptr(lists.get_ids(number), lists.list_size(number)).copy()
        for number in range(lists.nlist) if lists.list_size(number)])


def _describe(index: Any) -> str:
    return f"{' over '.join(type(part).__name__ for part in _parts(index))} with metric {index.metric_type}"


def _same_kind(loaded: Any, fresh: Any) -> bool:
    """Whether ``loaded`` has the structure and metric of the empty ``fresh`` index (IndexFlatIP is an IndexFlat)."""
    found, expected = _parts(loaded), _parts(fresh)
    return (len(found) == len(expected) and loaded.metric_type == fresh.metric_type
            and all(isinstance(f, type(e)) for f, e in zip(found, expected)))


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProdrecError(f"{path} is not valid JSON ({error}); the gallery folder is damaged") from error
    if not isinstance(meta, dict) or meta.get("format") != GALLERY_FORMAT:
        raise ProdrecError(f"{path} is not a prodrec gallery file (its 'format' is not {GALLERY_FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version > GALLERY_VERSION:
        raise ProdrecError(f"{path}: gallery format version {version!r} is newer than this prodrec "
                           f"({__version__}) reads (up to {GALLERY_VERSION}); upgrade prodrec")
    keys = {"dim": int, "metric": str, "index_type": str, "count": int, "next_id": int, "keep_features": bool,
            "files": dict}
    problems = [f"{key!r} must be {kind.__name__}" for key, kind in keys.items() if not isinstance(meta.get(key), kind)]
    if not problems:
        problems += [f"'files' needs {{'sha256': str, 'bytes': int}} for {name!r}" for name in (_INDEX_FILE, _ARRAYS_FILE)
                     if not isinstance(meta["files"].get(name), dict)
                     or not isinstance(meta["files"][name].get("sha256"), str)]
        if meta["metric"] not in METRICS:
            problems.append(f"unknown metric {meta['metric']!r}")
        if meta["count"] < 0 or meta["next_id"] < 0:
            problems.append("count and next_id must be >= 0")
    if problems:
        raise ProdrecError(f"{path}: invalid gallery metadata: {'; '.join(problems)}")
    check_index_type(meta["index_type"], meta["dim"])
    meta.setdefault("embedder", None)
    meta.setdefault("changes", 0)
    meta.setdefault("calibration", None)
    if isinstance(meta["changes"], bool) or not isinstance(meta["changes"], int) or meta["changes"] < 0:
        raise ProdrecError(f"{path}: invalid gallery metadata: 'changes' must be an int >= 0")
    return meta


def _verify_file(path: Path, expected: dict, meta_path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the gallery folder is incomplete")
    digest = file_sha256(path)
    if digest != expected["sha256"]:
        raise ProdrecError(f"{path} is damaged or was changed after saving: its sha256 ({digest[:12]}..., "
                           f"{path.stat().st_size} bytes) is not the one {meta_path} records ({expected['sha256'][:12]}"
                           f"..., {expected.get('bytes')} bytes); {_RECOVERY}")


def _check_arrays(arrays: dict, meta: dict, path: Path) -> None:
    count, problems = meta["count"], []
    wanted = _ARRAYS + (("features",) if meta["keep_features"] else ())
    problems += [f"no {key!r} array" for key in wanted if key not in arrays]
    problems += [f"{key!r} has shape {arrays[key].shape}, expected ({count},)"
                 for key in _ARRAYS if key in arrays and arrays[key].shape != (count,)]
    if "features" in wanted and "features" in arrays and arrays["features"].shape != (count, meta["dim"]):
        problems.append(f"'features' has shape {arrays['features'].shape}, expected ({count}, {meta['dim']})")
    if not problems:
        ids = arrays["ids"]
        if ids.dtype.kind not in "iu" or (count and (np.any(np.diff(ids) <= 0) or ids[-1] >= meta["next_id"])):
            problems.append(f"'ids' must be strictly increasing integers below next_id {meta['next_id']}")
        if count and np.any(arrays["labels"] == ""):
            problems.append("'labels' has empty entries")
    if problems:
        raise ProdrecError(f"{path} does not match {path.parent / _META_FILE}: {'; '.join(problems)}")


def _write_atomic(path: Path, write: Callable[[Path], None]) -> dict:
    """:func:`prodrec.utils.atomic_write` ``path``; return its checksum and size."""
    atomic_write(path, write)
    return {"sha256": file_sha256(path), "bytes": os.path.getsize(path)}


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as stream:  # a file object, so numpy does not append ".npz" to the name
        np.savez(stream, **arrays)


def _unicode(values: np.ndarray) -> np.ndarray:
    return np.array(["" if v is None else v for v in values], dtype=str) if len(values) else np.empty(0, dtype="<U1")


def _objects(values: np.ndarray) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [str(v) or None for v in values]
    return array
