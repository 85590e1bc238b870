import json

import cv2
import numpy as np
import pytest

from prodrec.data import make_shelves, make_synthetic_inshop, read_coco, read_inshop, read_product_pictures
from prodrec.data.shelves import render_scene, synthetic_products


def test_shelves_are_dense_trays_sparse_and_boxes_show_their_products():
    products = synthetic_products(30, seed=0)
    counts = {"shelf": [], "tray": []}
    for number in range(6):
        for kind in counts:
            image, boxes = render_scene(products, np.random.default_rng(number), kind=kind)
            assert image.shape == (480, 640, 3) and image.dtype == np.uint8
            counts[kind].append(len(boxes))
            for (x1, y1, x2, y2), label in boxes:
                assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480 and label.startswith("id_")
    assert 40 <= np.median(counts["shelf"]) <= 150 and max(counts["tray"]) <= 15 and min(counts["tray"]) >= 1


def test_a_box_covers_what_was_pasted_there():
    """One product on a plain tray, no camera change visible in the box: its box is its silhouette's."""
    label, picture = synthetic_products(1, seed=3)[0]
    image, boxes = render_scene([(label, picture)], np.random.default_rng(5), kind="tray")
    assert boxes and all(name == label for _, name in boxes)
    (x1, y1, x2, y2), _ = max(boxes, key=lambda box: (box[0][2] - box[0][0]) * (box[0][3] - box[0][1]))
    inside = image[y1:y2, x1:x2].astype(np.float32)
    assert inside.std() > 10  # the product's pattern, not the plain surface


def test_make_shelves_writes_coco_with_product_labels_that_a_synthetic_gallery_knows(tmp_path):
    info = make_shelves(tmp_path / "shelves", scenes=4, synthetic_items=12, seed=1, width=320, height=240,
                        progress=False)
    found = read_coco(info.annotations, tmp_path / "shelves")
    assert len(found) == 4 and found.num_boxes == info.boxes > 4 and all(size == (320, 240) for size in found.sizes)
    data = json.loads(info.annotations.read_text())
    assert data["categories"] == [{"id": 1, "name": "product"}] and all("product" in a for a in data["annotations"])
    catalogue = read_inshop(make_synthetic_inshop(tmp_path / "set", items=12, views=2, image_size=32, seed=1,
                                                  progress=False).root)
    known = set(catalogue.train.classes) | set(catalogue.query.classes)
    assert {label for row in found.products for label in row} <= known
    again = make_shelves(tmp_path / "again", scenes=4, synthetic_items=12, seed=1, width=320, height=240,
                         progress=False)
    assert json.loads(again.annotations.read_text())["annotations"] == data["annotations"]  # seeded


def test_product_folders_give_their_own_labels(tmp_path):
    root = make_synthetic_inshop(tmp_path / "inshop", items=6, views=2, image_size=48, progress=False).root
    pictures = read_product_pictures(root)
    assert {label for label, _ in pictures} == {f"id_{i:08d}" for i in range(1, 7)}
    assert all(picture.shape[2] == 4 and picture.shape[0] < 48 for _, picture in pictures)  # cropped to boxes
    cutout = np.zeros((40, 60, 4), np.uint8)
    cutout[10:30, 20:50] = (0, 0, 255, 255)  # a red object on transparency
    (tmp_path / "folder" / "apple").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "folder" / "apple" / "a.png"), cutout)
    (label, picture), = read_product_pictures(tmp_path / "folder")
    assert label == "apple" and picture.shape == (20, 30, 4)  # the transparent margin is cut
    info = make_shelves(tmp_path / "apples", scenes=2, products=tmp_path / "folder", width=256, height=192,
                        progress=False)
    assert info.products == 1 and info.boxes > 2


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scenes"):
        make_shelves(tmp_path, scenes=0)
    with pytest.raises(ValueError, match="at least 64 x 64"):
        make_shelves(tmp_path, scenes=1, width=32)
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        make_shelves(tmp_path / "out", scenes=1, products=tmp_path / "empty")
