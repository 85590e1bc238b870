"""Every registered dataset layout reads the same small product set, written in that layout."""
import json
import os

import pytest

from prodrec.data import DATASET_READERS, RetrievalSplits, read_inshop, read_splits


def write_list(root, split, listing):
    lines = [f"{os.path.relpath(path, root)} {label}" for path, label in zip(listing.paths, listing.labels)]
    (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_folder(root, split, listing):
    for path, label in zip(listing.paths, listing.labels):
        target = root / split / listing.classes[label] / os.path.basename(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)


def write_aliproducts(root, split, listing):
    """AliProducts' release layout: train.json / val.json and images under train/<class>/, val/<class>/."""
    name = {"gallery": "train", "query": "val"}.get(split)
    if name is None:
        return  # AliProducts trains on its gallery (train) split
    entries = []
    for path, label in zip(listing.paths, listing.labels):
        image = f"{split}-{os.path.basename(path)}"
        target = root / name / str(label) / image
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
        entries.append({"image_id": image, "class_id": int(label)})
    (root / f"{name}.json").write_text(json.dumps({"images": entries}), encoding="utf-8")


WRITERS = {"list": write_list, "folder": write_folder, "aliproducts": write_aliproducts}


@pytest.mark.parametrize("layout", sorted(DATASET_READERS))
def test_every_registered_layout_reads_its_data(layout, tiny_inshop, tmp_path):
    original = read_inshop(tiny_inshop)
    root = tiny_inshop if layout == "inshop" else tmp_path
    if layout != "inshop":
        for split in ("train", "query", "gallery"):
            WRITERS[layout](root, split, getattr(original, split))
    splits = read_splits(layout, root)
    assert isinstance(splits, RetrievalSplits)
    for split in ("query", "gallery"):
        got, expected = getattr(splits, split), getattr(original, split)
        assert len(got) == len(expected) and len(set(got.labels)) == len(set(expected.labels)), split
        assert sorted(map(os.path.realpath, got.paths)) == sorted(expected.paths), split
    assert len(splits.train) == len(original.gallery if layout == "aliproducts" else original.train)


def test_every_registered_layout_has_a_test():
    assert sorted(DATASET_READERS) == sorted(["inshop", *WRITERS])


def test_unknown_layout_names_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset layout 'csv'; choose one of \['aliproducts', 'folder'"):
        read_splits("csv", tmp_path)
