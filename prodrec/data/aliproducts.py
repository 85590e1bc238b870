"""Reader for AliProducts: ``train.json`` / ``val.json`` with images under ``<split>/<class_id>/<image_id>``,
or PaddleClas ``path label`` lists of the same data.

Labels are the class ids themselves (label ``i`` is class id ``i``, ``classes[i] == str(i)``), so train and val
share one label space and a classifier head over ``num_classes`` outputs scores val directly.

The JSON listing is read in chunks of whole entries, each parsed by the stdlib ``json`` module, so a 2.5 M-entry
``train.json`` needs the final paths plus a few MB of chunk instead of millions of dicts at once. A file whose
``"images"`` array is not the first member (or that the chunks cannot cover exactly) is parsed whole.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator, Sequence

import numpy as np

from prodrec.data.dataset import (ImageList, RetrievalSplits, _check_query_gallery, _confine,
                                  _missing_file_problems, _raise_problems)
from prodrec.data.lists import _existing, _parse_list

__all__ = ["ALIPRODUCTS_NUM_CLASSES", "read_aliproducts", "read_aliproducts_splits"]

ALIPRODUCTS_NUM_CLASSES = 50030
CHUNK_CHARS = 1 << 21
_WS = r"[ \t\n\r]*"  # JSON whitespace (``\s`` would accept more)
_HEAD = re.compile(_WS + r"\{" + _WS + r'"images"' + _WS + ":" + _WS + r"\[")
_COMMA = re.compile(_WS + ",")
_DIGITS = re.compile(r"[0-9]+")
_DECODER = json.JSONDecoder()
_NOT_FILE_NAMES = frozenset({"", ".", ".."})
_CLASS_ID_TYPES = frozenset({int, str})  # exact types: True and 1.0 would hash like 1
_ENTRY_FORM = '{"image_id": "<file name>", "class_id": <integer or "digits">}'


class _NotChunkable(Exception):
    """The listing cannot be read in chunks; parse it whole."""


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
    _raise_problems(problems, f"invalid AliProducts listing {path}")
    return _image_list(paths, labels, num_classes)


def read_aliproducts_splits(root: str | os.PathLike, *, train: str = "train.json", val: str = "val.json",
                            num_classes: int | None = ALIPRODUCTS_NUM_CLASSES, check_files: bool = False,
                            confine_to_root: bool = False) -> RetrievalSplits:
    """AliProducts as train / query / gallery listings: query is val, gallery is train.

    Retrieval then ranks the training images for each val image (a hit is an image of its class); the
    classification accuracy on val is :func:`prodrec.classification.classification_accuracy` on ``query``.

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
    _raise_problems(problems, f"invalid AliProducts listings under {root}")
    if num_classes is None:
        num_classes = max(int(labels.max()) for _, labels in read) + 1
    train_list, val_list = (_image_list(paths, labels, num_classes) for paths, labels in read)
    splits = RetrievalSplits(train=train_list, query=val_list, gallery=train_list)
    return _check_query_gallery(splits, f"AliProducts listings {', '.join(listings)}")


