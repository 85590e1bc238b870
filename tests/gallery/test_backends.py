"""The gallery contract: every backend (faiss folder, Milvus Lite) answers the same cases as brute force."""
import importlib.util
import os
import uuid

import numpy as np
import pytest

from prodrec.gallery import (Calibration, GalleryFolder, GalleryIndex, create_milvus_gallery, open_gallery,
                             record_milvus_gallery, update_gallery)

BACKENDS = ["faiss", "milvus"]


def require_milvus():
    if not all(importlib.util.find_spec(name) for name in ("pymilvus", "milvus_lite")):
        if os.environ.get("CI"):  # CI installs the milvus extra: the Milvus half of the contract must run there
            raise ImportError("pymilvus and milvus-lite are missing")
        pytest.skip("the milvus extra is not installed")


@pytest.fixture(scope="module")
def milvus_home(tmp_path_factory):
    return tmp_path_factory.mktemp("milvus") / "galleries.db"  # one Milvus Lite for the module


@pytest.fixture
def make_gallery(request, tmp_path, milvus_home):
    """``make_gallery(dim, metric)``: an empty gallery of the parametrized backend, saved in a folder that
    ``reopen()`` reads back."""
    backend = request.param
    if backend == "milvus":
        require_milvus()
    folder = tmp_path / "gallery"

    def make(dim, metric="ip"):
        if backend == "faiss":
            return GalleryIndex(dim, metric=metric)
        return create_milvus_gallery(folder, dim=dim, metric=metric, uri=str(milvus_home),
                                     collection=f"c{uuid.uuid4().hex[:12]}")

    def save(gallery):
        if backend == "faiss":
            gallery.save(folder)
        else:
            gallery.commit()
            record_milvus_gallery(folder, gallery)
        return open_gallery(folder)

    make.save, make.folder = save, folder
    return make


