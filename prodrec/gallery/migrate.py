"""Move a gallery to another backend (faiss folder <-> Milvus collection) with its images, labels, names, paths,
features and gallery-wide record, then check that both answer the same searches.

Image ids are the target backend's own (Milvus assigns them; a faiss gallery numbers them 0, 1, ...): a
migration keeps everything else. The source gallery is not changed.
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np
from tqdm.auto import tqdm

from prodrec.utils import ProdrecError

__all__ = ["copy_gallery", "compare_galleries"]

_PAGE = 4096


def copy_gallery(source: Any, target: Any, *, progress: bool = True) -> int:
    """Add every image of ``source`` (any backend) to the empty ``target`` (any backend, same dimension and
    metric), with the embedder record, calibration and change count; returns the images copied."""
    if len(target):
        raise ProdrecError(f"the migration target already holds {len(target)} images; migrate into an empty gallery")
    if (source.dim, source.metric) != (target.dim, target.metric):
        raise ProdrecError(f"the source holds {source.dim}-d {source.metric} features and the target "
                           f"{target.dim}-d {target.metric} ones; make the target with the source's dimension and metric")
    features = source.features
    if features is None:
        raise ProdrecError("migrating needs the gallery's features, but it was built with --no-features; rebuild it "
                           "without that option (prodrec index build), then migrate")
    labels, names, paths = source.labels, source.names, source.paths
    if not target.is_trained:
        target.train(features)
    with tqdm(total=len(labels), desc="migrate", unit="image", disable=not progress, leave=False) as bar:
        for start in range(0, len(labels), _PAGE):
            page = slice(start, start + _PAGE)
            target.add(features[page], labels[page].tolist(), names=names[page].tolist(), paths=paths[page].tolist())
            bar.update(len(labels[page]))
    target.embedder_info, target.calibration, target.changes = source.embedder_info, source.calibration, source.changes
    return len(labels)


def compare_galleries(source: Any, target: Any, *, queries: int = 200, k: int = 5, seed: int = 0) -> Dict[str, Any]:
    """Search ``queries`` of ``source``'s own images (chosen with ``seed``) in both galleries and compare: the
    share whose top-1 label agrees, the largest score difference over the top ``k`` and the share of top-k
    label lists that agree (equal scores may order differently: ties are allowed)."""
    features = source.features
    if features is None or not len(features):
        return {"queries": 0, "top1_label_agreement": None, "topk_labels_agreement": None, "max_score_difference": None}
    rows = np.random.default_rng(seed).choice(len(features), size=min(queries, len(features)), replace=False)
    first, second = source.search(features[rows], k), target.search(features[rows], k)
    finite = np.isfinite(first.scores) & np.isfinite(second.scores)
    same_lists = [sorted(map(str, a)) == sorted(map(str, b)) for a, b in zip(first.labels, second.labels)]
    return {"queries": len(rows), "top1_label_agreement": float(np.mean(first.labels[:, 0] == second.labels[:, 0])),
            "topk_labels_agreement": float(np.mean(same_lists)),
            "max_score_difference": float(np.abs(first.scores - second.scores)[finite].max(initial=0.0))}
