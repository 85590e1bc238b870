"""A detector exported to ONNX finds what PyTorch finds, and runs wherever a detector is taken."""
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from prodrec.models import (DetectorSettings, ExportedDetector, ProductDetector, export_detector,  # noqa: E402
                            load_detector)


@pytest.fixture(scope="module")
def detector():
    """An SSDlite trained for a few steps to box two blocks, so that its scores separate (an untrained one ties,
    and which of near-equal boxes survive is then a matter of rounding)."""
    torch.manual_seed(0)
    detector = ProductDetector(DetectorSettings("ssdlite_mobilenet_v3", image_size=128, score_threshold=0.2,
                                                max_detections=20)).train()
    image = torch.full((3, 96, 128), 0.8)
    image[:, 10:60, 10:50], image[:, 30:80, 70:120] = 0.1, 0.3
    target = {"boxes": torch.tensor([[10.0, 10, 50, 60], [70, 30, 120, 80]]), "labels": torch.ones(2, dtype=torch.int64)}
    optimizer = torch.optim.AdamW(detector.parameters(), lr=1e-3)
    for _ in range(40):
        loss = sum(detector([image, image], [target, target]).values())  # batch norm needs two
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return detector.eval()


def test_the_export_detects_as_pytorch_does_on_photos_of_any_size(detector, tmp_path):
    path = export_detector(detector, tmp_path / "det.onnx")
    meta = json.loads((tmp_path / "det.onnx.json").read_text())
    assert meta["settings"]["name"] == "ssdlite_mobilenet_v3" and meta["check"]["max_abs_diff_pixels"] <= 0.05
    exported = load_detector(path)
    assert isinstance(exported, ExportedDetector) and exported.settings == detector.settings
    photos = [np.full(shape, 204, np.uint8) for shape in ((96, 128, 3), (150, 200, 3))]
    for photo in photos:
        photo[10:60, 10:50], photo[30:80, 70:120] = 26, 77
    for ours, theirs in zip(exported.detect(photos), detector.detect(photos)):
        assert ours.boxes.shape == theirs.boxes.shape and len(ours.boxes) > 0
        nearest = np.abs(ours.boxes[:, None] - theirs.boxes[None]).max(axis=2).min(axis=1)
        assert nearest.max() <= 0.05  # each exported box is one of PyTorch's (near-equal scores may swap order)
        np.testing.assert_allclose(np.sort(ours.scores), np.sort(theirs.scores), atol=1e-3)


def test_a_changed_export_is_refused(detector, tmp_path):
    path = export_detector(detector, tmp_path / "det.onnx")
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="checksum differs"):
        ExportedDetector(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_detector(tmp_path / "missing.onnx")


def test_detect_export_command_then_search_with_it(tmp_path, run_cli, detector):
    detector.save(tmp_path / "det.pt")
    out = run_cli(["detect", "export", "--checkpoint", tmp_path / "det.pt", "--output", tmp_path / "det.onnx"])
    assert "use it as --detector" in out and (tmp_path / "det.onnx.json").is_file()
    assert isinstance(load_detector(tmp_path / "det.onnx"), ExportedDetector)
