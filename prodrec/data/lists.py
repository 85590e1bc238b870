"""Readers for ``path label`` lists (PaddleClas ``cls_label_path``) and ``root/<class>/<image>`` folders."""
from __future__ import annotations

import os

from prodrec.data.dataset import (ImageList, RetrievalSplits, _check_query_gallery, _confine, _missing_file_problems,
                                  _printable, _raise_problems, _read_lines)

__all__ = ["IMAGE_EXTENSIONS", "read_image_list", "read_image_folder", "read_list_splits", "read_folder_splits"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLITS = ("train", "query", "gallery")


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
    list_path = _existing([list_path], "image list")[0]
    root = os.path.dirname(list_path) if image_root is None else os.path.abspath(os.fspath(image_root))
    confine_to = None if confine_to is None else os.path.abspath(os.fspath(confine_to))
    paths, labels, problems = _parse_list(list_path, root, check_files, confine_to)
    _raise_problems(problems, f"invalid image list {list_path}")
    classes = [str(label) for label in sorted(set(labels))]
    return ImageList.from_names(paths, [str(label) for label in labels], classes=classes)


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
    root = _existing([root], "image folder", os.path.isdir)[0]
    paths, names, problems = _scan_folder(root, check_files, root if confine_to_root else None)
    _raise_problems(problems, f"invalid image folder {root}")
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
    list_paths = _existing([os.path.join(root, name) for name in (train, query, gallery)], "image list")
    confine_to = root if confine_to_root else None
    problems = _confine([(f"{split} list", path) for split, path in zip(_SPLITS, list_paths)], confine_to)[1]
    _raise_problems(problems, f"image lists under {root}")
    parsed: dict[str, tuple[list[str], list[int]]] = {}
    for split, list_path in zip(_SPLITS, list_paths):
        paths, labels, found = _parse_list(list_path, root, check_files, confine_to)
        parsed[split] = (paths, labels)
        problems.extend(found)
    _raise_problems(problems, f"invalid image lists under {root}")
    test_labels = sorted(set(parsed["query"][1]) | set(parsed["gallery"][1]))

    def listing(split: str, classes: list[int]) -> ImageList:
        paths, labels = parsed[split]
        return ImageList.from_names(paths, [str(label) for label in labels],
                                    classes=[str(label) for label in classes])

    splits = RetrievalSplits(train=listing("train", sorted(set(parsed["train"][1]))),
                             query=listing("query", test_labels), gallery=listing("gallery", test_labels))
    return _check_query_gallery(splits, f"image lists under {root}")


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
    folders = _existing([os.path.join(root, split) for split in _SPLITS],
                        f"split folder (expected {root}/{{train,query,gallery}}/<class>/<image>)", os.path.isdir)
    scanned, problems = {}, []
    for split, folder in zip(_SPLITS, folders):
        paths, names, found = _scan_folder(folder, check_files, root if confine_to_root else None)
        scanned[split] = (paths, names)
        problems.extend(found)
    _raise_problems(problems, f"invalid image folders under {root}")
    test_classes = sorted(set(scanned["query"][1]) | set(scanned["gallery"][1]))
    splits = RetrievalSplits(train=ImageList.from_names(*scanned["train"]),
                             query=ImageList.from_names(*scanned["query"], classes=test_classes),
                             gallery=ImageList.from_names(*scanned["gallery"], classes=test_classes))
    return _check_query_gallery(splits, f"image folders under {root}")


def _parse_list(list_path: str, root: str, check_files: bool,
                confine_to: str | None) -> tuple[list[str], list[int], list[str]]:
    """Absolute paths, integer labels and the problems found in one list file."""
    paths: list[str] = []
    labels: list[int] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    line_of_path: list[int] = []
    for number, line in enumerate(_read_lines(list_path), start=1):
        if not line.strip():
            continue
        where = f"{list_path}:{number}"
        if "\t" in line:
            fields = [field.strip() for field in line.strip().split("\t")]
            if len(fields) not in (2, 3) or not all(fields[:2]):
                problems.append(f"{where}: expected 'path<TAB>label[<TAB>product name]', got {line.strip()!r}")
                continue
            hint = ""
        else:
            fields = line.strip().rsplit(maxsplit=1)
            if len(fields) != 2:
                problems.append(f"{where}: expected 'relative/path label', got {line.strip()!r}")
                continue
            hint = (" (a product name after the label needs tab-separated fields: path<TAB>label<TAB>name)"
                    if len(line.split()) > 2 else "")
        name, label = fields[:2]
        try:
            value = int(label)
        except ValueError:
            problems.append(f"{where}: the label must be an integer, got {label!r}{hint}")
            continue
        if value < 0:
            problems.append(f"{where}: negative label {value}; labels are item ids >= 0 (remove lines that mark "
                            "junk or distractor images with a negative id)")
            continue
        path = os.path.normpath(os.path.join(root, name))
        if path in first_line:
            problems.append(f"{where}: duplicate image {name} (first listed on line {first_line[path]})")
            continue
        first_line[path] = number
        paths.append(path)
        labels.append(value)
        line_of_path.append(number)
    if not first_line and not problems:
        problems.append(f"{list_path}: no images listed")
    located, outside = _confine([(f"{list_path}:{number}", path) for number, path in zip(line_of_path, paths)],
                                confine_to)
    problems.extend(outside)
    if check_files:
        problems.extend(_missing_file_problems(located, root, "paths are relative to the image root "
                                                              "(the list's folder unless image_root is set)"))
    return paths, labels, problems


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
            problems.append(f"{_printable(folder)}: no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
        for file in files:
            path = os.path.join(folder, file)
            if check_files and not os.path.isfile(path):
                problems.append(f"{_printable(path)}: not a regular file (a broken link or a folder?)")
            paths.append(path)
            names.append(name)
    problems.extend(_confine([("image", path) for path in paths], confine_to)[1])
    return paths, names, problems


def _existing(paths: list, what: str, exists=os.path.isfile) -> list[str]:
    """Absolute paths; FileNotFoundError naming every one for which ``exists`` is false."""
    paths = [os.path.abspath(os.fspath(path)) for path in paths]
    missing = [path for path in paths if not exists(path)]
    if missing:
        raise FileNotFoundError(f"{what} not found: {', '.join(missing)}")
    return paths
