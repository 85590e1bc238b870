"""Exact k-nearest-neighbour search of query embeddings in a gallery, with faiss."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
from prodrec.utils import ProdrecError, check_positive_int

__all__ = ["knn_search", "l2_normalize", "import_faiss", "use_faiss_gpu", "as_matrix", "check_matrix", "float32_rows"]

# faiss's GPU k-selection stops at 2048 (faiss/gpu/utils/DeviceDefs.cuh) and faiss
# does not expose the limit to Python (facebookresearch/faiss#2330).
_GPU_MAX_K = 2048
_METRICS = ("ip", "l2")
_DEVICES = ("auto", "cpu", "cuda")


def import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "knn_search needs faiss. Install it with `pip install faiss-cpu` "
            "(or a faiss GPU build for device='cuda')."
        ) from error
    return faiss


def check_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a 2-D real array (a memory map stays one; nothing is converted yet)."""
    array = x if isinstance(x, np.ndarray) else np.asarray(x)
    if array.ndim != 2 or array.dtype.kind not in "fiu":
        raise ProdrecError(
            f"{name} must be a real-valued array [num_vectors, dim]; got dtype {array.dtype} "
            f"and shape {array.shape}."
        )
    if 0 in array.shape:
        raise ProdrecError(f"{name} is empty (shape {array.shape}); it needs at least one vector.")
    return array


def float32_rows(rows: np.ndarray, name: str, offset: int | np.ndarray = 0) -> np.ndarray:
    """Rows of ``name`` (numbered from ``offset``, or by the array ``offset``) as C-contiguous float32 (a
    view when they already are), all finite."""
    array = np.ascontiguousarray(rows, dtype=np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(array.sum(axis=1, dtype=np.float64)))  # NaN and inf propagate
    if len(bad_rows):
        numbers = np.asarray(offset)[bad_rows[:20]] if np.ndim(offset) else bad_rows[:20] + offset
        raise ProdrecError(
            f"{name} has NaN or infinite values (or values beyond float32 range) in "
            f"{len(bad_rows)} rows, first {numbers.tolist()}. Fix the embeddings that "
            "produced them (e.g. a diverged model or a zero vector divided by its norm)."
        )
    return array


def as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    return float32_rows(check_matrix(x, name), name)


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
    array = as_matrix(x, "x")
    norms = np.sqrt(np.einsum("ij,ij->i", array, array, dtype=np.float64))
    zero_rows = np.flatnonzero(norms == 0)
    if len(zero_rows):
        raise ProdrecError(
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


def use_faiss_gpu(faiss, device: str, k: int) -> bool:
    if device == "cpu":
        return False
    has_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if device == "auto":
        return has_gpu and k <= _GPU_MAX_K
    if not has_gpu:
        raise ProdrecError(
            "device='cuda' but faiss sees no GPU (a CPU-only faiss build, or no visible CUDA "
            "device). Install a faiss GPU build, or pass device='cpu' or 'auto'."
        )
    if k > _GPU_MAX_K:
        raise ProdrecError(
            f"faiss on GPU returns at most {_GPU_MAX_K} neighbours; k={k} was asked. Pass "
            "device='cpu' (or 'auto', which picks the CPU for such k)."
        )
    return True


def _block_searcher(faiss, metric: str, dim: int, gpu: bool):
    """``searcher(gallery_block)`` returns ``search(queries, k) -> (scores, indices)`` (float32 inputs)."""
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    if not gpu:
        return lambda block: lambda queries, k: faiss.knn(queries, block, k, metric=faiss_metric)
    index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, faiss.IndexFlat(dim, faiss_metric))

    def searcher(block):
        index.reset()
        index.add(block)
        return index.search

    return searcher



def knn_search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    metric: str = "ip",
    block_size: int = 4096,
    gallery_block_size: int = 262144,
    num_threads: int | None = None,
    device: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest gallery items for each query, streaming the gallery in blocks.

    Each gallery block is searched by faiss (``faiss.knn``, no index copy; a flat index on GPU) and
    the per-block results are merged into a running top k (``faiss.ResultHeap``). Queries and gallery
    may be memory maps (:func:`prodrec.models.open_features`) of float16 or float32: only one
    block at a time is converted to float32, so memory stays at the queries plus one gallery block
    plus ``[Q, k]`` results.

    Args:
        queries: Real array [Q, D].
        gallery: Real array [G, D].
        k: Neighbours per query, 1 <= k <= G.
        metric: ``"ip"`` (inner product, best first = largest; use on
            :func:`l2_normalize`-d features for cosine) or ``"l2"`` (squared Euclidean
            distance, best first = smallest).
        block_size: Queries searched per faiss call.
        gallery_block_size: Gallery rows searched (and converted to float32) at a time.
        num_threads: faiss OpenMP threads for this call (restored afterwards);
            None keeps faiss's current setting.
        device: ``"auto"`` (faiss GPU when available and k <= 2048, else CPU),
            ``"cpu"`` or ``"cuda"``.

    Returns:
        ``(scores, indices)``: float32 [Q, k] inner products or squared distances,
        and int64 [Q, k] gallery indices, best first (tied scores in any order).

    Raises:
        ValueError: On malformed input or options, or ``device="cuda"`` without a
            faiss GPU.
        ImportError: When faiss is not installed.
    """
    if metric not in _METRICS:
        raise ProdrecError(f"metric must be one of {_METRICS}; got {metric!r}.")
    if device not in _DEVICES:
        raise ProdrecError(f"device must be one of {_DEVICES}; got {device!r}.")
    block_size = check_positive_int(block_size, "block_size")
    gallery_block_size = check_positive_int(gallery_block_size, "gallery_block_size")
    if num_threads is not None and (not isinstance(num_threads, (int, np.integer)) or num_threads < 1):
        raise ProdrecError(f"num_threads must be None or a positive integer; got {num_threads!r}.")
    queries = check_matrix(queries, "queries")
    gallery = check_matrix(gallery, "gallery")
    if queries.shape[1] != gallery.shape[1]:
        raise ProdrecError(
            f"queries have dimension {queries.shape[1]} but the gallery has {gallery.shape[1]}; "
            "embed both with the same model."
        )
    (num_queries, dim), num_gallery = queries.shape, gallery.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= num_gallery:
        raise ProdrecError(
            f"k must be an integer in [1, {num_gallery}] (the gallery size); got {k!r}."
        )

    faiss = import_faiss()
    searcher = _block_searcher(faiss, metric, dim, use_faiss_gpu(faiss, device, k))
    one_block = num_gallery <= gallery_block_size
    if one_block:
        scores = np.empty((num_queries, k), dtype=np.float32)
        indices = np.empty((num_queries, k), dtype=np.int64)
    else:
        heap = faiss.ResultHeap(num_queries, k, keep_max=metric == "ip")
    with _faiss_threads(faiss, num_threads):
        for g_start in range(0, num_gallery, gallery_block_size):
            block = float32_rows(gallery[g_start:g_start + gallery_block_size], "gallery", g_start)
            block_k, search = min(k, len(block)), searcher(block)
            for start in range(0, num_queries, block_size):
                stop = min(start + block_size, num_queries)
                found, ids = search(float32_rows(queries[start:stop], "queries", start), block_k)
                if one_block:
                    scores[start:stop], indices[start:stop] = found, ids
                else:
                    heap.add_result_subset(np.arange(start, stop), found, ids + g_start)
    if one_block:
        return scores, indices
    heap.finalize()
    return heap.D, heap.I
