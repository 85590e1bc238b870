import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from prodrec.data.synthetic import SyntheticInfo, make_synthetic_inshop

SMALL = dict(items=12, views=4, image_size=48, progress=False)
NAME = re.compile(r"img/(FOOD|HOME)/([A-Z][a-z]+)/(id_\d{8})/(\d{2})_(\d)_(front|side|back|full|additional)\.jpg")


def read_listing(path: Path) -> tuple:
    lines = path.read_text().splitlines()
    return lines[0], lines[1], [line.split() for line in lines[2:]]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SyntheticInfo:
    return make_synthetic_inshop(tmp_path_factory.mktemp("small"), **SMALL)


def test_partition_layout_and_format(small):
    root = small.root
    count, header, rows = read_listing(root / "Eval/list_eval_partition.txt")
    assert count == "48" and len(rows) == 48
    assert header == "image_name item_id evaluation_status"
    assert all(re.match(r"img/\S+ {2,}id_\d{8}  (train|query|gallery)$", line)
               for line in (root / "Eval/list_eval_partition.txt").read_text().splitlines()[2:])
    statuses = {}
    for name, item_id, status in rows:
        match = NAME.fullmatch(name)
        assert match and match[3] == item_id
        image = cv2.imread(str(root / name))
        assert image is not None and image.shape == (48, 48, 3)
        statuses.setdefault(item_id, []).append(status)
    assert sorted(str(p.relative_to(root)) for p in root.glob("img/**/*.jpg")) == sorted(r[0] for r in rows)
    train_items = [item for item, s in statuses.items() if set(s) == {"train"}]
    assert len(train_items) == 6 and all("train" not in s for item, s in statuses.items() if item not in train_items)
    assert small == SyntheticInfo(root=root, num_images=48, num_train_items=6, num_test_items=6, num_train=24,
                                  num_query=sum(r[2] == "query" for r in rows),
                                  num_gallery=sum(r[2] == "gallery" for r in rows))


@pytest.mark.parametrize("views", [2, 3, 4])
def test_every_test_item_has_query_and_gallery(tmp_path, views):
    make_synthetic_inshop(tmp_path, items=10, views=views, image_size=32, progress=False)
    statuses = {}
    for _, item_id, status in read_listing(tmp_path / "Eval/list_eval_partition.txt")[2]:
        statuses.setdefault(item_id, []).append(status)
    test_items = [s for s in statuses.values() if "train" not in s]
    assert len(test_items) == 5
    assert all(s.count("query") >= 1 and s.count("gallery") >= 1 and len(s) == views for s in test_items)
    assert all(abs(s.count("query") - s.count("gallery")) <= 1 for s in test_items)


def test_view_names_cycle_the_view_words(tmp_path):
    make_synthetic_inshop(tmp_path, items=4, views=7, image_size=32, progress=False)
    rows = read_listing(tmp_path / "Eval/list_eval_partition.txt")[2]
    names = [Path(name).name for name, item_id, _ in rows if item_id == "id_00000001"]
    assert names == ["01_1_front.jpg", "01_2_side.jpg", "01_3_back.jpg", "01_4_full.jpg", "01_5_additional.jpg",
                     "02_1_front.jpg", "02_2_side.jpg"]


def images(root: Path) -> dict:
    return {r[0]: cv2.imread(str(root / r[0])) for r in read_listing(root / "Eval/list_eval_partition.txt")[2]}


def test_deterministic_per_seed(small, tmp_path):
    again = make_synthetic_inshop(tmp_path / "again", **SMALL)
    for listing in ("Eval/list_eval_partition.txt", "Anno/list_bbox_inshop.txt"):
        assert (small.root / listing).read_bytes() == (again.root / listing).read_bytes()
    first, second = images(small.root), images(again.root)
    assert all(np.array_equal(first[name], second[name]) for name in first)
    other = images(make_synthetic_inshop(tmp_path / "other", **{**SMALL, "seed": 1}).root)
    first_views = [[image for name, image in views.items() if "/01_1_front" in name] for views in (first, other)]
    assert not any(np.array_equal(a, b) for a, b in zip(*first_views))


