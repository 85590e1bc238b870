"""Data: listings (readers), images, albumentations pipelines, PK sampling, synthetic products."""
from __future__ import annotations

import os
from typing import Union

from prodrec.data.dataset import ImageDataset, ImageList, ImageReadError, RetrievalSplits, load_image
from prodrec.data.inshop import read_inshop
from prodrec.data.lists import read_folder_splits, read_image_folder, read_image_list, read_list_splits
from prodrec.data.synthetic import make_synthetic_inshop

__all__ = [
    "ImageDataset",
    "ImageList",
    "ImageReadError",
    "RetrievalSplits",
    "load_image",
    "read_inshop",
    "read_image_list",
    "read_image_folder",
    "read_list_splits",
    "read_folder_splits",
    "read_splits",
    "make_synthetic_inshop",
    "DATASET_READERS",
]

DATASET_READERS = {"inshop": read_inshop, "list": read_list_splits, "folder": read_folder_splits}


def read_splits(dataset: str, root: Union[str, os.PathLike]) -> RetrievalSplits:
    """Train/query/gallery listings of ``root`` in the layout named by ``dataset``:
    ``inshop`` (DeepFashion In-shop), ``list`` (``train_list.txt``/``query_list.txt``/
    ``gallery_list.txt`` of ``path label`` lines) or ``folder`` (``train/``, ``query/``,
    ``gallery/`` with one sub-folder per item)."""
    reader = DATASET_READERS.get(dataset)
    if reader is None:
        raise ValueError(f"unknown dataset layout {dataset!r}; choose one of {sorted(DATASET_READERS)}")
    return reader(root)
