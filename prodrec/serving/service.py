"""The gallery a server answers from, and the changes staff make to it while it serves.

:class:`GalleryService` holds the loaded gallery as an immutable snapshot: a search takes the snapshot of
the moment and never sees half a change. A change (add a product, remove one) goes through
:meth:`GalleryIndex.update <prodrec.gallery.GalleryIndex.update>`: under the gallery's write lock, the newest
saved generation is loaded, changed, and saved as the next generation (fsynced, switched atomically) before
the call returns; then the snapshot is swapped. So an acknowledged change survives ``kill -9``, changes by
the CLI (``prodrec index add``) are never lost, and the service reloads when another writer has switched
the generation. One service per gallery folder (``serve.lock``): a second is refused, naming the first's pid.
"""
from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from prodrec.data import decode_image
from prodrec.gallery import EmbeddedImages, Recognition, Recognizer, add_embedded, gallery_backend
from prodrec.models import ImageEmbedder
from prodrec.utils import FileLock, ProdrecError, atomic_write

__all__ = ["GalleryService", "ProductNotFound", "ReadOnly", "UPLOADS_FOLDER", "SERVER_LOCK_FILE"]

UPLOADS_FOLDER, SERVER_LOCK_FILE = "uploads", "serve.lock"


class ProductNotFound(ProdrecError):
    """A label or image id the gallery does not hold."""


class ReadOnly(ProdrecError):
    """A change sent to a read-only service."""


