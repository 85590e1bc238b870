"""End-to-end evaluation of detect -> recognise, as PP-ShiTu's ``eval_shitu_pipeline.py`` does it: is each
annotated product found by a box (IoU >= 0.5) that names it?

Every photo is recognised twice: with the detector's boxes (``detected``: detection and recognition errors
together) and with the annotated boxes (``ground_truth_boxes``: recognition errors alone). A predicted
``(box, label)`` pair is right when an annotated box of that product, not yet matched, overlaps it by the IoU;
pairs are matched best score first. Precision = right pairs / accepted regions; recall = right pairs /
annotated boxes that carry a product label. Boxes without one are left out, with the regions they match.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from prodrec.data import BoxSet, load_image
from prodrec.gallery import Recognition, Recognizer, suppress_duplicates
from prodrec.utils import ProdrecError

__all__ = ["match_pairs", "evaluate_pipeline"]

Outcome = Tuple[int, int, int]  # right pairs, accepted pairs, annotated products


def match_pairs(boxes: np.ndarray, labels: Sequence[str], scores: Sequence[float], truth: np.ndarray,
                products: Sequence[Optional[str]], iou: float = 0.5) -> Outcome:
    """(right, counted predictions, annotated products) of one photo's accepted ``(box, label)`` pairs."""
    truth = np.asarray(truth, np.float32).reshape(-1, 4)
    if not len(boxes):
        return 0, 0, sum(product is not None for product in products)
    overlaps = box_iou(torch.as_tensor(np.asarray(boxes, np.float32)), torch.as_tensor(truth)).numpy() \
        if len(truth) else np.zeros((len(boxes), 0), np.float32)
    used, right, counted = np.zeros(len(truth), bool), 0, 0
    for row in np.argsort(-np.asarray(scores, np.float64), kind="stable"):
        same = np.array([product == labels[row] for product in products], bool)
        candidates = np.flatnonzero(same & ~used & (overlaps[row] >= iou))
        if len(candidates):
            used[candidates[np.argmax(overlaps[row, candidates])]] = True
            right += 1
            counted += 1
        elif not (len(truth) and overlaps[row].max() >= iou and products[int(np.argmax(overlaps[row]))] is None):
            counted += 1  # a wrong pair, unless it sits on an unlabelled box
    return right, counted, sum(product is not None for product in products)


def _rates(outcomes: List[Outcome]) -> Dict[str, float]:
    right, predicted, annotated = (sum(values) for values in zip(*outcomes)) if outcomes else (0, 0, 0)
    precision = right / predicted if predicted else 0.0
    recall = right / annotated if annotated else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "right": right, "predicted": predicted,
            "annotated": annotated}


def _accepted(regions: List[Recognition], threshold: float, higher_is_better: bool, duplicate_iou: Optional[float]):
    """``regions`` (recognised with every score accepted) decided at ``threshold``, duplicates suppressed."""
    decided = [region if (region.score >= threshold if higher_is_better else region.score <= threshold)
               else None for region in regions]
    kept = [region for region in decided if region is not None]
    if duplicate_iou is not None:
        kept = suppress_duplicates(kept, duplicate_iou, higher_is_better=higher_is_better)
    return (np.array([r.box for r in kept], np.float32).reshape(-1, 4), [r.label for r in kept], [r.score for r in kept])


def evaluate_pipeline(recognizer: Recognizer, boxes: BoxSet, *, thresholds: Sequence[float] = (), iou: float = 0.5,
                      progress: bool = True) -> Dict[str, Any]:
    """Precision, recall and F1 of ``(box, label)`` pairs with the recognizer's detector and with the annotated
    boxes, at the recognizer's threshold (``detected``, ``ground_truth_boxes``) and at each of ``thresholds``
    (``by_threshold``)."""
    if recognizer.detector is None:
        raise ProdrecError("evaluate_pipeline needs a Recognizer with a detector (Recognizer(..., detector=...))")
    higher = recognizer.index.metric == "ip"
    loosest = float(np.finfo(np.float32).min if higher else np.finfo(np.float32).max)
    raw = Recognizer(recognizer.embedder, recognizer.index, k=1, threshold=loosest, batch_size=recognizer.batch_size,
                     rerank=recognizer.rerank, detector=recognizer.detector, crop_margin=recognizer.crop_margin,
                     duplicate_iou=1.0)
    photos = []
    for path, truth, products in tqdm(list(zip(boxes.paths, boxes.boxes, boxes.products)), disable=not progress,
                                      desc="detect + recognise", unit="photo"):
        image = load_image(path)
        given = raw.recognize(image, truth) if len(truth) else []
        photos.append((raw.recognize(image), given, truth, products))
    every = [recognizer.threshold, *[float(t) for t in thresholds]]
    table = []
    for threshold in every:
        detected = [match_pairs(*_accepted(found, threshold, higher, recognizer.duplicate_iou), truth, products, iou)
                    for found, _, truth, products in photos]
        annotated = [match_pairs(*_accepted(given, threshold, higher, None), truth, products, iou)
                     for _, given, truth, products in photos]
        table.append({"threshold": threshold, "detected": _rates(detected), "ground_truth_boxes": _rates(annotated)})
    return {**table[0], "iou": iou, "photos": len(boxes), "by_threshold": table[1:]}
