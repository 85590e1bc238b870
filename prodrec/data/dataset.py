"""Image listings (paths + labels), image decoding and the torch ``Dataset`` over them.

Readers (``inshop``, ``lists``, ``synthetic``) produce :class:`ImageList` / :class:`RetrievalSplits`;
:class:`ImageDataset` turns a listing plus a transform into ``(tensor, label)`` samples.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

__all__ = ["ImageList", "RetrievalSplits", "ImageReadError", "load_image", "as_rgb_array", "ImageDataset"]

_MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True, eq=False)
class ImageList:
    """A listing of labelled images (no pixels).

    Attributes:
        paths: Absolute image paths.
        labels: int64 ``[N]`` label indices into ``classes`` (read-only).
        classes: Original item id / class name of each label index.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        paths = tuple(str(p) for p in self.paths)
        classes = tuple(str(c) for c in self.classes)
        labels = np.array(self.labels, dtype=np.int64)
        if labels.ndim != 1 or len(labels) != len(paths):
            raise ValueError(f"ImageList: labels must be 1-D with one entry per path "
                             f"({len(paths)} paths, labels of shape {labels.shape})")
        if len(set(classes)) != len(classes):
            raise ValueError("ImageList: class names must be unique")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"ImageList: labels must lie in 0..{len(classes) - 1} "
                             f"(one per class name), got {labels.min()}..{labels.max()}")
        labels.flags.writeable = False
        object.__setattr__(self, "paths", paths)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "classes", classes)

    @classmethod
    def from_names(cls, paths: Sequence[str], names: Sequence[str], *,
                   classes: Sequence[str] | None = None) -> ImageList:
        """Build a listing from per-image class names.

        Args:
            paths: Absolute image paths.
            names: Class name of each image.
            classes: The label space (label ``i`` is ``classes[i]``); defaults to the sorted unique names.
        """
        classes = tuple(sorted(set(names))) if classes is None else tuple(classes)
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted(set(names) - index.keys())
        if unknown:
            raise ValueError(f"ImageList.from_names: names not in classes: {unknown[:_MAX_PROBLEMS_SHOWN]}")
        labels = np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
        return cls(tuple(paths), labels, classes)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        """Number of classes in the label space (some may have no image in this listing)."""
        return len(self.classes)

    def __repr__(self) -> str:
        return f"ImageList({len(self)} images, {self.num_classes} classes)"


@dataclass(frozen=True, eq=False)
class RetrievalSplits:
    """Train / query / gallery listings; query and gallery share one label space."""

    train: ImageList
    query: ImageList
    gallery: ImageList

    def __post_init__(self) -> None:
        if self.query.classes != self.gallery.classes:
            raise ValueError("RetrievalSplits: query and gallery must share one label space "
                             "(the same `classes` tuple)")

    @property
    def queries_without_match(self) -> int:
        """Query images whose item has no gallery image (left out of Recall@K, as in PaddleClas)."""
        return int(np.count_nonzero(~np.isin(self.query.labels, self.gallery.labels)))


class ImageReadError(ValueError):
    """An image file could not be read or decoded; the message names the file and the reason."""


def load_image(path: str) -> np.ndarray:
    """Read an image file as an ``HxWx3`` uint8 RGB array.

    Grayscale, RGBA (alpha dropped) and 16-bit images are converted; EXIF orientation is applied.
    ``np.fromfile`` + ``cv2.imdecode`` handles paths ``cv2.imread`` cannot (non-ASCII on Windows).

    Raises:
        ImageReadError: The file is missing, unreadable or not a decodable image.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"cannot read image {path}: {error.strerror or error}") from error
    if data.size == 0:
        raise ImageReadError(f"cannot read image {path}: the file is empty")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise ImageReadError(f"cannot read image {path}: not a decodable image file "
                             f"({data.size} bytes; OpenCV could not decode it)")
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    elif image.dtype != np.uint8:
        raise ImageReadError(f"cannot read image {path}: unsupported pixel type {image.dtype} "
                             "(expected 8- or 16-bit)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` samples of an :class:`ImageList`.

    Args:
        images: The listing.
        transform: Maps an ``HxWx3`` uint8 RGB array to a tensor (see ``prodrec.data.transforms``).
    """

    def __init__(self, images: ImageList, transform: Callable[[np.ndarray], torch.Tensor]) -> None:
        if not isinstance(images, ImageList):
            raise TypeError(f"ImageDataset: images must be an ImageList, got {type(images).__name__}")
        if not callable(transform):
            raise TypeError(f"ImageDataset: transform must be callable, got {type(transform).__name__}")
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_image(self.images.paths[index])), int(self.images.labels[index])

    def __repr__(self) -> str:
        return f"ImageDataset({self.images!r}, transform={self.transform!r})"


def _raise_problems(problems: Sequence[str], what: str) -> None:
    """Raise one ValueError listing every problem (the first 20, then a count); no-op when empty."""
    if not problems:
        return
    shown = "\n  ".join(problems[:_MAX_PROBLEMS_SHOWN])
    more = len(problems) - _MAX_PROBLEMS_SHOWN
    tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
    raise ValueError(f"{what}: {len(problems)} problem(s):\n  {shown}{tail}")


def _check_query_gallery(splits: RetrievalSplits, what: str) -> RetrievalSplits:
    """Reject query/gallery sets with no common item; warn about queries without a gallery match."""
    if not np.isin(splits.query.labels, splits.gallery.labels).any():
        raise ValueError(f"{what}: no query item has a gallery image, so retrieval cannot be evaluated; "
                         "query and gallery must list images of the same items")
    unmatched = splits.queries_without_match
    if unmatched:
        warnings.warn(f"{what}: {unmatched} of {len(splits.query)} query images have no gallery image of "
                      "their item; they are left out of Recall@K (as in PaddleClas)", stacklevel=3)
    return splits



def _read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text listing; a binary or mis-encoded file raises ValueError naming it."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            return file.read().splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from error


def _missing_file_problems(located: Sequence[tuple[str, str]], root: str, hint: str) -> list[str]:
    """``'<where>: image not found: <path>'`` per missing path of ``(where, path)``; a summary first when
    none of them exists (then ``hint`` says how to point the reader at the images)."""
    missing = [f"{where}: image not found: {path}" for where, path in located if not os.path.isfile(path)]
    if located and len(missing) == len(located):
        missing.insert(0, f"none of the {len(located)} listed images exists under {root}; {hint}")
    return missing


def as_rgb_array(image: Any) -> np.ndarray:
    """An HxWx3 uint8 RGB array from an image path, a PIL image or such an array (checked)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(os.fspath(image))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"a numpy image must be HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        return image
    if hasattr(image, "convert"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    raise TypeError(f"an image must be a path, a PIL image or an HxWx3 uint8 RGB array, got {type(image).__name__}")
