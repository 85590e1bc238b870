"""Readers for ``path label`` lists (PaddleClas ``cls_label_path``) and ``root/<class>/<image>`` folders;
:func:`parse_list` is the one list reader under them and under gallery lists (:mod:`prodrec.data.gallery_list`)."""
from __future__ import annotations

import itertools
import os
from array import array
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from prodrec.config import SPLITS
from prodrec.data.dataset import (ImageList, RetrievalSplits, check_query_gallery, confine_paths, missing_file_problems,
                                  raise_problems, read_lines)
from prodrec.data.decode import printable_path
from prodrec.data.packed_paths import PackedPaths, PathPacker
from prodrec.utils import ProdrecError

__all__ = ["IMAGE_EXTENSIONS", "read_image_list", "read_image_folder", "read_list_splits", "read_folder_splits",
           "duplicate_paths", "existing_paths", "pack_block", "parse_list"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_MAX_LABEL = 2 ** 63 - 1  # labels are int64
_POSIX = os.sep == "/" and os.altsep is None  # elsewhere every name goes through os.path.normpath
_BLOCK_LINES = 1 << 16  # paths held as str objects while a list is read


def read_image_list(list_path: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                    check_files: bool = True, confine_to: str | os.PathLike | None = None) -> ImageList:
    """Read a PaddleClas-style list: one ``relative/path.jpg label`` per line (UTF-8).

    The label is the integer after the last whitespace, so paths may contain spaces. A line with a tab is
    split at tabs instead: ``path<TAB>label[<TAB>product name]`` (PP-ShiTu's gallery lists; the name is
    ignored here). Labels are item ids (integers >= 0), remapped to ``0..C-1`` in numeric order; ``classes``
    holds the original labels as strings. Blank lines are skipped.

    Args:
        list_path: The list file.
        image_root: Folder the paths are relative to; defaults to the list's folder.
        check_files: Also check that every listed image exists.
        confine_to: A folder every listed image must lie in after resolving symlinks and ``..``.

    Raises:
        FileNotFoundError: The list file does not exist.
        ValueError: The list is invalid (every problem listed with file:line).
    """
    list_path = existing_paths([list_path], "image list")[0]
    root = os.path.dirname(list_path) if image_root is None else os.path.abspath(os.fspath(image_root))
    confine_to = None if confine_to is None else os.path.abspath(os.fspath(confine_to))
    paths, labels, problems = parse_list(list_path, root, check_files, confine_to)
    raise_problems(problems, f"invalid image list {list_path}")
    return _numbered(paths, labels, np.unique(labels))


def read_image_folder(root: str | os.PathLike, *, check_files: bool = True,
                      confine_to_root: bool = False) -> ImageList:
    """Read ``root/<class>/<image>`` (extensions jpg, jpeg, png, bmp, webp in any case); classes sorted by name.

    Args:
        root: Folder with one sub-folder per class.
        check_files: Also check that every image entry is a regular file (not a broken link or a folder).
        confine_to_root: Every image must lie in ``root`` after resolving symlinks.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: No class folders, a class folder without images, or (with ``confine_to_root``) a symlink
            out of ``root``; all problems listed.
    """
    root = existing_paths([root], "image folder", os.path.isdir)[0]
    paths, names, problems = _scan_folder(root, check_files, root if confine_to_root else None)
    raise_problems(problems, f"invalid image folder {root}")
    return ImageList.from_names(paths, names)


def read_list_splits(root: str | os.PathLike, *, train: str = "train_list.txt", query: str = "query_list.txt",
                     gallery: str = "gallery_list.txt", check_files: bool = True,
                     confine_to_root: bool = False) -> RetrievalSplits:
    """Read train / query / gallery ``path label`` lists under ``root`` (image paths relative to ``root``; the
    line format is :func:`read_image_list`'s).

    Query and gallery share one label space: the union of their original labels, in numeric order.
    With ``confine_to_root``, the lists and every image must lie in ``root`` after resolving symlinks and ``..``.

    Raises:
        FileNotFoundError: A list file does not exist (all missing ones named).
        ValueError: A list is invalid (every problem in all three listed), or no query item has a gallery image.
    """
    root = os.path.abspath(os.fspath(root))
    list_paths = existing_paths([os.path.join(root, name) for name in (train, query, gallery)], "image list")
    confine_to = root if confine_to_root else None
    problems = confine_paths([(f"{split} list", path) for split, path in zip(SPLITS, list_paths)], confine_to)[1]
    raise_problems(problems, f"image lists under {root}")
    parsed: dict[str, tuple[Sequence[str], np.ndarray]] = {}
    for split, list_path in zip(SPLITS, list_paths):
        paths, labels, found = parse_list(list_path, root, check_files, confine_to)
        parsed[split] = (paths, labels)
        problems.extend(found)
    raise_problems(problems, f"invalid image lists under {root}")
    test_labels = np.union1d(parsed["query"][1], parsed["gallery"][1])
    splits = RetrievalSplits(train=_numbered(*parsed["train"], np.unique(parsed["train"][1])),
                             query=_numbered(*parsed["query"], test_labels),
                             gallery=_numbered(*parsed["gallery"], test_labels))
    return check_query_gallery(splits, f"image lists under {root}")


def read_folder_splits(root: str | os.PathLike, *, check_files: bool = True,
                       confine_to_root: bool = False) -> RetrievalSplits:
    """Read ``root/train``, ``root/query`` and ``root/gallery``, each laid out as ``<class>/<image>``.

    Query and gallery share one label space: the union of their class folder names, sorted.
    With ``confine_to_root``, every image must lie in ``root`` after resolving symlinks.

    Raises:
        FileNotFoundError: A split folder does not exist (all missing ones named).
        ValueError: A split is invalid (all problems listed), or no query item has a gallery image.
    """
    root = os.path.abspath(os.fspath(root))
    folders = existing_paths([os.path.join(root, split) for split in SPLITS],
                        f"split folder (expected {root}/{{train,query,gallery}}/<class>/<image>)", os.path.isdir)
    scanned, problems = {}, []
    for split, folder in zip(SPLITS, folders):
        paths, names, found = _scan_folder(folder, check_files, root if confine_to_root else None)
        scanned[split] = (paths, names)
        problems.extend(found)
    raise_problems(problems, f"invalid image folders under {root}")
    test_classes = sorted(set(scanned["query"][1]) | set(scanned["gallery"][1]))
    splits = RetrievalSplits(train=ImageList.from_names(*scanned["train"]),
                             query=ImageList.from_names(*scanned["query"], classes=test_classes),
                             gallery=ImageList.from_names(*scanned["gallery"], classes=test_classes))
    return check_query_gallery(splits, f"image folders under {root}")


def parse_list(list_path: str, root: str, check_files: bool, confine_to: str | None, *,
               entry: Optional[Callable[[str, bool], tuple[str, Any]]] = None,
               outside_fix: str = "turn confinement off") -> tuple[PackedPaths, Any, list[str]]:
    """Absolute paths (packed), labels and the problems found in one list file (read a line at a time): the one
    reader of ``path label``-style lists (blank lines, UTF-8, tabs, duplicates, confinement, missing images).

    ``entry(stripped line, has a tab)`` returns a line's image name and value, or raises ValueError saying
    what is wrong; the default reads ``path label`` with an integer item id (labels as int64), another
    keeps its values in a list (:func:`read_gallery_list`'s ``(label, product name)``). ``outside_fix`` ends the
    message about paths outside ``confine_to``.
    """
    items = entry is None
    entry = entry or _entry
    packer, hashes = PathPacker(), array("q")  # the paths read and the hash of each as read (relative or whole)
    block, whole = [], False  # the paths being read, relative to root; whole (and ``whole`` set) if outside it
    labels, numbers = array("q") if items else [], array("q")  # label and line number of each path
    problems: list[tuple[int, str]] = []  # (line, problem), sorted by line at the end
    prefix = os.path.join(root, "")
    for number, line in enumerate(_stream_lines(list_path), start=1):
        text = line.strip()
        fields = text.rsplit(maxsplit=1) if items else ()
        if len(fields) == 2 and fields[1].isdecimal() and len(fields[1]) < 19 and "\t" not in line:
            name, value = fields[0], int(fields[1])  # the common case inline: what _entry makes of it
        elif not text:
            continue
        else:
            try:
                name, value = entry(text, "\t" in line)
            except ValueError as error:
                problems.append((number, f"{list_path}:{number}: {error}"))
                continue
        if not _is_normal(name):
            name = os.path.normpath(os.path.join(root, name))
            if name.startswith(prefix):
                name = name[len(prefix):]
            else:
                whole = True
        block.append(name)
        labels.append(value)
        numbers.append(number)
        if len(block) == _BLOCK_LINES:
            pack_block(block, packer, hashes, prefix, whole=whole)
            whole = False
    pack_block(block, packer, hashes, prefix, whole=whole)
    paths = packer.packed()
    numbers = np.frombuffer(numbers, np.int64)
    labels = np.frombuffer(labels, np.int64).copy() if items else labels
    repeated = duplicate_paths(paths, np.frombuffer(hashes, np.int64))
    if repeated:
        lines = numbers.tolist()
        wanted = {lines[position] for position, _ in repeated}
        names = {number: entry(line.strip(), "\t" in line)[0]  # the duplicates' names as written
                 for number, line in enumerate(_stream_lines(list_path), start=1) if number in wanted}
        problems.extend((lines[position], f"{list_path}:{lines[position]}: duplicate image {names[lines[position]]} "
                                          f"(first listed on line {lines[first]})") for position, first in repeated)
        problems.sort(key=lambda problem: problem[0])
        keep = np.ones(len(paths), dtype=bool)
        keep[[position for position, _ in repeated]] = False
        paths = PackedPaths(itertools.compress(paths, keep.tolist()))
        labels = labels[keep] if items else list(itertools.compress(labels, keep.tolist()))
        numbers = numbers[keep]
    found = [problem for _, problem in problems]
    if not paths and not found:
        found.append(f"{list_path}: no images listed")
    if check_files or confine_to is not None:
        located, outside = confine_paths([(f"{list_path}:{number}", path) for number, path in zip(numbers.tolist(), paths)],
                                    confine_to, fix=outside_fix)
        found.extend(outside)
        if check_files:
            found.extend(missing_file_problems(located, root, "paths are relative to the image root "
                                                               "(the list's folder unless image_root is set)"))
    return paths, labels, found


def _entry(text: str, tabbed: bool) -> tuple[str, int]:
    """The image name and label of a stripped, non-blank list line; ValueError saying what is wrong."""
    if tabbed:
        fields = [field.strip() for field in text.split("\t")]
        if len(fields) not in (2, 3) or not all(fields[:2]):
            raise ProdrecError(f"expected 'path<TAB>label[<TAB>product name]', got {text!r}")
    else:
        fields = text.rsplit(maxsplit=1)
        if len(fields) != 2:
            raise ProdrecError(f"expected 'relative/path label', got {text!r}")
    name, label = fields[:2]
    try:
        value = int(label)
    except ValueError:
        hint = (" (a product name after the label needs tab-separated fields: path<TAB>label<TAB>name)"
                if not tabbed and len(text.split()) > 2 else "")
        raise ProdrecError(f"the label must be an integer, got {label!r}{hint}") from None
    if value < 0:
        raise ProdrecError(f"negative label {value}; labels are item ids >= 0 (remove lines that mark junk or "
                           "distractor images with a negative id)")
    if value > _MAX_LABEL:
        raise ProdrecError(f"label {value} is too large; labels are item ids below 2**63")
    return name, value


def _is_normal(name: str) -> bool:
    """Whether ``root/name`` is already what ``os.path.normpath`` makes of it (False may be a false alarm)."""
    return (_POSIX and name[0] not in "./" and name[-1] != "/" and "/." not in name and "//" not in name)


def _stream_lines(path: str) -> Iterator[str]:
    """The lines of a UTF-8 listing, one at a time; on a non-UTF-8 byte, the error naming every such line."""
    try:
        with open(path, encoding="utf-8-sig") as file:
            yield from file
    except UnicodeDecodeError:
        read_lines(path)  # raises a ValueError naming every line that is not UTF-8
        raise


def pack_block(block: list[str], packer: PathPacker, hashes: array, prefix: str, *, whole: bool = False) -> None:
    """Move the paths of ``block`` (relative to ``prefix``; with ``whole``, absolute ones are whole) to ``packer``
    and their hashes as written to ``hashes`` (a whole path lies outside ``prefix``: never equal to a relative
    one)."""
    hashes.extend(map(hash, block))
    if whole:
        packer.extend([path if os.path.isabs(path) else prefix + path for path in block])
    else:
        packer.extend(block, prefix)
    block.clear()


def duplicate_paths(items: Sequence[str], hashes: np.ndarray) -> list[tuple[int, int]]:
    """``(position, position of its first occurrence)`` of every repeated item, in order.

    Sorting the items' hashes (equal items, equal hashes) finds the candidates without a set of millions of strings.
    """
    order = np.argsort(hashes)
    hashes = hashes[order]
    same = np.flatnonzero(hashes[1:] == hashes[:-1])
    candidates = np.unique(np.concatenate([order[same], order[same + 1]]))
    first: dict[str, int] = {}
    repeated = []
    for position in candidates.tolist():
        earlier = first.setdefault(items[position], position)
        if earlier != position:
            repeated.append((position, earlier))
    return repeated


def _numbered(paths: Sequence[str], labels: np.ndarray, label_space: np.ndarray) -> ImageList:
    """A listing whose label ``i`` is item id ``label_space[i]`` (sorted, holding every one of ``labels``)."""
    return ImageList(paths, np.searchsorted(label_space, labels), tuple(map(str, label_space.tolist())))


def _scan_folder(root: str, check_files: bool, confine_to: str | None) -> tuple[list[str], list[str], list[str]]:
    """Absolute image paths, their class folder names and the problems found under ``root``."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        return [], [], [f"{root}: no class folders; expected {root}/<class>/<image>"]
    paths: list[str] = []
    names: list[str] = []
    problems: list[str] = []
    for name in classes:
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        if not files:
            problems.append(f"{printable_path(folder)}: no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
        for file in files:
            path = os.path.join(folder, file)
            if check_files and not os.path.isfile(path):
                problems.append(f"{printable_path(path)}: not a regular file (a broken link or a folder?)")
            paths.append(path)
            names.append(name)
    problems.extend(confine_paths([("image", path) for path in paths], confine_to)[1])
    return paths, names, problems


def existing_paths(paths: list, what: str, exists=os.path.isfile) -> list[str]:
    """Absolute paths; FileNotFoundError naming every one for which ``exists`` is false."""
    paths = [os.path.abspath(os.fspath(path)) for path in paths]
    missing = [path for path in paths if not exists(path)]
    if missing:
        raise FileNotFoundError(f"{what} not found: {', '.join(missing)}")
    return paths
