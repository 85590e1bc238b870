"""A gallery folder: saved generations of a gallery, switched atomically, written by one writer at a time.

::

    G/
      CURRENT          the generation readers load (``gen-000007``), replaced atomically
      gen-000007/      index.faiss, meta.npz, meta.json (:mod:`prodrec.gallery.store`), never changed once current
      gen-000006/      the previous generation, kept until the next write
      write.lock       the writers' lock; it holds the writing process's pid

A save writes a complete new generation beside the current one, makes it durable, then replaces ``CURRENT``
(write, fsync, rename, fsync the folder). A failure or a kill at any step leaves ``CURRENT`` naming the
previous generation, which loads and answers as before; the next write removes what was left behind, and
generations older than the previous one. A gallery written by prodrec 0.1 (the three files at the top of
the folder) loads as it is and becomes ``gen-000001`` at its next write.
"""
from __future__ import annotations

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from prodrec.gallery.store import GALLERY_FILES, read_generation, write_generation
from prodrec.utils import (FileLock, ProdrecError, ProdrecRuntimeError, atomic_write, fsync_folder, remove_temporaries,
                           write_failure)

__all__ = ["GalleryFolder", "CURRENT_FILE", "LOCK_FILE", "BACKEND_FILE"]

CURRENT_FILE, LOCK_FILE = "CURRENT", "write.lock"
BACKEND_FILE = "backend.json"  # a gallery kept elsewhere (Milvus): prodrec.gallery.backends
_GENERATION = re.compile(r"gen-(\d{6,})")
_LOAD_ATTEMPTS = 5  # a reader retries while writers switch generations under it


class GalleryFolder:
    """The generations of the gallery saved in ``directory``.

    Example:
        >>> folder = GalleryFolder("shop-gallery")  # doctest: +SKIP
        >>> with folder.writing(wait=True):  # doctest: +SKIP
        ...     folder.save(gallery)
    """

    def __init__(self, directory: Union[str, os.PathLike]) -> None:
        self.directory = Path(directory)
        self._lock = FileLock(self.directory / LOCK_FILE, refusal=lambda owner: (
            f"another process (pid {owner}) is writing the gallery {self.directory}; wait for it, or run again "
            "without --no-wait"))

    def generation(self) -> Optional[str]:
        """The current generation's name, or None for a 0.1 gallery (or none at all)."""
        try:
            name = (self.directory / CURRENT_FILE).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        if not _GENERATION.fullmatch(name):
            raise ProdrecError(f"{self.directory / CURRENT_FILE} names {name[:40]!r}, not a generation (gen-NNNNNN); "
                               f"write the name of a complete generation folder in {self.directory} into it")
        return name

    def exists(self) -> bool:
        """Whether the folder holds a gallery (of any prodrec version, on any backend)."""
        return any((self.directory / name).is_file() for name in (CURRENT_FILE, GALLERY_FILES[-1], BACKEND_FILE))

    def current_folder(self) -> Path:
        """The folder of the current generation's files (the gallery folder itself for a 0.1 gallery)."""
        name = self.generation()
        return self.directory if name is None else self.directory / name

    def load(self, gallery_class: Callable[..., Any]) -> Any:
        """The current generation, checked (:func:`prodrec.gallery.store.read_generation`), into ``gallery_class``."""
        if (self.directory / BACKEND_FILE).is_file():
            raise ProdrecError(f"{self.directory} is a gallery kept in Milvus ({BACKEND_FILE}), not faiss generations; "
                               "open it with prodrec.gallery.open_gallery")
        for attempt in range(_LOAD_ATTEMPTS):
            name = self.generation()
            try:
                gallery = read_generation(self.directory if name is None else self.directory / name, gallery_class)
                gallery.generation = name
                return gallery
            except (FileNotFoundError, ProdrecError):
                if attempt == _LOAD_ATTEMPTS - 1 or self.generation() == name:
                    raise  # not a writer's switch under this reader: the generation is missing or damaged

    @contextmanager
    def writing(self, *, wait: bool = True, on_wait: Optional[Callable[[str], None]] = None) -> Iterator["GalleryFolder"]:
        """Hold the gallery's write lock (see :class:`prodrec.utils.FileLock`): a second writer waits, calling
        ``on_wait(owner pid)`` first, or with ``wait=False`` is refused (``LockBusy``, naming the pid)."""
        self._lock.acquire(wait=wait, on_wait=on_wait)
        try:
            self._clean()
            yield self
        finally:
            self._lock.release()

    def save(self, gallery: Any) -> Path:
        """Write ``gallery`` as a new generation and make it current (``gallery.generation`` names it); inside
        :meth:`writing`. Returns its folder.

        Raises:
            ProdrecRuntimeError: A write failed (disk full, file-size limit, permission); the gallery is as
                it was, and the message says why.
        """
        assert self._lock.held, "GalleryFolder.save outside GalleryFolder.writing"
        previous = self.generation()
        numbers = [int(match.group(1)) for match in map(_GENERATION.fullmatch, self._generations()) if match]
        name = f"gen-{max(numbers, default=0) + 1:06d}"
        folder = self.directory / name
        try:
            write_generation(gallery, folder)
            fsync_folder(self.directory)  # the new folder's entry, before CURRENT names it
            atomic_write(self.directory / CURRENT_FILE, lambda path: path.write_text(name + "\n", encoding="utf-8"))
        except OSError as error:
            shutil.rmtree(folder, ignore_errors=True)
            state = f"still {previous}" if previous else "as it was"
            raise ProdrecRuntimeError(f"could not save the gallery {self.directory}: {write_failure(error)}; the "
                                      f"gallery is unchanged ({state})") from error
        gallery.generation = name
        self._clean()
        return folder

    def remove_generations(self) -> None:
        """Delete every saved generation (and a 0.1 gallery's files), inside :meth:`writing`: for a gallery
        folder whose gallery now lives elsewhere (``backend.json`` written first)."""
        assert self._lock.held, "GalleryFolder.remove_generations outside GalleryFolder.writing"
        (self.directory / CURRENT_FILE).unlink(missing_ok=True)
        fsync_folder(self.directory)
        for name in self._generations():
            shutil.rmtree(self.directory / name, ignore_errors=True)
        for name in GALLERY_FILES:
            (self.directory / name).unlink(missing_ok=True)

    def _generations(self) -> list:
        if not self.directory.is_dir():
            return []
        return sorted(entry.name for entry in os.scandir(self.directory)
                      if entry.is_dir(follow_symlinks=False) and _GENERATION.fullmatch(entry.name))

    def _clean(self) -> None:
        """Remove what failed or killed writes left behind, generations before the previous one and, once a
        generation is current, a 0.1 gallery's files (under the write lock)."""
        if not self.directory.is_dir():
            return
        remove_temporaries(self.directory)
        current = self.generation()
        if current is None:
            return
        older = [name for name in self._generations() if name < current]
        keep = {current, *older[-1:]}
        for name in self._generations():
            if name not in keep:
                shutil.rmtree(self.directory / name, ignore_errors=True)
        for name in keep:
            remove_temporaries(self.directory / name)
        for name in GALLERY_FILES:
            (self.directory / name).unlink(missing_ok=True)
