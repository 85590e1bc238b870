"""Readers for ``path label`` lists (PaddleClas ``cls_label_path``) and ``root/<class>/<image>`` folders."""
from __future__ import annotations

import os

from prodrec.data.dataset import (ImageList, RetrievalSplits, _check_query_gallery, _missing_file_problems,
                                  _raise_problems, _read_lines)

__all__ = ["IMAGE_EXTENSIONS", "read_image_list", "read_image_folder", "read_list_splits", "read_folder_splits"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_SPLITS = ("train", "query", "gallery")


def read_image_list(list_path: str | os.PathLike, *, image_root: str | os.PathLike | None = None,
                    check_files: bool = True) -> ImageList:
    """Read a PaddleClas-style list: one ``relative/path.jpg label`` per line.

    The label is the integer after the last whitespace (paths may contain spaces); blank lines are skipped.
    Labels are remapped to ``0..C-1`` in numeric order; ``classes`` holds the original labels as strings.

    Args:
        list_path: The list file.
        image_root: Folder the paths are relative to; defaults to the list's folder.
        check_files: Also check that every listed image exists.

    Raises:
        FileNotFoundError: The list file does not exist.
        ValueError: The list is invalid (every problem listed with file:line).
    """
    list_path = _existing([list_path], "image list")[0]
    root = os.path.dirname(list_path) if image_root is None else os.path.abspath(os.fspath(image_root))
    paths, labels, problems = _parse_list(list_path, root, check_files)
    _raise_problems(problems, f"invalid image list {list_path}")
    classes = [str(label) for label in sorted(set(labels))]
    return ImageList.from_names(paths, [str(label) for label in labels], classes=classes)


def read_image_folder(root: str | os.PathLike, *, check_files: bool = True) -> ImageList:
    """Read ``root/<class>/<image>`` (extensions jpg, jpeg, png, bmp, webp in any case); classes sorted by name.

    Args:
        root: Folder with one sub-folder per class.
        check_files: Also check that every image entry is a regular file (not a broken link or a folder).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: No class folders, or a class folder without images (all problems listed).
    """
    root = _existing([root], "image folder", os.path.isdir)[0]
    paths, names, problems = _scan_folder(root, check_files)
    _raise_problems(problems, f"invalid image folder {root}")
    return ImageList.from_names(paths, names)


def read_list_splits(root: str | os.PathLike, *, train: str = "train_list.txt", query: str = "query_list.txt",
                     gallery: str = "gallery_list.txt", check_files: bool = True) -> RetrievalSplits:
    """Read train / query / gallery ``path label`` lists under ``root`` (image paths relative to ``root``).

    Query and gallery share one label space: the union of their original labels, in numeric order.

    Raises:
        FileNotFoundError: A list file does not exist (all missing ones named).
        ValueError: A list is invalid (every problem in all three listed), or no query item has a gallery image.
    """
    root = os.path.abspath(os.fspath(root))
    list_paths = _existing([os.path.join(root, name) for name in (train, query, gallery)], "image list")
    parsed, problems = {}, []
    for split, list_path in zip(_SPLITS, list_paths):
        paths, labels, found = _parse_list(list_path, root, check_files)
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


def read_folder_splits(root: str | os.PathLike, *, check_files: bool = True) -> RetrievalSplits:
    """Read ``root/train``, ``root/query`` and ``root/gallery``, each laid out as ``<class>/<image>``.

    Query and gallery share one label space: the union of their class folder names, sorted.

    Raises:
        FileNotFoundError: A split folder does not exist (all missing ones named).
        ValueError: A split is invalid (all problems listed), or no query item has a gallery image.
    """
    root = os.path.abspath(os.fspath(root))
    folders = _existing([os.path.join(root, split) for split in _SPLITS],
                        f"split folder (expected {root}/{{train,query,gallery}}/<class>/<image>)", os.path.isdir)
    scanned, problems = {}, []
    for split, folder in zip(_SPLITS, folders):
        paths, names, found = _scan_folder(folder, check_files)
        scanned[split] = (paths, names)
        problems.extend(found)
    _raise_problems(problems, f"invalid image folders under {root}")
    test_classes = sorted(set(scanned["query"][1]) | set(scanned["gallery"][1]))
    splits = RetrievalSplits(train=ImageList.from_names(*scanned["train"]),
                             query=ImageList.from_names(*scanned["query"], classes=test_classes),
                             gallery=ImageList.from_names(*scanned["gallery"], classes=test_classes))
    return _check_query_gallery(splits, f"image folders under {root}")


def _parse_list(list_path: str, root: str, check_files: bool) -> tuple[list[str], list[int], list[str]]:
    """Absolute paths, integer labels and the problems found in one list file."""
    paths: list[str] = []
    labels: list[int] = []
    problems: list[str] = []
    first_line: dict[str, int] = {}
    line_of_path: list[int] = []
    for number, line in enumerate(_read_lines(list_path), start=1):
        fields = line.strip().rsplit(maxsplit=1)
        if not fields:
            continue
        if len(fields) != 2:
            problems.append(f"{list_path}:{number}: expected 'relative/path label', got {line.strip()!r}")
            continue
        name, label = fields
        try:
            value = int(label)
        except ValueError:
            problems.append(f"{list_path}:{number}: the label must be an integer, got {label!r}")
            continue
        if name in first_line:
            problems.append(f"{list_path}:{number}: duplicate image {name} (first listed on line "
                            f"{first_line[name]})")
            continue
        first_line[name] = number
        paths.append(os.path.join(root, name))
        labels.append(value)
        line_of_path.append(number)
    if not first_line and not problems:
        problems.append(f"{list_path}: no images listed")
    if check_files:
        located = [(f"{list_path}:{number}", path) for number, path in zip(line_of_path, paths)]
        problems.extend(_missing_file_problems(located, root, "paths are relative to the image root "
                                                              "(the list's folder unless image_root is set)"))
    return paths, labels, problems


def _scan_folder(root: str, check_files: bool) -> tuple[list[str], list[str], list[str]]:
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
            problems.append(f"{folder}: no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
        for file in files:
            path = os.path.join(folder, file)
            if check_files and not os.path.isfile(path):
                problems.append(f"{path}: not a regular file (a broken link or a folder?)")
            paths.append(path)
            names.append(name)
    return paths, names, problems


def _existing(paths: list, what: str, exists=os.path.isfile) -> list[str]:
    """Absolute paths; FileNotFoundError naming every one for which ``exists`` is false."""
    paths = [os.path.abspath(os.fspath(path)) for path in paths]
    missing = [path for path in paths if not exists(path)]
    if missing:
        raise FileNotFoundError(f"{what} not found: {', '.join(missing)}")
    return paths