def unit(rows, dim, seed):
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(gallery_x, queries, k, metric, allowed=None):
    scores = queries @ gallery_x.T if metric == "ip" else ((queries[:, None] - gallery_x[None]) ** 2).sum(-1)
    if allowed is not None:
        scores = np.where(allowed[None], scores, -np.inf if metric == "ip" else np.inf)
    order = np.argsort(-scores if metric == "ip" else scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


def assert_same_as_brute_force(found, gallery_x, queries, k, metric, ids, allowed=None):
    expected_scores, rows = brute_force(gallery_x, queries, k, metric, allowed)
    finite = np.isfinite(expected_scores)
    np.testing.assert_allclose(found.scores[finite], expected_scores[finite], atol=1e-4)
    assert (found.ids[~finite] == -1).all()
    for q in range(len(queries)):  # ties may order differently: each returned id has the expected score
        for rank in np.flatnonzero(finite[q]):
            row = np.searchsorted(ids, found.ids[q, rank])
            own = (queries[q] @ gallery_x[row]) if metric == "ip" else ((queries[q] - gallery_x[row]) ** 2).sum()
            assert own == pytest.approx(expected_scores[q, rank], abs=1e-4)
            assert allowed is None or allowed[row]


@pytest.mark.parametrize("make_gallery", BACKENDS, indirect=True)
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_search_answers_as_brute_force_with_and_without_a_filter(make_gallery, metric):
    x, queries = unit(60, 8, 0), unit(7, 8, 1)
    labels = [f"p{i % 9}" for i in range(60)]
    gallery = make_gallery(8, metric)
    ids = gallery.add(x, labels, names=[None if i % 2 else f"P{i}" for i in range(60)])
    assert len(ids) == 60 and (np.diff(ids) > 0).all() and len(gallery) == 60
    found = gallery.search(queries, k=5)
    assert_same_as_brute_force(found, x, queries, 5, metric, ids)
    assert [[labels[np.searchsorted(ids, i)] for i in row] for row in found.ids] == found.labels.tolist()

    where = 'label in ["p1", "p2"] or (name == "" and id > ' + str(int(ids[40])) + ")"
    allowed = np.array([(label in ("p1", "p2")) or (i % 2 == 1 and i > 40) for i, label in enumerate(labels)])
    assert_same_as_brute_force(gallery.search(queries, k=12, filter=where), x, queries, 12, metric, ids, allowed)
    nothing = gallery.search(queries, k=3, filter='label == "absent"')
    assert (nothing.ids == -1).all() and nothing.labels.tolist() == [[None] * 3] * 7


@pytest.mark.parametrize("make_gallery", BACKENDS, indirect=True)
def test_rows_and_the_gallery_record_survive_reopening(make_gallery):
    x = unit(10, 4, 2)
    gallery = make_gallery(4)
    ids = gallery.add(x, ["a"] * 5 + ["b"] * 5, names=["A"] * 5 + [None] * 5, paths=[f"{i}.jpg" for i in range(10)])
    gallery.embedder_info = {"backbone": "test", "embedding_size": 4}
    gallery.calibration = Calibration(threshold=0.7, far_target=0.01, far=0.0, frr=0.1, false_accepts=0,
                                      false_rejects=1, known_queries=10, unknown_queries=0, far_upper_95=0.26,
                                      min_supported_far=0.26, skipped_products=0, changes=10,
                                      calibrated_at="2026-12-07T00:00:00+00:00")
    again = make_gallery.save(gallery)
    assert again.backend == gallery.backend and len(again) == 10 and again.dim == 4 and again.metric == "ip"
    assert again.ids.tolist() == ids.tolist() and again.labels.tolist() == ["a"] * 5 + ["b"] * 5
    assert again.names.tolist() == ["A"] * 5 + [None] * 5 and again.paths.tolist() == [f"{i}.jpg" for i in range(10)]
    np.testing.assert_allclose(again.features, x, atol=1e-6)
    assert again.embedder_info == gallery.embedder_info and again.threshold == 0.7 and again.changes == 10

    with update_gallery(make_gallery.folder) as changing:
        assert changing.remove(label="a") == 5
        changing.calibration = None
    after = open_gallery(make_gallery.folder)
    assert after.labels.tolist() == ["b"] * 5 and after.threshold is None and after.changes == 15


@pytest.mark.parametrize("make_gallery", BACKENDS, indirect=True)
def test_remove_by_id_and_label_and_refuse_unknown_ones_changing_nothing(make_gallery):
    x = unit(12, 4, 3)
    gallery = make_gallery(4)
    ids = gallery.add(x, [f"p{i % 4}" for i in range(12)])
    with pytest.raises(ValueError, match="not in the gallery: labels \\['nope'\\]"):
        gallery.remove(label=["p0", "nope"])
    with pytest.raises(ValueError, match="not in the gallery"):
        gallery.remove(ids=[int(ids[0]), int(ids[-1]) + 1000])
    with pytest.raises(ValueError, match="either ids or label"):
        gallery.remove()
    assert len(gallery) == 12
    assert gallery.remove(ids=[int(ids[0]), int(ids[1])]) == 2
    assert gallery.remove(label=["p2", "p3"]) == 6
    left = gallery.search(x, k=12).ids
    assert set(left[left >= 0].tolist()) == {int(ids[i]) for i in (4, 5, 8, 9)}
    assert gallery.changes == 20


@pytest.mark.parametrize("make_gallery", BACKENDS, indirect=True)
def test_small_and_empty_galleries_pad_rows_and_bad_input_is_refused(make_gallery):
    gallery = make_gallery(4)
    empty = gallery.search(unit(2, 4, 4), k=3)
    assert (empty.ids == -1).all() and np.isneginf(empty.scores).all()
    gallery.add(unit(2, 4, 5), ["a", "b"])
    found = gallery.search(unit(1, 4, 6), k=4)
    assert (found.ids[0, 2:] == -1).all() and found.labels[0, 2:].tolist() == [None, None]
    with pytest.raises(ValueError, match="dimension 5"):
        gallery.search(unit(1, 5, 7), k=1)
    with pytest.raises(ValueError, match="dimension 3"):
        gallery.add(unit(1, 3, 7), ["c"])
    with pytest.raises(ValueError, match="labels must be non-empty strings"):
        gallery.add(unit(1, 4, 7), [""])
    with pytest.raises(ValueError, match="unknown field"):
        gallery.search(unit(1, 4, 7), k=1, filter='shop == "x"')


def test_a_milvus_folder_is_not_read_as_faiss_generations(tmp_path, milvus_home):
    require_milvus()
    gallery = create_milvus_gallery(tmp_path, dim=4, uri=str(milvus_home), collection="refused")
    record_milvus_gallery(tmp_path, gallery)
    assert GalleryFolder(tmp_path).exists()
    with pytest.raises(ValueError, match="kept in Milvus"):
        GalleryIndex.load(tmp_path)
