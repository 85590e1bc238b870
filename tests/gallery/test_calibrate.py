import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("faiss")

from prodrec.gallery import (DEFAULT_THRESHOLD, GalleryFolder, GalleryIndex, Recognizer, build_gallery,  # noqa: E402
                             calibrate_gallery, held_out_outcomes)
from prodrec.models import Embedder  # noqa: E402


def clustered_gallery(seed=0, products=30, per_product=4, singles=3, index_type="Flat", metric="ip"):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(products + singles, 8))
    labels = [f"p{i}" for i in range(products) for _ in range(per_product)] + [f"p{products + i}" for i in range(singles)]
    rows = [int(label[1:]) for label in labels]
    gallery = GalleryIndex(8, index_type=index_type, metric=metric)
    gallery.add(centres[rows] + 0.8 * rng.normal(size=(len(rows), 8)), labels)
    return gallery


def slow_held_out(gallery, unknown=None):
    """Each image of a product with more images against all the others, by a full similarity matrix."""
    features, labels = gallery.features.astype(np.float64), gallery.labels
    similarity = features @ features.T
    np.fill_diagonal(similarity, -np.inf)
    several = np.array([np.sum(labels == label) > 1 for label in labels])
    best = similarity[several].argmax(axis=1)
    known = (similarity[several, best], labels[best] == labels[several])
    return known, None if unknown is None else (unknown / np.linalg.norm(unknown, axis=1, keepdims=True) @ features.T).max(1)


def test_held_out_outcomes_equal_a_full_similarity_matrix():
    gallery = clustered_gallery()
    unknown = np.random.default_rng(9).normal(size=(50, 8))
    (outcomes, skipped), ((scores, correct), unknown_scores) = held_out_outcomes(gallery, unknown), slow_held_out(gallery, unknown)
    assert skipped == 3 and len(outcomes.known_scores) == 120 and 0 < outcomes.known_correct.mean() < 1
    np.testing.assert_allclose(outcomes.known_scores, scores, atol=1e-5)
    assert (outcomes.known_correct == correct).all()
    np.testing.assert_allclose(outcomes.unknown_scores, unknown_scores, atol=1e-5)


def test_calibration_meets_its_target_and_round_trips(tmp_path):
    gallery = clustered_gallery()
    calibration = calibrate_gallery(gallery, far=0.1, unknown_features=np.random.default_rng(9).normal(size=(80, 8)))
    assert calibration.far <= 0.1 and calibration.known_queries == 120 and calibration.unknown_queries == 80
    assert calibration.changes == gallery.changes == len(gallery) and calibration.skipped_products == 3
    gallery.calibration = calibration
    assert gallery.threshold == calibration.threshold
    gallery.save(tmp_path / "g")
    loaded = GalleryIndex.load(tmp_path / "g")
    assert loaded.calibration == calibration and loaded.changes == gallery.changes
    with GalleryIndex.update(tmp_path / "g") as changed:
        changed.remove(label="p0")
        changed.add(np.ones((2, 8)), ["new", "new"])
    reloaded = GalleryIndex.load(tmp_path / "g")
    assert reloaded.calibration == calibration and reloaded.changes - calibration.changes == 6  # kept, and dated


def test_distance_galleries_calibrate_in_their_own_direction():
    similar, distant = clustered_gallery(metric="ip"), clustered_gallery(metric="l2")
    first = calibrate_gallery(similar, far=0.1)
    second = calibrate_gallery(distant, far=0.1)
    assert second.threshold == pytest.approx(2 - 2 * first.threshold, abs=1e-5)  # unit vectors: d^2 = 2 - 2 cos
    assert (second.far, second.frr) == (first.far, first.frr)


def test_nothing_to_calibrate_on_is_a_clear_error():
    with pytest.raises(ValueError, match="the gallery is empty"):
        calibrate_gallery(GalleryIndex(8))
    singles = GalleryIndex(8)
    singles.add(np.eye(8), [f"p{i}" for i in range(8)])
    with pytest.raises(ValueError, match="each of the gallery's 8 products has one image.*--unknown"):
        calibrate_gallery(singles)
    calibration = calibrate_gallery(singles, far=0.5, unknown_features=np.random.default_rng(0).normal(size=(20, 8)))
    assert calibration.frr is None and calibration.known_queries == 0 and calibration.skipped_products == 8
    lean = GalleryIndex(8, keep_features=False)
    lean.add(np.eye(8), ["a"] * 8)
    with pytest.raises(ValueError, match="--no-features"):
        calibrate_gallery(lean)


def test_a_damaged_calibration_record_is_refused(tmp_path):
    gallery = clustered_gallery()
    gallery.calibration = calibrate_gallery(gallery, far=0.1)
    gallery.save(tmp_path / "g")
    meta = GalleryFolder(tmp_path / "g").current_folder() / "meta.json"
    record = json.loads(meta.read_text())
    record["calibration"]["threshold"] = "high"
    meta.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="stored calibration is damaged.*prodrec index calibrate"):
        GalleryIndex.load(tmp_path / "g")


def test_recognizer_uses_the_stored_threshold_unless_told_otherwise(tmp_path):
    torch.manual_seed(0)
    model = Embedder("resnet18d", embedding_size=16, image_size=32)
    rng = np.random.default_rng(0)
    paths = []
    for number in range(6):
        paths.append(str(tmp_path / f"{number}.png"))
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    gallery = build_gallery(model, [(path, f"sku{i // 2}", None) for i, path in enumerate(paths)], progress=False)
    photo = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    score = Recognizer(model, gallery).recognize(photo)[0].score
    assert Recognizer(model, gallery).threshold == DEFAULT_THRESHOLD
    gallery.calibration = calibrate_gallery(gallery, far=0.5,
                                            unknown_features=model.embed([photo] * 2 + paths[:1]).numpy())
    stored = gallery.threshold
    assert Recognizer(model, gallery).threshold == stored
    for threshold in (stored, np.nextafter(np.float32(score), np.float32(np.inf)).item(), score):
        gallery.calibration = type(gallery.calibration)(**{**gallery.calibration.to_json(), "threshold": threshold})
        (region,) = Recognizer(model, gallery).recognize(photo)
        assert region.accepted == (score >= threshold)
    assert Recognizer(model, gallery).recognize(photo, threshold=2.0)[0].accepted is False  # a call's own wins
    assert Recognizer(model, gallery, threshold=-1.0).recognize(photo)[0].accepted is True  # the recognizer's wins
    assert Recognizer(model, gallery, rerank="qe").threshold == DEFAULT_THRESHOLD  # re-ranked scores differ
