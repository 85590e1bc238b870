"""A deterministic synthetic product data set written in the DeepFashion In-shop layout.

Each item is a product (box, bottle, can, jar, bag or carton silhouette) with body colours drawn from a small
shared palette, a pattern, a geometric logo and/or a brand string. Its views vary pose, scale, position,
background, clutter, lighting, blur and noise, so items are not separable by colour alone. Every image depends
only on ``(seed, item, view, image_size)``, never on generation order or on the number of items.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from prodrec.data.synthetic_drawing import KINDS, VIEW_WORDS, render_item, render_view
from prodrec.utils import ProdrecError, ProdrecTypeError

__all__ = ["SyntheticInfo", "make_synthetic_inshop"]

_MARKER = ".prodrec_synthetic.json"
_GENERATOR = "prodrec.data.make_synthetic_inshop"
_FORMAT_VERSION = 3  # bump when the pictures change, so that older sets are regenerated
@dataclass(frozen=True)
class SyntheticInfo:
    """What :func:`make_synthetic_inshop` wrote (image counts per split)."""

    root: Path
    num_images: int
    num_train_items: int
    num_test_items: int
    num_train: int
    num_query: int
    num_gallery: int


def _check_arguments(items: int, views: int, image_size: int, train_fraction: float, seed: int) -> dict:
    """Validate the public arguments (all problems at once); return them normalised, as the marker stores them."""
    ints = {"items": items, "views": views, "image_size": image_size, "seed": seed}
    for name, value in [*ints.items(), ("train_fraction", train_fraction)]:
        integer = name in ints
        if isinstance(value, bool) or not isinstance(value, (int, np.integer) if integer else (int, float, np.number)):
            wanted = "an integer" if integer else "a float"
            raise ProdrecTypeError(f"make_synthetic_inshop: {name} must be {wanted}, got {type(value).__name__} "
                                   f"{value!r}")
    problems = [f"{name} must be >= {low}, got {ints[name]} (pass {name}={low} or more)"
                for name, low in (("items", 4), ("views", 2), ("image_size", 32), ("seed", 0)) if ints[name] < low]
    if not 0 < train_fraction < 1:
        problems.append(f"train_fraction must be in (0, 1), got {train_fraction} (pass e.g. train_fraction=0.5)")
    elif not problems and not 2 <= round(items * train_fraction) <= items - 2:
        problems.append(f"train_fraction={train_fraction} with items={items} gives {round(items * train_fraction)} "
                        f"train items, but train and test need >= 2 items each (pass a train_fraction nearer 0.5)")
    if problems:
        raise ProdrecError("make_synthetic_inshop: " + "; ".join(problems))
    return {**{name: int(value) for name, value in ints.items()}, "train_fraction": float(train_fraction),
            "format_version": _FORMAT_VERSION}


def _previous_set(root: Path, arguments: dict) -> SyntheticInfo | None:
    """The info of a complete set with these arguments in ``root``; raise if ``root`` holds foreign files."""
    if root.exists() and not root.is_dir():
        raise ProdrecError(f"root {root} is a file; pass a folder path (new or empty) for the synthetic set")
    if not root.exists() or not any(root.iterdir()):
        return None
    try:
        previous = json.loads((root / _MARKER).read_text())
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict) or previous.get("generator") != _GENERATOR:
        raise ProdrecError(f"root {root} is not empty and holds no synthetic set ({_MARKER} missing or not ours); "
                           f"pass an empty or new folder")
    listings = (root / "Eval/list_eval_partition.txt", root / "Anno/list_bbox_inshop.txt")
    if previous.get("complete") and previous.get("arguments") == arguments and all(p.is_file() for p in listings):
        return SyntheticInfo(root=root, **previous["info"])
    for name in ("img", "Eval", "Anno"):  # an older or interrupted synthetic set: replace it
        shutil.rmtree(root / name, ignore_errors=True)
    return None


def _write_marker(root: Path, arguments: dict, info: SyntheticInfo | None) -> None:
    content = {"generator": _GENERATOR, "arguments": arguments, "complete": info is not None}
    if info is not None:
        content["info"] = {k: v for k, v in asdict(info).items() if k != "root"}
    (root / _MARKER).write_text(json.dumps(content, indent=2) + "\n")


def _write_listing(path: Path, header: str, rows: list) -> None:
    """An In-shop listing: the row count, the header, then rows whose image name is padded with spaces."""
    width = max(len(row[0]) for row in rows) + 8
    lines = [str(len(rows)), header, *(f"{row[0]:<{width}}" + "  ".join(row[1:]) for row in rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def make_synthetic_inshop(root: str | os.PathLike, *, items: int = 200, views: int = 8, image_size: int = 96,
                          train_fraction: float = 0.5, seed: int = 0, progress: bool = True) -> SyntheticInfo:
    """Write a synthetic product set in the DeepFashion In-shop layout.

    Writes ``root/img/<DEPT>/<Category>/id_XXXXXXXX/NN_V_<view>.jpg`` (``V`` is the 1-based index of the view word
    in front/side/back/full/additional, cycled, and ``NN`` counts the cycles), ``root/Eval/list_eval_partition.txt``
    and ``root/Anno/list_bbox_inshop.txt`` (x_2 and y_2 exclusive). The first ``round(items * train_fraction)`` items
    of a seeded shuffle are train; each test item's views are split into query and gallery (at least one each).
    A set already written by this function with the same arguments is reused as is; one with other arguments is
    replaced.

    Args:
        root: Folder to write into: new, empty, or holding a previous synthetic set.
        items: Number of products (>= 4).
        views: Images per product (>= 2).
        image_size: Side of the square images in pixels (>= 32).
        train_fraction: Share of the items used for training, in (0, 1).
        seed: Non-negative seed; every image depends only on (seed, item, view, image_size).
        progress: Show a tqdm progress bar.

    Returns:
        The counts of what was written.

    Example:
        >>> info = make_synthetic_inshop("data/synthetic", items=40, views=4, progress=False)  # doctest: +SKIP
    """
    arguments = _check_arguments(items, views, image_size, train_fraction, seed)
    items, views, image_size, seed = (arguments[k] for k in ("items", "views", "image_size", "seed"))
    root = Path(root)
    previous = _previous_set(root, arguments)
    if previous is not None:
        return previous
    root.mkdir(parents=True, exist_ok=True)
    _write_marker(root, arguments, None)
    order = np.random.default_rng([seed, 3]).permutation(np.arange(1, items + 1))
    train_items = set(order[: round(items * train_fraction)].tolist())
    partition, boxes = [], []
    with tqdm(total=items * views, disable=not progress, desc="synthetic In-shop", unit="img") as bar:
        for item in range(1, items + 1):
            product = render_item(seed, item, image_size)
            dept, category, clothes_type = KINDS[product[2]]
            folder = f"img/{dept}/{category}/id_{item:08d}"
            (root / folder).mkdir(parents=True, exist_ok=True)
            split = np.random.default_rng([seed, 2, item])
            num_query = views // 2 + (views % 2) * int(split.integers(2))
            queries = set(split.permutation(views)[:num_query].tolist())
            for view in range(views):
                image, (x1, y1, x2, y2) = render_view(seed, item, view, image_size, product)
                word = view % len(VIEW_WORDS)
                name = f"{folder}/{view // len(VIEW_WORDS) + 1:02d}_{word + 1}_{VIEW_WORDS[word]}.jpg"
                cv2.imwrite(str(root / name), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
                status = "train" if item in train_items else "query" if view in queries else "gallery"
                partition.append((name, f"id_{item:08d}", status))
                boxes.append((name, str(clothes_type), str(word + 1), *(f"{c:03d}" for c in (x1, y1, x2, y2))))
                bar.update()
    _write_listing(root / "Eval/list_eval_partition.txt", "image_name item_id evaluation_status", partition)
    _write_listing(root / "Anno/list_bbox_inshop.txt", "image_name clothes_type pose_type x_1 y_1 x_2 y_2", boxes)
    statuses = [row[2] for row in partition]
    info = SyntheticInfo(root=root, num_images=len(partition), num_train_items=len(train_items),
                         num_test_items=items - len(train_items), num_train=statuses.count("train"),
                         num_query=statuses.count("query"), num_gallery=statuses.count("gallery"))
    _write_marker(root, arguments, info)
    return info
