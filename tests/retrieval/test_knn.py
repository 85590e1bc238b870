from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from prodrec.retrieval import rank_by_similarity, retrieval_metrics  # noqa: E402
from prodrec.retrieval import knn_search, l2_normalize  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "paddleclas" / "retrieval.npz"
TOL = 1e-5


def brute_force(queries, gallery, metric):
    queries, gallery = queries.astype(np.float64), gallery.astype(np.float64)
    if metric == "ip":
        scores = queries @ gallery.T
        order = np.argsort(-scores, axis=1, kind="stable")
    else:
        scores = ((queries[:, None, :] - gallery[None, :, :]) ** 2).sum(axis=2)
        order = np.argsort(scores, axis=1, kind="stable")
    return scores, order


def assert_same_neighbours(queries, gallery, k, metric, scores, indices, *, ties_everywhere=False):
    """Equal to brute force up to the order of tied gallery items."""
    exact, order = brute_force(queries, gallery, metric)
    expected_scores = np.take_along_axis(exact, order[:, :k], axis=1)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == indices.shape == (len(queries), k)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=TOL)
    # Each returned index carries its own score, and no row repeats an index.
    np.testing.assert_allclose(np.take_along_axis(exact, indices, axis=1), scores, rtol=0, atol=TOL)
    assert all(len(set(row)) == k for row in indices.tolist())
    # Where a score has no near-tie within the full sorted list, the index is determined.
    full_sorted = np.take_along_axis(exact, order, axis=1)
    gaps = np.abs(np.diff(full_sorted, axis=1))
    isolated = np.ones_like(full_sorted, dtype=bool)
    isolated[:, 1:] &= gaps > TOL
    isolated[:, :-1] &= gaps > TOL
    isolated = isolated[:, :k]
    if not ties_everywhere:
        assert isolated.mean() > 0.5  # the check below must bite
    np.testing.assert_array_equal(indices[isolated], order[:, :k][isolated])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((37, 16)).astype(np.float32), rng.standard_normal((60, 16)).astype(np.float32)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("k", [1, 5, 60])
def test_matches_brute_force(data, metric, k):
    queries, gallery = data
    scores, indices = knn_search(queries, gallery, k, metric=metric, device="cpu")
    assert_same_neighbours(queries, gallery, k, metric, scores, indices)


def test_full_ranking_is_a_permutation(data):
    queries, gallery = data
    _, indices = knn_search(queries, gallery, len(gallery))
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.tile(np.arange(len(gallery)), (len(queries), 1)))


def test_blocks_give_the_same_result(data):
    queries, gallery = data
    whole = knn_search(queries, gallery, 7, block_size=4096)
    blocked = knn_search(queries, gallery, 7, block_size=5)  # 37 = 7 blocks of 5 + 2
    np.testing.assert_array_equal(whole[0], blocked[0])
    np.testing.assert_array_equal(whole[1], blocked[1])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_duplicate_gallery_rows(metric):
    rng = np.random.default_rng(1)
    distinct = rng.standard_normal((20, 8)).astype(np.float32)
    gallery = np.concatenate([distinct, distinct, distinct[:5]])  # exact ties
    queries = rng.standard_normal((9, 8)).astype(np.float32)
    for k in (3, 4, len(gallery)):
        scores, indices = knn_search(queries, gallery, k, metric=metric, num_threads=1)
        assert_same_neighbours(queries, gallery, k, metric, scores, indices, ties_everywhere=True)
    # The best item of each query has a duplicate with the same score: both lead the ranking.
    best = brute_force(queries, gallery, metric)[1][:, 0] % 20
    scores, indices = knn_search(queries, gallery, 2, metric=metric)
    np.testing.assert_array_equal(np.sort(indices % 20, axis=1), np.stack([best, best], axis=1))


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("gallery_block_size", [1, 7, 16])
def test_gallery_blocks_merge_to_the_brute_force_top_k(metric, gallery_block_size):
    rng = np.random.default_rng(2)
    distinct = rng.standard_normal((20, 8)).astype(np.float32)
    gallery = np.concatenate([distinct, distinct[::-1], distinct[:5]])  # ties across different blocks
    queries = rng.standard_normal((11, 8)).astype(np.float32)
    for k in (1, 5, 9, len(gallery)):
        scores, indices = knn_search(queries, gallery, k, metric=metric, gallery_block_size=gallery_block_size,
                                     block_size=4)
        assert_same_neighbours(queries, gallery, k, metric, scores, indices, ties_everywhere=True)


