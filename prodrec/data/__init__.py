"""Data: listings (readers), images, albumentations pipelines, PK sampling, synthetic products, detection sets
(COCO / SKU-110K boxes) and synthetic shelf scenes."""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Union

from prodrec.config import SPLITS
from prodrec.data.aliproducts import read_aliproducts, read_aliproducts_splits
from prodrec.data.dataset import (ImageDataset, ImageList, RetrievalSplits, check_query_gallery, confine_paths,
                                  raise_problems, read_lines)
from prodrec.data.decode import ImageReadError, as_rgb_array, decode_image, load_image
from prodrec.data.image_check import BAD_IMAGE_POLICIES, check_images, check_splits
from prodrec.data.inshop import read_inshop, read_inshop_boxes
from prodrec.data.lists import read_folder_splits, read_image_folder, read_image_list, read_list_splits
from prodrec.data.gallery_list import read_gallery_list, read_unknown_list
from prodrec.data.sampling import EpochBatches, SeededSamples, apply_small_class_policy
from prodrec.data.synthetic import make_synthetic_inshop
from prodrec.data.boxes import BAD_BOX_POLICIES, PRODUCT_CATEGORY, BoxSet, read_coco, read_sku110k, write_coco
from prodrec.data.shelf_set import ShelfInfo, make_shelves, read_product_pictures
from prodrec.data.box_transforms import (BoxTransform, detection_train_transform, detection_eval_transform, BoxDataset,
                                        collate_boxes)
from prodrec.data.transforms import ImageTransform, eval_transform, train_transform
from prodrec.utils import ProdrecError, Registry

__all__ = [
    "BoxTransform",
    "detection_train_transform",
    "detection_eval_transform",
    "BoxDataset",
    "collate_boxes",
    "BAD_BOX_POLICIES",
    "PRODUCT_CATEGORY",
    "BoxSet",
    "read_coco",
    "read_sku110k",
    "write_coco",
    "ShelfInfo",
    "make_shelves",
    "read_product_pictures",
    "ImageDataset",
    "ImageList",
    "ImageReadError",
    "RetrievalSplits",
    "load_image",
    "decode_image",
    "as_rgb_array",
    "BAD_IMAGE_POLICIES",
    "check_images",
    "check_splits",
    "read_inshop",
    "read_image_list",
    "read_inshop_boxes",
    "read_gallery_list",
    "read_unknown_list",
    "read_image_folder",
    "read_list_splits",
    "read_folder_splits",
    "read_aliproducts",
    "read_aliproducts_splits",
    "read_splits",
    "make_synthetic_inshop",
    "DATASET_READERS",
    "SPLITS",
    "raise_problems",
    "read_lines",
    "ImageTransform",
    "train_transform",
    "eval_transform",
    "EpochBatches",
    "SeededSamples",
    "apply_small_class_policy",
]

DATASET_READERS: Registry = Registry("dataset layout", {
    "inshop": read_inshop, "list": read_list_splits, "folder": read_folder_splits, "aliproducts": read_aliproducts_splits})
"""``read_splits``'s layouts (``DataLoader.dataset``): name -> ``reader(root, *, confine_to_root)`` returning
:class:`RetrievalSplits`; ``DATASET_READERS.register(name, reader)`` adds one (``docs/extend.md``)."""
PathLike = Union[str, os.PathLike]


def read_splits(dataset: str, root: Optional[PathLike], *, lists: Optional[Mapping[str, PathLike]] = None,
                image_roots: Optional[Mapping[str, PathLike]] = None,
                confine_to_root: bool = False) -> RetrievalSplits:
    """Train/query/gallery listings of ``root`` in the layout named by ``dataset``:
    ``inshop`` (DeepFashion In-shop), ``list`` (``train_list.txt``/``query_list.txt``/
    ``gallery_list.txt`` of ``path label`` lines) or ``folder`` (``train/``, ``query/``,
    ``gallery/`` with one sub-folder per item).

    Args:
        dataset: The layout.
        root: The data folder (may be None for ``list`` when ``lists`` names all three lists).
        lists: ``list`` only: ``{split: list file}`` replacing ``root/<split>_list.txt`` (PaddleClas's
            ``cls_label_path``).
        image_roots: ``list`` only: ``{split: folder}`` that split's image paths are relative to
            (PaddleClas's ``image_root``); default ``root``, else the list's folder. Query and gallery
            share one label space, the union of their labels.
        confine_to_root: Every list file and every image path must lie inside ``root`` after resolving
            symlinks and ``..`` (for data sets from untrusted configs); one ValueError names every path
            outside it.
    """
    reader = DATASET_READERS.get(dataset)
    lists, image_roots = dict(lists or {}), dict(image_roots or {})
    if confine_to_root and root is None:
        raise ProdrecError("confine_to_root needs the data root: give root (CLI --data-root)")
    if not lists and not image_roots:
        if root is None:
            raise ProdrecError(f"no data folder given for the {dataset!r} layout")
        return reader(root, confine_to_root=confine_to_root)
    unknown = sorted((set(lists) | set(image_roots)) - set(SPLITS))
    if dataset != "list" or unknown:
        raise ProdrecError(f"list files and image roots are for the 'list' layout and the splits {SPLITS} only "
                           f"(got layout {dataset!r}, splits {sorted(set(lists) | set(image_roots))})")
    return _read_split_lists(root, lists, image_roots, os.path.abspath(os.fspath(root)) if confine_to_root else None)


def _read_split_lists(root: Optional[PathLike], lists: Dict[str, PathLike], image_roots: Dict[str, PathLike],
                      confine_to: Optional[str]) -> RetrievalSplits:
    listings: Dict[str, ImageList] = {}
    list_files: Dict[str, str] = {}
    problems, missing = [], []
    for split in SPLITS:
        if split not in lists and root is None:
            problems.append(f"no {split} list: give its list file or a data root holding {split}_list.txt")
            continue
        list_files[split] = os.path.abspath(os.fspath(lists.get(split) or os.path.join(root, f"{split}_list.txt")))
    raise_problems(confine_paths([(f"{split} list", path) for split, path in list_files.items()], confine_to)[1],
                    "image lists")
    for split, list_path in list_files.items():
        try:
            listings[split] = read_image_list(list_path, image_root=image_roots.get(split, root),
                                              confine_to=confine_to)
        except FileNotFoundError as error:
            missing.append(str(error))
        except ValueError as error:
            problems.append(str(error))
    if missing and not problems:
        raise FileNotFoundError("; ".join(missing))
    raise_problems(missing + problems, "cannot read the image lists")
    # The lists' labels are item ids: query and gallery share the union of theirs, in numeric order.
    test_classes = [str(label) for label in sorted({int(c) for s in ("query", "gallery")
                                                    for c in listings[s].classes})]

    def shared(listing: ImageList) -> ImageList:
        return ImageList.from_names(listing.paths, [listing.classes[i] for i in listing.labels], classes=test_classes)

    splits = RetrievalSplits(train=listings["train"], query=shared(listings["query"]),
                             gallery=shared(listings["gallery"]))
    return check_query_gallery(splits, f"image lists {', '.join(list_files.values())}")
