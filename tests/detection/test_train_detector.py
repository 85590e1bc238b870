"""A product detector trains with the embedder's training run: it overfits a few photos, writes the run
folder, resumes, and its metrics are COCO's."""
import json

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("torchmetrics")
pytest.importorskip("pycocotools")

from prodrec.data import BoxSet  # noqa: E402
from prodrec.detection import detection_data, detection_metrics, train_detector  # noqa: E402
from prodrec.config import DetectionConfig, load_config  # noqa: E402
from prodrec.models import Detections, ProductDetector  # noqa: E402

SETTINGS = {"Arch": {"name": "fcos_resnet18", "image_size": 128, "score_threshold": 0.05},
            "Optimizer": {"lr": {"learning_rate": 0.001, "warmup_epoch": 3}},
            "DataLoader": {"batch_size": 4, "num_workers": 0, "scale": 0.0, "color_jitter": 0.0, "horizontal_flip": 0.0}}


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    """Four photos of two plain blocks each on a grey ground."""
    folder, rng = tmp_path_factory.mktemp("blocks"), np.random.default_rng(0)
    paths, boxes = [], []
    for number in range(4):
        image, rows = np.full((96, 128, 3), 200, np.uint8), []
        for _ in range(2):
            x, y, w, h = (int(v) for v in (rng.integers(0, 60), rng.integers(0, 40), rng.integers(30, 60), rng.integers(30, 50)))
            image[y:y + h, x:x + w] = rng.integers(0, 120, 3)
            rows.append([x, y, min(128, x + w), min(96, y + h)])
        cv2.imwrite(str(folder / f"{number}.png"), image)
        paths.append(str(folder / f"{number}.png"))
        boxes.append(np.array(rows, np.float32))
    return BoxSet(tuple(paths), ((128, 96),) * 4, tuple(boxes), ((None, None),) * 4)


def config(output, epochs, warmup=3, **global_settings):
    return load_config({**SETTINGS, "Optimizer": {"lr": {"learning_rate": 0.001, "warmup_epoch": warmup}},
                        "Global": {"epochs": epochs, "output_dir": str(output), "eval_interval": epochs,
                                   "print_batch_step": 5, **global_settings}}, schema=DetectionConfig)


def test_a_detector_overfits_a_few_photos_and_writes_its_run(blocks, tmp_path):
    torch.manual_seed(0)
    result = train_detector(config(tmp_path / "run", 40), data=(blocks, blocks), progress=False)
    assert result.metrics["map_50"] > 0.8 and result.metrics["map"] > 0.3, result.metrics
    for name in ("config.yaml", "log.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tmp_path / "run" / name).is_file(), name
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_train_photos"] == 4 and summary["num_train_boxes"] == 8 and summary["epochs"] == 40
    detector = ProductDetector.load(tmp_path / "run" / "checkpoints" / "last.pt").eval()
    found = detector.detect([cv2.cvtColor(cv2.imread(blocks.paths[0]), cv2.COLOR_BGR2RGB)])[0]
    assert detection_metrics([found], [blocks.boxes[0]])["map_50"] > 0.8


def test_a_detector_run_resumes_where_it_stopped(blocks, tmp_path):
    train_detector(config(tmp_path / "run", 1, warmup=0), data=(blocks, blocks), progress=False)
    with pytest.raises(ValueError, match="holds another training run"):
        train_detector(config(tmp_path / "run", 1, warmup=0), data=(blocks, blocks), progress=False)
    result = train_detector(config(tmp_path / "run", 2, warmup=0), data=(blocks, blocks), resume=True, progress=False)
    events = [json.loads(line)["event"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "resume" in events and result.summary["epochs"] == 2


def test_coco_metrics_on_hand_worked_cases():
    truth = [np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32)]
    perfect = Detections(truth[0].copy(), np.array([0.9, 0.8], np.float32))
    assert detection_metrics([perfect], truth)["map"] == pytest.approx(1.0)
    half = Detections(truth[0][:1].copy(), np.array([0.9], np.float32))
    metrics = detection_metrics([half], truth)
    assert metrics["map_50"] == pytest.approx(0.5, abs=0.01) and metrics["mar_100"] == pytest.approx(0.5)
    shifted = Detections(truth[0] + np.array([5, 0, 5, 0], np.float32), np.array([0.9, 0.8], np.float32))
    metrics = detection_metrics([shifted], truth)
    # IoU 0.33 (a false positive, ranked first) and 0.6: precision 1/2 up to recall 1/2 on COCO's 101 recall points
    assert metrics["map_75"] == 0 and metrics["map_50"] == pytest.approx(0.5 * 51 / 101)


def test_without_data_the_run_makes_synthetic_shelves_once(tmp_path):
    settings = config(tmp_path / "run", 1, warmup=0, seed=2)
    settings.DataLoader.synthetic_scenes = 5
    train, val = detection_data(settings, tmp_path / "run", progress=False)
    assert len(train) + len(val) == 5 and len(val) == 1
    assert any(label.startswith("object_") for row in train.products for label in row)  # random objects among them
    stamp = (tmp_path / "run" / "synthetic-shelves" / "annotations.json").stat().st_mtime_ns
    detection_data(settings, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "synthetic-shelves" / "annotations.json").stat().st_mtime_ns == stamp


def test_detection_config_names_bad_settings():
    with pytest.raises(ValueError, match="coco or sku110k, not both"):
        load_config({"DataLoader": {"coco": "a.json", "sku110k": "b.csv", "images": "x"}}, schema=DetectionConfig)
    with pytest.raises(ValueError, match="DataLoader.images"):
        load_config({"DataLoader": {"coco": "a.json"}}, schema=DetectionConfig)
    with pytest.raises(ValueError, match="synthetic_random_objects must be 0 or more"):
        load_config({"DataLoader": {"synthetic_random_objects": -1}}, schema=DetectionConfig)
def test_a_bad_detector_name_is_refused_before_any_scene_is_made(tmp_path):
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        train_detector({"Arch": {"name": "yolo"}, "Global": {"output_dir": str(tmp_path / "run")}}, progress=False)
    assert not (tmp_path / "run").exists()
