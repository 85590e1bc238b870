import numpy as np
import pytest
import torch

from prodrec.data import read_inshop
from prodrec.evaluation import evaluate, evaluate_embeddings, extract_embeddings
from prodrec.models import Embedder
from prodrec.search import l2_normalize


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


def test_evaluate_embeddings_matches_brute_force_across_blocks(monkeypatch):
    monkeypatch.setattr("prodrec.evaluation.QUERY_BLOCK", 7)  # several query blocks
    rng = np.random.default_rng(0)
    q, g = l2_normalize(rng.normal(size=(30, 8))), l2_normalize(rng.normal(size=(50, 8)))
    ql, gl = rng.integers(0, 14, 30), rng.integers(0, 12, 50)  # labels 12 and 13 never in the gallery
    got = evaluate_embeddings(q, ql, g, gl, ks=[1, 5, 10])
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


def test_evaluate_embeddings_errors():
    q, g = np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="no query label occurs in the gallery"):
        evaluate_embeddings(q, np.array([0, 1, 2]), g, np.array([5, 6, 7]))
    beyond = evaluate_embeddings(q, np.array([0, 1, 2]), g, np.array([0, 1, 2]), ks=[1, 20])
    assert beyond["recall@20"] == 1.0  # K past the gallery size: the whole gallery is in the top K
    with pytest.raises(ValueError, match="exactly one label"):
        evaluate_embeddings(q, np.array([0, 1]), g, np.array([0, 1, 2]), ks=[1])


def test_evaluate_model_on_inshop_layout(tiny_inshop):
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
