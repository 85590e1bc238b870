import numpy as np
import pytest
import torch

from prodrec.data import read_inshop
from prodrec.retrieval import (ExactSearch, FaissSearch, RerankedSearch, evaluate, evaluate_embeddings,
                               extract_embeddings)
from prodrec.models import open_features
from prodrec.retrieval import rank_by_similarity, retrieval_metrics
from prodrec.models import Embedder
from prodrec.retrieval import l2_normalize


def brute_force_metrics(q, ql, g, gl, ks):
    """Obvious loop: rank by cosine, drop queries without a match, average."""
    sims = q @ g.T
    hits, aps = {k: [] for k in ks}, []
    for i in range(len(q)):
        order = np.argsort(-sims[i], kind="stable")
        rel = gl[order] == ql[i]
        if not rel.any():
            continue
        for k in ks:
            hits[k].append(rel[:k].any())
        precision = np.cumsum(rel) / np.arange(1, len(rel) + 1)
        aps.append((precision * rel).sum() / rel.sum())
    return {**{f"recall@{k}": np.mean(v) for k, v in hits.items()}, "mAP": np.mean(aps)}


@pytest.mark.parametrize("block_bytes", [None, 4 * 50 * 7, 1])  # one block; 7 queries per block; one
def test_evaluate_embeddings_matches_brute_force_across_blocks(block_bytes):
    rng = np.random.default_rng(0)
    q, g = l2_normalize(rng.normal(size=(30, 8))), l2_normalize(rng.normal(size=(50, 8)))
    ql, gl = rng.integers(0, 14, 30), rng.integers(0, 12, 50)  # labels 12 and 13 never in the gallery
    got = evaluate_embeddings(q, ql, g, gl, ks=[1, 5, 10], searcher=ExactSearch(block_bytes=block_bytes))
    expected = brute_force_metrics(q, ql, g, gl, [1, 5, 10])
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert got["num_queries"] == 30 and got["num_queries_without_match"] == int((~np.isin(ql, gl)).sum())


def test_evaluate_embeddings_without_map_uses_top_k_only():
    rng = np.random.default_rng(1)
    q, g = l2_normalize(rng.normal(size=(10, 4))), l2_normalize(rng.normal(size=(20, 4)))
    ql, gl = rng.integers(0, 5, 10), rng.integers(0, 5, 20)
    got = evaluate_embeddings(q, ql, g, gl, ks=[1, 3], compute_map=False)
    assert "mAP" not in got and got["recall@3"] == pytest.approx(brute_force_metrics(q, ql, g, gl, [1, 3])["recall@3"])


def labelled_set(seed=0, queries=40, gallery=60, dim=8):
    rng = np.random.default_rng(seed)
    return (l2_normalize(rng.normal(size=(queries, dim))), rng.integers(0, 15, queries),
            l2_normalize(rng.normal(size=(gallery, dim))), rng.integers(0, 12, gallery))


def store(path, features, dtype):
    stored = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=features.shape)
    stored[:] = features
    stored.flush()
    return open_features(path)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_streaming_from_memory_maps_equals_in_memory(tmp_path, dtype):
    q, ql, g, gl = labelled_set()
    q_disk, g_disk = store(tmp_path / "q.npy", q, dtype), store(tmp_path / "g.npy", g, dtype)
    expected = evaluate_embeddings(q_disk.astype(np.float32), ql, g_disk.astype(np.float32), gl, ks=[1, 5])
    assert evaluate_embeddings(q_disk, ql, g_disk, gl, ks=[1, 5],
                               searcher=ExactSearch(block_bytes=4 * 60 * 3)) == expected


def test_tied_scores_rank_by_gallery_index():
    rng = np.random.default_rng(1)
    # Multiples of 1/4 in 8 dimensions: every score is exact in float32, whatever the summation order, and
    # the few distinct values tie everywhere.
    q, g = rng.integers(-2, 3, (40, 8)) / 4, rng.integers(-2, 3, (60, 8)) / 4
    q[:, 0], g[:, 0] = 1, 1  # no zero rows
    ql, gl = rng.integers(0, 15, 40), rng.integers(0, 12, 60)
    expected = retrieval_metrics(rank_by_similarity(q @ g.T), ql, gl, ks=[1, 5])
    got = evaluate_embeddings(q.astype(np.float32), ql, g.astype(np.float32), gl, ks=[1, 5],
                              searcher=ExactSearch(block_bytes=4 * 60 * 9))
    assert got == pytest.approx(expected, abs=1e-12)


def test_exhaustive_lists_equal_the_exact_search():
    q, ql, g, gl = labelled_set(seed=2)
    exact = evaluate_embeddings(q, ql, g, gl, ks=[1, 5])
    for searcher in (FaissSearch("Flat", top_k=60), FaissSearch("IVF4,Flat", nprobe=4, top_k=60),
                     FaissSearch("HNSW8", top_k=60)):
        assert evaluate_embeddings(q, ql, g, gl, ks=[1, 5], searcher=searcher) == pytest.approx(exact)


