import json

import numpy as np
import pytest
from PIL import Image

from prodrec.data import BoxSet, read_coco, read_sku110k, write_coco


@pytest.fixture
def images(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (100, 80)).save(tmp_path / name)
    return tmp_path


def coco(images, boxes, products=None):
    annotations = [{"id": 10 + i, "image_id": 1 + i % 2, "category_id": 1, "bbox": box, "iscrowd": 0}
                   for i, box in enumerate(boxes)]
    for annotation, product in zip(annotations, products or []):
        annotation["product"] = product
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                       {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80}],
            "annotations": annotations, "categories": [{"id": 1, "name": "product"}]}
    (images / "ann.json").write_text(json.dumps(data))
    return images / "ann.json"


def test_coco_boxes_become_corners_with_their_products(images):
    found = read_coco(coco(images, [[10, 20, 30, 40], [0, 0, 100, 80], [99.5, 5, 1, 5]], ["cola", None, "tea"]), images)
    assert found.paths == (str(images / "a.jpg"), str(images / "b.jpg")) and found.sizes == ((100, 80), (100, 80))
    np.testing.assert_array_equal(found.boxes[0], [[10, 20, 40, 60], [99.5, 5, 100, 10]])  # clipped at the border
    np.testing.assert_array_equal(found.boxes[1], [[0, 0, 100, 80]])
    assert found.products == (("cola", "tea"), (None,)) and found.num_boxes == 3 and found.skipped_boxes == 0


BAD = [([10, 10, 0, 5], "zero area"), ([10, 10, -5, 5], "inverted"), ([90, 10, 30, 5], "outside the image"),
       ([-20, 10, 5, 5], "outside the image"), ([float("nan"), 1, 2, 2], "not finite")]


@pytest.mark.parametrize("box, problem", BAD)
def test_bad_coco_boxes_are_named_or_skipped_and_counted(images, box, problem):
    path = coco(images, [[1, 1, 5, 5], box])
    with pytest.raises(ValueError, match=rf"annotation 11: box .* in b\.jpg \(100x80\): {problem}"):
        read_coco(path, images)
    found = read_coco(path, images, on_bad_box="skip")
    assert found.skipped_boxes == 1 and found.num_boxes == 1 and problem in found.problems[0]


def test_every_bad_box_is_listed_at_once(images):
    with pytest.raises(ValueError, match=r"(?s)5 problem\(s\).*annotation 10.*annotation 14"):
        read_coco(coco(images, [box for box, _ in BAD]), images)


def test_coco_files_that_are_not_coco_are_refused(images):
    (images / "x.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="needs 'images' and 'annotations'"):
        read_coco(images / "x.json", images)
    (images / "y.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
                                               "annotations": [{"id": 3, "image_id": 9, "bbox": [1, 1, 2, 2]}]}))
    with pytest.raises(ValueError, match="annotation 3: needs an image_id listed"):
        read_coco(images / "y.json", images)
    (images / "z.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.jpg", "width": 9, "height": 9}],
                                               "annotations": []}))
    with pytest.raises(FileNotFoundError, match="gone.jpg"):
        read_coco(images / "z.json", images)


def test_sku110k_csv_rows_and_bad_lines(images):
    (images / "ann.csv").write_text("a.jpg,1,2,30,40,object,100,80\na.jpg,5,5,9,9,object,100,80\n"
                                    "b.jpg,50,10,40,20,object,100,80\nb.jpg,1,2,3\n")
    with pytest.raises(ValueError, match=r"ann\.csv:4: expected image_name,x1"):
        read_sku110k(images / "ann.csv", images)
    (images / "ann.csv").write_text("a.jpg,1,2,30,40,object,100,80\nb.jpg,50,10,40,20,object,100,80\n")
    with pytest.raises(ValueError, match=r"ann\.csv:2: box .* inverted"):
        read_sku110k(images / "ann.csv", images)
    found = read_sku110k(images / "ann.csv", images, on_bad_box="skip")
    assert found.skipped_boxes == 1 and found.num_boxes == 1 and len(found) == 2 and found.products == ((None,), ())


def test_write_then_read_coco_round_trips(images):
    boxes = BoxSet(paths=(str(images / "a.jpg"), str(images / "b.jpg")), sizes=((100, 80), (100, 80)),
                   boxes=(np.array([[1, 2, 30, 40.5]], np.float32), np.zeros((0, 4), np.float32)),
                   products=(("cola",), ()))
    written = write_coco(images / "out" / "ann.json", boxes)
    again = read_coco(written, images / "out")
    assert again.paths == boxes.paths and again.products == boxes.products
    np.testing.assert_array_equal(again.boxes[0], boxes.boxes[0])
    assert json.loads(written.read_text())["categories"] == [{"id": 1, "name": "product"}]
