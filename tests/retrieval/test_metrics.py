from pathlib import Path

import numpy as np
import pytest

from prodrec.retrieval import ranks
from prodrec.retrieval import rank_by_similarity, retrieval_metrics, similarity_metrics

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "paddleclas" / "retrieval.npz"


@pytest.fixture(scope="module")
def reference():
    if not REFERENCE.is_file():
        pytest.skip("../shared/reference not found (only in the prodrec dev workspace)")
    return dict(np.load(REFERENCE))


def assert_matches_paddleclas(result, expected):
    """PaddleClas computes in float32: recall (one correctly rounded division) must round
    to the same float32; its mAP accumulates float32 sums over ~145 queries (measured
    2.2 float32 ulps = 3.3e-8 off the float64 value), so allow 1e-7."""
    recalls = np.array([result["recall@1"], result["recall@5"], result["recall@10"]])
    np.testing.assert_array_equal(recalls.astype(np.float32), expected[:3].astype(np.float32))
    assert abs(result["mAP"] - expected[3]) <= 1e-7


def test_paddleclas_full_ranking(reference):
    ranked = rank_by_similarity(reference["sim"])
    result = retrieval_metrics(ranked, reference["query_label"], reference["gallery_label"], ks=(1, 5, 10))
    assert_matches_paddleclas(result, reference["metrics_full_nomask"])
    # Labels 0 and 1 never occur in the gallery.
    unmatched = np.count_nonzero(~np.isin(reference["query_label"], reference["gallery_label"]))
    assert result["num_queries_without_match"] == unmatched == 5
    assert result["num_queries"] == 150


def test_paddleclas_camera_mask(reference):
    keep = reference["keep_mask"]
    ranked = rank_by_similarity(reference["sim"] * keep)
    result = retrieval_metrics(
        ranked, reference["query_label"], reference["gallery_label"], ks=(1, 5, 10), keep_mask=keep
    )
    assert_matches_paddleclas(result, reference["metrics_full_cammask"])
    same_label = reference["query_label"][:, None] == reference["gallery_label"][None, :]
    assert result["num_queries_without_match"] == np.count_nonzero(~(same_label & keep).any(axis=1)) == 10


def test_masked_pairs_must_keep_their_place_in_the_ranking(reference):
    # Ranking the unmasked similarity gives different numbers: PaddleClas zeroes masked pairs.
    keep = reference["keep_mask"]
    ranked = rank_by_similarity(reference["sim"])
    result = retrieval_metrics(
        ranked, reference["query_label"], reference["gallery_label"], ks=(1,), keep_mask=keep
    )
    assert abs(result["recall@1"] - reference["metrics_full_cammask"][0]) > 0.01


GALLERY_LABELS = [0, 1, 0, 2, 1]
QUERY_LABELS = [0, 1, 3]
# q0 (label 0): ranked labels 1 0 2 0 1 -> matches at ranks 2, 4; AP = (1/2 + 2/4) / 2 = 1/2
# q1 (label 1): ranked labels 1 0 1 0 2 -> matches at ranks 1, 3; AP = (1/1 + 2/3) / 2 = 5/6
# q2 (label 3): no match in the gallery -> left out
# recall@1 = 1/2, recall@2 = 1, mAP = (1/2 + 5/6) / 2 = 2/3
RANKED = np.array([[1, 0, 3, 2, 4], [4, 2, 1, 0, 3], [0, 1, 2, 3, 4]])


def test_hand_worked_case():
    result = retrieval_metrics(RANKED, QUERY_LABELS, GALLERY_LABELS, ks=(1, 2, 5))
    assert result == pytest.approx(
        {"recall@1": 0.5, "recall@2": 1.0, "recall@5": 1.0, "mAP": 2 / 3,
         "num_queries": 3, "num_queries_without_match": 1},
        abs=1e-15,
    )


def test_hand_worked_truncated_ranking():
    # Top 3 only: q0 keeps its rank-2 match, AP@3 = (1/2) / 2; q1 keeps both, 5/6.
    result = retrieval_metrics(RANKED[:, :3], QUERY_LABELS, GALLERY_LABELS, ks=(1, 2))
    assert "mAP" not in result
    assert result["mAP@3"] == pytest.approx((1 / 4 + 5 / 6) / 2, abs=1e-15)


def test_hand_worked_keep_mask():
    # Masking q1's top item (gallery 4) leaves its one match at rank 3: AP = 1/3.
    keep = np.ones((3, 5), dtype=bool)
    keep[1, 4] = False
    result = retrieval_metrics(RANKED, QUERY_LABELS, GALLERY_LABELS, ks=(1, 2, 3), keep_mask=keep)
    assert result["recall@1"] == 0.0
    assert result["recall@2"] == 0.5
    assert result["recall@3"] == 1.0
    assert result["mAP"] == pytest.approx((1 / 2 + 1 / 3) / 2, abs=1e-15)


