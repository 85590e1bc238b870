"""``read_splits`` with explicit list files and image roots (PaddleClas's cls_label_path / image_root)."""
import os

import pytest

from prodrec.config import Config, ConfigError
from prodrec.data import read_list_splits, read_splits


def _list(path, entries, image_root):
    """Write a 'path label' list and empty image files under ``image_root``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name} {label}\n" for name, label in entries))
    for name, _ in entries:
        (image_root / name).parent.mkdir(parents=True, exist_ok=True)
        (image_root / name).write_bytes(b"")
    return str(path)


@pytest.fixture
def layout(tmp_path):
    """Lists in one folder, images of each split in its own folder; query and gallery labels overlap partly."""
    roots = {split: tmp_path / f"{split}_images" for split in ("train", "query", "gallery")}
    entries = {"train": [("a.jpg", 5), ("b.jpg", 3)], "query": [("q1.jpg", 12), ("q2.jpg", 7)],
               "gallery": [("g1.jpg", 7), ("g2.jpg", 12), ("g3.jpg", 30)]}
    lists = {split: _list(tmp_path / "lists" / f"{split}.txt", entries[split], roots[split]) for split in roots}
    return lists, {split: str(root) for split, root in roots.items()}


def test_lists_with_their_own_image_roots_share_the_test_label_space(layout):
    lists, roots = layout
    splits = read_splits("list", None, lists=lists, image_roots=roots)
    assert splits.train.classes == ("3", "5") and splits.train.labels.tolist() == [1, 0]
    assert splits.query.classes == splits.gallery.classes == ("7", "12", "30")
    assert splits.query.labels.tolist() == [1, 0] and splits.gallery.labels.tolist() == [0, 1, 2]
    assert splits.gallery.paths[0] == os.path.join(roots["gallery"], "g1.jpg")


def test_same_result_as_the_root_layout_when_everything_sits_under_root(tmp_path):
    entries = {"train": [("t.jpg", 1), ("u.jpg", 2)], "query": [("q.jpg", 4)], "gallery": [("g.jpg", 4), ("h.jpg", 9)]}
    for split, items in entries.items():
        _list(tmp_path / f"{split}_list.txt", items, tmp_path)
    reference = read_list_splits(tmp_path)
    moved = tmp_path / "elsewhere" / "query.txt"
    moved.parent.mkdir()
    os.replace(tmp_path / "query_list.txt", moved)
    splits = read_splits("list", tmp_path, lists={"query": moved})
    for split in ("train", "query", "gallery"):
        ours, theirs = getattr(splits, split), getattr(reference, split)
        assert (ours.paths, ours.classes) == (theirs.paths, theirs.classes)
        assert ours.labels.tolist() == theirs.labels.tolist()


def test_every_problem_is_reported(layout, tmp_path):
    lists, roots = layout
    with pytest.raises(FileNotFoundError, match="train_list.txt.*gallery_list.txt"):
        read_splits("list", tmp_path / "none", lists={"query": lists["query"]}, image_roots=roots)
    with pytest.raises(ValueError, match="(?s)2 problem.*no train list.*no gallery list"):
        read_splits("list", None, lists={"query": lists["query"]}, image_roots=roots)
    with pytest.raises(ValueError, match="image not found"):
        read_splits("list", None, lists=lists)  # images are not next to the lists
    with pytest.raises(ValueError, match="'list' layout"):
        read_splits("inshop", tmp_path, lists=lists)
    with pytest.raises(ValueError, match="'list' layout"):
        read_splits("list", tmp_path, lists={"val": lists["query"]})


def test_config_keys(layout):
    lists, roots = layout
    loader = Config.from_dict({"DataLoader": {"dataset": "list", "train_list": lists["train"],
                                              "gallery_image_root": roots["gallery"]}}).DataLoader
    assert loader.split_files() == ({"train": lists["train"]}, {"gallery": roots["gallery"]})
    assert Config().DataLoader.split_files() == ({}, {})
    with pytest.raises(ConfigError, match="DataLoader.query_list apply to DataLoader.dataset: list only"):
        Config.from_dict({"DataLoader": {"query_list": lists["query"]}})


def test_confine_to_root(layout, tmp_path):
    lists, roots = layout
    with pytest.raises(ValueError, match="confine_to_root needs the data root"):
        read_splits("list", None, lists=lists, image_roots=roots, confine_to_root=True)
    assert len(read_splits("list", tmp_path, lists=lists, image_roots=roots, confine_to_root=True).gallery) == 3
    inner = tmp_path / "train_images"
    with pytest.raises(ValueError, match=r"(?s)image lists: 3 problem.*2 listed path.*lie outside the data root "
                                         r".*train list: .*lists/train.txt\n  gallery list: .*lists/gallery.txt$"):
        read_splits("list", inner, lists={"train": lists["train"], "gallery": lists["gallery"]}, confine_to_root=True)
    for split in ("train", "query", "gallery"):  # lists and images inside the root, one image outside
        (tmp_path / f"{split}_list.txt").write_text(f"{split}_images/{'q1' if split == 'query' else 'g1'}.jpg 7\n")
    (tmp_path / "train_list.txt").write_text("train_images/a.jpg 5\n../outside.jpg 5\n")
    (tmp_path.parent / "outside.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"(?s)train_list.txt:2: .*outside.jpg") as info:
        read_splits("list", tmp_path, confine_to_root=True)
    assert "query_list.txt" not in str(info.value)
    assert len(read_splits("list", tmp_path).train) == 2
