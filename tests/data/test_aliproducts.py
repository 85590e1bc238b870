import json
import os
import random

import numpy as np
import pytest

from prodrec.data import aliproducts, json_listing
from prodrec.data.aliproducts import ALIPRODUCTS_NUM_CLASSES, read_aliproducts, read_aliproducts_splits


def _write(root, name, entries, **dump_options):
    """Write ``{"images": entries}`` as ``root/name`` (``dump_options`` go to ``json.dumps``)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps({"images": entries}, **dump_options), encoding="utf-8")
    return root / name


def _reference(root, name):
    """The obviously correct reading of a valid listing: json.load, then one path and label per entry."""
    with open(root / name, encoding="utf-8-sig") as file:
        entries = json.load(file)["images"]
    split = name.removesuffix(".json")
    return ([os.path.join(str(root), split, str(e["class_id"]), e["image_id"]) for e in entries],
            [int(e["class_id"]) for e in entries])


def _entries(count, *, seed=0, num_classes=50):
    rng = random.Random(seed)
    tails = ["", " é", "}, {", '"q', "\u2028"]  # a space, non-ASCII, JSON syntax, a quote, a line separator
    names = [f"{rng.getrandbits(64):016x}{rng.choice(tails)}.jpg" for _ in range(count)]
    entries = []
    for name in names:
        class_id = rng.randrange(num_classes)
        spelt = rng.choice([class_id, f"{class_id:05d}", str(class_id)])
        entry = {"image_id": name, "class_id": spelt}
        if rng.random() < 0.2:
            entry = {"class_id": spelt, "url": "http://x/{a}", "image_id": name}
        entries.append(entry)
    return entries


@pytest.fixture(params=[7, 64, 1 << 23], ids=["chunk7", "chunk64", "chunk8M"])
def chunk_chars(request, monkeypatch):
    """Read in chunks of 64 characters (entries straddle chunk boundaries) and of the default size; 7 is shorter than
    the ``{"images": [`` head, which makes the reader parse the file whole."""
    monkeypatch.setattr(json_listing, "CHUNK_CHARS", request.param)
    return request.param


def test_reads_the_release_layout(tmp_path):
    _write(tmp_path, "train.json", [{"image_id": "a.jpg", "class_id": "00042"}, {"image_id": "b.jpg", "class_id": 7},
                                    {"image_id": "c.jpg", "class_id": "7"}])
    images = read_aliproducts(tmp_path)
    assert images.paths == (str(tmp_path / "train" / "00042" / "a.jpg"), str(tmp_path / "train" / "7" / "b.jpg"),
                            str(tmp_path / "train" / "7" / "c.jpg"))
    assert images.labels.tolist() == [42, 7, 7]
    assert images.classes == tuple(str(i) for i in range(ALIPRODUCTS_NUM_CLASSES))
    assert read_aliproducts(tmp_path, num_classes=None).classes == tuple(str(i) for i in range(43))


@pytest.mark.parametrize("options", [{}, {"indent": 2}, {"separators": (",", ":")}, {"ensure_ascii": False},
                                     {"indent": "\t", "ensure_ascii": False}], ids=str)
def test_matches_a_plain_json_reading_whatever_the_formatting(tmp_path, chunk_chars, options):
    _write(tmp_path, "val.json", _entries(300), **options)
    images = read_aliproducts(tmp_path, "val.json", num_classes=50)
    paths, labels = _reference(tmp_path, "val.json")
    assert list(images.paths) == paths and images.labels.tolist() == labels


def test_reports_every_problem_at_once(tmp_path, chunk_chars):
    entries = [{"image_id": "ok.jpg", "class_id": 1},         # 0
               {"image_id": "a.jpg"},                           # 1 missing class_id
               ["a.jpg", 1],                                    # 2 not an object
               {"image_id": "b.jpg", "class_id": 3.0},          # 3 float
               {"image_id": "c.jpg", "class_id": True},         # 4 bool
               {"image_id": "d.jpg", "class_id": "x12"},        # 5 not digits
               {"image_id": "e.jpg", "class_id": 10},           # 6 out of range
               {"image_id": "f.jpg", "class_id": -1},           # 7 negative
               {"image_id": "sub/g.jpg", "class_id": 2},        # 8 not a file name
               {"image_id": "", "class_id": None},              # 9 two problems
               {"image_id": "ok.jpg", "class_id": 1},           # 10 duplicate of 0
               {"image_id": "ok.jpg", "class_id": "01"},        # 11 another folder: fine
               {}]                                              # 12 missing both
    _write(tmp_path, "train.json", entries)
    with pytest.raises(ValueError, match="11 problem") as info:
        read_aliproducts(tmp_path, num_classes=10)
    message, where = str(info.value), tmp_path / "train.json"
    for expected in [
        "images[1]: missing key 'class_id'",
        'images[2]: expected an object {"image_id": "<file name>", "class_id": <integer or "digits">}, got list',
        "images[3]: class_id must be an integer or a string of digits, got 3.0",
        "images[4]: class_id must be an integer or a string of digits, got true",
        'images[5]: class_id must be an integer or a string of digits, got "x12"',
        "images[6]: class_id 10 is out of range 0..9 (pass num_classes=...",
        "images[7]: class_id -1 is negative",
        """images[8]: image_id must be a file name (a non-empty string without '/' or '\\'), got "sub/g.jpg\"""",
        'images[9]: image_id must be a file name (a non-empty string without \'/\' or \'\\\'), got ""; class_id '
        "must be an integer or a string of digits, got null",
        f"images[10]: duplicate of images[0] ({tmp_path / 'train' / '1' / 'ok.jpg'})",
        "images[12]: missing keys 'image_id', 'class_id'",
    ]:
        assert f"{where}: {expected}" in message
    assert "images[0]" not in message.replace("of images[0]", "") and "images[11]" not in message


def test_shows_the_first_twenty_problems_and_counts_all(tmp_path):
    _write(tmp_path, "train.json", [{"image_id": f"{i}.jpg", "class_id": 50030 + i} for i in range(25)])
    with pytest.raises(ValueError, match="25 problem") as info:
        read_aliproducts(tmp_path)
    assert "images[19]: class_id 50049" in str(info.value) and "images[20]" not in str(info.value)
    assert "... and 5 more problem(s)" in str(info.value)


def test_not_utf8_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="AliProducts folder"):
        read_aliproducts(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"AliProducts listing not found: {tmp_path / 'val.json'}"):
        read_aliproducts(tmp_path, "val.json")
    (tmp_path / "train.json").write_bytes(b'{"images": [{"image_id": "\xe9.jpg", "class_id": 1}]}')
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        read_aliproducts(tmp_path)
    with pytest.raises(ValueError, match="num_classes must be a positive integer or None, got 0"):
        read_aliproducts(tmp_path, num_classes=0)