def slow_metrics(ranked, query_labels, gallery_labels, ks, keep_mask):
    recall_hits, average_precisions = {k: 0 for k in ks}, []
    for q, row in enumerate(ranked):
        relevant = [g for g in range(len(gallery_labels))
                    if gallery_labels[g] == query_labels[q] and keep_mask[q, g]]
        if not relevant:
            continue
        found, precision_sum = 0, 0.0
        for rank, g in enumerate(row, start=1):
            if g in relevant:
                found += 1
                precision_sum += found / rank
        for k in ks:
            recall_hits[k] += any(g in relevant for g in row[:k])
        average_precisions.append(precision_sum / len(relevant))
    n = len(average_precisions)
    return {**{f"recall@{k}": recall_hits[k] / n for k in ks}, "mAP": sum(average_precisions) / n,
            "num_queries": len(ranked), "num_queries_without_match": len(ranked) - n}


@pytest.mark.parametrize("depth", [7, 40])
@pytest.mark.parametrize("masked", [False, True])
def test_against_slow_loop(monkeypatch, depth, masked):
    monkeypatch.setattr(ranks, "_BLOCK_ELEMENTS", 100)  # several query blocks
    rng = np.random.default_rng(depth + masked)
    query_labels, gallery_labels = rng.integers(0, 12, 30), rng.integers(0, 10, 40)
    ranked = np.argsort(rng.random((30, 40)), axis=1)[:, :depth]
    keep = rng.random((30, 40)) > 0.3 if masked else np.ones((30, 40), dtype=bool)
    ks = (1, 3, 7)
    result = retrieval_metrics(ranked, query_labels, gallery_labels, ks=ks,
                               keep_mask=keep if masked else None)
    expected = slow_metrics(ranked, query_labels, gallery_labels, ks, keep)
    map_key = "mAP" if depth == 40 else f"mAP@{depth}"
    assert result.pop(map_key) == pytest.approx(expected.pop("mAP"), abs=1e-12)
    assert expected["num_queries_without_match"] > 0
    assert result == pytest.approx(expected, abs=1e-12)


def test_compute_map_false_omits_map():
    result = retrieval_metrics(RANKED, QUERY_LABELS, GALLERY_LABELS, ks=(1,), compute_map=False)
    assert set(result) == {"recall@1", "num_queries", "num_queries_without_match"}


