"""Acceptance thresholds from data: false-accept and false-reject rates of top-1 decisions, and the threshold
that meets a false-accept target.

A recognition system names the product of a query's top-1 gallery match when its score passes a threshold.
Over a set of queries, some of products the gallery holds ("known") and some of products it does not hold
("unknown"):

- a **false accept** is a named product that is wrong: a known query whose top-1 is another product, or an
  unknown query, with a score that passes the threshold. ``FAR = false accepts / all queries``.
- a **false reject** is a known product that is not named: its query's top-1 is its own product but the
  score fails the threshold, or its top-1 is another product (then nothing right can be named).
  ``FRR = (known queries - correct accepts) / known queries``; at the loosest threshold it is the
  rank-1 error, as in open-set identification's FNIR (NIST FRVT, ISO/IEC 19795-1).

A rate measured on ``n`` queries cannot back a target below ``1 - 0.05 ** (1 / n)`` (about ``3 / n``; the
one-sided 95 % Clopper-Pearson bound with no false accept), so :func:`choose_threshold` refuses such a target
rather than print a threshold that nothing backs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np

from prodrec.retrieval.knn import knn_search, l2_normalize
from prodrec.utils import ProdrecError

__all__ = ["TopOneOutcomes", "ThresholdChoice", "far_upper_bound", "min_supported_far", "error_rates", "check_far",
           "choose_threshold", "open_set_rates"]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class TopOneOutcomes:
    """The top-1 decisions of a set of queries: each known query's top-1 score and whether its label is the
    query's own, and each unknown query's top-1 score. ``higher_is_better``: scores are similarities (True,
    accepted when ``score >= threshold``) or distances (False, accepted when ``score <= threshold``)."""

    known_scores: np.ndarray
    known_correct: np.ndarray
    unknown_scores: np.ndarray
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        known, correct = np.asarray(self.known_scores), np.asarray(self.known_correct, dtype=bool)
        unknown = np.asarray(self.unknown_scores)
        if known.ndim != 1 or correct.shape != known.shape or unknown.ndim != 1:
            raise ProdrecError(f"known_scores and known_correct must be 1-D of one length and unknown_scores 1-D; got "
                               f"shapes {known.shape}, {correct.shape}, {unknown.shape}")
        if len(known) + len(unknown) == 0:
            raise ProdrecError("no queries: calibration needs known queries (products with two or more gallery "
                               "images) or unknown ones (images of products the gallery does not hold)")
        if not (np.isfinite(known).all() and np.isfinite(unknown).all()):
            raise ProdrecError("scores must be finite (an empty gallery gives none to calibrate on)")
        object.__setattr__(self, "known_scores", known)
        object.__setattr__(self, "known_correct", correct)
        object.__setattr__(self, "unknown_scores", unknown)

    @property
    def queries(self) -> int:
        return len(self.known_scores) + len(self.unknown_scores)

    def similarities(self) -> tuple:
        """(impostor, genuine) scores as similarities (negated distances): the false-accept candidates (wrong
        known top-1s and all unknowns) and the correct known top-1s."""
        sign = 1 if self.higher_is_better else -1
        impostor = np.concatenate([self.known_scores[~self.known_correct], self.unknown_scores])
        return sign * impostor, sign * self.known_scores[self.known_correct]


@dataclass(frozen=True)
class ThresholdChoice:
    """The loosest threshold whose false-accept rate on the queries is at most ``far_target``, and what it
    does there. ``frr`` is None without known queries; ``far_upper_95`` bounds the true rate (95 %)."""

    threshold: float
    far_target: float
    far: float
    frr: Optional[float]
    false_accepts: int
    false_rejects: int
    known_queries: int
    unknown_queries: int
    far_upper_95: float
    min_supported_far: float

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def far_upper_bound(false_accepts: int, queries: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen as ``false_accepts`` out of ``queries``."""
    from scipy.stats import beta

    if false_accepts >= queries:
        return 1.0
    return float(beta.ppf(confidence, false_accepts + 1, queries - false_accepts))


def min_supported_far(queries: int, confidence: float = CONFIDENCE) -> float:
    """The smallest false-accept rate ``queries`` can back: the upper bound when none is seen (about 3 / n)."""
    return 1.0 - (1.0 - confidence) ** (1.0 / queries)


def error_rates(outcomes: TopOneOutcomes, thresholds: Sequence[float]) -> Dict[str, np.ndarray]:
    """``far`` and ``frr`` (NaN without known queries) at each threshold, as search would decide."""
    impostor, genuine = outcomes.similarities()
    sign = 1 if outcomes.higher_is_better else -1
    cuts = sign * np.asarray(thresholds, dtype=np.float64)
    impostor, genuine = np.sort(impostor), np.sort(genuine)
    false_accepts = len(impostor) - np.searchsorted(impostor, cuts, side="left")
    correct_accepts = len(genuine) - np.searchsorted(genuine, cuts, side="left")
    known = len(outcomes.known_scores)
    frr = 1.0 - correct_accepts / known if known else np.full(len(cuts), np.nan)
    return {"far": false_accepts / outcomes.queries, "frr": frr}