def test_approximate_search_reports_map_over_its_lists():
    q, ql, g, gl = labelled_set(seed=3)
    got = evaluate_embeddings(q, ql, g, gl, ks=[1, 5], searcher=FaissSearch("IVF2,Flat", nprobe=1, top_k=10))
    assert "mAP" not in got and 0 <= got["mAP@10"] <= 1
    ranked = np.full((len(q), 10), -1)
    expected = retrieval_metrics(ranked, ql, gl, ks=[1, 5], missing_ok=True)
    assert set(got) == set(expected) and got["num_queries"] == expected["num_queries"]


def test_rerank_lists_are_scored():
    rerank = pytest.importorskip("prodrec.retrieval.rerank")
    q, ql, g, gl = labelled_set(seed=4)
    indices = rerank.rerank(q, g, method="qe", top_k=20)[1]
    expected = retrieval_metrics(indices, ql, gl, ks=[1, 5], missing_ok=True)
    assert evaluate_embeddings(q, ql, g, gl, ks=[1, 5], searcher=RerankedSearch("qe", top_k=20)) == expected


def test_evaluate_embeddings_errors():
    q, g = np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="no query label occurs in the gallery"):
        evaluate_embeddings(q, np.array([0, 1, 2]), g, np.array([5, 6, 7]))
    beyond = evaluate_embeddings(q, np.array([0, 1, 2]), g, np.array([0, 1, 2]), ks=[1, 20])
    assert beyond["recall@20"] == 1.0  # K past the gallery size: the whole gallery is in the top K
    with pytest.raises(ValueError, match="exactly one label"):
        evaluate_embeddings(q, np.array([0, 1]), g, np.array([0, 1, 2]), ks=[1])
    labels = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"recall@20 needs lists of 20 .* FaissSearch\('Flat', top_k=10.* raise its top_k"):
        evaluate_embeddings(np.eye(30, 3), np.arange(30) % 3, np.eye(30, 3), np.arange(30) % 3,
                            searcher=FaissSearch("Flat", top_k=10))
    with pytest.raises(TypeError, match="searcher must be a prodrec.retrieval.Searcher"):
        evaluate_embeddings(q, labels, g, labels, searcher="Flat")
    with pytest.raises(ValueError, match="unknown re-ranking 'kr'"):
        RerankedSearch("kr")
    with pytest.raises(ValueError, match=r"query_features has NaN .* first \[1\]"):
        evaluate_embeddings(np.array([[1.0, 0, 0], [np.nan, 0, 0], [0, 0, 1]]), labels, g, labels)


def test_evaluate_model_on_inshop_layout(tiny_inshop, tmp_path):
    splits = read_inshop(tiny_inshop)
    torch.manual_seed(0)
    model = Embedder("resnet18d", embedding_size=16, image_size=32)
    features = extract_embeddings(model, splits.query, batch_size=5, progress=False)
    assert features.shape == (len(splits.query), 16)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(features), model.embed(list(splits.query.paths)), atol=1e-5, rtol=0)
    metrics = evaluate(model, splits.query, splits.gallery, ks=[1, 5], progress=False)
    assert set(metrics) == {"recall@1", "recall@5", "mAP", "num_queries", "num_queries_without_match"}
    assert 0.0 <= metrics["recall@1"] <= metrics["recall@5"] <= 1.0
    on_disk = evaluate(model, splits.query, splits.gallery, ks=[1, 5], progress=False, features_dir=tmp_path)
    assert on_disk == pytest.approx(metrics) and {p.name for p in tmp_path.iterdir()} == {"query.npy", "gallery.npy"}
    np.testing.assert_allclose(open_features(tmp_path / "query.npy"), features, atol=1e-6)


def test_0_1_keyword_options_still_work_with_a_warning():
    q, ql, g, gl = labelled_set(seed=5)
    cases = [({"block_bytes": 4 * 60 * 3}, ExactSearch(block_bytes=4 * 60 * 3)),
             ({"index_type": "IVF2,Flat", "nprobe": 2, "search_top_k": 30}, FaissSearch("IVF2,Flat", nprobe=2, top_k=30)),
             ({"rerank": "qe", "rerank_top_k": 20}, RerankedSearch("qe", top_k=20))]
    for options, searcher in cases:
        with pytest.warns(DeprecationWarning, match=r"pass searcher=" + type(searcher).__name__):
            got = evaluate_embeddings(q, ql, g, gl, ks=[1, 5], **options)
        assert got == evaluate_embeddings(q, ql, g, gl, ks=[1, 5], searcher=searcher)
    with pytest.raises(ValueError, match="not both"):
        evaluate_embeddings(q, ql, g, gl, index_type="Flat", rerank="qe")
    with pytest.raises(ValueError, match="not both"):
        evaluate_embeddings(q, ql, g, gl, searcher=ExactSearch(), block_bytes=100)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['device'\\]"):
        evaluate_embeddings(q, ql, g, gl, device="cpu")
