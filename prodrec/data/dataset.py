"""Image listings (paths + labels) and the torch ``Dataset`` over them (decoding is in ``prodrec.data.decode``).

Readers (``inshop``, ``lists``, ``synthetic``) produce :class:`ImageList` / :class:`RetrievalSplits`;
:class:`ImageDataset` turns a listing plus a transform into ``(tensor, label)`` samples.
"""
from __future__ import annotations

import errno
import os
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from prodrec.data.decode import ImageReadError, printable_path, as_rgb_array, load_image
from prodrec.data.packed_paths import PackedPaths
from prodrec.utils import ProdrecError, ProdrecTypeError

# ImageReadError, load_image and as_rgb_array live in prodrec.data.decode and are re-exported here.
__all__ = ["ImageList", "RetrievalSplits", "ImageDataset", "ImageReadError", "load_image", "as_rgb_array",
           "raise_problems", "read_lines", "confine_paths", "check_query_gallery", "missing_file_problems",
           "problem_report"]

_MAX_PROBLEMS_SHOWN = 20


@dataclass(frozen=True, eq=False)
class ImageList:
    """A listing of labelled images (no pixels).

    Attributes:
        paths: Absolute image paths, a read-only sequence of ``str`` stored packed (a
            :class:`~prodrec.data.packed_paths.PackedPaths`, equal to the tuple of the paths; ``bytes`` paths are
            decoded with ``os.fsdecode``).
        labels: int64 ``[N]`` label indices into ``classes`` (read-only).
        classes: Original item id / class name of each label index.
    """

    paths: Sequence[str]
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        paths = self.paths if isinstance(self.paths, PackedPaths) else PackedPaths(
            os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in self.paths)
        classes = tuple(str(c) for c in self.classes)
        labels = np.array(self.labels, dtype=np.int64)
        if labels.ndim != 1 or len(labels) != len(paths):
            raise ProdrecError(f"ImageList: labels must be 1-D with one entry per path "
                               f"({len(paths)} paths, labels of shape {labels.shape})")
        if len(set(classes)) != len(classes):
            raise ProdrecError("ImageList: class names must be unique")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ProdrecError(f"ImageList: labels must lie in 0..{len(classes) - 1} "
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
            raise ProdrecError(f"ImageList.from_names: names not in classes: {unknown[:_MAX_PROBLEMS_SHOWN]}")
        labels = np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
        return cls(paths, labels, classes)

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
            raise ProdrecError("RetrievalSplits: query and gallery must share one label space "
                               "(the same `classes` tuple)")

    @property
    def queries_without_match(self) -> int:
        """Query images whose item has no gallery image (left out of Recall@K, as in PaddleClas)."""
        return int(np.count_nonzero(~np.isin(self.query.labels, self.gallery.labels)))


class ImageDataset(torch.utils.data.Dataset):
    """``(transform(image), label)`` samples of an :class:`ImageList`.

    Args:
        images: The listing.
        transform: Maps an ``HxWx3`` uint8 RGB array to a tensor (see ``prodrec.data.transforms``).
        decode_size: Decode JPEGs at reduced size while the shorter side stays at least this (see
            :func:`load_image`'s ``min_size``); set it to the size the transform resizes to. None: full size.
    """

    def __init__(self, images: ImageList, transform: Callable[[np.ndarray], torch.Tensor], *,
                 decode_size: Optional[int] = None) -> None:
        if not isinstance(images, ImageList):
            raise ProdrecTypeError(f"ImageDataset: images must be an ImageList, got {type(images).__name__}")
        if not callable(transform):
            raise ProdrecTypeError(f"ImageDataset: transform must be callable, got {type(transform).__name__}")
        if decode_size is not None and (isinstance(decode_size, bool) or not isinstance(decode_size, int)
                                        or decode_size < 1):
            raise ProdrecError(f"ImageDataset: decode_size must be a positive int or None, got {decode_size!r}")
        self.images = images
        self.transform = transform
        self.decode_size = decode_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_image(self.images.paths[index], min_size=self.decode_size)
        return self.transform(image), int(self.images.labels[index])

    def __repr__(self) -> str:
        return f"ImageDataset({self.images!r}, transform={self.transform!r}, decode_size={self.decode_size})"


def problem_report(problems: Sequence[str], what: str) -> str:
    """``what: N problem(s):`` and the problems, one a line (the first 20, then a count)."""
    shown = "\n  ".join(problems[:_MAX_PROBLEMS_SHOWN])
    more = len(problems) - _MAX_PROBLEMS_SHOWN
    tail = f"\n  ... and {more} more problem(s)" if more > 0 else ""
    return f"{what}: {len(problems)} problem(s):\n  {shown}{tail}"


def raise_problems(problems: Sequence[str], what: str) -> None:
    """Raise one ValueError listing every problem (the first 20, then a count); no-op when empty."""
    if problems:
        raise ProdrecError(problem_report(problems, what))


def check_query_gallery(splits: RetrievalSplits, what: str) -> RetrievalSplits:
    """Reject query/gallery sets with no common item; warn about queries without a gallery match."""
    if not np.isin(splits.query.labels, splits.gallery.labels).any():
        raise ProdrecError(f"{what}: no query item has a gallery image, so retrieval cannot be evaluated; "
                           "query and gallery must list images of the same items")
    unmatched = splits.queries_without_match
    if unmatched:
        warnings.warn(f"{what}: {unmatched} of {len(splits.query)} query images have no gallery image of "
                      "their item; they are left out of Recall@K (as in PaddleClas)", stacklevel=3)
    return splits


def read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text listing; ValueError naming every line (file:line) that is not UTF-8."""
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        problems = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                problems.append(f"{path}:{number}: byte {line[bad.start]:#04x} at column {bad.start + 1} is not "
                                f"UTF-8: {line.decode('utf-8', 'backslashreplace').strip()}")
        assert problems, "a UTF-8 error that no line has"
        raise ProdrecError(problem_report(problems, f"{path} is not a UTF-8 text file (re-save it as UTF-8, e.g. "
                                                   "with `iconv -f latin1 -t utf-8`)")) from error


def _not_a_file(path: str) -> str:
    """Why ``path`` is not a readable image file, in words."""
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                return f"symlink loop: {path} (its links lead back to themselves)"
            return f"broken symlink: {path} -> {os.readlink(path)} (its target does not exist)"
    if os.path.isdir(path):
        return f"a folder, not an image: {path}"
    return f"image not found: {path}"


def missing_file_problems(located: Sequence[tuple[str, str]], root: str, hint: str) -> list[str]:
    """``'<where>: image not found: <path>'`` per missing path of ``(where, path)``; a summary first when
    none of them exists (then ``hint`` says how to point the reader at the images)."""
    missing = [f"{where}: {_not_a_file(path)}" for where, path in located if not os.path.isfile(path)]
    if located and len(missing) == len(located):
        missing.insert(0, f"none of the {len(located)} listed images exists under {root}; {hint}")
    return missing


def confine_paths(located: Sequence[tuple[str, str]], root: Optional[str], *,
                  fix: str = "turn confinement off") -> tuple[list[tuple[str, str]], list[str]]:
    """Split ``(where, path)`` pairs into those inside ``root`` after resolving symlinks and ``..`` and problems
    naming the others (a how-to-fix line first, ending with ``fix``); all are inside when ``root`` is None."""
    if root is None:
        return list(located), []
    real_root = os.path.realpath(root)
    prefix = real_root.rstrip(os.sep) + os.sep
    real_folders: dict[str, str] = {}
    inside, outside = [], []
    for where, path in located:
        folder, name = os.path.split(path)
        if name in ("", ".", "..") or os.path.islink(path):
            real = os.path.realpath(path)
        else:  # one realpath per folder: 50k images take a second, not ten
            if folder not in real_folders:
                real_folders[folder] = os.path.realpath(folder)
            real = os.path.join(real_folders[folder], name)
        if real == real_root or real.startswith(prefix):
            inside.append((where, path))
        else:
            outside.append(f"{where}: {printable_path(path)}" + (f" (resolves to {printable_path(real)})" if real != path
                                                             else ""))
    if outside:
        outside.insert(0, f"{len(outside)} listed path(s) lie outside the data root {printable_path(real_root)} "
                          "(after resolving symlinks and '..') and confinement to it is on: move or copy those "
                          f"files under the data root (and fix the list), or {fix}")
    return inside, outside
