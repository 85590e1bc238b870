import os
import random

import cv2
import numpy as np
import pytest

from prodrec.data import lists
from prodrec.data import read_folder_splits, read_image_folder, read_image_list, read_list_splits


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
    entries = [("a/x 1.jpg", 10), ("b/y.jpg", 2), ("c/z.jpg", 0), ("d/w.jpg", 10)]
    images = read_image_list(_list(tmp_path / "train.txt", entries, extra="\n  \n"))
    assert images.classes == ("0", "2", "10")
    assert images.labels.tolist() == [2, 1, 0, 2]
    assert images.paths[0] == os.path.join(str(tmp_path), "a/x 1.jpg")


def test_paths_with_spaces_and_tab_separated_lines_with_a_product_name(tmp_path):
    for name in ("my photos/front  view.jpg", "b c.jpg", "d.jpg"):
        _image(tmp_path / name)
    (tmp_path / "l.txt").write_text("my photos/front  view.jpg   7\n"
                                    "b c.jpg\t3\tCoca Cola 330 ml\n"
                                    "d.jpg\t3\n")
    images = read_image_list(tmp_path / "l.txt")
    assert [os.path.relpath(p, tmp_path) for p in images.paths] == ["my photos/front  view.jpg", "b c.jpg", "d.jpg"]
    assert images.classes == ("3", "7") and images.labels.tolist() == [1, 0, 0]
    (tmp_path / "bad.txt").write_text("b c.jpg 3 Coca Cola\nd.jpg\t3\tname\textra\nb c.jpg\t\tname\n")
    with pytest.raises(ValueError, match="3 problem") as info:
        read_image_list(tmp_path / "bad.txt")
    message = str(info.value)
    assert ("bad.txt:1: the label must be an integer, got 'Cola' (a product name after the label needs "
            "tab-separated fields: path<TAB>label<TAB>name)") in message
    assert "bad.txt:2: expected 'path<TAB>label[<TAB>product name]'" in message
    assert "bad.txt:3: expected 'path<TAB>label[<TAB>product name]'" in message


