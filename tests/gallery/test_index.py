import numpy as np
import pytest

pytest.importorskip("faiss")

from prodrec.gallery import GalleryIndex  # noqa: E402
from prodrec.retrieval import l2_normalize  # noqa: E402

TOL = 1e-5


def clustered(rng, clusters=40, per_cluster=16, dim=32, spread=0.15):
    """Unit vectors around ``clusters`` random centres; label = the centre's index."""
    centres = rng.standard_normal((clusters, dim))
    points = np.repeat(centres, per_cluster, axis=0) + spread * rng.standard_normal((clusters * per_cluster, dim))
    return l2_normalize(points), np.repeat([f"p{c}" for c in range(clusters)], per_cluster)


def brute_force(queries, gallery):
    """Cosine scores [Q, G] in float64 and the stable best-first order."""
    scores = l2_normalize(queries).astype(np.float64) @ l2_normalize(gallery).astype(np.float64).T
    return scores, np.argsort(-scores, axis=1, kind="stable")


def assert_flat_exact(result, queries, gallery, gallery_ids, k):
    """Scores equal brute force; each id carries its own score; ids agree wherever no near-tie decides."""
    exact, order = brute_force(queries, gallery)
    row_of = {int(i): row for row, i in enumerate(gallery_ids)}
    rows = np.vectorize(row_of.get)(result.ids)
    np.testing.assert_allclose(result.scores, np.take_along_axis(exact, order[:, :k], axis=1), atol=TOL)
    np.testing.assert_allclose(np.take_along_axis(exact, rows, axis=1), result.scores, atol=TOL)
    assert all(len(set(row)) == k for row in result.ids.tolist())
    ranked = np.take_along_axis(exact, order, axis=1)
    gaps = np.abs(np.diff(ranked, axis=1))
    isolated = np.ones_like(ranked, dtype=bool)
    isolated[:, 1:] &= gaps > TOL
    isolated[:, :-1] &= gaps > TOL
    isolated = isolated[:, :k]
    assert isolated.mean() > 0.5  # the id check below must bite
    np.testing.assert_array_equal(rows[isolated], order[:, :k][isolated])


@pytest.mark.parametrize("k", [1, 5, 40])
def test_flat_equals_brute_force_with_ids_and_labels(k):
    rng = np.random.default_rng(0)
    gallery, queries = rng.standard_normal((60, 16)), rng.standard_normal((25, 16))
    index = GalleryIndex(16)
    ids = index.add(gallery[:30], [f"a{i}" for i in range(30)], names=[f"name {i}" for i in range(30)])
    ids = np.concatenate([ids, index.add(gallery[30:], [f"b{i}" for i in range(30)])])
    index.remove(ids=ids[::3])  # ids no longer equal row numbers
    kept = np.ones(60, dtype=bool)
    kept[::3] = False
    result = index.search(queries, k, block_size=7)  # several query blocks
    assert result.scores.dtype == np.float32 and result.ids.dtype == np.int64
    assert_flat_exact(result, queries, gallery[kept], ids[kept], k)
    labels = np.array([f"a{i}" for i in range(30)] + [f"b{i}" for i in range(30)], dtype=object)
    np.testing.assert_array_equal(result.labels, labels[result.ids])
    names = np.array([f"name {i}" for i in range(30)] + [None] * 30, dtype=object)
    np.testing.assert_array_equal(result.names, names[result.ids])


def test_rows_beyond_the_gallery_are_padded():
    index = GalleryIndex(2)
    index.add([[1, 0], [0, 1]], ["x", "y"])
    result = index.search([[1, 0.1]], k=4)
    assert result.ids.tolist() == [[0, 1, -1, -1]]
    assert result.labels.tolist() == [["x", "y", None, None]]
    assert result.scores[0, 0] == pytest.approx(1 / np.sqrt(1.01)) and np.isneginf(result.scores[0, 2:]).all()
    l2 = GalleryIndex(2, metric="l2")
    l2.add([[1, 0]], ["x"])
    assert np.isposinf(l2.search([[0, 1]], k=2).scores[0, 1])
    assert l2.search([[0, 1]], k=1).scores[0, 0] == pytest.approx(2.0)  # |a - b|^2 of orthogonal unit vectors


@pytest.mark.parametrize("index_type, bound", [("HNSW32", 0.9), ("IVF16,Flat", 0.9), ("IVF16,PQ8", 0.5)])
def test_approximate_indexes_recall_against_flat(index_type, bound):
    rng = np.random.default_rng(1)
    gallery, labels = clustered(rng)
    queries = l2_normalize(gallery[::4] + 0.1 * rng.standard_normal(gallery[::4].shape))
    exact = GalleryIndex(32)
    exact.add(gallery, labels)
    index = GalleryIndex(32, index_type=index_type)
    assert index.is_trained == (index_type == "HNSW32")
    if not index.is_trained:
        index.train(gallery)
        index.nprobe = 4
    index.add(gallery, labels)
    truth, found = exact.search(queries, 5), index.search(queries, 5)
    recall = np.mean([len(set(t) & set(f)) / 5 for t, f in zip(truth.ids.tolist(), found.ids.tolist())])
    assert recall >= bound, recall
    assert np.mean(truth.labels[:, 0] == found.labels[:, 0]) >= 0.95  # the product is found nearly always