class GalleryService:
    """Recognition and product changes on the gallery in ``directory`` with ``embedder``.

    Args:
        directory: A gallery folder (``prodrec index build``).
        embedder: The gallery's model (checked against the gallery's record), e.g. a
            :class:`~prodrec.serving.BatchingEmbedder` around it.
        threshold: The default acceptance threshold; None: the gallery's calibrated one when it has one,
            else 0.5 (:class:`~prodrec.gallery.Recognizer`).
        detector: Finds the products of each photo (e.g. a :class:`~prodrec.models.ProductDetector`): one region
            per product plus the whole photo, as :class:`~prodrec.gallery.Recognizer` with a detector gives them.
        read_only: Serve searches only: no server lock, so any number of read-only services (processes
            behind a load balancer) share the folder with the one that writes; each reloads when the
            gallery's generation changes. A Milvus gallery needs no lock: any number of services write it
            (Milvus orders the writes), and each sees the others' changes at once.
    """

    def __init__(self, directory: Union[str, os.PathLike], embedder: ImageEmbedder, *,
                 threshold: Optional[float] = None, detector: Any = None, read_only: bool = False) -> None:
        self.backend = gallery_backend(directory)
        self.folder = self.backend.folder
        self.embedder, self.read_only, self.detector = embedder, read_only, detector
        self.threshold = threshold
        self._server_lock = FileLock(self.folder.directory / SERVER_LOCK_FILE, refusal=lambda owner: (
            f"another prodrec serve (pid {owner}) serves the gallery {self.folder.directory} with writes on; stop "
            "it, or start this one with --read-only"))
        if not read_only and not self.backend.shared_writes:
            self._server_lock.acquire()
        self._products: Optional[Tuple[Any, List[Dict[str, Any]]]] = None
        try:
            self._reload_lock = threading.Lock()
            self._use(self.backend.load())
        except BaseException:
            self._server_lock.release()
            raise

    def close(self) -> None:
        self._server_lock.release()  # nothing to release when read-only

    @property
    def gallery(self) -> Any:
        """The current snapshot (reloaded first if another writer switched the generation)."""
        return self._current()[0]

    @property
    def default_threshold(self) -> float:
        """The threshold a recognition without one uses (the gallery's calibrated one, when it has one)."""
        return self._current()[1].threshold

    def _current(self) -> Tuple[Any, Recognizer]:
        generation = self.backend.generation()
        if generation != self._generation:
            with self._reload_lock:
                if generation != self._generation:
                    self._use(self.backend.load())
        return self._snapshot

    def _use(self, gallery: Any) -> None:
        """Make ``gallery`` the snapshot, with its recognizer (which checks the model against it once)."""
        self._snapshot = (gallery, Recognizer(self.embedder, gallery, threshold=self.threshold, detector=self.detector))
        self._generation = gallery.generation  # the one it was read or saved as: a newer one is reloaded

    def recognize(self, data: bytes, *, k: int = 5, threshold: Optional[float] = None,
                  boxes: Optional[Sequence[Sequence[float]]] = None, filter: Optional[str] = None) -> List[Recognition]:
        """The regions of an uploaded photo (its bytes), as ``prodrec search`` finds them (``filter``: only
        gallery images it accepts, :mod:`prodrec.gallery.filters`)."""
        image = decode_image(data)
        return self._current()[1].recognize(image, boxes, k=k, threshold=threshold, filter=filter)

    def products(self) -> List[Dict[str, Any]]:
        """Every product: label, name (its first named image's) and image count, sorted by label; worked out
        once per gallery snapshot (a Milvus gallery's labels are read from the database)."""
        gallery = self.gallery
        cached = self._products
        if cached is not None and cached[0] is gallery:
            return cached[1]
        found = {}
        for label, name in zip(gallery.labels.tolist(), gallery.names.tolist()):
            entry = found.setdefault(label, {"label": label, "name": None, "images": 0})
            entry["images"] += 1
            entry["name"] = entry["name"] or name
        listing = [found[label] for label in sorted(found)]
        self._products = (gallery, listing)
        return listing

    def add_product(self, label: str, images: Sequence[Tuple[str, bytes]], *, name: Optional[str] = None) -> List[int]:
        """Embed uploaded ``(file name, bytes)`` images of one product, keep them under ``uploads/``, add them
        and save the gallery durably; returns their ids."""
        self._check_writable()
        if not label or not label.strip() or not images:
            raise ProdrecError("a product needs a non-empty label and at least one image")
        pixels = [decode_image(data, file_name) for file_name, data in images]  # all refused before any is kept
        features = self.embedder.embed(pixels).numpy()
        folder = self.folder.directory / UPLOADS_FOLDER / uuid.uuid4().hex
        paths = []
        for number, (file_name, data) in enumerate(images):
            path = folder / f"{number}{Path(file_name).suffix.lower() or '.img'}"
            atomic_write(path, lambda temporary, data=data: temporary.write_bytes(data))
            paths.append(str(path))
        embedded = EmbeddedImages(features, [label] * len(images), [name] * len(images), paths,
                                  self.embedder.embedder_info)
        with self.backend.update() as gallery:
            ids = add_embedded(gallery, embedded)
        self._swap(gallery)
        return ids.tolist()

    def remove_product(self, label: str) -> int:
        """Remove every image of ``label``; returns how many."""
        self._check_writable()
        with self.backend.update() as gallery:
            if label not in set(gallery.labels):
                raise ProductNotFound(f"no product {label!r} in the gallery")
            removed = gallery.remove(label=label, rebuild=gallery.index_type.startswith("HNSW"))
        self._swap(gallery)
        return removed

    def remove_image(self, image_id: int) -> None:
        self._check_writable()
        with self.backend.update() as gallery:
            if image_id not in set(gallery.ids.tolist()):
                raise ProductNotFound(f"no image {image_id} in the gallery")
            gallery.remove(ids=[image_id], rebuild=gallery.index_type.startswith("HNSW"))
        self._swap(gallery)

    def image_path(self, image_id: int) -> Optional[str]:
        """The file an image was embedded from, when the gallery recorded one."""
        gallery = self.gallery
        row = np.searchsorted(gallery.ids, image_id)
        if row >= len(gallery) or gallery.ids[row] != image_id:
            raise ProductNotFound(f"no image {image_id} in the gallery")
        return gallery.paths[row]

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnly("this server is read-only (--read-only); send changes to the server that writes")

    def _swap(self, gallery: Any) -> None:
        with self._reload_lock:
            self._use(gallery)