def test_file_checks_are_optional(tmp_path):
    _write(tmp_path, "train.json", [{"image_id": "a.jpg", "class_id": 1}, {"image_id": "b.jpg", "class_id": 1}])
    assert len(read_aliproducts(tmp_path)) == 2
    (tmp_path / "train" / "1").mkdir(parents=True)
    (tmp_path / "train" / "1" / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="1 problem") as info:
        read_aliproducts(tmp_path, check_files=True)
    assert f"images[1]: image not found: {tmp_path / 'train' / '1' / 'b.jpg'}" in str(info.value)


def test_confine_to_root_refuses_symlinks_out_of_the_root(tmp_path):
    root, outside = tmp_path / "ali", tmp_path / "elsewhere"
    _write(root, "train.json", [{"image_id": "a.jpg", "class_id": 1}, {"image_id": "b.jpg", "class_id": 2}])
    outside.mkdir()
    (root / "train").mkdir()
    os.symlink(outside, root / "train" / "2")
    assert len(read_aliproducts(root)) == 2
    with pytest.raises(ValueError, match="lie outside the data root") as info:
        read_aliproducts(root, confine_to_root=True)
    assert "images[1]" in str(info.value) and "images[0]" not in str(info.value)


def test_splits_query_val_against_a_train_gallery(tmp_path):
    _write(tmp_path, "train.json", [{"image_id": f"{i}.jpg", "class_id": i % 3} for i in range(6)])
    _write(tmp_path, "val.json", [{"image_id": "v.jpg", "class_id": "00002"}])
    splits = read_aliproducts_splits(tmp_path, num_classes=None)
    assert splits.gallery is splits.train and splits.query.paths == (str(tmp_path / "val" / "00002" / "v.jpg"),)
    assert splits.train.classes == splits.query.classes == ("0", "1", "2")
    assert splits.query.labels.tolist() == [2] and splits.train.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert read_aliproducts_splits(tmp_path).train.num_classes == ALIPRODUCTS_NUM_CLASSES


def test_splits_report_the_problems_of_both_listings(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.json.*val.json"):
        read_aliproducts_splits(tmp_path)
    _write(tmp_path, "train.json", [{"image_id": "a.jpg", "class_id": "z"}])
    _write(tmp_path, "val.json", [{"image_id": "a.jpg"}])
    with pytest.raises(ValueError, match="2 problem") as info:
        read_aliproducts_splits(tmp_path)
    assert "train.json: images[0]: class_id" in str(info.value) and "val.json: images[0]: missing" in str(info.value)


def test_paddleclas_lists_keep_the_class_ids_as_labels(tmp_path):
    (tmp_path / "train_list.txt").write_text("train/00042/a.jpg 42\ntrain/7/b.jpg 7\n")
    (tmp_path / "val_list.txt").write_text("val/7/c.jpg 7\n")
    splits = read_aliproducts_splits(tmp_path, train="train_list.txt", val="val_list.txt", num_classes=50)
    assert splits.train.paths == (str(tmp_path / "train/00042/a.jpg"), str(tmp_path / "train/7/b.jpg"))
    assert splits.train.labels.tolist() == [42, 7] and splits.query.labels.tolist() == [7]
    assert splits.train.num_classes == splits.query.num_classes == 50
    (tmp_path / "bad_list.txt").write_text("train/1/a.jpg 50\ntrain/1/b.jpg one\n")
    with pytest.raises(ValueError, match="2 problem") as info:
        read_aliproducts(tmp_path, "bad_list.txt", num_classes=50)
    assert "label 50 is out of range 0..49" in str(info.value) and "must be an integer" in str(info.value)


def test_a_listing_without_images_says_what_an_entry_looks_like(tmp_path):
    (tmp_path / "train.json").write_text('[{"image_id": "a.jpg", "class_id": 1}]')
    with pytest.raises(ValueError, match="1 problem") as info:
        read_aliproducts(tmp_path)
    assert ('train.json: expected {"images": [{"image_id": "<file name>", "class_id": <integer or "digits">}, '
            '...]}, got list at the top level') in str(info.value)
    (tmp_path / "train.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match=r'1 problem.*\n.*train.json: no images listed \("images" is empty\)'):
        read_aliproducts(tmp_path)


def test_entry_indices_skip_the_invalid_entries():
    entry_index = aliproducts._entry_indices([0, 1, 4])  # kept entries: 2, 3, 5, 6
    assert [entry_index(p) for p in range(4)] == [2, 3, 5, 6]
    assert np.array_equal([aliproducts._entry_indices([])(p) for p in range(3)], [0, 1, 2])