def test_negative_labels_non_utf8_lines_and_normalised_duplicates(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        _image(tmp_path / name)
    (tmp_path / "l.txt").write_text("a.jpg 0\nb.jpg 1\n./a.jpg 1\nsub/../b.jpg 2\nc.jpg -1\n")
    with pytest.raises(ValueError, match="3 problem") as info:
        read_image_list(tmp_path / "l.txt")
    message = str(info.value)
    assert "l.txt:3: duplicate image ./a.jpg (first listed on line 1)" in message
    assert "l.txt:4: duplicate image sub/../b.jpg (first listed on line 2)" in message
    assert "l.txt:5: negative label -1; labels are item ids >= 0" in message  # and not also 'image not found'

    (tmp_path / "latin1.txt").write_bytes("a.jpg 0\ncaf\xe9.jpg 1\nb.jpg 1\n\xff.jpg 2\n".encode("latin-1"))
    with pytest.raises(ValueError, match="2 problem") as info:
        read_image_list(tmp_path / "latin1.txt")
    message = str(info.value)
    assert "latin1.txt is not a UTF-8 text file (re-save it as UTF-8" in message
    assert "latin1.txt:2: byte 0xe9 at column 4 is not UTF-8: caf\\xe9.jpg 1\n" in message
    assert "latin1.txt:4: byte 0xff at column 1 is not UTF-8" in message


def test_confinement_reports_every_path_outside_the_root(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    _image(root / "in.jpg")
    _image(outside / "out.jpg")
    _image(outside / "out2.jpg")
    (root / "link.jpg").symlink_to(outside / "out.jpg")
    (root / "linked_dir").symlink_to(outside)
    (root / "l.txt").write_text(f"in.jpg 0\n../elsewhere/out.jpg 1\n{outside / 'out2.jpg'} 2\nlink.jpg 3\n"
                                "linked_dir/out.jpg 4\nsub/../in2.jpg 5\n")
    assert len(read_image_list(root / "l.txt", check_files=False)) == 6
    with pytest.raises(ValueError, match="6 problem") as info:  # a how-to-fix line, 4 outside, 1 missing
        read_image_list(root / "l.txt", confine_to=root)
    message = str(info.value)
    real_out = os.path.realpath(outside / "out.jpg")
    assert (f"4 listed path(s) lie outside the data root {os.path.realpath(root)} (after resolving symlinks "
            "and '..') and confinement to it is on: move or copy those files under the data root") in message
    assert f"l.txt:2: {outside / 'out.jpg'}\n" in message  # '..' is resolved in the listed path already
    assert f"l.txt:3: {outside / 'out2.jpg'}\n" in message
    assert f"l.txt:4: {root / 'link.jpg'} (resolves to {real_out})" in message
    assert f"l.txt:5: {root / 'linked_dir' / 'out.jpg'} (resolves to {real_out})" in message
    assert "l.txt:6: image not found" in message  # inside the root: only missing
    assert "l.txt:2: image not found" not in message


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


def test_confined_list_and_folder_splits(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    _list(root / "train_list.txt", [("t/1.jpg", 0)])
    _list(root / "gallery_list.txt", [("g/1.jpg", 1)])
    _list(outside / "query_list.txt", [("q/1.jpg", 1)], images=False)
    _image(root / "q" / "1.jpg")
    (root / "query_list.txt").symlink_to(outside / "query_list.txt")
    assert len(read_list_splits(root).query) == 1
    with pytest.raises(ValueError, match=r"(?s)image lists under .*1 listed path.*query list: .*query_list.txt "
                                         r"\(resolves to .*elsewhere/query_list.txt\)"):
        read_list_splits(root, confine_to_root=True)

    for name in ("train/a/1.jpg", "query/b/1.jpg", "gallery/b/2.jpg"):
        _image(root / "folders" / name)
    _image(outside / "c" / "3.jpg")
    (root / "folders" / "gallery" / "c").symlink_to(outside / "c")
    assert len(read_folder_splits(root / "folders").gallery) == 2
    with pytest.raises(ValueError, match=r"(?s)1 listed path.*image: .*gallery/c/3.jpg \(resolves to "):
        read_folder_splits(root / "folders", confine_to_root=True)


def _reference_parse(list_path, root):
    """The obviously correct reading of a list (no file checks): all lines at once, a dict of first lines."""
    paths, labels, problems, first_line = [], [], [], {}
    for number, line in enumerate(list_path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        where = f"{list_path}:{number}"
        if not line.strip():
            continue
        elif "\t" in line:
            fields = [field.strip() for field in line.strip().split("\t")]
            expected = "path<TAB>label[<TAB>product name]" if len(fields) not in (2, 3) or not all(fields[:2]) else ""
        else:
            fields = line.strip().rsplit(maxsplit=1)
            expected = "relative/path label" if len(fields) != 2 else ""
        if expected:
            problems.append(f"{where}: expected '{expected}', got {line.strip()!r}")
            continue
        name, label = fields[:2]
        try:
            value = int(label)
        except ValueError:
            hint = (" (a product name after the label needs tab-separated fields: path<TAB>label<TAB>name)"
                    if "\t" not in line and len(line.split()) > 2 else "")
            problems.append(f"{where}: the label must be an integer, got {label!r}{hint}")
            continue
        if value < 0:
            problems.append(f"{where}: negative label {value}; labels are item ids >= 0 (remove lines that mark "
                            "junk or distractor images with a negative id)")
            continue
        path = os.path.normpath(os.path.join(root, name))
        if path in first_line:
            problems.append(f"{where}: duplicate image {name} (first listed on line {first_line[path]})")
            continue
        first_line[path] = number
        paths.append(path)
        labels.append(value)
    return paths, labels, problems


def _random_line(rng):
    name = "/".join(rng.choice(["a", "b", "a b", ".", "..", "", ".h", "c.jpg", "é"]) for _ in range(rng.randint(1, 3)))
    name = rng.choice(["", "./", "/", " "]) + name + rng.choice(["", "/", ".jpg"])
    label = rng.choice(["0", "7", "12", "-3", "x", "3 extra", "+5", "", "\u0663"])  # the last: Arabic-Indic 3
    return rng.choice([f"{name} {label}", f"{name}\t{label}", f"{name}\t{label}\tname", f"  {name}   {label}\t",
                       "", "   ", label])


@pytest.mark.parametrize("block_lines", [3, 1 << 16])
def test_the_streaming_parser_agrees_with_a_read_all_reference(tmp_path, monkeypatch, block_lines):
    monkeypatch.setattr(lists, "_BLOCK_LINES", block_lines)  # 3: paths inside and outside the root in other blocks
    rng, root = random.Random(5), str(tmp_path / "root")
    for trial in range(30):
        list_path = tmp_path / f"l{trial}.txt"
        newline = rng.choice(["\n", "\r\n"])
        list_path.write_bytes(("\ufeff" * (trial % 2) + newline.join(_random_line(rng) for _ in range(40))
                               + newline * (trial % 3 == 0)).encode())
        paths, labels, problems = lists.parse_list(str(list_path), root, False, None)
        expected_paths, expected_labels, expected_problems = _reference_parse(list_path, root)
        assert list(paths) == expected_paths and labels.tolist() == expected_labels and labels.dtype == np.int64
        assert problems == (expected_problems or ([] if paths else [f"{list_path}: no images listed"]))


def test_a_name_is_only_taken_as_it_is_when_normpath_would_not_change_it():
    rng = random.Random(1)
    for name in ("".join(rng.choices(["a", ".", "/", "b.jpg", " "], k=rng.randint(1, 8))) for _ in range(2000)):
        if lists._is_normal(name):
            assert "/data/root/" + name == os.path.normpath(os.path.join("/data/root", name)), name
    assert lists._is_normal("train/00042/0a1b.jpg") and not lists._is_normal("./train/a.jpg")


def test_labels_beyond_int64_and_crlf_lines(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "l.txt").write_bytes(b"a.jpg 3\r\nb.jpg 99999999999999999999\r\n")
    with pytest.raises(ValueError, match=r"1 problem.*\n.*l.txt:2: label 99999999999999999999 is too large; "
                                         r"labels are item ids below 2\*\*63"):
        read_image_list(tmp_path / "l.txt", check_files=False)
    (tmp_path / "l.txt").write_bytes(b"a.jpg 3\r\n\r\n")
    assert read_image_list(tmp_path / "l.txt").paths == (str(tmp_path / "a.jpg"),)


def test_duplicates_agree_with_a_set_based_search():
    rng = random.Random(3)
    for _ in range(20):
        items, first = [str(rng.randrange(30)) for _ in range(rng.randrange(60))], {}
        expected = [(position, first[item]) for position, item in enumerate(items)
                    if first.setdefault(item, position) != position]
        assert lists.duplicate_paths(items, np.fromiter(map(hash, items), np.int64)) == expected
        assert lists.duplicate_paths(items, np.zeros(len(items), np.int64)) == expected  # every pair a candidate


def test_gallery_lists_stay_inside_their_image_root_unless_allowed(tmp_path):
    from prodrec.data import read_gallery_list

    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "a.jpg").write_bytes(b"")
    (tmp_path / "secret.jpg").write_bytes(b"")
    (tmp_path / "other.jpg").write_bytes(b"")
    listing = tmp_path / "shop" / "gallery.txt"
    listing.write_text(f"a.jpg sku1\n../secret.jpg sku2\n{tmp_path / 'other.jpg'} sku3\n")
    with pytest.raises(ValueError) as caught:
        read_gallery_list(listing)
    message = str(caught.value)
    assert "2 listed path(s) lie outside the data root" in message and "pass --allow-outside-root" in message
    assert "gallery.txt:2: " in message and "gallery.txt:3: " in message
    listing.write_text("a.jpg sku1\n../secret.jpg sku2\n")
    assert [label for _, label, _ in read_gallery_list(listing, allow_outside_root=True)] == ["sku1", "sku2"]


def test_missing_images_say_why(tmp_path):
    from prodrec.data import read_gallery_list

    (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "folder.jpg").mkdir()
    (tmp_path / "a b.jpg").write_bytes(b"")
    (tmp_path / "gallery.txt").write_text("loop.jpg sku1\nbroken.jpg sku2\nfolder.jpg sku3\na b.jpg sku4 Oat milk\n")
    with pytest.raises(ValueError) as caught:
        read_gallery_list(tmp_path / "gallery.txt")
    message = str(caught.value)
    assert "gallery.txt:1: symlink loop: " in message
    assert f"gallery.txt:2: broken symlink: {tmp_path / 'broken.jpg'} -> {tmp_path / 'nowhere.jpg'}" in message
    assert "gallery.txt:3: a folder, not an image" in message and "gallery.txt:4: image not found" in message
    assert "1 line(s) whose image is missing separate path, label and product name with spaces (first: 'a')" \
        in message and "path<TAB>label<TAB>name" in message