def test_rank_by_similarity_is_stable_descending():
    similarity = np.array([[0.1, 0.9, 0.1, 0.5], [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(rank_by_similarity(similarity), [[1, 3, 0, 2], [3, 0, 1, 2]])
    np.testing.assert_array_equal(rank_by_similarity(similarity, k=2), [[1, 3], [3, 0]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ks": (1, 6)}, "Rank deeper"),
        ({"ks": (0,)}, "positive integers"),
        ({"ranked_indices": RANKED[:2]}, r"expected \(3, k\)"),
        ({"ranked_indices": RANKED.astype(float)}, "integer array"),
        ({"ranked_indices": RANKED + 1}, r"must lie in \[0, 4\]"),
        ({"ranked_indices": np.array([[0, 0, 2, 1, 4]] * 3)}, "more than once"),
        ({"query_labels": [0.0, 1.0, 3.0]}, "integer class ids"),
        ({"gallery_labels": [[0, 1, 0, 2, 1]]}, "1-D"),
        ({"keep_mask": np.ones((3, 5))}, "bool array of shape"),
        ({"keep_mask": np.ones((3, 4), dtype=bool)}, "bool array of shape"),
        ({"query_labels": [7, 8, 9]}, "None of the 3 queries"),
    ],
)
def test_bad_input(kwargs, match):
    arguments = {"ranked_indices": RANKED, "query_labels": QUERY_LABELS,
                 "gallery_labels": GALLERY_LABELS, "ks": (1,), **kwargs}
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(**arguments)


@pytest.mark.parametrize(
    "similarity, k, match",
    [
        (np.zeros((2, 3), dtype=int), None, "float array"),
        (np.array([[0.1, np.nan]]), None, "NaN"),
        (np.zeros((2, 3)), 4, r"k must lie in \[1, 3\]"),
    ],
)
def test_rank_by_similarity_bad_input(similarity, k, match):
    with pytest.raises(ValueError, match=match):
        rank_by_similarity(similarity, k)


def full_ranking_metrics(similarity, query_labels, gallery_labels, ks, compute_map=True):
    """The old way: sort every row (stable, so ties go by gallery index), then score the ranking."""
    return retrieval_metrics(rank_by_similarity(similarity), query_labels, gallery_labels, ks=ks,
                             compute_map=compute_map)


# How a query's ranks are found: sorting its candidates, counting one pass per match, or each where cheaper.
PATHS = {"sorted": {}, "counted": {"_MIN_CANDIDATES": 0, "_SORT_COST": 10 ** 9}, "mixed": {"_MIN_CANDIDATES": 4}}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("compute_map", [True, False])
def test_similarity_metrics_equal_full_ranking_with_ties(monkeypatch, compute_map, dtype, path):
    for name, value in PATHS[path].items():
        monkeypatch.setattr(ranks, name, value)
    rng = np.random.default_rng(3)
    for _ in range(40):
        num_queries, num_gallery = rng.integers(1, 25), rng.integers(5, 30)
        similarity = (rng.integers(-2, 2, (num_queries, num_gallery)) / 3).astype(dtype)  # ties everywhere
        similarity[similarity == 0] = rng.choice([0.0, -0.0], np.count_nonzero(similarity == 0))  # -0.0 ties 0.0
        query_labels, gallery_labels = rng.integers(0, 7, num_queries), rng.integers(0, 5, num_gallery)
        if not np.isin(query_labels, gallery_labels).any():
            continue
        got = similarity_metrics(similarity, query_labels, gallery_labels, ks=(1, 2, 5), compute_map=compute_map)
        assert got == pytest.approx(full_ranking_metrics(similarity, query_labels, gallery_labels, (1, 2, 5),
                                                         compute_map), abs=1e-12)


def test_similarity_metrics_hand_worked_ties():
    # q0 (label 0): scores 0.5 0.9 0.5 0.5 -> stable order 1 0 2 3; labels 1 0 0 1: matches at ranks 2, 3
    # q1 (label 1): scores 0.7 0.7 0.7 0.7 -> order 0 1 2 3; labels 0 1 0 1: matches at ranks 2, 4
    similarity = np.array([[0.5, 0.9, 0.5, 0.5], [0.7, 0.7, 0.7, 0.7]])
    result = similarity_metrics(similarity, [0, 1], [0, 1, 0, 1], ks=(1, 2))
    average_precisions = [(1 / 2 + 2 / 3) / 2, (1 / 2 + 2 / 4) / 2]
    assert result == pytest.approx({"recall@1": 0.0, "recall@2": 1.0, "mAP": np.mean(average_precisions),
                                    "num_queries": 2, "num_queries_without_match": 0}, abs=1e-15)
    assert similarity_metrics(similarity, [0, 1], [0, 1, 0, 1], ks=(9,))["recall@9"] == 1.0  # K past the gallery


def test_similarity_metrics_match_paddleclas(reference):
    result = similarity_metrics(reference["sim"], reference["query_label"], reference["gallery_label"], ks=(1, 5, 10))
    assert_matches_paddleclas(result, reference["metrics_full_nomask"])
    assert result == full_ranking_metrics(reference["sim"], reference["query_label"], reference["gallery_label"],
                                          (1, 5, 10))


def test_missing_results_count_as_misses():
    # q0 (label 0): labels 1 0 -> match at rank 2, AP@3 = (1/2) / 2; q1 (label 1): one result, a match: 1 / 2
    ranked = np.array([[1, 0, -1], [4, -1, -1], [0, 1, 2]])
    result = retrieval_metrics(ranked, QUERY_LABELS, GALLERY_LABELS, ks=(1, 3), missing_ok=True)
    assert result == pytest.approx({"recall@1": 0.5, "recall@3": 1.0, "mAP@3": (1 / 4 + 1 / 2) / 2,
                                    "num_queries": 3, "num_queries_without_match": 1}, abs=1e-15)
    with pytest.raises(ValueError, match="missing_ok=True"):
        retrieval_metrics(ranked, QUERY_LABELS, GALLERY_LABELS, ks=(1,))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"similarity": np.zeros((3, 4))}, r"expected \(2, 5\)"),
        ({"similarity": np.zeros((2, 5), dtype=int)}, "float array"),
        ({"similarity": np.full((2, 5), np.nan)}, "NaN"),
        ({"ks": (0,)}, "positive integers"),
        ({"query_labels": [7, 8]}, "None of the 2 queries"),
    ],
)
def test_similarity_metrics_bad_input(kwargs, match):
    arguments = {"similarity": np.zeros((2, 5)), "query_labels": [0, 1], "gallery_labels": GALLERY_LABELS, **kwargs}
    with pytest.raises(ValueError, match=match):
        similarity_metrics(**arguments)