@pytest.mark.parametrize("index_type", ["Flat", "IVF4,Flat", "IVF4,PQ4"])
def test_removed_images_are_never_returned(index_type):
    rng = np.random.default_rng(3)
    gallery, labels = clustered(rng, clusters=20, per_cluster=15, dim=16)
    index = GalleryIndex(16, index_type=index_type)
    if not index.is_trained:
        index.train(gallery)
        index.nprobe = 4  # every list: removal, not probing, must explain what is missing
    ids = index.add(gallery, labels)
    assert index.remove(ids=ids[5:40]) == 35
    assert index.remove(label=["p10", "p11"]) == 30
    removed = set(ids[5:40].tolist()) | set(ids[np.isin(labels, ["p10", "p11"])].tolist())
    assert len(index) == 300 - len(removed) and not set(index.ids.tolist()) & removed
    found = index.search(gallery, k=len(index)).ids
    assert not set(found.ravel().tolist()) & removed
    if index_type != "IVF4,PQ4":  # exact codes: each remaining image finds itself first
        assert (found[:, 0] == ids)[~np.isin(ids, list(removed))].all()
    new = index.add(gallery[5:7], ["q", "q"])  # the vectors of removed ids 5 and 6
    assert new.tolist() == [300, 301]  # ids are never reused
    assert index.search(gallery[5:6], k=1).ids[0, 0] == 300


def test_remove_checks_its_arguments_and_changes_nothing_on_error():
    index = GalleryIndex(2)
    index.add([[1, 0], [0, 1]], ["x", "y"])
    with pytest.raises(ValueError, match="either ids or label"):
        index.remove()
    with pytest.raises(ValueError, match="either ids or label"):
        index.remove(ids=[0], label="x")
    with pytest.raises(ValueError, match=r"not in the gallery: ids \[7\]"):
        index.remove(ids=[0, 7])
    with pytest.raises(ValueError, match=r"not in the gallery: labels \['z'\]"):
        index.remove(label="z")
    assert len(index) == 2 and index.search([[1, 0]], k=2).ids.tolist() == [[0, 1]]


def test_hnsw_cannot_remove_in_place_but_rebuilds():
    rng = np.random.default_rng(4)
    gallery, labels = clustered(rng, clusters=10, per_cluster=10, dim=16)
    index = GalleryIndex(16, index_type="HNSW32")
    ids = index.add(gallery, labels)
    index.ef_search = 64
    with pytest.raises(ValueError, match=r"HNSW32 index cannot remove.*rebuild=True"):
        index.remove(label="p3")
    assert len(index) == 100
    assert index.remove(label="p3", rebuild=True) == 10
    assert index.ef_search == 64 and len(index) == 90
    found = index.search(gallery, k=5)
    assert not np.isin(found.ids, ids[labels == "p3"]).any()
    kept = labels != "p3"
    assert (found.ids[kept, 0] == ids[kept]).all()


def test_rebuild_changes_type_and_needs_kept_features():
    rng = np.random.default_rng(5)
    gallery, labels = clustered(rng, clusters=10, per_cluster=30, dim=16)
    index = GalleryIndex(16)
    ids = index.add(gallery, labels)
    index.rebuild(index_type="IVF4,Flat")
    assert index.index_type == "IVF4,Flat" and index.nprobe == 1
    index.nprobe = 4
    assert (index.search(gallery, k=1).ids[:, 0] == ids).all()
    with pytest.raises(ValueError, match="training on the 300 kept features failed.*at least"):
        index.rebuild(index_type="IVF400,Flat")
    assert index.index_type == "IVF4,Flat" and len(index) == 300  # unchanged
    lean = GalleryIndex(16, index_type="HNSW32", keep_features=False)
    lean.add(gallery, labels)
    assert lean.features is None
    with pytest.raises(ValueError, match="keep_features=False"):
        lean.remove(ids=[0], rebuild=True)


def test_training_rules():
    rng = np.random.default_rng(6)
    index = GalleryIndex(8, index_type="IVF32,Flat")
    with pytest.raises(ValueError, match=r"not trained: call train\(sample_features\)"):
        index.add(rng.standard_normal((40, 8)), ["a"] * 40)
    with pytest.raises(ValueError, match=r"on 10 vectors failed: Number of training points \(10\)"):
        index.train(rng.standard_normal((10, 8)))
    index.train(rng.standard_normal((64, 8)))
    index.add(rng.standard_normal((3, 8)), ["a"] * 3)
    with pytest.raises(ValueError, match="before vectors are added"):
        index.train(rng.standard_normal((64, 8)))


def test_input_checks():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        GalleryIndex(0)
    with pytest.raises(ValueError, match="metric must be one of"):
        GalleryIndex(4, metric="cosine")
    index = GalleryIndex(4)
    with pytest.raises(ValueError, match="dimension 3, but this index holds 4-d"):
        index.add(np.ones((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match=r"labels must be non-empty strings; rows \[1, 2\]"):
        index.add(np.ones((3, 4)), ["a", "", 5])
    with pytest.raises(ValueError, match="names must be a sequence of 2 entries"):
        index.add(np.ones((2, 4)), ["a", "b"], names=["x"])
    with pytest.raises(ValueError, match="zero norm"):
        index.add(np.zeros((1, 4)), ["a"])
    with pytest.raises(ValueError, match="applies to IVF indexes; this one is Flat"):
        index.nprobe = 3
    assert index.nprobe is None and index.ef_search is None and len(index) == 0
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(np.ones((1, 4)), k=0)
