"""Product detectors: one-class ("product") detectors from torchvision's detection models, built by name.

Every detector is a torchvision detection model with two classes (background, product), no downloaded
weights by default (``weights=None, weights_backbone=None``) and room for dense shelves (300 detections an
image, anchors down to a few pixels). :class:`ProductDetector` wraps one: ``detector(images, targets)`` is
torchvision's training call (a dict of losses), :meth:`ProductDetector.detect` finds the products in photos
and gives their boxes in the photos' pixels. A detector file holds architecture, settings and weights
(:meth:`ProductDetector.save` / :meth:`ProductDetector.load`, also from a training checkpoint).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from prodrec import __version__
from prodrec.data import as_rgb_array

from prodrec.utils import ProdrecError, Registry, check_positive_int, read_torch_file

__all__ = ["DETECTORS", "DETECTOR_FORMAT", "SSDLITE_BOX_SCALES", "DetectorSettings", "Detections", "ProductDetector"]

DETECTOR_FORMAT = "prodrec.detector"
DETECTORS = Registry("detector")
SSDLITE_BOX_SCALES = (0.1, 0.2, 0.35, 0.5, 0.68, 0.85, 1.0)
"""SSDlite's default box sizes per feature map (its 6 maps, strides 16 to 512), as fractions of the input side;
the last only closes the range."""


@dataclass(frozen=True)
class DetectorSettings:
    """A detector's architecture and inference settings (saved with it).

    Attributes:
        name: A :data:`DETECTORS` name, e.g. ``ssdlite_mobilenet_v3`` (the default: the fastest and, within
            a CPU budget, the most accurate measured; ``benchmarks/detector_choice.py``) or ``fcos_resnet18``.
        image_size: The longer side photos are resized to (torchvision's ``max_size``; ``min_size`` keeps 4:3).
        max_detections: Boxes kept per photo (dense shelves hold 100-200 products).
        score_threshold: Boxes scoring below it are dropped.
        nms_iou: Non-maximum suppression's IoU.
    """

    name: str = "ssdlite_mobilenet_v3"
    image_size: int = 384
    max_detections: int = 300
    score_threshold: float = 0.2
    nms_iou: float = 0.5

    def __post_init__(self) -> None:
        if self.name not in DETECTORS:
            raise ProdrecError(f"unknown detector {self.name!r}; choose one of {sorted(DETECTORS)}")
        check_positive_int(self.image_size, "image_size")
        check_positive_int(self.max_detections, "max_detections")
        for name in ("score_threshold", "nms_iou"):
            if not 0 <= getattr(self, name) <= 1:
                raise ProdrecError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")


def _common(settings: DetectorSettings) -> Dict[str, Any]:
    return {"min_size": settings.image_size * 3 // 4, "max_size": settings.image_size,
            "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def _resnet_fpn(name: str):
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    # Trainable batch norm: torchvision freezes it for ImageNet-initialised backbones, but these start from scratch.
    return resnet_fpn_backbone(backbone_name=name, weights=None, trainable_layers=5, returned_layers=[2, 3, 4],
                               extra_blocks=LastLevelP6P7(256, 256), norm_layer=nn.BatchNorm2d)


def _small_anchors():
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    return AnchorGenerator(tuple((size, int(size * 1.26), int(size * 1.59)) for size in (16, 32, 64, 128, 256)),
                           ((0.5, 1.0, 2.0),) * 5)


@DETECTORS.register("fcos_resnet18")
def _fcos_resnet18(settings: DetectorSettings) -> nn.Module:
    """FCOS (anchor-free, one box per location) on a ResNet-18 FPN, P3-P7."""
    from torchvision.models.detection import FCOS

    return FCOS(_resnet_fpn("resnet18"), num_classes=2, detections_per_img=settings.max_detections,
                score_thresh=settings.score_threshold, nms_thresh=settings.nms_iou, topk_candidates=1000,
                **_common(settings))


@DETECTORS.register("retinanet_resnet18")
def _retinanet_resnet18(settings: DetectorSettings) -> nn.Module:
    """RetinaNet on a ResNet-18 FPN with anchors from 16 px."""
    from torchvision.models.detection import RetinaNet

    return RetinaNet(_resnet_fpn("resnet18"), num_classes=2, anchor_generator=_small_anchors(),
                     detections_per_img=settings.max_detections, score_thresh=settings.score_threshold,
                     nms_thresh=settings.nms_iou, topk_candidates=1000, **_common(settings))


@DETECTORS.register("ssdlite_mobilenet_v3")
def _ssdlite(settings: DetectorSettings) -> nn.Module:
    """SSDlite on MobileNetV3-Large (torchvision's mobile detector; fixed square input)."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=2,
                                          detections_per_img=settings.max_detections,
                                          score_thresh=settings.score_threshold, nms_thresh=settings.nms_iou,
                                          topk_candidates=1000)
    model.transform.min_size, model.transform.max_size = (settings.image_size,), settings.image_size
    model.transform.fixed_size = (settings.image_size, settings.image_size)
    # Shelf-sized default boxes: torchvision's (20-95 % of the side) suit COCO's objects, while products on a
    # shelf photo are 3-15 % of it. Measured in docs/decisions.md: smallest box 10 % of the side is best.
    model.anchor_generator = DefaultBoxGenerator([[2, 3]] * 6, scales=list(SSDLITE_BOX_SCALES))
    return model


@DETECTORS.register("fasterrcnn_mobilenet_v3")
def _fasterrcnn(settings: DetectorSettings) -> nn.Module:
    """Faster R-CNN on a MobileNetV3-Large FPN (two stages)."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    return fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=2, box_detections_per_img=settings.max_detections,
        box_score_thresh=settings.score_threshold, box_nms_thresh=settings.nms_iou, rpn_post_nms_top_n_test=1000,
        **{key: value for key, value in _common(settings).items()})


@dataclass(frozen=True)
class Detections:
    """Products found in one photo: ``boxes`` float32 ``[n, 4]`` (x1, y1, x2, y2 pixels), ``scores`` ``[n]``,
    best first."""

    boxes: np.ndarray
    scores: np.ndarray


class ProductDetector(nn.Module):
    """A one-class product detector.

    Example:
        >>> detector = ProductDetector(DetectorSettings("fcos_resnet18", image_size=320))
        >>> found = detector.eval().detect([np.zeros((240, 320, 3), np.uint8)])
        >>> found[0].boxes.shape[1]
        4
    """

    def __init__(self, settings: Optional[DetectorSettings] = None) -> None:
        super().__init__()
        self.settings = settings or DetectorSettings()
        self.model = DETECTORS.get(self.settings.name)(self.settings)

    def forward(self, images: List[torch.Tensor], targets: Optional[List[Dict[str, torch.Tensor]]] = None):
        """torchvision's call: float RGB images in [0, 1] (``[3, H, W]`` each); in training mode with
        ``targets`` (``boxes`` ``[n, 4]``, ``labels`` ``[n]`` of 1) a dict of losses, else detections."""
        return self.model(images, targets)

    @torch.no_grad()
    def detect(self, images: Sequence[Any], *, batch_size: int = 8) -> List[Detections]:
        """The products in each photo (a path, PIL image or HxWx3 uint8 RGB array), in its pixels."""
        device = next(self.parameters()).device
        found: List[Detections] = []
        for start in range(0, len(images), check_positive_int(batch_size, "batch_size")):
            tensors = [torch.from_numpy(as_rgb_array(image)).permute(2, 0, 1).to(device, torch.float32) / 255
                       for image in images[start:start + batch_size]]
            for output in self.model(tensors):
                found.append(Detections(output["boxes"].float().cpu().numpy(), output["scores"].float().cpu().numpy()))
        return found

    def load_pretrained(self, path: Union[str, os.PathLike]) -> Dict[str, int]:
        """Start from local weights: a prodrec detector file or checkpoint, a torchvision detection model's
        ``state_dict`` (tensors whose shape differs, like another class count's head, are skipped), or a
        backbone's (an ImageNet ResNet's ``conv1.weight``, ``layer1...`` keys, loaded into the FPN's body).
        Returns how many tensors were loaded and skipped; none loaded is an error."""
        payload = read_torch_file(path)
        if isinstance(payload, dict) and "detector" in payload:
            payload = payload["detector"]
        state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ProdrecError(f"{path} holds no state_dict of tensors; give a detector file, a torchvision detection "
                               "checkpoint or a backbone's state_dict")
        own = self.state_dict()
        prefixes = ("", "model.", "model.backbone.body.")
        prefix = max(prefixes, key=lambda p: sum(p + key in own for key in state))
        matched = {prefix + key: value for key, value in state.items()
                   if prefix + key in own and own[prefix + key].shape == value.shape}
        if not matched:
            raise ProdrecError(f"no tensor of {path} fits the {self.settings.name} detector (its keys look like "
                               f"{list(state)[:3]}); give weights of the same architecture or its backbone")
        self.load_state_dict(matched, strict=False)
        return {"loaded": len(matched), "skipped": len(state) - len(matched)}

    def to_payload(self) -> Dict[str, Any]:
        return {"format": DETECTOR_FORMAT, "format_version": 2, "prodrec_version": __version__,
                "settings": asdict(self.settings),
                "state_dict": {key: value.detach().cpu() for key, value in self.state_dict().items()}}

    @classmethod
    def from_payload(cls, payload: Dict[str, Any], *, source: str = "payload") -> "ProductDetector":
        if not isinstance(payload, dict) or payload.get("format") != DETECTOR_FORMAT:
            raise ProdrecError(f"{source} is not a prodrec detector file (no '{DETECTOR_FORMAT}' format marker); "
                               "train one with prodrec detect train")
        if not isinstance(payload.get("settings"), dict) or "state_dict" not in payload:
            raise ProdrecError(f"{source} is a damaged prodrec detector file (no settings or weights); save or train it "
                               "again")
        version = payload.get("format_version", 0)
        if version > 2:
            raise ProdrecError(f"{source} was written by a newer prodrec ({payload.get('prodrec_version')}); upgrade")
        if version < 2 and payload["settings"].get("name") == "ssdlite_mobilenet_v3":
            raise ProdrecError(f"{source} is an SSDlite detector from a development build of prodrec 0.2, whose default "
                               "boxes were COCO-sized; its weights do not fit today's shelf-sized boxes: train it again")
        detector = cls(DetectorSettings(**payload["settings"]))
        detector.load_state_dict(payload["state_dict"], strict=True)
        return detector

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write settings and weights to one file (load with :meth:`load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.to_payload(), path)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, map_location: Union[str, torch.device] = "cpu") -> "ProductDetector":
        """Load a file written by :meth:`save` or a ``prodrec detect train`` checkpoint (``best.pt``/``last.pt``)."""
        payload = read_torch_file(path, map_location=map_location)
        if isinstance(payload, dict) and "detector" in payload:
            payload = payload["detector"]
        return cls.from_payload(payload, source=str(path))
