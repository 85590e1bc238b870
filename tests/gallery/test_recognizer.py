import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("faiss")

from prodrec.data import make_synthetic_inshop  # noqa: E402
from prodrec.gallery import build_gallery  # noqa: E402
from prodrec.models import Embedder  # noqa: E402
from prodrec.gallery import UNKNOWN, Recognizer, read_inshop_boxes  # noqa: E402


def tiny_embedder(seed=0):
    torch.manual_seed(seed)
    return Embedder("resnet18d", embedding_size=16, image_size=32)


def picture(seed, size=32):
    """A blocky random RGB image (lossless as PNG)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """Four product photos (PNG) and a gallery of them; label ``skuN``, name ``Product N``."""
    folder = tmp_path_factory.mktemp("shop")
    paths = []
    for seed in range(4):
        paths.append(str(folder / f"{seed}.png"))
        Image.fromarray(picture(seed)).save(paths[-1])
    model = tiny_embedder()
    gallery = build_gallery(model, [(p, f"sku{i}", f"Product {i}") for i, p in enumerate(paths)], progress=False)
    return model, gallery, paths


def test_whole_image_is_recognised_when_there_are_no_boxes(shop):
    model, gallery, paths = shop
    recognizer = Recognizer(model, gallery, k=3)
    assert recognizer.threshold == 0.5  # PP-ShiTu's default
    for boxes in (None, []):
        (result,) = recognizer.recognize(paths[2], boxes)
        assert result.box == (0, 0, 32, 32) and result.label == "sku2" and result.accepted
        assert result.name == "Product 2" and result.score == pytest.approx(1, abs=1e-5)
        assert len(result.matches) == 3 and result.matches[0] == ("sku2", "Product 2", result.score, 2)
        assert [m.score for m in result.matches] == sorted((m.score for m in result.matches), reverse=True)
    from_array = recognizer.recognize(picture(2))[0]
    from_pil = recognizer.recognize(Image.open(paths[2]))[0]
    assert from_array == from_pil == result
    assert len(Recognizer(model, gallery, k=9).recognize(paths[0])[0].matches) == 4  # only 4 images


def test_threshold_accepts_or_answers_unknown(shop):
    model, gallery, _ = shop
    stranger = picture(99)
    score = Recognizer(model, gallery).recognize(stranger)[0].score
    assert score < 0.9999
    accepted = Recognizer(model, gallery, threshold=score - 1e-4).recognize(stranger)[0]
    rejected = Recognizer(model, gallery, threshold=score + 1e-4).recognize(stranger)[0]
    assert accepted.accepted and accepted.label == accepted.matches[0].label and accepted.name is not None
    assert not rejected.accepted and rejected.label == UNKNOWN and rejected.name is None
    assert rejected.matches == accepted.matches and rejected.score == accepted.score
    recognizer = Recognizer(model, gallery, k=3, threshold=score - 1e-4)  # one call's k and threshold
    once = recognizer.recognize(stranger, k=1, threshold=score + 1e-4)[0]
    again = recognizer.recognize(stranger)[0]  # the recognizer's own again
    assert not once.accepted and len(once.matches) == 1 and again.accepted and again.matches == accepted.matches[:3]
    with pytest.raises(ValueError, match="k must be a positive integer"):
        recognizer.recognize(stranger, k=0)


def test_l2_gallery_accepts_small_distances(shop):
    model, _, paths = shop
    gallery = build_gallery(model, [(p, f"sku{i}") for i, p in enumerate(paths)], metric="l2", progress=False)
    (own,) = Recognizer(model, gallery).recognize(paths[1])
    assert own.label == "sku1" and own.score == pytest.approx(0, abs=1e-5)
    assert Recognizer(model, gallery, threshold=-1.0).recognize(paths[1])[0].label == UNKNOWN


def test_each_box_is_cropped_clipped_and_recognised(shop):
    model, gallery, _ = shop
    shelf = np.concatenate([picture(3), picture(1)], axis=1)  # 64 x 32: product 3 left, product 1 right
    recognizer = Recognizer(model, gallery)
    left, right, spilling = recognizer.recognize(shelf, [(0, 0, 32, 32), (32.0, 0.4, 64, 31.6), (-9, -9, 32, 99)])
    assert (left.label, right.label, spilling.label) == ("sku3", "sku1", "sku3")
    assert right.box == (32, 0, 64, 32) and spilling.box == (0, 0, 32, 32)
    assert left.score == pytest.approx(1, abs=1e-5) and right.score == pytest.approx(1, abs=1e-5)
    assert spilling == left


def test_invalid_boxes_are_all_reported(shop):
    model, gallery, paths = shop
    recognizer = Recognizer(model, gallery)
    with pytest.raises(ValueError) as caught:
        recognizer.recognize(paths[0], [(0, 0, 10, 10), (5, 5, 5, 9), (40, 40, 50, 50), (float("nan"), 0, 1, 1)])
    message = str(caught.value)
    assert "3 problem(s)" in message and "box 1 [5.0, 5.0, 5.0, 9.0]: needs finite x1 < x2" in message
    assert "box 2 [40.0, 40.0, 50.0, 50.0]: outside the 32x32 image" in message and "box 3" in message
    with pytest.raises(ValueError, match=r"shape \[B, 4\]"):
        recognizer.recognize(paths[0], [(0, 0, 10)])
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        recognizer.recognize(np.zeros((8, 8), dtype=np.uint8))


def test_recognizer_refuses_another_model(shop):
    _, gallery, _ = shop
    with pytest.raises(ValueError, match="built with another model"):
        Recognizer(tiny_embedder(seed=1), gallery)
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        Recognizer(shop[0], gallery, threshold=float("inf"))


def test_reranking_reorders_the_matches_as_the_gallery_search_does(shop):
    model, gallery, paths = shop
    features = model.embed([picture(1)]).numpy()
    for method in ("qe", "k-reciprocal"):
        (result,) = Recognizer(model, gallery, k=3, rerank=method).recognize(paths[1])
        expected = gallery.search(features, 3, rerank=method)
        assert [m.id for m in result.matches] == expected.ids[0].tolist() and result.matches[0].label == "sku1"
        assert [m.score for m in result.matches] == pytest.approx(expected.scores[0].tolist(), abs=1e-5)
    plain = gallery.search(features, 3)
    assert not np.allclose(expected.scores, plain.scores)  # k-reciprocal scores are not cosines
    with pytest.raises(ValueError, match="rerank must be None or one of \\['k-reciprocal', 'qe'\\]"):
        Recognizer(model, gallery, rerank="knn")


def test_read_inshop_boxes_of_a_synthetic_set(tmp_path):
    root = make_synthetic_inshop(tmp_path / "s", items=4, views=2, image_size=32, progress=False).root
    boxes = read_inshop_boxes(root)
    partition = (root / "Eval/list_eval_partition.txt").read_text().split("\n")[2:]
    assert sorted(boxes) == sorted(line.split()[0] for line in partition if line.strip())
    assert all(0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32 for x1, y1, x2, y2 in boxes.values())


def test_read_inshop_boxes_reports_every_problem(tmp_path):
    (tmp_path / "Anno").mkdir()
    header = "image_name clothes_type pose_type x_1 y_1 x_2 y_2"
    rows = ["img/a.jpg 1 1 001 002 030 031", "img/b.jpg 1 1 9 9 3 30", "img/a.jpg 1 1 0 0 5 5", "img/c.jpg 1 1 x 0 5 5"]
    (tmp_path / "Anno/list_bbox_inshop.txt").write_text("\n".join(["4", header, rows[0]]) + "\n")
    with pytest.raises(ValueError, match=":1: says 4 images but the file lists 1"):
        read_inshop_boxes(tmp_path)
    (tmp_path / "Anno/list_bbox_inshop.txt").write_text("\n".join(["1", header, rows[0]]) + "\n")
    assert read_inshop_boxes(tmp_path) == {"img/a.jpg": (1, 2, 30, 31)}
    (tmp_path / "Anno/list_bbox_inshop.txt").write_text("\n".join(["many", "name x", *rows]) + "\n")
    with pytest.raises(ValueError) as caught:
        read_inshop_boxes(tmp_path)
    message = str(caught.value)
    assert "5 problem(s)" in message and ":1: expected the number of images" in message
    assert ":2: expected the header" in message and ":4: empty box (9, 9, 3, 30)" in message
    assert ":5: duplicate image img/a.jpg (first listed on line 3)" in message and ":6: expected" in message
    with pytest.raises(FileNotFoundError, match="In-shop box file not found"):
        read_inshop_boxes(tmp_path / "nothing")


class FixedBoxes:
    """A detector that finds the same boxes in every photo (what a user's own detector object provides)."""

    def __init__(self, boxes):
        self.boxes = np.array(boxes, np.float32)

    def detect(self, images):
        from prodrec.models import Detections

        return [Detections(self.boxes, np.linspace(0.9, 0.5, len(self.boxes), dtype=np.float32)) for _ in images]


def shelf_of(paths, layout):
    """A 64 x 32 photo with product photos ``paths[i]`` pasted at ``layout[i]`` (x offsets)."""
    canvas = np.zeros((32, 96, 3), np.uint8)
    for path, x in zip(paths, layout):
        canvas[:, x:x + 32] = np.asarray(Image.open(path).convert("RGB"))
    return canvas


def test_a_detector_gives_one_region_per_product_plus_the_whole_photo(shop):
    model, gallery, paths = shop
    photo = shelf_of([paths[0], paths[2]], [0, 64])
    recognizer = Recognizer(model, gallery, threshold=0.9, detector=FixedBoxes([[0, 0, 32, 32], [64, 0, 96, 32]]),
                            crop_margin=0.0)
    regions = recognizer.recognize(photo)
    assert [region.box for region in regions] == [(0, 0, 32, 32), (64, 0, 96, 32), (0, 0, 96, 32)]
    assert [region.label for region in regions[:2]] == ["sku0", "sku2"]
    assert regions[0].score == pytest.approx(1, abs=1e-4)  # the crop is the gallery photo itself
    given = recognizer.recognize(photo, boxes=[[64, 0, 96, 32]])
    assert [region.box for region in given] == [(64, 0, 96, 32)]  # boxes given: no detection, no whole photo


def test_overlapping_regions_of_one_product_are_suppressed_to_the_best(shop):
    model, gallery, paths = shop
    photo = shelf_of([paths[1]], [0])
    boxes = [[0, 0, 32, 32], [1, 0, 32, 32], [60, 0, 90, 32]]  # the first two overlap and show sku1
    regions = Recognizer(model, gallery, threshold=-1.0, detector=FixedBoxes(boxes), crop_margin=0.0).recognize(photo)
    kept = [region.box for region in regions]
    assert (0, 0, 32, 32) in kept and (1, 0, 32, 32) not in kept and len(regions) == 3
    loose = Recognizer(model, gallery, threshold=-1.0, detector=FixedBoxes(boxes), crop_margin=0.0, duplicate_iou=1.0)
    assert len(loose.recognize(photo)) == 4


def test_detections_that_are_empty_or_outside_are_left_out(shop):
    model, gallery, paths = shop
    regions = Recognizer(model, gallery, detector=FixedBoxes([[5, 5, 5, 20], [200, 0, 300, 10], [0, 0, 16, 16]]),
                         crop_margin=0.1).recognize(shelf_of([paths[0]], [0]))
    assert [region.box for region in regions] == [(0, 0, 16, 16), (0, 0, 96, 32)]
    with pytest.raises(ValueError, match="detect"):
        Recognizer(model, gallery, detector=object())