def check_far(far: Any) -> float:
    """``far`` if it is a false-accept target in (0, 1); ProdrecError otherwise."""
    if isinstance(far, bool) or not isinstance(far, (int, float)) or not 0 < far < 1:
        raise ProdrecError(f"the false-accept target must be a number in (0, 1), e.g. 0.01; got {far!r}")
    return float(far)


def choose_threshold(outcomes: TopOneOutcomes, far: float = 0.01) -> ThresholdChoice:
    """The loosest threshold (accepting the most) whose false-accept rate on ``outcomes`` is at most ``far``.

    With ``m = floor(far * n)`` false accepts allowed among ``n`` queries, the threshold lies just above the
    ``(m + 1)``-th best false-accept candidate (the next float32 value up, for similarities); when no more
    than ``m`` candidates exist it accepts every query. A target below :func:`min_supported_far` is refused.

    Example:
        >>> known = TopOneOutcomes(np.array([0.9, 0.8, 0.6]), np.array([True, True, False]), np.array([0.7, 0.3]))
        >>> choice = choose_threshold(known, far=0.5)  # 2 of 5 may pass (0.7, 0.6); the third, 0.3, may not
        >>> round(choice.threshold, 6), choice.far, round(choice.frr, 3)  # FRR: the 0.6 query names another
        (0.3, 0.4, 0.333)
    """
    far = check_far(far)
    queries = outcomes.queries
    floor = min_supported_far(queries)
    if far < floor:
        raise ProdrecError(
            f"a false-accept rate of {far:g} cannot be backed by {queries} queries: the smallest they support is "
            f"{floor:.2g} (with no false accept seen, the 95 % bound is 1 - 0.05^(1/{queries})); add images of "
            f"products the gallery does not hold (--unknown), or choose --far {_round_up(floor)} or more")
    impostor, genuine = outcomes.similarities()
    allowed = math.floor(far * queries + 1e-9)
    ordered = np.sort(impostor)[::-1]
    if len(ordered) > allowed:
        cut = float(np.nextafter(np.float32(ordered[allowed]), np.float32(np.inf)))
    else:
        cut = float(np.min(np.concatenate([impostor, genuine])))
    false_accepts, correct_accepts = int((impostor >= cut).sum()), int((genuine >= cut).sum())
    known = len(outcomes.known_scores)
    return ThresholdChoice(threshold=cut if outcomes.higher_is_better else -cut, far_target=float(far),
                           far=false_accepts / queries, frr=1 - correct_accepts / known if known else None,
                           false_accepts=false_accepts, false_rejects=known - correct_accepts, known_queries=known,
                           unknown_queries=len(outcomes.unknown_scores),
                           far_upper_95=far_upper_bound(false_accepts, queries), min_supported_far=floor)


def open_set_rates(query_features: np.ndarray, query_labels: Sequence, gallery_features: np.ndarray,
                   gallery_labels: Sequence, *, fars: Sequence[float] = (1e-1, 1e-2, 1e-3),
                   unknown_fraction: float = 0.5, seed: int = 0) -> Dict[str, Any]:
    """FRR at fixed FARs when part of the products are missing from the gallery (the shop's open set).

    The query products are split (seeded) into known and unknown ones; the unknown ones' gallery images are
    left out, so their queries must be rejected. Returns a flat dict: ``frr@far=F`` and ``threshold@far=F``
    per target (None where the query count cannot back F), ``open_set/known_queries``,
    ``open_set/unknown_queries`` and ``open_set/min_supported_far``.
    """
    if not 0 < unknown_fraction < 1:
        raise ProdrecError(f"unknown_fraction must be in (0, 1), got {unknown_fraction!r}")
    query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
    products = np.unique(query_labels)
    if len(products) < 2:
        raise ProdrecError(f"an open-set evaluation splits the query products in two; the queries show {len(products)}")
    shuffled = np.random.default_rng(seed).permutation(products)
    unknown = shuffled[:max(1, min(len(products) - 1, round(unknown_fraction * len(products))))]
    kept = ~np.isin(gallery_labels, unknown)
    if not kept.any():
        raise ProdrecError("no gallery image is left once the unknown products are taken out")
    scores, rows = knn_search(l2_normalize(query_features), l2_normalize(gallery_features[kept]), 1, metric="ip")
    is_unknown = np.isin(query_labels, unknown)
    top = gallery_labels[kept][rows[:, 0]]
    outcomes = TopOneOutcomes(scores[~is_unknown, 0], top[~is_unknown] == query_labels[~is_unknown],
                              scores[is_unknown, 0])
    result: Dict[str, Any] = {"open_set/known_queries": int((~is_unknown).sum()),
                              "open_set/unknown_queries": int(is_unknown.sum()),
                              "open_set/min_supported_far": min_supported_far(outcomes.queries)}
    for target in fars:
        choice = choose_threshold(outcomes, target) if target >= result["open_set/min_supported_far"] else None
        result[f"frr@far={target:g}"] = None if choice is None else choice.frr
        result[f"threshold@far={target:g}"] = None if choice is None else choice.threshold
    return result


def _round_up(value: float) -> str:
    """``value`` rounded up to two significant digits, as text."""
    exponent = math.floor(math.log10(value)) - 1
    return f"{math.ceil(value / 10 ** exponent) * 10 ** exponent:.{max(0, -exponent)}f}"
