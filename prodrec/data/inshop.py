"""Readers for DeepFashion In-shop Clothes Retrieval: its splits (``Eval/list_eval_partition.txt`` + ``img/``)
and its product boxes (``Anno/list_bbox_inshop.txt``)."""
from __future__ import annotations

import os

from prodrec.data.dataset import (ImageList, RetrievalSplits, check_query_gallery, confine_paths, missing_file_problems,
                                  raise_problems, read_lines)

__all__ = ["read_inshop", "read_inshop_boxes"]

_PARTITION_FILE = os.path.join("Eval", "list_eval_partition.txt")
_HEADER = ("image_name", "item_id", "evaluation_status")
_STATUSES = ("train", "query", "gallery")
_BBOX_FILE = os.path.join("Anno", "list_bbox_inshop.txt")
_BBOX_HEADER = ("image_name", "clothes_type", "pose_type", "x_1", "y_1", "x_2", "y_2")


def read_inshop(root: str | os.PathLike, *, check_files: bool = True, confine_to_root: bool = False) -> RetrievalSplits:
    """Read the In-shop train / query / gallery splits.

    Train labels are the sorted train item ids mapped to ``0..C-1``; query and gallery share one mapping
    over the test item ids. Every problem in the partition file is reported at once, with line numbers.

    Args:
        root: The folder that holds ``Eval/list_eval_partition.txt`` and the ``img/`` tree.
        check_files: Also check that every listed image exists.
        confine_to_root: The partition file and every image must lie in ``root`` after resolving symlinks and
            ``..`` (entries such as ``img/../../x.jpg`` or symlinks out are reported).

    Raises:
        FileNotFoundError: ``root`` or the partition file does not exist.
        ValueError: The partition file is invalid (all problems listed), or no query item has a gallery image.
    """
    root = os.path.abspath(os.fspath(root))
    partition = os.path.join(root, _PARTITION_FILE)
    if not os.path.isfile(partition):
        raise FileNotFoundError(
            f"DeepFashion In-shop partition file not found: {partition}. Expected layout: "
            f"<root>/{_PARTITION_FILE.replace(os.sep, '/')} and the images under <root>/img/...; "
            "pass the folder that holds Eval/ and img/ as root")
    confine_to = root if confine_to_root else None
    raise_problems(confine_paths([("partition file", partition)], confine_to)[1], "DeepFashion In-shop")
    lines = read_lines(partition)
    problems: list[str] = []

    declared = None
    try:
        declared = int(lines[0])
    except (IndexError, ValueError):
        problems.append(f"{partition}:1: expected the number of images, got {lines[0] if lines else ''!r}")
    if len(lines) < 2 or tuple(lines[1].split()) != _HEADER:
        header = lines[1] if len(lines) > 1 else ""
        problems.append(f"{partition}:2: expected the header {' '.join(_HEADER)!r}, got {header!r}")

    rows: dict[str, list[tuple[int, str, str]]] = {status: [] for status in _STATUSES}
    first_line: dict[str, int] = {}
    num_rows = 0
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        num_rows += 1
        if len(fields) != 3:
            problems.append(f"{partition}:{number}: expected 3 fields '{' '.join(_HEADER)}', "
                            f"got {len(fields)}: {line.strip()!r}")
            continue
        name, item, status = fields
        if status not in rows:
            problems.append(f"{partition}:{number}: unknown evaluation_status {status!r} "
                            f"(expected one of {', '.join(_STATUSES)})")
            continue
        path = os.path.normpath(os.path.join(root, name))
        if path in first_line:
            problems.append(f"{partition}:{number}: duplicate image {name} (first listed on line "
                            f"{first_line[path]})")
            continue
        first_line[path] = number
        rows[status].append((number, path, item))

    if declared is not None and declared != num_rows:
        problems.append(f"{partition}:1: says {declared} images but the file lists {num_rows} rows")
    for status, entries in rows.items():
        if not entries:
            problems.append(f"{partition}: no '{status}' rows (the {status} split is empty)")
    located, outside = confine_paths([(f"{partition}:{number}", path) for number, path in
                                 sorted((number, path) for split in rows.values() for number, path, _ in split)],
                                confine_to)
    problems.extend(outside)
    if check_files:
        problems.extend(missing_file_problems(located, root, "root must be the folder that holds Eval/ and img/"))
    raise_problems(problems, f"invalid DeepFashion In-shop partition {partition}")

    def listing(entries: list[tuple[int, str, str]], classes: list[str] | None = None) -> ImageList:
        return ImageList.from_names([path for _, path, _ in entries], [item for _, _, item in entries],
                                    classes=classes)

    test_items = sorted({item for status in ("query", "gallery") for _, _, item in rows[status]})
    splits = RetrievalSplits(train=listing(rows["train"]), query=listing(rows["query"], test_items),
                             gallery=listing(rows["gallery"], test_items))
    return check_query_gallery(splits, f"DeepFashion In-shop partition {partition}")


def read_inshop_boxes(root: str | os.PathLike) -> dict[str, tuple[int, int, int, int]]:
    """Boxes of DeepFashion In-shop's ``Anno/list_bbox_inshop.txt`` (also written for synthetic sets).

    Returns:
        ``{image_name: (x1, y1, x2, y2)}``, keyed by the file's relative image names (``img/...jpg``).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is malformed (every problem listed with its line).
    """
    path = os.path.join(os.path.abspath(os.fspath(root)), _BBOX_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"In-shop box file not found: {path}; pass the folder that holds Anno/ as root")
    lines = read_lines(path)
    problems, boxes, first_line = [], {}, {}
    if not lines or not lines[0].strip().isdigit():
        problems.append(f"{path}:1: expected the number of images, got {lines[0] if lines else ''!r}")
    if len(lines) < 2 or tuple(lines[1].split()) != _BBOX_HEADER:
        problems.append(f"{path}:2: expected the header {' '.join(_BBOX_HEADER)!r}, got "
                        f"{lines[1] if len(lines) > 1 else ''!r}")
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(_BBOX_HEADER) or not all(f.isdigit() for f in fields[3:]):
            problems.append(f"{path}:{number}: expected 'image_name clothes_type pose_type x_1 y_1 x_2 y_2' with "
                            f"integer coordinates, got {line.strip()!r}")
            continue
        x1, y1, x2, y2 = (int(f) for f in fields[3:])
        if x2 <= x1 or y2 <= y1:
            problems.append(f"{path}:{number}: empty box {(x1, y1, x2, y2)} (needs x_1 < x_2 and y_1 < y_2)")
        elif fields[0] in first_line:
            problems.append(f"{path}:{number}: duplicate image {fields[0]} (first listed on line {first_line[fields[0]]})")
        else:
            first_line[fields[0]] = number
            boxes[fields[0]] = (x1, y1, x2, y2)
    if lines and lines[0].strip().isdigit() and int(lines[0]) != len(boxes) and not problems:
        problems.append(f"{path}:1: says {int(lines[0])} images but the file lists {len(boxes)}")
    raise_problems(problems, f"invalid In-shop box file {path}")
    return boxes
