"""Decode every image of a listing before training: report all unreadable files at once, or skip them."""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from prodrec.config import SPLITS
from prodrec.data.dataset import ImageList, RetrievalSplits, problem_report
from prodrec.data.decode import ImageReadError, printable_path, load_image
from prodrec.utils import ProdrecError, ProdrecTypeError

__all__ = ["BAD_IMAGE_POLICIES", "check_images", "check_splits"]

BAD_IMAGE_POLICIES = ("error", "skip")
_CHECK_SIZE = 1  # the smallest decode is enough to find a broken file: JPEGs at 1/8 scale


def check_images(images: ImageList, *, policy: str = "error", workers: int = 0,
                 progress: bool = False) -> tuple[ImageList, list[tuple[str, str]]]:
    """Decode every image of a listing (JPEGs at reduced size) and deal with the ones that fail.

    Args:
        images: The listing.
        policy: ``error``: raise one :class:`ImageReadError` naming every bad file and its reason;
            ``skip``: leave the bad files out (the label space is kept, some classes may lose images).
        workers: Decode with this many threads (0: in this thread).
        progress: Show a tqdm progress bar.

    Returns:
        The listing without the bad files, and ``(path, reason)`` of each bad file in listing order.

    Raises:
        ImageReadError: A bad file with policy ``error``, or every image is bad.
    """
    if not isinstance(images, ImageList):
        raise ProdrecTypeError(f"check_images: images must be an ImageList, got {type(images).__name__}")
    _check_options(policy, workers, progress)
    bad = _find_bad(images.paths, workers, progress)
    if bad and (policy == "error" or len(bad) == len(set(images.paths))):
        raise _bad_images_error(bad, len(set(images.paths)), "" if policy == "error" else
                                "every image is unreadable, so skipping them leaves nothing")
    return _without(images, bad), list(bad.items())


def check_splits(splits: RetrievalSplits, *, policy: str = "error", workers: int = 0,
                 progress: bool = False) -> tuple[RetrievalSplits, list[tuple[str, str]]]:
    """:func:`check_images` over train, query and gallery (each file decoded once).

    With policy ``skip``, a query image whose item loses its last gallery image stays in the query set: like
    every query without a gallery match it is left out of Recall@K; a warning counts them.

    Returns:
        The splits without the bad files, and ``(path, reason)`` of each bad file (train, query, gallery order).

    Raises:
        ImageReadError: A bad file with policy ``error``; or, with ``skip``, a split left empty or no query
            item left with a gallery image (retrieval could not be evaluated).
    """
    if not isinstance(splits, RetrievalSplits):
        raise ProdrecTypeError(f"check_splits: splits must be RetrievalSplits, got {type(splits).__name__}")
    _check_options(policy, workers, progress)
    paths = list(dict.fromkeys(path for split in SPLITS for path in getattr(splits, split).paths))
    bad = _find_bad(paths, workers, progress)
    if bad and policy == "error":
        raise _bad_images_error(bad, len(paths), "")
    kept = {split: _without(getattr(splits, split), bad) for split in SPLITS}
    empty = [split for split in SPLITS if len(getattr(splits, split)) and not len(kept[split])]
    if empty:
        raise _bad_images_error(bad, len(paths), f"every {' and every '.join(empty)} image is unreadable")
    checked = RetrievalSplits(**kept)
    if not np.isin(checked.query.labels, checked.gallery.labels).any():
        raise _bad_images_error(bad, len(paths), "without the unreadable images no query item has a gallery "
                                                 "image, so retrieval cannot be evaluated")
    lost = int(np.count_nonzero(np.isin(checked.query.labels, splits.gallery.labels)
                                & ~np.isin(checked.query.labels, checked.gallery.labels)))
    if lost:
        warnings.warn(f"skipping unreadable images left {lost} query image(s) without a gallery image of their "
                      "item; they are left out of Recall@K", stacklevel=2)
    return checked, list(bad.items())


def _check_options(policy: str, workers: int, progress: bool) -> None:
    if policy not in BAD_IMAGE_POLICIES:
        raise ProdrecError(f"bad-image policy must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {policy!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ProdrecError(f"workers must be an int >= 0 (0: no threads), got {workers!r}")
    if not isinstance(progress, bool):
        raise ProdrecTypeError(f"progress must be True or False, got {progress!r}")


def _reason(path: str) -> Optional[str]:
    """Why ``path`` cannot be decoded, or None when it can."""
    try:
        load_image(path, min_size=_CHECK_SIZE)
    except ImageReadError as error:
        return error.bad[0][1]
    return None


def _find_bad(paths: Sequence[str], workers: int, progress: bool) -> dict[str, str]:
    """``{path: reason}`` of the paths that cannot be decoded, in the order given."""
    with ThreadPoolExecutor(workers) if workers else nullcontext() as pool:
        results = pool.map(_reason, paths) if pool else map(_reason, paths)
        reasons = list(tqdm(results, total=len(paths), desc="checking images", unit="image", disable=not progress))
    return {path: reason for path, reason in zip(paths, reasons) if reason is not None}


def _without(images: ImageList, bad: dict[str, str]) -> ImageList:
    if not bad:
        return images
    keep = np.array([path not in bad for path in images.paths], dtype=bool)
    return ImageList(tuple(path for path, kept in zip(images.paths, keep) if kept), images.labels[keep],
                     images.classes)


def _bad_images_error(bad: dict[str, str], total: int, why: str) -> ImageReadError:
    fix = (f"{why}; fix or remove them" if why else
           "fix or remove them, or skip them (policy 'skip', CLI --on-bad-image skip)")
    what = f"{len(bad)} of {total} images cannot be read ({fix})"
    return ImageReadError(problem_report([f"{printable_path(path)}: {reason}" for path, reason in bad.items()], what),
                          list(bad.items()))
