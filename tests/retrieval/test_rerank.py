import numpy as np
import pytest

pytest.importorskip("faiss")

from prodrec.gallery import GalleryIndex  # noqa: E402
from prodrec.retrieval import RERANK_METHODS, rerank  # noqa: E402
from prodrec.retrieval import l2_normalize  # noqa: E402

TOL = 1e-5


def classic_re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Zhong et al.'s re_ranking as torchreid ships it, written out plainly on dense matrices."""
    original_dist = np.block([[q_q_dist, q_g_dist], [q_g_dist.T, g_g_dist]]) ** 2
    original_dist = (original_dist / original_dist.max(axis=0)).T
    num_query, all_num = len(q_q_dist), len(original_dist)
    initial_rank = np.argsort(original_dist, axis=1)

    def k_reciprocal(i, k):
        forward = initial_rank[i, :k + 1]
        backward = initial_rank[forward, :k + 1]
        return forward[np.where(backward == i)[0]]

    V = np.zeros_like(original_dist)
    for i in range(all_num):
        reciprocal = k_reciprocal(i, k1)
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_reciprocal = k_reciprocal(candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(candidate_reciprocal, reciprocal)) > 2 / 3 * len(candidate_reciprocal):
                expansion = np.append(expansion, candidate_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original_dist[i, expansion])
        V[i, expansion] = weight / weight.sum()
    V = np.stack([V[initial_rank[i, :k2]].mean(axis=0) for i in range(all_num)])
    jaccard = np.zeros((num_query, all_num))
    for i in range(num_query):
        overlap = np.minimum(V[i], V).sum(axis=1)
        jaccard[i] = 1 - overlap / (2 - overlap)
    final = jaccard * (1 - lambda_value) + original_dist[:num_query] * lambda_value
    return final[:, num_query:]


def euclidean(a, b):
    return np.sqrt(np.maximum(2 - 2 * a.astype(np.float64) @ b.astype(np.float64).T, 0))


def reference(queries, gallery, **options):
    """Re-ranked distances [Q, G], each query re-ranked against the gallery alone."""
    return np.concatenate([classic_re_ranking(euclidean(q[None], gallery), np.zeros((1, 1)),
                                              euclidean(gallery, gallery), **options) for q in queries])


