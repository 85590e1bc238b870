"""``make_shelves``: a folder of synthetic shelf and tray photos with COCO annotations (scenes:
:mod:`prodrec.data.shelves`), from the synthetic products or from a product folder."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Union

import cv2
import numpy as np
from tqdm.auto import tqdm

from prodrec.data.boxes import BoxSet, write_coco
from prodrec.data.inshop import read_inshop, read_inshop_boxes
from prodrec.data.lists import existing_paths, read_image_folder
from prodrec.data.object_drawing import random_objects as draw_random_objects
from prodrec.data.shelves import ProductPicture, render_scene, synthetic_products
from prodrec.utils import ProdrecError, check_positive_int

__all__ = ["ShelfInfo", "make_shelves", "read_product_pictures"]

TRAY_SHARE = 0.2
PICTURES_PER_PRODUCT = 3


@dataclass(frozen=True)
class ShelfInfo:
    """What :func:`make_shelves` wrote: the scene count, boxes, distinct products and the annotation file."""

    scenes: int
    boxes: int
    products: int
    annotations: Path


def read_product_pictures(folder: Union[str, os.PathLike]) -> List[ProductPicture]:
    """Product pictures from an In-shop-layout folder (each item's images cropped to their boxes; label = item
    id) or a ``<label>/<image>`` folder (whole images; a PNG's transparency is kept; label = folder name), up
    to three pictures a product."""
    root = existing_paths([folder], "product folder", os.path.isdir)[0]
    inshop = os.path.isfile(os.path.join(root, "Eval", "list_eval_partition.txt"))
    boxes = read_inshop_boxes(root) if inshop else {}
    listing = read_inshop(root) if inshop else None
    images = [listing.train, listing.query, listing.gallery] if inshop else [read_image_folder(root)]
    pictures, counts = [], {}
    for listed in images:
        for path, label in zip(listed.paths, listed.labels):
            name = listed.classes[label]
            if counts.get(name, 0) >= PICTURES_PER_PRODUCT:
                continue
            picture = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if picture is None:
                raise ProdrecError(f"{path} is not an image OpenCV can read")
            picture = _bgra(picture)
            if inshop:
                key = Path(os.path.relpath(path, root)).as_posix()
                if key in boxes:
                    x1, y1, x2, y2 = boxes[key]
                    picture = picture[y1:y2, x1:x2]
            rows, columns = np.nonzero(picture[..., 3] >= 128)
            if len(rows) < 16:
                continue
            picture = picture[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
            pictures.append((name, np.ascontiguousarray(picture)))
            counts[name] = counts.get(name, 0) + 1
    if not pictures:
        raise ProdrecError(f"{root} holds no product pictures (an In-shop folder, or one folder of images per product)")
    return pictures


def _bgra(picture: np.ndarray) -> np.ndarray:
    if picture.ndim == 2:
        picture = cv2.cvtColor(picture, cv2.COLOR_GRAY2BGR)
    if picture.dtype != np.uint8:
        picture = cv2.convertScaleAbs(picture, alpha=255.0 / max(1, int(picture.max())))
    if picture.shape[2] == 3:
        picture = cv2.cvtColor(picture, cv2.COLOR_BGR2BGRA)
    return picture


def make_shelves(root: Union[str, os.PathLike], *, scenes: int = 200, products: Union[str, os.PathLike, None] = None,
                 synthetic_items: int = 200, random_objects: int = 0, seed: int = 0, width: int = 640,
                 height: int = 480, progress: bool = True) -> ShelfInfo:
    """Write ``root/images/NNNNNN.jpg`` shelf (80 %) and checkout-tray (20 %) scenes and
    ``root/annotations.json`` (COCO, one category ``product``; each annotation's ``product`` is the label of
    the product pasted there).

    Args:
        root: Folder to write into (its ``images/`` and ``annotations.json`` are replaced).
        scenes: How many photos.
        products: A product folder (:func:`read_product_pictures`); default: ``synthetic_items`` synthetic
            products, labelled as :func:`~prodrec.data.make_synthetic_inshop` with this ``seed`` labels them.
        random_objects: Also paste this many random objects (irregular shapes and textures, labels
            ``object_XXXX``; :mod:`prodrec.data.object_drawing`) among the products, so that a detector trained on
            the scenes learns "a thing on a shelf" rather than one kind of package.
        seed: Every scene depends only on (seed, scene number) and the products.

    Example:
        >>> make_shelves("data/shelves", scenes=20, progress=False).boxes  # doctest: +SKIP
        1460
    """
    scenes, width, height = (check_positive_int(v, name) for v, name in ((scenes, "scenes"), (width, "width"),
                                                                      (height, "height")))
    if width < 64 or height < 64:
        raise ProdrecError(f"scenes need at least 64 x 64 pixels, got {width} x {height}")
    pictures = read_product_pictures(products) if products is not None else synthetic_products(
        check_positive_int(synthetic_items, "synthetic_items"), seed)
    if random_objects:
        pictures = pictures + draw_random_objects(check_positive_int(random_objects, "random_objects"), seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths, sizes, boxes, labels = [], [], [], []
    for number in tqdm(range(scenes), disable=not progress, desc="shelf scenes", unit="scene"):
        rng = np.random.default_rng([seed, 7, number])
        kind = "tray" if rng.random() < TRAY_SHARE else "shelf"
        image, found = render_scene(pictures, rng, width=width, height=height, kind=kind)
        path = root / "images" / f"{number:06d}.jpg"
        if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))]):
            raise OSError(f"could not write {path}")
        paths.append(str(path.resolve()))
        sizes.append((width, height))
        boxes.append(np.array([box for box, _ in found], np.float32).reshape(-1, 4))
        labels.append(tuple(label for _, label in found))
    annotations = write_coco(root / "annotations.json", BoxSet(tuple(paths), tuple(sizes), tuple(boxes), tuple(labels)))
    return ShelfInfo(scenes=scenes, boxes=sum(len(b) for b in boxes),
                     products=len({label for row in labels for label in row}), annotations=annotations)
