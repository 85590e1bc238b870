"""Recognise products in a photo: embed each box (or the whole image), search the gallery, accept or not.

As in PP-ShiTu, the top-1 gallery match names the product when its score passes a threshold (the gallery's
calibrated one when it has one, else PP-ShiTu's 0.5 cosine similarity) and the region is ``unknown``
otherwise. Regions are the boxes given, else the products a detector finds plus the whole photo (PP-ShiTu's
pipeline: each crop with a margin, all embedded in one batch, then boxes that name the same product and
overlap are suppressed but the best), else the whole photo.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from prodrec.data import as_rgb_array, raise_problems, read_inshop_boxes
from prodrec.gallery.build import AnyEmbedder, check_embedder
from prodrec.gallery.index import GalleryIndex
from prodrec.retrieval import RERANK_METHODS
from prodrec.utils import ProdrecError

__all__ = ["UNKNOWN", "DEFAULT_THRESHOLD", "Match", "Recognition", "Recognizer", "suppress_duplicates",
           "read_inshop_boxes"]

UNKNOWN = "unknown"
DEFAULT_THRESHOLD = 0.5  # PP-ShiTu's, for a gallery without a calibrated one
Box = Tuple[int, int, int, int]


class Match(NamedTuple):
    """One gallery image among a region's top k."""

    label: str
    name: Optional[str]
    score: float
    id: int


@dataclass(frozen=True)
class Recognition:
    """What one region of a photo shows.

    Attributes:
        box: ``(x1, y1, x2, y2)`` pixels of the region, clipped to the image (x2, y2 exclusive).
        label: The top-1 product label when its score passes the threshold, else ``"unknown"``.
        accepted: Whether the top-1 score passed the threshold.
        name: The accepted product's name (None when not accepted or unnamed).
        score: The top-1 score (see :class:`~prodrec.gallery.SearchResult`).
        matches: The top-k gallery images, best first (fewer when the gallery is smaller).
    """

    box: Box
    label: str
    accepted: bool
    name: Optional[str]
    score: float
    matches: List[Match]

    def to_json(self) -> Dict[str, Any]:
        """The region as JSON values: what ``prodrec search --json`` prints per region and the service's
        ``POST /recognize`` returns; an infinite score (an empty gallery) becomes null."""
        return {"box": list(self.box), "label": self.label, "accepted": self.accepted, "name": self.name,
                "score": _finite(self.score),
                "matches": [{**match._asdict(), "score": _finite(match.score)} for match in self.matches]}


def _finite(score: float) -> Optional[float]:
    return score if math.isfinite(score) else None


