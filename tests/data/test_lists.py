import os

import cv2
import numpy as np
import pytest

from prodrec.data.lists import read_folder_splits, read_image_folder, read_image_list, read_list_splits


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    return str(path)


def _list(path, entries, *, images=True, extra=""):
    """Write a 'path label' list and (optionally) the images it names, relative to the list's folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name} {label}\n" for name, label in entries) + extra)
    if images:
        for name, _ in entries:
            _image(path.parent / name)
    return path


def test_read_image_list_remaps_labels_numerically(tmp_path):
    entries = [("a/x 1.jpg", 10), ("b/y.jpg", 2), ("c/z.jpg", -1), ("d/w.jpg", 10)]
    images = read_image_list(_list(tmp_path / "train.txt", entries, extra="\n  \n"))
    assert images.classes == ("-1", "2", "10")
    assert images.labels.tolist() == [2, 1, 0, 2]
    assert images.paths[0] == os.path.join(str(tmp_path), "a/x 1.jpg")


def test_read_image_list_image_root(tmp_path):
    list_path = _list(tmp_path / "lists" / "train.txt", [("x.jpg", 0)], images=False)
    _image(tmp_path / "images" / "x.jpg")
    with pytest.raises(ValueError, match="image not found"):
        read_image_list(list_path)
    images = read_image_list(list_path, image_root=tmp_path / "images")
    assert images.paths == (str(tmp_path / "images" / "x.jpg"),)
    assert len(read_image_list(list_path, check_files=False)) == 1


def test_read_image_list_reports_every_problem(tmp_path):
    list_path = _list(tmp_path / "l.txt", [("a.jpg", 0), ("b.jpg", "cat"), ("a.jpg", 1)],
                      extra="lonely.jpg\nmissing.jpg 3\n")
    with pytest.raises(ValueError, match="4 problem") as info:
        read_image_list(list_path)
    message = str(info.value)
    assert f"{list_path}:2: the label must be an integer, got 'cat'" in message
    assert f"{list_path}:3: duplicate image a.jpg (first listed on line 1)" in message
    assert f"{list_path}:4: expected 'relative/path label'" in message
    assert f"{list_path}:5: image not found" in message


def test_read_image_list_empty_or_missing(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no images listed"):
        read_image_list(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_image_list(tmp_path / "nope.txt")


def test_read_image_folder(tmp_path):
    for name in ("cat/1.JPG", "cat/2.png", "ant/a.jpeg", "ant/b.webp", "bee/c.bmp"):
        _image(tmp_path / name)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".cache").mkdir()
    images = read_image_folder(tmp_path)
    assert images.classes == ("ant", "bee", "cat")
    assert [os.path.relpath(p, tmp_path) for p in images.paths] == [
        "ant/a.jpeg", "ant/b.webp", "bee/c.bmp", "cat/1.JPG", "cat/2.png"]
    assert images.labels.tolist() == [0, 0, 1, 2, 2]


def test_read_image_folder_problems(tmp_path):
    with pytest.raises(ValueError, match="no class folders"):
        read_image_folder(tmp_path)
    _image(tmp_path / "a" / "1.jpg")
    (tmp_path / "b").mkdir()
    (tmp_path / "c" / "folder.jpg").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"(?s)2 problem.*b: no images.*folder.jpg: not a regular file"):
        read_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_image_folder(tmp_path / "nope")


def test_read_list_splits_share_the_query_gallery_label_space(tmp_path):
    _list(tmp_path / "train_list.txt", [("t/1.jpg", 5), ("t/2.jpg", 7)])
    _list(tmp_path / "query_list.txt", [("q/1.jpg", 30), ("q/2.jpg", 4)])
    _list(tmp_path / "gallery_list.txt", [("g/1.jpg", 4), ("g/2.jpg", 100)])
    with pytest.warns(UserWarning, match="1 of 2 query images"):
        splits = read_list_splits(tmp_path)
    assert splits.train.classes == ("5", "7") and splits.train.labels.tolist() == [0, 1]
    assert splits.query.classes == splits.gallery.classes == ("4", "30", "100")
    assert splits.query.labels.tolist() == [1, 0] and splits.gallery.labels.tolist() == [0, 2]


def test_read_list_splits_reports_problems_of_all_lists(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_list.txt.*query_list.txt.*gallery_list.txt"):
        read_list_splits(tmp_path)
    _list(tmp_path / "train_list.txt", [("t/1.jpg", "x")])
    _list(tmp_path / "query_list.txt", [("q/1.jpg", 1)], images=False)
    _list(tmp_path / "gallery_list.txt", [("g/1.jpg", 2)])
    with pytest.raises(ValueError) as info:
        read_list_splits(tmp_path)
    assert "train_list.txt:1: the label must be an integer" in str(info.value)
    assert "query_list.txt:1: image not found" in str(info.value)
    _list(tmp_path / "train_list.txt", [("t/1.jpg", 0)])
    _image(tmp_path / "q" / "1.jpg")
    with pytest.raises(ValueError, match="no query item has a gallery image"):
        read_list_splits(tmp_path)


def test_read_folder_splits(tmp_path):
    for name in ("train/shoe/1.jpg", "query/hat/1.jpg", "query/cap/1.jpg", "gallery/hat/2.jpg",
                 "gallery/bag/2.jpg"):
        _image(tmp_path / name)
    with pytest.warns(UserWarning, match="1 of 2 query images"):
        splits = read_folder_splits(tmp_path)
    assert splits.train.classes == ("shoe",)
    assert splits.query.classes == splits.gallery.classes == ("bag", "cap", "hat")
    assert splits.query.labels.tolist() == [1, 2] and splits.gallery.labels.tolist() == [0, 2]
    with pytest.raises(FileNotFoundError, match="split folder"):
        read_folder_splits(tmp_path / "train")
