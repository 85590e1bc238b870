"""Reader for AliProducts: ``train.json`` / ``val.json`` with images under ``<split>/<class_id>/<image_id>``,
or PaddleClas ``path label`` lists of the same data.

Labels are the class ids themselves (label ``i`` is class id ``i``, ``classes[i] == str(i)``), so train and val
share one label space and a classifier head over ``num_classes`` outputs scores val directly.

The JSON listing is read in chunks of whole entries (:mod:`prodrec.data.json_listing`), so a 2.5 M-entry
``train.json`` needs the packed paths plus a few MB of chunk instead of millions of dicts and strings at once.
"""
from __future__ import annotations

import os
import re
from array import array
from typing import Any, Iterable, Sequence

import numpy as np

from prodrec.data.dataset import (ImageList, RetrievalSplits, check_query_gallery, confine_paths,
                                  missing_file_problems, raise_problems)
from prodrec.data.json_listing import describe, read_images_array
from prodrec.data.lists import duplicate_paths, existing_paths, pack_block, parse_list
from prodrec.data.packed_paths import PackedPaths, PathPacker
from prodrec.utils import ProdrecError

__all__ = ["ALIPRODUCTS_NUM_CLASSES", "read_aliproducts", "read_aliproducts_splits"]

ALIPRODUCTS_NUM_CLASSES = 50030
_DIGITS = re.compile(r"[0-9]+")
_NOT_FILE_NAMES = frozenset({"", ".", ".."})
_CLASS_ID_TYPES = frozenset({int, str})  # exact types: True and 1.0 would hash like 1
_ENTRY_FORM = '{"image_id": "<file name>", "class_id": <integer or "digits">}'


def read_aliproducts(root: str | os.PathLike, listing: str = "train.json", *,
                     num_classes: int | None = ALIPRODUCTS_NUM_CLASSES, check_files: bool = False,
                     confine_to_root: bool = False) -> ImageList:
    """Read one AliProducts listing under ``root``.

    A ``*.json`` listing is in the release format, ``{"images": [{"image_id": ..., "class_id": ...}, ...]}``
    (other keys ignored): entry ``k`` is the image ``root/<listing name without .json>/<class_id>/<image_id>``,
    the class folder spelt as in the file (``"00042"`` or ``42``). Any other listing is a PaddleClas list, one
    ``relative/path class_id`` per line, paths relative to ``root``. The label is the class id as an integer.

    Args:
        root: The AliProducts folder.
        listing: The listing's file name under ``root``, e.g. ``val.json`` or ``train_list.txt``.
        num_classes: Class ids must lie in ``0..num_classes-1``; ``None`` takes the largest id + 1.
        check_files: Also check that every listed image exists (a file look-up per image; off by default).
        confine_to_root: The listing and every image must lie in ``root`` after resolving symlinks (a
            ``realpath`` per image).

    Raises:
        FileNotFoundError: ``root`` or the listing does not exist.
        ValueError: The listing is invalid (every problem counted, the first 20 shown).
    """
    root, (path,) = _locate(root, [listing], num_classes)
    problems: list[str] = []
    paths, labels = _read_listing(path, root, num_classes, check_files, root if confine_to_root else None, problems)
    raise_problems(problems, f"invalid AliProducts listing {path}")
    return _image_list(paths, labels, num_classes)