class Recognizer:
    """Product recognition with a gallery: ``Recognizer(embedder, gallery).recognize("shelf.jpg", boxes)``.

    Args:
        embedder: The model the gallery was built with (checked against the gallery's record), or its export
            (:class:`~prodrec.models.ExportedEmbedder`, e.g. ONNX on onnxruntime).
        index: The gallery (a :class:`~prodrec.gallery.GalleryIndex` or a :class:`~prodrec.gallery.MilvusGallery`).
        k: Gallery matches reported per region.
        threshold: Accept the top-1 label when its score is at least this (``metric="ip"``: a cosine
            similarity) or, for an ``l2`` gallery, at most this (a squared distance). None: the gallery's
            calibrated threshold (``prodrec index calibrate``) when it has one and ``rerank`` is None, else
            ``DEFAULT_THRESHOLD`` (0.5).
        batch_size: Regions embedded per forward pass.
        detector: Finds the products of a photo given without boxes (``detect([image]) -> [Detections]``, e.g.
            :class:`~prodrec.models.ProductDetector`); None: the whole photo is one region.
        crop_margin: A detected box grows by this share of its width and height on each side before it is cropped.
        duplicate_iou: Of accepted regions with the same label that overlap by more than this IoU, only the
            best-scoring one is kept (detected regions only).
        rerank: ``None``, ``"qe"`` or ``"k-reciprocal"``: re-rank the gallery matches
            (:meth:`GalleryIndex.search <prodrec.gallery.GalleryIndex.search>`). The threshold then applies to
            the re-ranked score (k-reciprocal: 1 - the re-ranked distance), so tune it for that score.
    """

    def __init__(self, embedder: AnyEmbedder, index: GalleryIndex, *, k: int = 5, threshold: Optional[float] = None,
                 batch_size: int = 64, rerank: Optional[str] = None, detector: Any = None, crop_margin: float = 0.05,
                 duplicate_iou: float = 0.5) -> None:
        if rerank is not None and rerank not in RERANK_METHODS:
            raise ProdrecError(f"rerank must be None or one of {sorted(RERANK_METHODS)}, got {rerank!r}")
        check_embedder(index, embedder)
        self.embedder, self.index, self.batch_size = embedder, index, batch_size
        if threshold is None:
            threshold = index.threshold if index.threshold is not None and rerank is None else DEFAULT_THRESHOLD
        self.k, self.threshold = _check_k(k), _check_threshold(threshold)
        if detector is not None and not callable(getattr(detector, "detect", None)):
            raise ProdrecError(f"detector must have a detect(images) method (a ProductDetector), got {type(detector).__name__}")
        if not 0 <= crop_margin < 1 or not 0 < duplicate_iou <= 1:
            raise ProdrecError(f"crop_margin must be in [0, 1) and duplicate_iou in (0, 1]; got {crop_margin!r}, "
                               f"{duplicate_iou!r}")
        self.rerank, self.detector, self.crop_margin, self.duplicate_iou = rerank, detector, crop_margin, duplicate_iou

    def recognize(self, image: Any, boxes: Optional[Sequence[Sequence[float]]] = None, *, k: Optional[int] = None,
                  threshold: Optional[float] = None, filter: Optional[str] = None) -> List[Recognition]:
        """One :class:`Recognition` per box; without boxes, one per detected product and one for the whole image
        (with a detector) or one for the whole image.

        Args:
            image: An image path, a PIL image or an ``HxWx3`` uint8 RGB array.
            boxes: ``(x1, y1, x2, y2)`` pixel boxes (x2, y2 exclusive); clipped to the image.
            k, threshold: This call's instead of the recognizer's.
            filter: Match only gallery images this expression accepts, e.g. ``'label in ["a", "b"]'``
                (:mod:`prodrec.gallery.filters`).

        Raises:
            ValueError: A box that is malformed, inverted, or outside the image once clipped (all listed).
        """
        k = self.k if k is None else _check_k(k)
        threshold = self.threshold if threshold is None else _check_threshold(threshold)
        pixels = as_rgb_array(image)
        height, width = pixels.shape[:2]
        detected = (boxes is None or not len(boxes)) and self.detector is not None
        if boxes is not None and len(boxes):
            regions = crop_boxes = _check_boxes(boxes, width, height)
        elif detected:
            found = np.clip(np.asarray(self.detector.detect([pixels])[0].boxes, np.float64).reshape(-1, 4), 0,
                            [width, height, width, height])
            found = found[(found[:, 2] - found[:, 0] >= 1) & (found[:, 3] - found[:, 1] >= 1)]
            regions = [*_check_boxes(found, width, height), (0, 0, width, height)] if len(found) else [(0, 0, width, height)]
            grow = np.array([-1, -1, 1, 1]) * self.crop_margin * np.tile(np.diff(found.reshape(-1, 2, 2), axis=1)[:, 0], 2)
            crop_boxes = [*_check_boxes(found + grow, width, height), (0, 0, width, height)] if len(found) else regions
        else:
            regions = crop_boxes = [(0, 0, width, height)]
        crops = [np.ascontiguousarray(pixels[y1:y2, x1:x2]) for x1, y1, x2, y2 in crop_boxes]
        features = self.embedder.embed(crops, batch_size=self.batch_size).numpy()
        found = self.index.search(features, k, rerank=self.rerank, filter=filter)
        results = []
        for row, box in enumerate(regions):
            matches = [Match(label, name, float(score), int(id_)) for label, name, score, id_
                       in zip(found.labels[row], found.names[row], found.scores[row], found.ids[row]) if id_ >= 0]
            score = float(found.scores[row, 0])
            passed = score >= threshold if self.index.metric == "ip" else score <= threshold
            top = matches[0] if matches and passed else None
            results.append(Recognition(box=box, label=top.label if top else UNKNOWN, accepted=top is not None,
                                       name=top.name if top else None, score=score, matches=matches))
        return suppress_duplicates(results, self.duplicate_iou, higher_is_better=self.index.metric == "ip") \
            if detected else results


def suppress_duplicates(regions: List[Recognition], iou: float, *, higher_is_better: bool = True) -> List[Recognition]:
    """``regions`` without the accepted ones that overlap (IoU > ``iou``) a better-scoring accepted region of the
    same label (torchvision's ``batched_nms``); unaccepted regions stay. Order is kept."""
    import torch
    from torchvision.ops import batched_nms

    accepted = [number for number, region in enumerate(regions) if region.accepted]
    if len(accepted) < 2:
        return regions
    labels = {label: number for number, label in enumerate(sorted({regions[i].label for i in accepted}))}
    sign = 1.0 if higher_is_better else -1.0
    kept = batched_nms(torch.tensor([regions[i].box for i in accepted], dtype=torch.float64),
                       torch.tensor([sign * regions[i].score for i in accepted], dtype=torch.float64),
                       torch.tensor([labels[regions[i].label] for i in accepted]), iou)
    dropped = set(accepted) - {accepted[i] for i in kept.tolist()}
    return [region for number, region in enumerate(regions) if number not in dropped]


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ProdrecError(f"k must be a positive integer, got {k!r}")
    return k


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ProdrecError(f"threshold must be a finite number, got {threshold!r}")
    return threshold


def _check_boxes(boxes: Sequence[Sequence[float]], width: int, height: int) -> List[Box]:
    """Boxes clipped to the image and rounded outwards to whole pixels; ValueError listing every bad one."""
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ProdrecError(f"boxes must be a list of (x1, y1, x2, y2) numbers, got {boxes!r:.100}") from error
    if array.ndim != 2 or array.shape[1] != 4:
        raise ProdrecError(f"boxes must be a list of (x1, y1, x2, y2) numbers (shape [B, 4]), got shape {array.shape}")
    limits = np.array([width, height, width, height], dtype=np.float64)
    clipped = np.clip(np.nan_to_num(array), 0, limits)
    pixels = np.concatenate([np.floor(clipped[:, :2]), np.ceil(clipped[:, 2:])], axis=1).astype(int)
    problems = []
    for number, (box, whole) in enumerate(zip(array, pixels)):
        if not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
            problems.append(f"box {number} {box.tolist()}: needs finite x1 < x2 and y1 < y2")
        elif whole[2] <= whole[0] or whole[3] <= whole[1]:
            problems.append(f"box {number} {box.tolist()}: outside the {width}x{height} image")
    raise_problems(problems, "invalid boxes")
    return [tuple(int(v) for v in box) for box in pixels]