def test_memory_mapped_float16_gallery(tmp_path, data):
    queries, gallery = data
    stored = np.lib.format.open_memmap(tmp_path / "gallery.npy", mode="w+", dtype=np.float16, shape=gallery.shape)
    stored[:] = gallery
    stored.flush()
    mapped = np.load(tmp_path / "gallery.npy", mmap_mode="r")
    scores, indices = knn_search(queries, mapped, 6, gallery_block_size=16)
    assert_same_neighbours(queries, mapped.astype(np.float32), 6, "ip", scores, indices)


def test_non_finite_row_is_named_by_its_gallery_index(data):
    queries, gallery = data
    gallery = gallery.copy()
    gallery[45, 3] = np.nan
    with pytest.raises(ValueError, match=r"gallery has NaN .* 1 rows, first \[45\]"):
        knn_search(queries, gallery, 3, gallery_block_size=20)


def test_num_threads_is_restored(data):
    before = faiss.omp_get_max_threads()
    knn_search(*data, 3, num_threads=1)
    assert faiss.omp_get_max_threads() == before


def test_accepts_float64_and_non_contiguous_input(data):
    queries, gallery = data
    expected = knn_search(queries, gallery, 4)
    got = knn_search(np.asfortranarray(queries.astype(np.float64)), gallery[:, :].T.copy().T, 4)
    np.testing.assert_array_equal(got[1], expected[1])


def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, -2.0]])
    out = l2_normalize(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, -1.0]], rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match=r"1 rows with zero norm, first \[1\]"):
        l2_normalize(np.array([[1.0, 0.0], [0.0, 0.0]]))


@pytest.mark.parametrize(
    "queries, gallery, k, kwargs, match",
    [
        (np.ones((2, 4)), np.ones((3, 4)), 4, {}, r"k must be an integer in \[1, 3\]"),
        (np.ones((2, 4)), np.ones((3, 4)), 0, {}, r"k must be an integer in \[1, 3\]"),
        (np.ones((2, 4)), np.ones((3, 5)), 1, {}, "dimension 4 but the gallery has 5"),
        (np.array([[1.0, np.nan]]), np.ones((3, 2)), 1, {}, r"queries has NaN .* 1 rows, first \[0\]"),
        (np.ones((2, 4)), np.full((3, 4), np.inf), 1, {}, "gallery has NaN or infinite"),
        (np.ones((0, 4)), np.ones((3, 4)), 1, {}, "queries is empty"),
        (np.ones(4), np.ones((3, 4)), 1, {}, r"queries must be a real-valued array \[num_vectors, dim\]"),
        (np.ones((2, 4)), np.ones((3, 4)), 1, {"metric": "cosine"}, "metric must be one of"),
        (np.ones((2, 4)), np.ones((3, 4)), 1, {"device": "gpu"}, "device must be one of"),
        (np.ones((2, 4)), np.ones((3, 4)), 1, {"block_size": 0}, "block_size must be a positive"),
        (np.ones((2, 4)), np.ones((3, 4)), 1, {"gallery_block_size": 0}, "gallery_block_size must be a positive"),
        (np.ones((2, 4)), np.ones((3, 4)), 1, {"num_threads": 0}, "num_threads must be None"),
    ],
)
def test_bad_input(queries, gallery, k, kwargs, match):
    with pytest.raises(ValueError, match=match):
        knn_search(queries, gallery, k, **kwargs)


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="needs a machine where faiss sees no GPU")
def test_cuda_without_gpu_is_a_clear_error(data):
    with pytest.raises(ValueError, match="faiss sees no GPU"):
        knn_search(*data, 3, device="cuda")


def test_end_to_end_matches_paddleclas():
    if not REFERENCE.is_file():
        pytest.skip("../shared/reference not found (only in the prodrec dev workspace)")
    ref = np.load(REFERENCE)
    queries, gallery = l2_normalize(ref["query_feat"]), l2_normalize(ref["gallery_feat"])
    scores, indices = knn_search(queries, gallery, len(gallery))
    np.testing.assert_allclose(scores, np.take_along_axis(ref["sim"], indices, axis=1), rtol=0, atol=1e-6)
    result = retrieval_metrics(indices, ref["query_label"], ref["gallery_label"], ks=(1, 5, 10))
    # Same ranking as PaddleClas's float32 cosine (no ties decide a match here), so the
    # metrics equal those of the reference similarity matrix exactly.
    assert result == retrieval_metrics(
        rank_by_similarity(ref["sim"]), ref["query_label"], ref["gallery_label"], ks=(1, 5, 10)
    )
    expected = ref["metrics_full_nomask"]
    np.testing.assert_array_equal(
        np.float32([result["recall@1"], result["recall@5"], result["recall@10"]]), expected[:3].astype(np.float32)
    )
    assert abs(result["mAP"] - expected[3]) <= 1e-7
