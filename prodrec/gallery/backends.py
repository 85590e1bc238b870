"""Where a gallery folder's images live: its own faiss generations (the default) or a Milvus collection.

A gallery folder is what every command takes (``--index GALLERY``). A faiss gallery keeps its generations in
it (:mod:`prodrec.gallery.folder`); a Milvus gallery keeps ``backend.json`` there, naming the backend, the
URI and the collection (never credentials: :mod:`prodrec.gallery.milvus_client`). :func:`gallery_backend`
reads the folder and gives the object that opens, changes and watches that gallery, so the commands, the
:class:`~prodrec.gallery.Recognizer` and ``prodrec serve`` work the same on either.

Example:
    >>> with update_gallery("shop-gallery") as gallery:  # doctest: +SKIP
    ...     gallery.remove(label="discontinued-sku")
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

from prodrec.gallery.folder import BACKEND_FILE, GalleryFolder
from prodrec.gallery.index import GalleryIndex
from prodrec.gallery.milvus_client import is_local_uri
from prodrec.utils import ProdrecError, atomic_write

__all__ = ["BACKENDS", "FaissBackend", "MilvusBackend", "gallery_backend", "open_gallery", "update_gallery",
           "create_milvus_gallery", "record_milvus_gallery", "DEFAULT_MILVUS_FILE"]

BACKENDS = ("faiss", "milvus")
DEFAULT_MILVUS_FILE = "milvus.db"  # Milvus Lite inside the gallery folder, when no --uri is given
Directory = Union[str, "os.PathLike[str]"]


class FaissBackend:
    """A gallery saved as faiss generations in its folder; one writer at a time (the folder's lock)."""

    name, shared_writes = "faiss", False

    def __init__(self, directory: Directory) -> None:
        self.folder = GalleryFolder(directory)

    def load(self) -> GalleryIndex:
        return GalleryIndex.load(self.folder.directory)

    @contextmanager
    def update(self, *, wait: bool = True, on_wait: Optional[Callable[[str], None]] = None) -> Iterator[GalleryIndex]:
        with GalleryIndex.update(self.folder.directory, wait=wait, on_wait=on_wait) as gallery:
            yield gallery

    def generation(self) -> Optional[str]:
        """The saved generation a reader loads now (another writer's save changes it)."""
        return self.folder.generation()

    def describe(self) -> Dict[str, Any]:
        files = {name: os.path.getsize(self.folder.current_folder() / name) for name in ("index.faiss", "meta.npz")}
        return {"backend": self.name, "generation": self.generation(), "file_bytes": files}


class MilvusBackend:
    """A gallery in a Milvus collection named by the folder's ``backend.json``. Any number of processes may
    change it at once (Milvus orders the writes); each reads changes made by others at once."""

    name, shared_writes = "milvus", True

    def __init__(self, directory: Directory, record: Dict[str, Any]) -> None:
        self.folder = GalleryFolder(directory)
        self.record = record
        uri = record["uri"]
        self.uri = str(self.folder.directory / uri) if is_local_uri(uri) and not os.path.isabs(uri) else uri
        self.collection = record["collection"]
        self._open: Optional[Any] = None

    def load(self) -> Any:
        from prodrec.gallery.milvus import MilvusGallery

        self._open = MilvusGallery(self.uri, self.collection)
        return self._open

    @contextmanager
    def update(self, *, wait: bool = True, on_wait: Optional[Callable[[str], None]] = None) -> Iterator[Any]:
        """The gallery; its rows change as the block adds and removes them (each change acknowledged by Milvus),
        and its gallery-wide record (embedder, calibration, change count) is stored when the block ends well.
        The folder's write lock orders this machine's writers; other machines' are ordered by Milvus."""
        with self.folder.writing(wait=wait, on_wait=on_wait):
            gallery = self.load()
            yield gallery
            gallery.commit()

    def generation(self) -> Optional[str]:
        """The gallery-wide record's token in Milvus (a commit by any process changes it)."""
        return (self._open or self.load()).stored_generation()

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "uri": self.uri, "collection": self.collection, "generation": self.generation()}


def gallery_backend(directory: Directory) -> Union[FaissBackend, MilvusBackend]:
    """The backend of the gallery in ``directory``: Milvus when it holds ``backend.json``, else faiss."""
    path = Path(directory) / BACKEND_FILE
    if not path.is_file():
        return FaissBackend(directory)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProdrecError(f"{path} is not valid JSON ({error}); write it again: "
                           '{"backend": "milvus", "uri": "...", "collection": "..."}') from None
    if (not isinstance(record, dict) or record.get("backend") != "milvus"
            or not all(isinstance(record.get(key), str) and record[key] for key in ("uri", "collection"))):
        raise ProdrecError(f"{path} must name the backend, URI and collection: "
                           '{"backend": "milvus", "uri": "...", "collection": "..."}')
    return MilvusBackend(directory, record)


def open_gallery(directory: Directory) -> Any:
    """The gallery in a folder (a :class:`~prodrec.gallery.GalleryIndex` or a
    :class:`~prodrec.gallery.MilvusGallery`)."""
    return gallery_backend(directory).load()


@contextmanager
def update_gallery(directory: Directory, *, wait: bool = True,
                   on_wait: Optional[Callable[[str], None]] = None) -> Iterator[Any]:
    """Change the gallery in a folder, on either backend (:meth:`GalleryIndex.update
    <prodrec.gallery.GalleryIndex.update>`, :meth:`MilvusBackend.update`)."""
    with gallery_backend(directory).update(wait=wait, on_wait=on_wait) as gallery:
        yield gallery


def create_milvus_gallery(directory: Directory, *, dim: int, uri: Optional[str] = None, collection: Optional[str] = None,
                          index_type: str = "FLAT", metric: str = "ip", replace: bool = False) -> Any:
    """A new empty Milvus gallery (:class:`~prodrec.gallery.MilvusGallery`) for the folder ``directory``; call
    :func:`record_milvus_gallery` once it is filled. ``uri`` None: Milvus Lite in ``directory/milvus.db``."""
    from prodrec.gallery.milvus import DEFAULT_COLLECTION, MilvusGallery

    uri = uri or str(Path(directory) / DEFAULT_MILVUS_FILE)
    return MilvusGallery.create(uri, collection or DEFAULT_COLLECTION, dim=dim, index_type=index_type, metric=metric,
                                replace=replace)


def record_milvus_gallery(directory: Directory, gallery: Any) -> Path:
    """Write ``backend.json`` into ``directory`` (atomically), naming ``gallery``'s URI (relative when the
    Milvus Lite folder is inside the gallery folder, so the two move together) and collection."""
    folder = Path(directory)
    uri = gallery.uri
    if is_local_uri(uri):
        absolute, home = Path(uri).resolve(), folder.resolve()
        uri = str(absolute.relative_to(home)) if absolute.is_relative_to(home) else str(absolute)
    text = json.dumps({"backend": "milvus", "uri": uri, "collection": gallery.collection}, indent=2) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / BACKEND_FILE, lambda path: path.write_text(text, encoding="utf-8"))
    return folder / BACKEND_FILE