def read_aliproducts_splits(root: str | os.PathLike, *, train: str = "train.json", val: str = "val.json",
                            num_classes: int | None = ALIPRODUCTS_NUM_CLASSES, check_files: bool = False,
                            confine_to_root: bool = False) -> RetrievalSplits:
    """AliProducts as train / query / gallery listings: query is val, gallery is train.

    Retrieval then ranks the training images for each val image (a hit is an image of its class); the
    classification accuracy on val is :func:`prodrec.retrieval.classification_accuracy` on ``query``.

    Args:
        root: The AliProducts folder.
        train: The training listing under ``root``: ``*.json`` in the release format (images under
            ``root/<name without .json>/<class_id>/``), any other name a PaddleClas ``path label`` list
            (paths relative to ``root``).
        val: The validation listing, likewise.
        num_classes: Class ids must lie in ``0..num_classes-1``; ``None`` takes the largest id + 1 of both.
        check_files: Also check that every listed image exists (a file look-up per image; off by default).
        confine_to_root: The listings and every image must lie in ``root`` after resolving symlinks.

    Raises:
        FileNotFoundError: ``root`` or a listing does not exist (all missing listings named).
        ValueError: A listing is invalid (every problem in both counted, the first 20 shown).
    """
    root, listings = _locate(root, [train, val], num_classes)
    confine_to = root if confine_to_root else None
    problems: list[str] = []
    read = [_read_listing(path, root, num_classes, check_files, confine_to, problems) for path in listings]
    raise_problems(problems, f"invalid AliProducts listings under {root}")
    if num_classes is None:
        num_classes = max(int(labels.max()) for _, labels in read) + 1
    train_list, val_list = (_image_list(paths, labels, num_classes) for paths, labels in read)
    splits = RetrievalSplits(train=train_list, query=val_list, gallery=train_list)
    return check_query_gallery(splits, f"AliProducts listings {', '.join(listings)}")


def _locate(root: str | os.PathLike, listings: list[str], num_classes: Any) -> tuple[str, list[str]]:
    """The absolute root and listing paths (checked), after checking ``num_classes``."""
    if num_classes is not None and (type(num_classes) is not int or num_classes < 1):
        raise ProdrecError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    root = existing_paths([root], "AliProducts folder (with train.json, val.json, train/, val/)", os.path.isdir)[0]
    return root, existing_paths([os.path.join(root, name) for name in listings], "AliProducts listing")


def _image_list(paths: Sequence[str], labels: np.ndarray, num_classes: int | None) -> ImageList:
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    return ImageList(paths, labels, tuple(map(str, range(num_classes))))


def _read_listing(path: str, root: str, num_classes: int | None, check_files: bool, confine_to: str | None,
                  problems: list[str]) -> tuple[Sequence[str], np.ndarray]:
    """Paths and labels of a JSON listing or (any other name) a list; its problems go to ``problems``."""
    problems.extend(confine_paths([("listing", path)], confine_to)[1])
    if not path.endswith(".json"):
        return _read_list(path, root, num_classes, check_files, confine_to, problems)
    image_dir = path.removesuffix(".json")
    read = read_images_array(path, lambda chunks: _collect(chunks, path, image_dir, num_classes, check_files,
                                                           confine_to), problems, entry_form=_ENTRY_FORM)
    if read is None:
        return [], np.empty(0, np.int64)
    paths, labels, found = read
    problems.extend(found)
    return paths, labels


def _collect(chunks: Iterable[list], path: str, image_dir: str, num_classes: int | None, check_files: bool,
             confine_to: str | None) -> tuple[PackedPaths, np.ndarray, list[str]]:
    """Paths and labels of the valid entries, and a problem for every invalid, duplicate (or missing) one."""
    problems: list[str] = []
    classes = _ClassIds(num_classes)
    folders, label_of = classes.folders, classes.labels
    packer, hashes, paths = PathPacker(), array("q"), []  # the paths read, their hashes, this chunk's paths
    prefix = os.path.join(image_dir, "")  # what the paths in ``paths`` are relative to
    labels: list[int] = []
    skipped: list[int] = []
    index = -1
    for entries in chunks:
        for entry in entries:
            index += 1
            try:  # the common case inline: a known class id and a plain file name
                image_id, class_id = entry["image_id"], entry["class_id"]
                valid = (type(class_id) in _CLASS_ID_TYPES and class_id in folders and type(image_id) is str
                         and image_id not in _NOT_FILE_NAMES and "/" not in image_id and "\\" not in image_id)
            except (KeyError, TypeError):
                valid = False
            if not valid:
                wrong = _entry_problem(entry, classes)
                if wrong:
                    problems.append(f"{path}: images[{index}]: {wrong}")
                    skipped.append(index)
                    continue
            paths.append(folders[class_id] + image_id)
            labels.append(label_of[class_id])
        pack_block(paths, packer, hashes, prefix)
    paths = packer.packed()
    if index < 0:
        problems.append(f'{path}: no images listed ("images" is empty)')
    entry_index = _entry_indices(skipped)
    for position, first in duplicate_paths(paths, np.frombuffer(hashes, np.int64)):
        problems.append(f"{path}: images[{entry_index(position)}]: duplicate of images[{entry_index(first)}] "
                        f"({paths[position]})")
    if check_files or confine_to is not None:
        located, outside = confine_paths([(f"{path}: images[{entry_index(i)}]", p) for i, p in enumerate(paths)],
                                    confine_to)
        missing = missing_file_problems(located, image_dir, f"images must be under {image_dir}/<class_id>/"
                                         ) if check_files else []
        problems.extend(outside + missing)
    return paths, np.array(labels, dtype=np.int64), problems


