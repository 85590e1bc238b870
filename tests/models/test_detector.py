"""Every registered detector meets one contract: it builds without downloads, trains a step on boxes, detects
in the photo's pixels within its settings, and round-trips through its file."""
import numpy as np
import pytest
import torch

from prodrec.models import DETECTORS, DetectorSettings, ProductDetector


def photo(seed=0, width=160, height=120):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_trains_detects_and_round_trips(name, tmp_path):
    torch.manual_seed(0)
    detector = ProductDetector(DetectorSettings(name, image_size=128, max_detections=50, score_threshold=0.0))
    images = [torch.rand(3, 96, 128), torch.rand(3, 90, 120)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 80.0], [70, 20, 120, 60]]), "labels": torch.ones(2, dtype=torch.int64)},
               {"boxes": torch.tensor([[5.0, 5.0, 50.0, 50.0]]), "labels": torch.ones(1, dtype=torch.int64)}]
    losses = detector.train()(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in detector.parameters())

    found = detector.eval().detect([photo(1), photo(2, 200, 100)])
    assert len(found) == 2
    for detections, (height, width) in zip(found, [(120, 160), (100, 200)]):
        assert detections.boxes.shape == (len(detections.scores), 4) and len(detections.scores) <= 50
        assert (detections.boxes[:, [0, 2]] <= width + 1e-3).all() and (detections.boxes[:, [1, 3]] <= height + 1e-3).all()
        assert (np.diff(detections.scores) <= 1e-6).all()  # best first
    again = ProductDetector.load(detector.save(tmp_path / "detector.pt")).eval()
    assert again.settings == detector.settings
    for first, second in zip(found, again.detect([photo(1), photo(2, 200, 100)])):
        np.testing.assert_allclose(first.scores, second.scores, atol=1e-5)


def test_pretrained_weights_load_from_a_detector_or_a_backbone(tmp_path):
    import torchvision

    torch.manual_seed(0)
    source = ProductDetector(DetectorSettings("fcos_resnet18", image_size=128))
    torch.save(source.to_payload(), tmp_path / "detector.pt")
    target = ProductDetector(DetectorSettings("fcos_resnet18", image_size=128))
    assert target.load_pretrained(tmp_path / "detector.pt") == {"loaded": len(source.state_dict()), "skipped": 0}
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    backbone = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(backbone, tmp_path / "resnet18.pth")
    counts = target.load_pretrained(tmp_path / "resnet18.pth")
    assert counts["loaded"] >= 100 and counts["skipped"] == 2  # fc.weight, fc.bias
    assert torch.equal(target.model.backbone.body.conv1.weight, backbone["conv1.weight"])
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no tensor of .* fits the fcos_resnet18 detector"):
        target.load_pretrained(tmp_path / "other.pt")


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown detector 'yolo'; choose one of"):
        DetectorSettings("yolo")
    with pytest.raises(ValueError, match="score_threshold must be in"):
        DetectorSettings(score_threshold=2.0)
    with pytest.raises(ValueError, match="not a prodrec detector file"):
        ProductDetector.from_payload({"format": "other"})
    with pytest.raises(ValueError, match="damaged prodrec detector file"):
        ProductDetector.from_payload({"format": "prodrec.detector", "format_version": 2})


def test_ssdlite_default_boxes_fit_shelf_products():
    """Products of a shelf photo (3-15 % of its side) overlap a default box by IoU 0.5 three times as often as
    with torchvision's COCO-sized boxes (from 20 % of the side)."""
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.image_list import ImageList
    from torchvision.ops import box_iou

    model = ProductDetector(DetectorSettings("ssdlite_mobilenet_v3", image_size=384)).eval().model
    tensors = ImageList(torch.zeros(1, 3, 384, 384), [(384, 384)])
    features = list(model.backbone(tensors.tensors).values())
    rng = np.random.default_rng(0)
    sides = rng.uniform(0.03, 0.15, (200, 2)) * 384 * (1, 1.6)  # upright packs, narrower than tall
    corners = rng.uniform(0, 384 - sides.max(), (200, 2))
    products = torch.as_tensor(np.hstack([corners, corners + sides]), dtype=torch.float32)

    def matched(generator):
        return (box_iou(products, generator(tensors, features)[0]).max(dim=1).values >= 0.5).float().mean().item()

    coco_sized = matched(DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95))
    assert matched(model.anchor_generator) >= max(0.6, 3 * coco_sized)


def test_ssdlite_files_from_before_shelf_sized_boxes_are_refused():
    payload = ProductDetector(DetectorSettings("ssdlite_mobilenet_v3", image_size=128)).to_payload()
    payload["format_version"] = 1
    with pytest.raises(ValueError, match="COCO-sized; .* train it again"):
        ProductDetector.from_payload(payload, source="old.pt")
    payload = ProductDetector(DetectorSettings("fcos_resnet18", image_size=128)).to_payload()
    payload["format_version"] = 1
    assert ProductDetector.from_payload(payload).settings.name == "fcos_resnet18"
