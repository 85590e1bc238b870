"""A gallery's acceptance threshold, chosen from its own images (and images of products it does not hold) for
a false-accept target, and stored with it (``prodrec index calibrate``; the rates:
:mod:`prodrec.retrieval.threshold`).

Each image of a product with two or more images is held out in turn and searched against the rest, as a
search would decide it: a top-1 of another product that passes the threshold is a false accept. Images of
products the gallery does not hold ("unknown" ones) are searched against all of it: any acceptance is a
false accept. The loosest threshold whose false-accept rate is within the target becomes the gallery's.
"""
from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any, Optional, Tuple

import numpy as np

from prodrec.retrieval import ThresholdChoice, TopOneOutcomes, choose_threshold
from prodrec.utils import ProdrecError

__all__ = ["Calibration", "held_out_outcomes", "calibrate_gallery"]


@dataclass(frozen=True)
class Calibration(ThresholdChoice):
    """How a gallery's stored threshold was chosen: the :class:`~prodrec.retrieval.ThresholdChoice` (target,
    rates on the held-out queries, counts), the single-image products skipped, the gallery's change count
    then (``changes``) and when (``calibrated_at``, UTC).

    Example:
        >>> gallery.calibration = calibrate_gallery(gallery, far=0.01)  # doctest: +SKIP
    """

    skipped_products: int
    changes: int
    calibrated_at: str

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Calibration":
        """The record :meth:`to_json` wrote; a damaged one raises ProdrecError naming ``where``."""
        names = [field.name for field in fields(cls)]
        numbers = [name for name in names if name not in ("frr", "calibrated_at")]
        if (not isinstance(data, dict) or sorted(data) != sorted(names)
                or not all(isinstance(data[name], (int, float)) and not isinstance(data[name], bool) for name in numbers)
                or not isinstance(data["frr"], (int, float, type(None))) or not isinstance(data["calibrated_at"], str)):
            raise ProdrecError(f"{where}: the stored calibration is damaged (it needs the numbers {names}); run "
                               "prodrec index calibrate again")
        return cls(**data)


def held_out_outcomes(gallery: Any, unknown_features: Optional[np.ndarray] = None) -> Tuple[TopOneOutcomes, int]:
    """Leave-one-out top-1 outcomes over ``gallery``'s kept features (plus ``unknown_features`` searched against
    all of it) and the number of products skipped for having a single image."""
    if not len(gallery):
        raise ProdrecError("the gallery is empty: add product images before calibrating its threshold")
    if gallery.features is None:
        raise ProdrecError("calibrating needs the gallery's features, but it was built with --no-features; rebuild "
                           "it without that option")
    counts = Counter(gallery.labels.tolist())
    several = np.array([counts[label] > 1 for label in gallery.labels.tolist()], dtype=bool)
    worst = np.finfo(np.float32).min if gallery.metric == "ip" else np.finfo(np.float32).max
    known_scores, known_correct = np.empty(0, dtype=np.float32), np.empty(0, dtype=bool)
    if several.any():
        found = gallery.search(gallery.features[several], k=2)
        own = found.ids[:, 0] == gallery.ids[several]
        scores = np.where(own, found.scores[:, 1], found.scores[:, 0])
        labels = np.where(own, found.labels[:, 1], found.labels[:, 0])
        known_correct = labels == gallery.labels[several]
        known_scores = np.where(np.isfinite(scores), scores, worst)  # an approximate index found nothing else
    unknown_scores = np.empty(0, dtype=np.float32)
    if unknown_features is not None and len(unknown_features):
        found = gallery.search(unknown_features, k=1)
        unknown_scores = np.where(np.isfinite(found.scores[:, 0]), found.scores[:, 0], worst)
    skipped = sum(1 for number in counts.values() if number == 1)
    if not several.any() and not len(unknown_scores):
        raise ProdrecError(f"nothing to calibrate on: each of the gallery's {len(counts)} products has one image; add "
                           "a second image of some, or give images of products the gallery does not hold (--unknown)")
    return TopOneOutcomes(known_scores, known_correct, unknown_scores, higher_is_better=gallery.metric == "ip"), skipped


def calibrate_gallery(gallery: Any, *, far: float = 0.01, unknown_features: Optional[np.ndarray] = None,
                      outcomes: Optional[Tuple[TopOneOutcomes, int]] = None) -> Calibration:
    """The threshold for ``gallery`` (a :class:`~prodrec.gallery.GalleryIndex`) whose false-accept rate on its
    held-out images and ``unknown_features`` is at most ``far``; store it with ``gallery.calibration = ...``.
    ``outcomes``: :func:`held_out_outcomes` already computed (e.g. for a plot)."""
    outcomes, skipped = outcomes or held_out_outcomes(gallery, unknown_features)
    choice = choose_threshold(outcomes, far)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return Calibration(**choice.to_json(), skipped_products=skipped, changes=gallery.changes, calibrated_at=now)
