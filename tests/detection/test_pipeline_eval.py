"""detect -> recognise scored end to end, on hand-built photos whose every crop is a gallery photo."""
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("faiss")

from prodrec.data import BoxSet  # noqa: E402
from prodrec.detection import evaluate_pipeline, match_pairs  # noqa: E402
from prodrec.gallery import Recognizer, build_gallery  # noqa: E402
from prodrec.models import Detections, Embedder  # noqa: E402


def test_pairs_are_right_only_on_their_own_product_once():
    truth = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], np.float32)
    products = ["a", "b", None]
    boxes = np.array([[0, 0, 10, 10], [1, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [70, 0, 80, 10]], np.float32)
    # a right; a again (already matched: wrong); c on b's box (wrong); x on the unlabelled box (left out); y in the
    # open (wrong)
    assert match_pairs(boxes, ["a", "a", "c", "x", "y"], [0.9, 0.8, 0.7, 0.6, 0.5], truth, products) == (1, 4, 2)
    assert match_pairs(np.zeros((0, 4)), [], [], truth, products) == (0, 0, 2)


class FixedBoxes:
    def __init__(self, boxes):
        self.boxes = np.array(boxes, np.float32)

    def detect(self, images):
        return [Detections(self.boxes, np.full(len(self.boxes), 0.9, np.float32)) for _ in images]


def test_the_pipeline_separates_detection_errors_from_recognition_errors(tmp_path):
    rng = np.random.default_rng(0)
    pictures = [np.kron(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8)) for _ in range(3)]
    paths = []
    for number, picture in enumerate(pictures):
        paths.append(str(tmp_path / f"p{number}.png"))
        Image.fromarray(picture).save(paths[-1])
    torch.manual_seed(0)
    model = Embedder("resnet18d", embedding_size=16, image_size=32)
    gallery = build_gallery(model, [(path, f"sku{i}", None) for i, path in enumerate(paths)], progress=False)
    photo = np.zeros((32, 128, 3), np.uint8)
    photo[:, 0:32], photo[:, 64:96] = pictures[0], pictures[1]
    Image.fromarray(photo).save(tmp_path / "shelf.png")
    truth = BoxSet((str(tmp_path / "shelf.png"),), ((128, 32),), (np.array([[0, 0, 32, 32], [64, 0, 96, 32]], np.float32),),
                   (("sku0", "sku1"),))
    # The detector finds sku0 and a patch of nothing, and misses sku1.
    detector = FixedBoxes([[0, 0, 32, 32], [100, 0, 128, 32]])
    recognizer = Recognizer(model, gallery, threshold=0.999, detector=detector, crop_margin=0.0)
    result = evaluate_pipeline(recognizer, truth, thresholds=[-1.0], progress=False)
    assert result["threshold"] == 0.999 and result["iou"] == 0.5 and result["photos"] == 1
    assert result["ground_truth_boxes"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "right": 2, "predicted": 2,
                                            "annotated": 2}
    detected = result["detected"]
    assert (detected["right"], detected["predicted"], detected["annotated"]) == (1, 1, 2)  # the patch is rejected
    assert detected["recall"] == 0.5 and detected["f1"] == pytest.approx(2 / 3)
    loose = result["by_threshold"][0]
    assert loose["threshold"] == -1.0 and loose["detected"]["predicted"] == 3  # patch and whole photo accepted too
    with pytest.raises(ValueError, match="needs a Recognizer with a detector"):
        evaluate_pipeline(Recognizer(model, gallery), truth)
