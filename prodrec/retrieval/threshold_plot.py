"""A picture of a threshold choice: FAR and FRR against the threshold, and the DET curve (FRR against FAR, the
FAR on a log axis)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from prodrec.retrieval.threshold import ThresholdChoice, TopOneOutcomes, error_rates

__all__ = ["plot_error_rates"]


def plot_error_rates(outcomes: TopOneOutcomes, path: Union[str, os.PathLike],
                     choice: Optional[ThresholdChoice] = None, *, title: str = "") -> None:
    """Draw FAR and FRR against the threshold (left) and FRR against FAR, FAR on a log axis (right) into an image
    file (PNG, SVG, PDF by its suffix), marking ``choice`` (a :class:`ThresholdChoice`, e.g. a gallery's
    ``Calibration``). Needs matplotlib (``pip install matplotlib``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("plotting error rates needs matplotlib: pip install matplotlib (or prodrec[plot])") from error
    scores = np.unique(np.concatenate([outcomes.known_scores, outcomes.unknown_scores]).astype(np.float64))
    if len(scores) > 2000:
        scores = np.quantile(scores, np.linspace(0, 1, 2000))
    step = (scores[-1] - scores[0]) / 50 or 1e-3
    thresholds = np.concatenate([[scores[0] - step], scores, [scores[-1] + step]])
    rates = error_rates(outcomes, thresholds)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    steps = "steps-pre" if outcomes.higher_is_better else "steps-post"  # accepted at >= t, or at <= t
    left.plot(thresholds, rates["far"], label="FAR (wrong product named)", color="#c0392b", drawstyle=steps)
    left.plot(thresholds, rates["frr"], label="FRR (own product not named)", color="#2471a3", drawstyle=steps)
    left.set_xlabel("threshold (top-1 score)" + ("" if outcomes.higher_is_better else ", accepted at or below"))
    left.set_ylabel("rate")
    floor = 0.5 / outcomes.queries
    right.semilogx(np.maximum(rates["far"], floor), rates["frr"], color="#1e8449", drawstyle="steps-post")
    right.set_ylim(0, 1.02)
    right.set_xlabel(f"FAR (0 drawn at {floor:.1g})")
    right.set_ylabel("FRR")
    right.set_title("DET curve")
    if choice is not None:
        left.axvline(choice.threshold, color="black", linestyle="--",
                     label=f"threshold {choice.threshold:.4f}: FAR {choice.far:.4f}, FRR {_rate(choice.frr)}")
        left.axhline(choice.far_target, color="#c0392b", linestyle=":", label=f"target FAR {choice.far_target:g}")
        if choice.frr is not None:
            right.plot([max(choice.far, floor)], [choice.frr], "ko")
    left.legend(fontsize=8)
    left.set_title(title or f"{len(outcomes.known_scores)} known + {len(outcomes.unknown_scores)} unknown queries")
    for axes in (left, right):
        axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _rate(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.4f}"
