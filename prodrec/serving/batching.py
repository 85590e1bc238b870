"""Dynamic batching: requests that arrive together are embedded in one forward pass.

:class:`BatchingEmbedder` wraps any :class:`~prodrec.models.ImageEmbedder` and implements the same contract, so
the :class:`~prodrec.gallery.Recognizer` (and anything else) uses it unchanged. Each caller's preprocessed batch
goes to a queue; one worker thread takes what arrives within ``max_wait_ms`` of the first (up to ``max_batch``
images), runs the wrapped model once, and hands each caller its rows. It waits only while other callers of
:meth:`~BatchingEmbedder.embed` are still preprocessing: a lone request is not delayed.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from prodrec.models import ImageEmbedder
from prodrec.utils import check_positive_int

__all__ = ["BatchingEmbedder"]


class BatchingEmbedder(ImageEmbedder):
    """``embedder`` with concurrent :meth:`embed_batch` calls merged into batches of up to ``max_batch`` images,
    waiting at most ``max_wait_ms`` after the first for more; ``observe(batch size)`` is called per forward.

    Example:
        >>> batched = BatchingEmbedder(Embedder.load("best.pt"), max_batch=32, max_wait_ms=2)  # doctest: +SKIP
        >>> Recognizer(batched, gallery).recognize("photo.jpg")  # doctest: +SKIP
    """

    def __init__(self, embedder: ImageEmbedder, *, max_batch: int = 32, max_wait_ms: float = 2.0,
                 observe: Optional[Callable[[int], None]] = None) -> None:
        self.embedder = embedder
        self.max_batch = check_positive_int(max_batch, "max_batch")
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000
        self.observe = observe
        self.image_size, self.mean, self.std = embedder.image_size, embedder.mean, embedder.std
        self.input_size = embedder.input_size
        self._info = embedder.embedder_info  # once: an Embedder hashes its weights for it
        self._queue: "queue.Queue[Tuple[torch.Tensor, Future]]" = queue.Queue()
        self._active, self._active_lock = 0, threading.Lock()  # callers inside embed()
        self._worker = threading.Thread(target=self._run, name="prodrec-batching", daemon=True)
        self._worker.start()

    @property
    def embedding_size(self) -> int:
        return self.embedder.embedding_size

    @property
    def embedder_info(self) -> Dict[str, Any]:
        """The wrapped model's record, taken when this wrapper was made (the model must not change after)."""
        return self._info

    def embed(self, images, *, batch_size: int = 64) -> torch.Tensor:
        with self._active_lock:
            self._active += 1
        try:
            return super().embed(images, batch_size=batch_size)
        finally:
            with self._active_lock:
                self._active -= 1

    def embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        """The wrapped model's features of ``batch``, computed together with other callers' batches."""
        done: Future = Future()
        self._queue.put((batch, done))
        return done.result()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            waiting: List[Tuple[torch.Tensor, Future]] = [first]
            size, deadline = len(first[0]), time.monotonic() + self.max_wait
            while size < self.max_batch:
                if self._active - len(waiting) - self._queue.qsize() <= 0:
                    break  # nobody else is on the way
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                waiting.append(item)
                size += len(item[0])
            self._embed(waiting)

    def _embed(self, waiting: List[Tuple[torch.Tensor, Future]]) -> None:
        try:
            with torch.inference_mode():
                features = self.embedder.embed_batch(torch.cat([batch for batch, _ in waiting]))
        except BaseException as error:  # each caller gets the failure, the worker goes on
            for _, done in waiting:
                done.set_exception(error)
            return
        if self.observe is not None:
            self.observe(len(features))
        start = 0
        for batch, done in waiting:
            done.set_result(features[start:start + len(batch)])
            start += len(batch)