class _ClassIds:
    """Class ids as written in a listing -> their image folder under the split's folder (with a trailing
    separator) and label."""

    def __init__(self, num_classes: int | None) -> None:
        self.num_classes = num_classes
        self.folders: dict[int | str, str] = {}
        self.labels: dict[int | str, int] = {}

    def add(self, class_id: Any) -> str | None:
        """Parse a new class id; what is wrong with it, or None (then it is in ``folders`` and ``labels``)."""
        if type(class_id) is str and _DIGITS.fullmatch(class_id):
            label = int(class_id)
        elif type(class_id) is int:
            label = class_id
        else:
            return f"class_id must be an integer or a string of digits, got {describe(class_id)}"
        if label < 0:
            return f"class_id {describe(class_id)} is negative"
        if self.num_classes is not None and label >= self.num_classes:
            return (f"class_id {describe(class_id)} is out of range 0..{self.num_classes - 1} "
                    "(pass num_classes=... if this release has more classes)")
        self.folders[class_id] = os.path.join(str(class_id), "")
        self.labels[class_id] = label
        return None


def _entry_problem(entry: Any, classes: _ClassIds) -> str | None:
    """What is wrong with an entry, or None (a new class id is then added to ``classes``)."""
    if not isinstance(entry, dict):
        return f"expected an object {_ENTRY_FORM}, got {describe(entry)}"
    missing = [key for key in ("image_id", "class_id") if key not in entry]
    if missing:
        return f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
    image_id, class_id = entry["image_id"], entry["class_id"]
    found = []
    if type(image_id) is not str or image_id in _NOT_FILE_NAMES or "/" in image_id or "\\" in image_id:
        found.append(f"image_id must be a file name (a non-empty string without '/' or '\\'), "
                     f"got {describe(image_id)}")
    if not (type(class_id) in _CLASS_ID_TYPES and class_id in classes.folders):
        found.append(classes.add(class_id))
    return "; ".join(filter(None, found)) or None


def _entry_indices(skipped: list[int]):
    """Map a position among the kept entries to its index in the ``"images"`` array."""
    shifted = np.asarray(skipped, dtype=np.int64) - np.arange(len(skipped))
    return lambda position: position + int(np.searchsorted(shifted, position, side="right"))


def _read_list(list_path: str, root: str, num_classes: int | None, check_files: bool, confine_to: str | None,
               problems: list[str]) -> tuple[Sequence[str], np.ndarray]:
    """Paths and class-id labels of a ``path label`` list; its problems go to ``problems``."""
    paths, labels, found = parse_list(list_path, root, check_files, confine_to)
    problems.extend(found)
    if num_classes is not None:
        for position in np.flatnonzero(labels >= num_classes).tolist():
            problems.append(f"{list_path}: {paths[position]}: label {labels[position]} is out of range "
                            f"0..{num_classes - 1} (pass num_classes=... if this release has more classes)")
    return paths, labels
