"""Exact k-nearest-neighbour search of query embeddings in a gallery, with faiss."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

__all__ = ["knn_search", "l2_normalize"]

# faiss's GPU k-selection stops at 2048 (faiss/gpu/utils/DeviceDefs.cuh) and faiss
# does not expose the limit to Python (facebookresearch/faiss#2330).
_GPU_MAX_K = 2048
_METRICS = ("ip", "l2")
_DEVICES = ("auto", "cpu", "cuda")


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "knn_search needs faiss. Install it with `pip install faiss-cpu` "
            "(or a faiss GPU build for device='cuda')."
        ) from error
    return faiss


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(x)
    if array.ndim != 2 or array.dtype.kind not in "fiu":
        raise ValueError(
            f"{name} must be a real-valued array [num_vectors, dim]; got dtype {array.dtype} "
            f"and shape {array.shape}."
        )
    if 0 in array.shape:
        raise ValueError(f"{name} is empty (shape {array.shape}); it needs at least one vector.")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if len(bad_rows):
        raise ValueError(
            f"{name} has NaN or infinite values (or values beyond float32 range) in "
            f"{len(bad_rows)} rows, first {bad_rows[:20].tolist()}. Fix the embeddings that "
            "produced them (e.g. a diverged model or a zero vector divided by its norm)."
        )
    return array


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (inner product then equals cosine).

    A zero row has no direction, so it is an error rather than a silent NaN or zero.

    Args:
        x: Real array [N, D].

    Returns:
        New float32 C-contiguous array [N, D].

    Raises:
        ValueError: On non-2-D, empty or non-finite input, or rows with zero norm.
    """
    array = _as_matrix(x, "x")
    norms = np.sqrt(np.einsum("ij,ij->i", array, array, dtype=np.float64))
    zero_rows = np.flatnonzero(norms == 0)
    if len(zero_rows):
        raise ValueError(
            f"x has {len(zero_rows)} rows with zero norm, first {zero_rows[:20].tolist()}; they "
            "cannot be normalised. Drop them, or check the model that produced them."
        )
    return (array / norms[:, None]).astype(np.float32)


@contextmanager
def _faiss_threads(faiss, num_threads: int | None) -> Iterator[None]:
    if num_threads is None:
        yield
        return
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(num_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def _use_gpu(faiss, device: str, k: int) -> bool:
    if device == "cpu":
        return False
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device == "auto":
        return has_gpu and k <= _GPU_MAX_K
    if not has_gpu:
        raise ValueError(
            "device='cuda' but faiss sees no GPU (a CPU-only faiss build, or no visible CUDA "
            "device). Install a faiss GPU build, or pass device='cpu' or 'auto'."
        )
    if k > _GPU_MAX_K:
        raise ValueError(
            f"faiss on GPU returns at most {_GPU_MAX_K} neighbours; k={k} was asked. Pass "
            "device='cpu' (or 'auto', which picks the CPU for such k)."
        )
    return True


def knn_search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    metric: str = "ip",
    block_size: int = 4096,
    num_threads: int | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest gallery items for each query (faiss ``IndexFlatIP`` / ``IndexFlatL2``).

    Args:
        queries: Real array [Q, D].
        gallery: Real array [G, D].
        k: Neighbours per query, 1 <= k <= G; ``k == G`` ranks the whole gallery
            (what mAP needs).
        metric: ``"ip"`` (inner product, best first = largest; use on
            :func:`l2_normalize`-d features for cosine) or ``"l2"`` (squared Euclidean
            distance, best first = smallest).
        block_size: Queries searched per faiss call; bounds faiss's working memory
            when k is large.
        num_threads: faiss OpenMP threads for this call (restored afterwards);
            None keeps faiss's current setting.
        device: ``"auto"`` (faiss GPU when available and k <= 2048, else CPU),
            ``"cpu"`` or ``"cuda"``.

    Returns:
        ``(scores, indices)``: float32 [Q, k] inner products or squared distances,
        and int64 [Q, k] gallery indices, best first.

    Raises:
        ValueError: On malformed input or options, or ``device="cuda"`` without a
            faiss GPU.
        ImportError: When faiss is not installed.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {_METRICS}; got {metric!r}.")
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES}; got {device!r}.")
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer; got {block_size!r}.")
    if num_threads is not None and (not isinstance(num_threads, (int, np.integer)) or num_threads < 1):
        raise ValueError(f"num_threads must be None or a positive integer; got {num_threads!r}.")
    queries = _as_matrix(queries, "queries")
    gallery = _as_matrix(gallery, "gallery")
    if queries.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"queries have dimension {queries.shape[1]} but the gallery has {gallery.shape[1]}; "
            "embed both with the same model."
        )
    num_gallery = gallery.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_gallery:
        raise ValueError(
            f"k must be an integer in [1, {num_gallery}] (the gallery size); got {k!r}."
        )

    faiss = _import_faiss()
    index_type = faiss.IndexFlatIP if metric == "ip" else faiss.IndexFlatL2
    index = index_type(gallery.shape[1])
    if _use_gpu(faiss, device, k):
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    index.add(gallery)

    num_queries = queries.shape[0]
    scores = np.empty((num_queries, k), dtype=np.float32)
    indices = np.empty((num_queries, k), dtype=np.int64)
    with _faiss_threads(faiss, num_threads):
        for start in range(0, num_queries, block_size):
            stop = min(start + block_size, num_queries)
            index.search(queries[start:stop], k, D=scores[start:stop], I=indices[start:stop])
    return scores, indices