@pytest.fixture(scope="module")
def clustered():
    """60 gallery vectors in 6 clusters, 5 queries near cluster centres and one far from every vector."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 12))
    gallery = l2_normalize(np.repeat(centres, 10, axis=0) + 0.6 * rng.standard_normal((60, 12)))
    queries = l2_normalize(np.concatenate([centres[[0, 2, 3, 5, 5]] + 0.6 * rng.standard_normal((5, 12)),
                                           -centres[:1]]))
    return queries, gallery


def assert_same_ranking(scores, indices, distances):
    """scores = 1 - the reference distance of each returned index; order agrees except within near-ties."""
    expected = np.take_along_axis(distances, indices, axis=1)
    np.testing.assert_allclose(scores, 1 - expected, atol=TOL)
    assert (np.diff(expected, axis=1) >= -TOL).all()
    order = np.argsort(distances, axis=1, kind="stable")[:, :indices.shape[1]]
    gaps = np.diff(np.take_along_axis(distances, order, axis=1), axis=1)
    isolated = np.ones(order.shape, dtype=bool)
    isolated[:, 1:] &= gaps > TOL
    isolated[:, :-1] &= gaps > TOL
    assert isolated.mean() > 0.8
    np.testing.assert_array_equal(indices[isolated], order[isolated])


@pytest.mark.parametrize("options", [{}, {"k1": 6, "k2": 3, "lambda_value": 0.5}, {"k1": 4, "k2": 1}])
def test_k_reciprocal_equals_the_classic_dense_code_over_the_whole_gallery(clustered, options):
    queries, gallery = clustered
    scores, indices = rerank(queries, gallery, top_k=len(gallery), **options)
    assert scores.shape == indices.shape == (6, 60) and scores.dtype == np.float32 and indices.dtype == np.int64
    assert_same_ranking(scores, indices, reference(queries, gallery, **options))
    plain = np.argsort(-(queries @ gallery.T), axis=1)
    assert (indices != plain).any()  # re-ranking changed something, so the comparison bites


@pytest.mark.parametrize("top_k", [3, 15])
def test_k_reciprocal_reorders_the_top_k_candidates_as_the_dense_code_does(clustered, top_k):
    queries, gallery = clustered
    scores, indices = rerank(queries, gallery, top_k=top_k, k1=8, k2=3)  # top_k 3 < k1: lists go deeper
    candidates = np.argsort(-(queries.astype(np.float64) @ gallery.T), axis=1)[:, :top_k]
    assert all(set(row) == set(c) for row, c in zip(indices.tolist(), candidates.tolist()))
    distances = reference(queries, gallery, k1=8, k2=3)
    expected = np.take_along_axis(distances, indices, axis=1)
    np.testing.assert_allclose(scores, 1 - expected, atol=TOL)
    assert (np.diff(expected, axis=1) >= -TOL).all()


def test_query_expansion_hand_worked():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    query = np.array([[0.8, 0.6]])  # cosines 0.8, 0.6, 0.96
    scores, indices = rerank(query, gallery, method="qe", top_k=3, qe_k=2, alpha=0)
    # (0.8, 0.6) + (0.6, 0.8) + (1, 0) = (2.4, 1.4), norm sqrt(7.72); cosines with the gallery:
    expanded = np.array([2.4, 1.4]) / np.sqrt(7.72)
    assert indices.tolist() == [[2, 0, 1]]
    np.testing.assert_allclose(scores[0], [0.6 * expanded[0] + 0.8 * expanded[1], expanded[0], expanded[1]], atol=1e-6)
    # alpha = 1 weighs each neighbour by its cosine: (0.8, 0.6) + 0.96 (0.6, 0.8) + 0.8 (1, 0) = (2.176, 1.368)
    scores, indices = rerank(query, gallery, method="qe", top_k=2, qe_k=2, alpha=1)
    expanded = np.array([2.176, 1.368]) / np.hypot(2.176, 1.368)
    assert indices.tolist() == [[2, 0]]
    np.testing.assert_allclose(scores[0], [0.6 * expanded[0] + 0.8 * expanded[1], expanded[0]], atol=1e-6)


def test_bad_input_is_refused_with_a_clear_message(clustered):
    queries, gallery = clustered
    with pytest.raises(ValueError, match="top_k must be an integer in \\[1, 60\\] \\(the gallery size\\)"):
        rerank(queries, gallery, top_k=61)
    with pytest.raises(ValueError, match="dimension 12 but gallery has 3"):
        rerank(queries, gallery[:, :3], top_k=10)
    with pytest.raises(ValueError, match="unknown re-ranking method 'knn'"):
        rerank(queries, gallery, method="knn", top_k=10)
    with pytest.raises(TypeError, match="takes the options \\['alpha', 'qe_k'\\], not \\['k1'\\]"):
        rerank(queries, gallery, method="qe", top_k=10, k1=3)
    with pytest.raises(ValueError, match="k2 must be an integer in \\[1, 5\\] \\(k1 \\+ 1\\)"):
        rerank(queries, gallery, top_k=10, k1=4, k2=6)
    with pytest.raises(ValueError, match="lambda_value must be a number in \\[0, 1\\]"):
        rerank(queries, gallery, top_k=10, lambda_value=1.5)
    with pytest.raises(ValueError, match="NaN or infinite"):
        rerank(np.full((1, 12), np.nan), gallery, top_k=10)
    with pytest.raises(ValueError, match="zero norm"):
        rerank(queries, np.zeros((4, 12)), top_k=2)
    assert set(RERANK_METHODS) == {"k-reciprocal", "qe"}


@pytest.mark.parametrize("method", ["k-reciprocal", "qe"])
def test_gallery_search_reranks_like_the_arrays(clustered, method):
    queries, gallery = clustered
    index = GalleryIndex(12)
    ids = index.add(np.concatenate([gallery[:5], gallery]), [f"p{i}" for i in range(65)])
    index.remove(ids=ids[:5])  # ids are no longer rows
    expected_scores, expected_rows = rerank(queries, gallery, method=method, top_k=40)
    found = index.search(queries, 7, rerank=method, rerank_options={"top_k": 40})
    np.testing.assert_array_equal(found.ids, expected_rows[:, :7] + 5)
    np.testing.assert_allclose(found.scores, expected_scores[:, :7], atol=TOL)
    assert found.labels[0, 0] == f"p{found.ids[0, 0]}"
    for index_type in ("Flat", "HNSW32"):  # vectors come from faiss; HNSW is exact on 60 vectors
        without = GalleryIndex(12, index_type=index_type, keep_features=False)
        without.add(gallery, [f"p{i}" for i in range(60)])
        np.testing.assert_array_equal(without.search(queries, 7, rerank=method, rerank_options={"top_k": 40}).ids,
                                      expected_rows[:, :7])


def test_gallery_search_reranking_options_metrics_and_limits(clustered):
    queries, gallery = clustered
    ip, l2 = GalleryIndex(12), GalleryIndex(12, metric="l2")
    for index in (ip, l2):
        index.add(gallery[:8], [f"p{i}" for i in range(8)])
    near, far = ip.search(queries, 10, rerank="k-reciprocal"), l2.search(queries, 10, rerank="k-reciprocal")
    np.testing.assert_array_equal(near.ids, far.ids)
    assert (near.ids[:, 8:] == -1).all() and np.isneginf(near.scores[:, 8:]).all() and np.isposinf(far.scores[:, 8:]).all()
    np.testing.assert_allclose(far.scores[:, :8], 1 - near.scores[:, :8], atol=TOL)  # l2: the re-ranked distance
    expanded_ip, expanded_l2 = ip.search(queries, 3, rerank="qe", rerank_options={"qe_k": 2}), \
        l2.search(queries, 3, rerank="qe", rerank_options={"qe_k": 2})
    np.testing.assert_allclose(expanded_l2.scores, 2 - 2 * expanded_ip.scores, atol=TOL)
    with pytest.raises(ValueError, match="top_k must be an integer >= 5"):
        ip.search(queries, 5, rerank="qe", rerank_options={"top_k": 4})
    with pytest.raises(TypeError, match="not \\['k1'\\]"):
        ip.search(queries, 3, rerank="qe", rerank_options={"k1": 2})
    ivf = GalleryIndex(12, index_type="IVF2,Flat", keep_features=False)
    ivf.train(gallery)
    ivf.add(gallery, [f"p{i}" for i in range(60)])
    with pytest.raises(ValueError, match="IVF2,Flat index was made with keep_features=False"):
        ivf.search(queries, 3, rerank="qe")
    assert GalleryIndex(12).search(queries, 2, rerank="qe").ids.tolist() == [[-1, -1]] * 6  # empty gallery