def _locate(root: str | os.PathLike, listings: list[str], num_classes: Any) -> tuple[str, list[str]]:
    """The absolute root and listing paths (checked), after checking ``num_classes``."""
    if num_classes is not None and (type(num_classes) is not int or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    root = _existing([root], "AliProducts folder (with train.json, val.json, train/, val/)", os.path.isdir)[0]
    return root, _existing([os.path.join(root, name) for name in listings], "AliProducts listing")


def _image_list(paths: list[str], labels: np.ndarray, num_classes: int | None) -> ImageList:
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    return ImageList(paths, labels, tuple(map(str, range(num_classes))))


def _read_listing(path: str, root: str, num_classes: int | None, check_files: bool, confine_to: str | None,
                  problems: list[str]) -> tuple[list[str], np.ndarray]:
    """Paths and labels of a JSON listing or (any other name) a list; its problems go to ``problems``."""
    problems.extend(_confine([("listing", path)], confine_to)[1])
    if not path.endswith(".json"):
        return _read_list(path, root, num_classes, check_files, confine_to, problems)
    image_dir = path.removesuffix(".json")
    found: list[str] = []  # discarded if the chunked read gives up half-way
    try:
        read = _collect(_chunks(path), path, image_dir, num_classes, check_files, confine_to, found)
        problems.extend(found)
        return read
    except _NotChunkable:
        pass
    document = _load_whole(path, problems)
    if document is None:
        return [], np.empty(0, np.int64)
    return _collect([document], path, image_dir, num_classes, check_files, confine_to, problems)


def _load_whole(path: str, problems: list[str]) -> list | None:
    """The ``"images"`` array of ``path`` parsed in one piece, or None (with a problem) if there is none."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            document = json.load(file)
    except UnicodeDecodeError as error:
        problems.append(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})")
        return None
    except json.JSONDecodeError as error:
        problems.append(f"{path}: not valid JSON: {error}")
        return None
    images = document.get("images") if isinstance(document, dict) else None
    if isinstance(images, list):
        return images
    if not isinstance(document, dict):
        got = f"{_describe(document)} at the top level"
    elif "images" not in document:
        got = f'an object without "images" (keys {", ".join(map(repr, list(document)[:10]))})'
    else:
        got = f'"images": {_describe(images)}'
    problems.append(f'{path}: expected {{"images": [{_ENTRY_FORM}, ...]}}, got {got}')
    return None


def _chunks(path: str) -> Iterator[list]:
    """The ``"images"`` array of ``path`` as lists of entries, a chunk of whole entries at a time.

    A chunk ends at a ``}`` followed by a comma. If that ``}`` were inside a string or a nested value, the chunk
    (which starts at an entry) would not be valid JSON, so every chunk that parses holds whole entries.

    Raises:
        _NotChunkable: The file does not start with ``{"images": [``, or a chunk or its end does not parse.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as file:
            head = file.read(CHUNK_CHARS)
            start = _HEAD.match(head)
            if start is None:
                raise _NotChunkable
            buffer = head[start.end():]
            cut_before = False
            while more := file.read(CHUNK_CHARS):
                cut = _last_entry_end(buffer)
                if cut is not None:
                    yield json.loads(f"[{buffer[:cut[0]]}]")
                    buffer = buffer[cut[1]:]
                    cut_before = True
                buffer += more
        entries, end = _DECODER.raw_decode(f"[{buffer}")
        # A comma before an empty rest is a trailing comma; the rest must close the top-level object, with no
        # second "images" member.
        members = json.loads('{"images": null' + buffer[end - 1:], object_pairs_hook=lambda pairs: pairs)
        if (cut_before and not entries) or [key for key, _ in members].count("images") != 1:
            raise _NotChunkable
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _NotChunkable from None
    yield entries


def _last_entry_end(buffer: str) -> tuple[int, int] | None:
    """``(end of the last "}" followed by a comma, end of that comma)`` in ``buffer``, or None."""
    brace = buffer.rfind("}")
    while brace != -1:
        comma = _COMMA.match(buffer, brace + 1)
        if comma is not None:
            return brace + 1, comma.end()
        brace = buffer.rfind("}", 0, brace)
    return None


def _collect(chunks: Iterator[list] | Sequence[list], path: str, image_dir: str, num_classes: int | None,
             check_files: bool, confine_to: str | None, problems: list[str]) -> tuple[list[str], np.ndarray]:
    """Paths and labels of the valid entries; a problem for every invalid, duplicate (or missing) one."""
    classes = _ClassIds(image_dir, num_classes)
    folders, label_of = classes.folders, classes.labels
    paths: list[str] = []
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
    if index < 0:
        problems.append(f'{path}: no images listed ("images" is empty)')
    entry_index = _entry_indices(skipped)
    for position, first in _duplicates(paths):
        problems.append(f"{path}: images[{entry_index(position)}]: duplicate of images[{entry_index(first)}] "
                        f"({paths[position]})")
    if check_files or confine_to is not None:
        located, outside = _confine([(f"{path}: images[{entry_index(i)}]", p) for i, p in enumerate(paths)],
                                    confine_to)
        missing = _missing_file_problems(located, image_dir, f"images must be under {image_dir}/<class_id>/"
                                         ) if check_files else []
        problems.extend(outside + missing)
    return paths, np.array(labels, dtype=np.int64)


class _ClassIds:
    """Class ids as written in a listing -> their image folder (with a trailing separator) and label."""

    def __init__(self, image_dir: str, num_classes: int | None) -> None:
        self.image_dir = image_dir
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
            return f"class_id must be an integer or a string of digits, got {_describe(class_id)}"
        if label < 0:
            return f"class_id {_describe(class_id)} is negative"
        if self.num_classes is not None and label >= self.num_classes:
            return (f"class_id {_describe(class_id)} is out of range 0..{self.num_classes - 1} "
                    "(pass num_classes=... if this release has more classes)")
        self.folders[class_id] = os.path.join(self.image_dir, str(class_id), "")
        self.labels[class_id] = label
        return None


def _entry_problem(entry: Any, classes: _ClassIds) -> str | None:
    """What is wrong with an entry, or None (a new class id is then added to ``classes``)."""
    if not isinstance(entry, dict):
        return f"expected an object {_ENTRY_FORM}, got {_describe(entry)}"
    missing = [key for key in ("image_id", "class_id") if key not in entry]
    if missing:
        return f"missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
    image_id, class_id = entry["image_id"], entry["class_id"]
    found = []
    if type(image_id) is not str or image_id in _NOT_FILE_NAMES or "/" in image_id or "\\" in image_id:
        found.append(f"image_id must be a file name (a non-empty string without '/' or '\\'), "
                     f"got {_describe(image_id)}")
    if not (type(class_id) in _CLASS_ID_TYPES and class_id in classes.folders):
        found.append(classes.add(class_id))
    return "; ".join(filter(None, found)) or None


def _describe(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _entry_indices(skipped: list[int]):
    """Map a position among the kept entries to its index in the ``"images"`` array."""
    shifted = np.asarray(skipped, dtype=np.int64) - np.arange(len(skipped))
    return lambda position: position + int(np.searchsorted(shifted, position, side="right"))


def _duplicates(items: Sequence[str]) -> list[tuple[int, int]]:
    """``(position, position of its first occurrence)`` of every repeated item, in order.

    Sorting the items' hashes finds the candidates without a set of millions of strings.
    """
    hashes = np.fromiter(map(hash, items), dtype=np.int64, count=len(items))
    order = np.argsort(hashes)
    hashes.sort()
    same = np.flatnonzero(hashes[1:] == hashes[:-1])
    candidates = np.unique(np.concatenate([order[same], order[same + 1]]))
    first: dict[str, int] = {}
    repeated = []
    for position in candidates.tolist():
        earlier = first.setdefault(items[position], position)
        if earlier != position:
            repeated.append((position, earlier))
    return repeated


def _read_list(list_path: str, root: str, num_classes: int | None, check_files: bool, confine_to: str | None,
               problems: list[str]) -> tuple[list[str], np.ndarray]:
    """Paths and class-id labels of a ``path label`` list; its problems go to ``problems``."""
    paths, labels, found = _parse_list(list_path, root, check_files, confine_to)
    problems.extend(found)
    labels = np.array(labels, dtype=np.int64)
    if num_classes is not None:
        for position in np.flatnonzero(labels >= num_classes).tolist():
            problems.append(f"{list_path}: {paths[position]}: label {labels[position]} is out of range "
                            f"0..{num_classes - 1} (pass num_classes=... if this release has more classes)")
    return paths, labels
