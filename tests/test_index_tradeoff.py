"""benchmarks/index_tradeoff.py: its index plan and vector set, and a tiny end-to-end run."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")
pytest.importorskip("matplotlib")

from prodrec.models import Embedder  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "index_tradeoff.py"


@pytest.fixture(scope="module")
def tradeoff():
    spec = importlib.util.spec_from_file_location("index_tradeoff", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_plan_sizes_nlist_and_pq_to_the_set(tradeoff):
    plan = {index_type: (knob, values) for index_type, knob, values in tradeoff.index_plan(1_000_000, 512)}
    assert list(plan) == ["Flat", "HNSW32", "IVF1024,Flat", "IVF1024,PQ64", "IVF1024,PQ32"]  # sqrt: 1000
    assert plan["HNSW32"] == ("ef_search", (16, 32, 64, 128, 256)) and plan["IVF1024,Flat"][1][-1] == 64
    assert [t for t, _, _ in tradeoff.index_plan(3000, 64)] == ["Flat", "HNSW32", "IVF64,Flat", "IVF64,PQ8",
                                                               "IVF64,PQ4"]  # sqrt 54.8, 3000 / 39 = 76.9
    small = {t: values for t, _, values in tradeoff.index_plan(200, 16)}  # sqrt 14.1 but 200 / 39 = 5.1: 4
    assert small["IVF4,Flat"] == (1, 2, 4) and "IVF4,PQ2" in small and "IVF4,PQ1" in small


def test_clustered_vectors_are_seeded_unit_vectors_near_their_centre(tradeoff):
    data = tradeoff.clustered_vectors(500, 40, 32, 0.5, seed=3)
    assert data["gallery"].shape == (500, 32) and data["query"].shape == (40, 32)
    assert data["gallery"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(data["gallery"], axis=1), 1, atol=1e-5)
    assert set(np.unique(data["gallery_labels"])) <= set(range(5))
    centre_of = {}
    for vector, label in zip(data["gallery"], data["gallery_labels"]):
        centre_of.setdefault(label, []).append(vector)
    means = {label: np.mean(vectors, axis=0) for label, vectors in centre_of.items()}
    nearest = [max(means, key=lambda label: vector @ means[label]) for vector in data["query"]]
    assert np.mean(np.array(nearest) == data["query_labels"]) == 1.0
    again = tradeoff.clustered_vectors(500, 40, 32, 0.5, seed=3)
    assert np.array_equal(again["gallery"], data["gallery"]) and np.array_equal(again["query"], data["query"])


def test_tiny_run_writes_tables_plot_and_records(tradeoff, tmp_path):
    torch.manual_seed(0)
    model = Embedder("resnet18d", embedding_size=16, image_size=32).save(tmp_path / "model.pt")
    output = tmp_path / "out"
    assert tradeoff.main(["--checkpoint", str(model), "--items", "8", "--views", "4", "--image-size", "32",
                          "--vectors", "600", "--dim", "16", "--queries", "20", "--top-k", "5",
                          "--min-seconds", "0.01", "--output", str(output)]) == 0
    results = json.loads((output / "results.json").read_text())
    assert results["command"].startswith("python ") and "--vectors 600" in results["command"]
    assert set(results["settings"]["sets"]) == {"real", "vectors"}
    rows = results["indexes"]
    real = [r for r in rows if r["set"] == "real"]
    assert [r["index_type"] for r in real if "skipped" in r] == ["IVF1,PQ2", "IVF1,PQ1"]  # 8 gallery images
    vectors = [r for r in rows if r["set"] == "vectors"]
    assert {r["index_type"] for r in vectors} == {"Flat", "HNSW32", "IVF8,Flat", "IVF8,PQ2", "IVF8,PQ1"}
    measured = [r for r in rows if "skipped" not in r]
    assert all(r["queries_per_second"] > 0 and r["bytes_per_vector"] > 0 and 0 <= r["recall_at_1_vs_exact"] <= 1
               for r in measured)
    flat = [r for r in measured if r["index_type"] == "Flat"]
    assert all(r["recall_at_1_vs_exact"] == 1.0 and r["bytes_per_vector"] >= 16 * 4 for r in flat)
    assert [r["value"] for r in vectors if r["index_type"] == "IVF8,Flat"] == [1, 2, 4, 8]
    methods = ["none", "qe", "qe, qe_k=2", "k-reciprocal", "k-reciprocal, k1=6, k2=2"]
    assert [(r["set"], r["method"]) for r in results["reranking"]] == [(s, m) for s in ("real", "clustered")
                                                                       for m in methods]
    assert all(r["top_k"] == 5 and r["mAP_key"] == "mAP@5" and 0 <= r["mAP"] <= 1 for r in results["reranking"])
    markdown = (output / "results.md").read_text()
    assert "| index type | knob | Recall@1 vs exact |" in markdown and "| k-reciprocal, k1=6, k2=2 |" in markdown
    assert "**Re-ranking, clustered**: 2000 gallery vectors in 100 clusters" in markdown
    assert results["command"] in markdown
    assert (output / "recall_vs_qps.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
