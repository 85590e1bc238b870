"""Detection sets: images with product boxes, read from COCO JSON or SKU-110K CSV, and written as COCO.

Boxes are ``x1, y1, x2, y2`` pixels (float32). A box that is not finite, has no area, is inverted, or lies
outside its image (by more than one pixel) is a bad box: it is reported with its file and annotation id or
line (``on_bad_box="error"``, the default, lists them all) or skipped and counted (``"skip"``), as bad
images are. Boxes within a pixel of the border are clipped to it. Images must exist.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from prodrec.data.dataset import raise_problems
from prodrec.data.lists import existing_paths
from prodrec.utils import ProdrecError, atomic_write

__all__ = ["BoxSet", "BAD_BOX_POLICIES", "read_coco", "read_sku110k", "write_coco", "PRODUCT_CATEGORY"]

BAD_BOX_POLICIES = ("error", "skip")
PRODUCT_CATEGORY = "product"


@dataclass(frozen=True)
class BoxSet:
    """Images (absolute paths, ``(width, height)``) with their boxes ``[n, 4]`` and each box's product label
    (None when the annotation has none); ``skipped_boxes`` counts bad boxes left out."""

    paths: Tuple[str, ...]
    sizes: Tuple[Tuple[int, int], ...]
    boxes: Tuple[np.ndarray, ...]
    products: Tuple[Tuple[Optional[str], ...], ...]
    skipped_boxes: int = 0
    problems: Tuple[str, ...] = field(default=(), repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_boxes(self) -> int:
        return sum(len(boxes) for boxes in self.boxes)


class _Collector:
    """Images in order, their boxes, and the bad boxes found."""

    def __init__(self, on_bad_box: str) -> None:
        if on_bad_box not in BAD_BOX_POLICIES:
            raise ProdrecError(f"on_bad_box must be one of {BAD_BOX_POLICIES}, got {on_bad_box!r}")
        self.on_bad_box, self.problems = on_bad_box, []
        self.images: Dict[str, Tuple[int, int]] = {}
        self.boxes: Dict[str, List[Tuple[List[float], Optional[str]]]] = {}

    def image(self, path: str, width: int, height: int) -> None:
        self.images.setdefault(path, (width, height))
        self.boxes.setdefault(path, [])

    def box(self, path: str, box: Sequence[float], product: Optional[str], where: str) -> None:
        width, height = self.images[path]
        problem = _box_problem(box, width, height)
        if problem:
            self.problems.append(f"{where}: box {list(box)} in {os.path.basename(path)} ({width}x{height}): {problem}")
            return
        x1, y1, x2, y2 = (float(v) for v in box)
        self.boxes[path].append(([max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)], product))

    def result(self, what: str) -> BoxSet:
        existing_paths(list(self.images), f"{what}: images")
        if self.on_bad_box == "error":
            raise_problems(self.problems, f"{what}: bad boxes (on_bad_box='skip' leaves them out and counts them)")
        paths = tuple(self.images)
        return BoxSet(paths=paths, sizes=tuple(self.images[p] for p in paths),
                      boxes=tuple(np.array([b for b, _ in self.boxes[p]], np.float32).reshape(-1, 4) for p in paths),
                      products=tuple(tuple(label for _, label in self.boxes[p]) for p in paths),
                      skipped_boxes=len(self.problems), problems=tuple(self.problems))


def _box_problem(box: Sequence[float], width: int, height: int) -> Optional[str]:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return "not four numbers"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "not finite"
    if x2 <= x1 or y2 <= y1:
        return "zero area" if x2 == x1 or y2 == y1 else "inverted (x2 < x1 or y2 < y1)"
    if x1 < -1 or y1 < -1 or x2 > width + 1 or y2 > height + 1:
        return "outside the image"
    return None


def read_coco(annotations: Union[str, os.PathLike], images: Union[str, os.PathLike], *,
              on_bad_box: str = "error") -> BoxSet:
    """A COCO detection file (``images``, ``annotations`` with ``bbox`` = ``[x, y, w, h]``; every category
    counts as a product) with its images under ``images``; an annotation's ``product`` is its label."""
    path = existing_paths([annotations], "COCO annotation file")[0]
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProdrecError(f"{path} is not a JSON file ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ProdrecError(f"{path} is not a COCO detection file: it needs 'images' and 'annotations' lists")
    collector, by_id, problems = _Collector(on_bad_box), {}, []
    for number, image in enumerate(data["images"]):
        try:
            full = os.path.normpath(os.path.join(os.path.abspath(images), image["file_name"]))
            collector.image(full, int(image["width"]), int(image["height"]))
            by_id[image["id"]] = full
        except (KeyError, TypeError, ValueError):
            problems.append(f"{path}: images[{number}] needs id, file_name, width and height")
    for number, annotation in enumerate(data["annotations"]):
        where = f"{path}: annotation {annotation.get('id', number) if isinstance(annotation, dict) else number}"
        if not isinstance(annotation, dict) or annotation.get("image_id") not in by_id \
                or not isinstance(annotation.get("bbox"), list) or len(annotation["bbox"]) != 4:
            problems.append(f"{where}: needs an image_id listed in 'images' and a bbox [x, y, w, h]")
            continue
        x, y, w, h = annotation["bbox"]
        corners = [x, y, x + w, y + h] if all(isinstance(v, (int, float)) for v in (x, y, w, h)) else [x, y, w, h]
        product = annotation.get("product")
        collector.box(by_id[annotation["image_id"]], corners, None if product is None else str(product), where)
    raise_problems(problems, f"invalid COCO file {path}")
    return collector.result(f"COCO file {path}")


def read_sku110k(annotations: Union[str, os.PathLike], images: Union[str, os.PathLike], *,
                 on_bad_box: str = "error") -> BoxSet:
    """SKU-110K's CSV: ``image_name,x1,y1,x2,y2,class,image_width,image_height`` lines (no header)."""
    path = existing_paths([annotations], "SKU-110K annotation file")[0]
    collector, problems = _Collector(on_bad_box), []
    with open(path, newline="", encoding="utf-8") as stream:
        for number, row in enumerate(csv.reader(stream), start=1):
            if not row or (number == 1 and row[0] == "image_name"):
                continue
            try:
                name, x1, y1, x2, y2, _, width, height = row
                full = os.path.normpath(os.path.join(os.path.abspath(images), name))
                collector.image(full, int(width), int(height))
            except ValueError:
                problems.append(f"{path}:{number}: expected image_name,x1,y1,x2,y2,class,image_width,image_height; "
                                f"got {','.join(row)[:100]!r}")
                continue
            collector.box(full, [x1, y1, x2, y2], None, f"{path}:{number}")
    raise_problems(problems, f"invalid SKU-110K file {path}")
    return collector.result(f"SKU-110K file {path}")


def write_coco(path: Union[str, os.PathLike], boxes: BoxSet) -> Path:
    """Write ``boxes`` as one-category COCO JSON (file names relative to the file's folder), atomically."""
    path = Path(path)
    folder = path.parent.resolve()
    images, annotations = [], []
    for number, (image, (width, height), rows, labels) in enumerate(
            zip(boxes.paths, boxes.sizes, boxes.boxes, boxes.products), start=1):
        images.append({"id": number, "file_name": os.path.relpath(image, folder), "width": width, "height": height})
        for (x1, y1, x2, y2), label in zip(rows.tolist(), labels):
            annotation = {"id": len(annotations) + 1, "image_id": number, "category_id": 1,
                          "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            if label is not None:
                annotation["product"] = label
            annotations.append(annotation)
    text = json.dumps({"images": images, "annotations": annotations,
                       "categories": [{"id": 1, "name": PRODUCT_CATEGORY}]})
    return atomic_write(path, lambda temporary: Path(temporary).write_text(text, encoding="utf-8"))