def test_item_pictures_do_not_depend_on_set_size(small, tmp_path):
    larger = images(make_synthetic_inshop(tmp_path, **{**SMALL, "items": 14}).root)
    assert all(np.array_equal(image, larger[name]) for name, image in images(small.root).items())


def test_bbox_listing(small):
    count, header, boxes = read_listing(small.root / "Anno/list_bbox_inshop.txt")
    partition = read_listing(small.root / "Eval/list_eval_partition.txt")[2]
    assert count == "48" and header == "image_name clothes_type pose_type x_1 y_1 x_2 y_2"
    assert [b[0] for b in boxes] == [r[0] for r in partition]
    clothes_types = {}
    for name, clothes_type, pose_type, *coords in boxes:
        x1, y1, x2, y2 = map(int, coords)
        assert 0 <= x1 < x2 <= 48 and 0 <= y1 < y2 <= 48
        assert 0.5 <= max(x2 - x1, y2 - y1) / 48 <= 1.0  # the product fills 65-95 % of the view
        assert pose_type == NAME.fullmatch(name)[5]
        assert clothes_type in {"1", "2", "3"}
        assert clothes_types.setdefault(NAME.fullmatch(name)[2], clothes_type) == clothes_type  # fixed per category


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(views=1), ValueError, "views must be >= 2"),
    (dict(items=3), ValueError, "items must be >= 4"),
    (dict(image_size=31), ValueError, "image_size must be >= 32"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(train_fraction=0.0), ValueError, "train_fraction must be in (0, 1)"),
    (dict(train_fraction=1), ValueError, "train_fraction must be in (0, 1)"),
    (dict(items=4, train_fraction=0.25), ValueError, "gives 1 train items"),
    (dict(items=12.0), TypeError, "items must be an integer"),
    (dict(views=True), TypeError, "views must be an integer"),
    (dict(train_fraction="0.5"), TypeError, "train_fraction must be a float"),
])
def test_bad_arguments(tmp_path, kwargs, error, words):
    with pytest.raises(error, match=re.escape(words)):
        make_synthetic_inshop(tmp_path / "set", **{**SMALL, **kwargs})
    assert not (tmp_path / "set").exists()


def test_reuses_or_replaces_a_previous_set(tmp_path):
    args = dict(items=4, views=2, image_size=32, progress=False)
    info = make_synthetic_inshop(tmp_path, **args)
    victim = tmp_path / read_listing(tmp_path / "Eval/list_eval_partition.txt")[2][0][0]
    victim.unlink()
    assert make_synthetic_inshop(tmp_path, **args) == info and not victim.exists()  # reused, not regenerated

    marker = tmp_path / ".prodrec_synthetic.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "complete": False}))  # as if interrupted
    assert make_synthetic_inshop(tmp_path, **args) == info and victim.exists()

    make_synthetic_inshop(tmp_path, **{**args, "seed": 1})
    assert json.loads(marker.read_text())["arguments"]["seed"] == 1
    listed = sorted(r[0] for r in read_listing(tmp_path / "Eval/list_eval_partition.txt")[2])
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("img/**/*.jpg")) == listed


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        make_synthetic_inshop(tmp_path, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="is a file"):
        make_synthetic_inshop(tmp_path / "notes.txt", **SMALL)


def test_mean_colour_does_not_identify_items(tmp_path):
    # Nearest neighbour on mean BGR (query vs gallery) must stay far from solving the set; measured 0.075 at seed 0.
    root = make_synthetic_inshop(tmp_path, items=40, views=4, image_size=48, progress=False).root
    rows = read_listing(root / "Eval/list_eval_partition.txt")[2]
    means = {r[0]: cv2.imread(str(root / r[0])).reshape(-1, 3).mean(0) for r in rows if r[2] != "train"}
    query = [(means[r[0]], r[1]) for r in rows if r[2] == "query"]
    gallery = [(means[r[0]], r[1]) for r in rows if r[2] == "gallery"]
    distances = np.array([[np.sum((q - g) ** 2) for g, _ in gallery] for q, _ in query])
    recall_at_1 = np.mean([gallery[j][1] == query[i][1] for i, j in enumerate(distances.argmin(1))])
    assert recall_at_1 < 0.6
