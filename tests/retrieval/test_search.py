"""The searcher contract: every implementation through the same checks, against a slow full ranking."""
import numpy as np
import pytest

from prodrec.models import open_features
from prodrec.retrieval import (ExactSearch, FaissSearch, ListSearch, MatchStatistics, RerankedSearch, Searcher,
                               evaluate_embeddings, l2_normalize, list_statistics, rank_by_similarity)
from prodrec.retrieval.ranks import NO_MATCH

GALLERY = 50


class BruteForce(ListSearch):
    """A list searcher written the obvious way (what docs/extend.md shows)."""

    def rank(self, query_features, gallery_features, depth):
        scores = np.asarray(query_features, np.float32) @ np.asarray(gallery_features, np.float32).T
        return np.argsort(-scores, axis=1, kind="stable")[:, :depth]


# Searchers that rank the whole gallery exactly: their statistics equal the slow full ranking.
EXACT = {"exact": ExactSearch, "exact, blocks of 3 queries": lambda: ExactSearch(block_bytes=4 * GALLERY * 3),
         "faiss Flat": lambda: FaissSearch("Flat", top_k=GALLERY), "brute force": lambda: BruteForce(top_k=GALLERY)}
APPROXIMATE = {"faiss HNSW": lambda: FaissSearch("HNSW8", top_k=20), "faiss IVF": lambda: FaissSearch("IVF2,Flat", top_k=30),
               "k-reciprocal": lambda: RerankedSearch(top_k=20), "query expansion": lambda: RerankedSearch("qe", top_k=30)}
ALL = {**EXACT, **APPROXIMATE}


def labelled_set(seed=0):
    rng = np.random.default_rng(seed)
    return (l2_normalize(rng.normal(size=(30, 8))), rng.integers(0, 14, 30),  # labels 12, 13: not in the gallery
            l2_normalize(rng.normal(size=(GALLERY, 8))), rng.integers(0, 12, GALLERY))


def statistics(searcher, q, ql, g, gl, compute_map=True):
    return searcher.statistics(q, ql, g, gl, ks=[1, 5], compute_map=compute_map)


@pytest.mark.parametrize("name", sorted(ALL))
def test_contract(name, tmp_path):
    searcher = ALL[name]()
    assert isinstance(searcher, Searcher)
    q, ql, g, gl = labelled_set()
    found = statistics(searcher, q, ql, g, gl)
    assert isinstance(found, MatchStatistics)
    assert [len(found.first_rank), len(found.precision_sum), len(found.num_relevant)] == [len(q)] * 3
    np.testing.assert_array_equal(found.num_relevant, [np.count_nonzero(gl == label) for label in ql])
    matched = found.num_relevant > 0
    assert np.all(found.first_rank[~matched] == NO_MATCH) and np.all(found.precision_sum[~matched] == 0)
    depth = found.depth or GALLERY
    reached = found.first_rank[matched] <= depth
    assert np.all(found.first_rank[matched][reached] >= 1)
    assert np.all(found.precision_sum <= np.minimum(found.num_relevant, depth) + 1e-12)
    # memory-mapped float16 features, and a share of no queries (a sharded search's last rank)
    stored = {}
    for key, array in (("q", q), ("g", g)):
        stored[key] = np.lib.format.open_memmap(tmp_path / f"{key}.npy", mode="w+", dtype=np.float16,
                                                shape=array.shape)
        stored[key][:] = array
        stored[key].flush()
    on_disk = statistics(searcher, open_features(tmp_path / "q.npy"), ql, open_features(tmp_path / "g.npy"), gl)
    assert on_disk.depth == found.depth
    empty = statistics(searcher, q[:0], ql[:0], g, gl)
    assert len(empty.first_rank) == 0 and empty.depth == found.depth


@pytest.mark.parametrize("compute_map", [True, False])
@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_searchers_equal_the_slow_full_ranking(name, compute_map):
    for seed in range(3):
        q, ql, g, gl = labelled_set(seed)
        expected = list_statistics(rank_by_similarity(q @ g.T), ql, gl, compute_map=compute_map)
        found = statistics(EXACT[name](), q, ql, g, gl, compute_map)
        np.testing.assert_array_equal(found.first_rank, expected.first_rank)
        np.testing.assert_allclose(found.precision_sum, expected.precision_sum, rtol=1e-12)
        assert found.depth is None


@pytest.mark.parametrize("name", sorted(APPROXIMATE))
def test_list_searchers_need_k_within_their_lists(name):
    searcher = APPROXIMATE[name]()
    q, ql, g, gl = labelled_set()
    with pytest.raises(ValueError, match=rf"recall@{searcher.top_k + 1} needs lists of {searcher.top_k + 1}"):
        evaluate_embeddings(q, ql, g, gl, ks=[1, searcher.top_k + 1], searcher=searcher)
    metrics = evaluate_embeddings(q, ql, g, gl, ks=[1, min(searcher.top_k, GALLERY)], searcher=searcher)
    assert f"mAP@{searcher.top_k}" in metrics
