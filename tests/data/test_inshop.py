import os
import time

import cv2
import numpy as np
import pytest

from prodrec.data import read_inshop

HEADER = "image_name item_id evaluation_status"
ROWS = [
    ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "train"),
    ("img/MEN/Denim/id_00000080/01_2_side.jpg", "id_00000080", "train"),
    ("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
    ("img/WOMEN/Tees/id_00000300/01_1_front.jpg", "id_00000300", "query"),
    ("img/WOMEN/Tees/id_00000300/01_2_side.jpg", "id_00000300", "gallery"),
    ("img/WOMEN/Tees/id_00000100/01_1_front.jpg", "id_00000100", "gallery"),
    ("img/WOMEN/Tees/id_00000100/01_3_back.jpg", "id_00000100", "query"),
]


def _inshop(root, rows=ROWS, *, count=None, header=HEADER, images=True, extra_lines=()):
    """Write a tiny In-shop tree: space-padded partition rows like the real file, and 8x8 JPEGs."""
    (root / "Eval").mkdir(parents=True)
    lines = [str(len(rows) if count is None else count), header]
    lines += [f"{name:<60}{item:<20}{status}" for name, item, status in rows]
    lines += list(extra_lines)
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    if images:
        for name, _, _ in rows:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name), np.zeros((8, 8, 3), np.uint8))
    return root


def test_reads_splits_with_sorted_contiguous_labels(tmp_path):
    splits = read_inshop(_inshop(tmp_path))
    assert splits.train.classes == ("id_00000002", "id_00000080")
    assert splits.train.labels.tolist() == [1, 1, 0]
    assert splits.train.paths[0] == os.path.join(str(tmp_path), ROWS[0][0])
    assert splits.query.classes == splits.gallery.classes == ("id_00000100", "id_00000300")
    assert splits.query.labels.tolist() == [1, 0]
    assert splits.gallery.labels.tolist() == [1, 0]
    assert splits.queries_without_match == 0


def test_check_files_false_skips_the_image_check(tmp_path):
    splits = read_inshop(_inshop(tmp_path, images=False), check_files=False)
    assert len(splits.train) == 3
    with pytest.raises(ValueError, match="none of the 7 listed images exists") as info:
        read_inshop(tmp_path)
    assert "01_3_back.jpg" in str(info.value)


def test_reports_every_problem_with_line_numbers(tmp_path):
    rows = ROWS + [ROWS[0]]
    _inshop(tmp_path, rows, count=99, extra_lines=["img/x.jpg id_1", "img/y.jpg id_1 val"])
    os.remove(tmp_path / ROWS[5][0])
    with pytest.raises(ValueError) as info:
        read_inshop(tmp_path)
    message = str(info.value)
    partition = str(tmp_path / "Eval" / "list_eval_partition.txt")
    assert "5 problem(s)" in message
    assert f"{partition}:10: duplicate image {ROWS[0][0]} (first listed on line 3)" in message
    assert f"{partition}:11: expected 3 fields" in message
    assert f"{partition}:12: unknown evaluation_status 'val'" in message
    assert f"{partition}:1: says 99 images but the file lists 10 rows" in message
    assert f"{partition}:8: image not found" in message


def test_bad_count_and_header_lines(tmp_path):
    _inshop(tmp_path, count="many", header="name item status")
    with pytest.raises(ValueError, match=r"(?s):1: expected the number of images.*:2: expected the header"):
        read_inshop(tmp_path)


def test_empty_split_is_an_error(tmp_path):
    _inshop(tmp_path, [row for row in ROWS if row[2] != "gallery"])
    with pytest.raises(ValueError, match="no 'gallery' rows"):
        read_inshop(tmp_path)


def test_missing_partition_file_explains_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="Eval/list_eval_partition.txt.*img/"):
        read_inshop(tmp_path)


def test_query_items_without_gallery_images(tmp_path):
    rows = ROWS + [("img/WOMEN/Tees/id_00000999/01_1_front.jpg", "id_00000999", "query")]
    with pytest.warns(UserWarning, match="1 of 3 query images have no gallery image"):
        splits = read_inshop(_inshop(tmp_path / "partial", rows))
    assert splits.queries_without_match == 1 and splits.query.num_classes == 3

    disjoint = [row for row in ROWS if row[2] == "train"] + [
        ("img/a/id_1/1.jpg", "id_1", "query"), ("img/a/id_2/1.jpg", "id_2", "gallery")]
    with pytest.raises(ValueError, match="no query item has a gallery image"):
        read_inshop(_inshop(tmp_path / "disjoint", disjoint))


def test_too_many_problems_are_summarised(tmp_path):
    _inshop(tmp_path, images=False, extra_lines=[f"img/{i}.jpg id_{i} test" for i in range(30)], count=37)
    with pytest.raises(ValueError, match=r"30 problem\(s\)(?s:.*)and 10 more problem") as info:
        read_inshop(tmp_path, check_files=False)
    assert str(info.value).count("unknown evaluation_status") == 20


def test_full_size_partition_is_fast(tmp_path):
    statuses = ["train"] * 25882 + ["query"] * 14218 + ["gallery"] * 12612
    rows = [(f"img/MEN/Tees/id_{i // 7:08d}/{i % 7:02d}_1_front.jpg", f"id_{i // 7:08d}", status)
            for i, status in enumerate(statuses)]
    _inshop(tmp_path, rows, images=False)
    start = time.perf_counter()
    with pytest.warns(UserWarning):  # the items at the query/gallery boundary differ
        splits = read_inshop(tmp_path, check_files=False)
    assert time.perf_counter() - start < 5.0
    assert (len(splits.train), len(splits.query), len(splits.gallery)) == (25882, 14218, 12612)
    assert splits.train.num_classes == len(set(i // 7 for i in range(25882)))


def test_confinement_to_the_root(tmp_path):
    root, outside = tmp_path / "inshop", tmp_path / "outside"
    for name in ("a.jpg", "b.jpg", "c/d.jpg"):
        (outside / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(outside / name), np.zeros((8, 8, 3), np.uint8))
    rows = ROWS + [("img/../../outside/a.jpg", "id_00000300", "gallery"),
                   (str(outside / "b.jpg"), "id_00000300", "gallery"),
                   ("img/linked/d.jpg", "id_00000300", "gallery")]
    _inshop(root, ROWS, count=len(rows), extra_lines=[f"{n} {i} {s}" for n, i, s in rows[len(ROWS):]])
    (root / "img" / "linked").symlink_to(outside / "c")
    assert len(read_inshop(root).gallery) == 5
    with pytest.raises(ValueError, match=r"4 problem\(s\)") as info:
        read_inshop(root, confine_to_root=True)
    message = str(info.value)
    partition = root / "Eval" / "list_eval_partition.txt"
    assert f"3 listed path(s) lie outside the data root {os.path.realpath(root)}" in message
    assert f"{partition}:10: {outside / 'a.jpg'}\n" in message
    assert f"{partition}:11: {outside / 'b.jpg'}\n" in message
    assert f"{partition}:12: {root / 'img/linked/d.jpg'} (resolves to {outside / 'c/d.jpg'})" in message

    (root / "Eval" / "list_eval_partition.txt").rename(outside / "partition.txt")
    (root / "Eval" / "list_eval_partition.txt").symlink_to(outside / "partition.txt")
    with pytest.raises(ValueError, match=r"partition file: .* \(resolves to .*outside/partition.txt\)"):
        read_inshop(root, confine_to_root=True)
