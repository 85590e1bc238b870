import cv2
import numpy as np
import pytest

import prodrec.data.image_check as image_check
from prodrec.data import ImageList, ImageReadError, RetrievalSplits, check_images, check_splits


def _good(path):
    cv2.imwrite(str(path), np.full((16, 24, 3), 100, np.uint8))
    return str(path)


def _truncated(path):
    data = cv2.imencode(".jpg", np.full((16, 24, 3), 100, np.uint8))[1].tobytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _text(path):
    path.write_text("not an image")
    return str(path)


@pytest.fixture
def listing(tmp_path):
    paths = [_good(tmp_path / "a.jpg"), _truncated(tmp_path / "b.jpg"), _good(tmp_path / "c.png"),
             _text(tmp_path / "d.jpg"), _good(tmp_path / "e.jpg")]
    return ImageList(paths, [0, 1, 1, 2, 2], ["x", "y", "z"])


def test_error_policy_names_every_bad_file(listing):
    with pytest.raises(ImageReadError) as info:
        check_images(listing)
    b, d = listing.paths[1], listing.paths[3]
    assert str(info.value) == (
        "2 of 5 images cannot be read (fix or remove them, or skip them (policy 'skip', CLI --on-bad-image skip)): "
        f"2 problem(s):\n  {b}: truncated JPEG: the data ends after {len(open(b, 'rb').read())} bytes, before the "
        f"end-of-image marker\n  {d}: not an image: no known image format (12 bytes of text)")
    assert [path for path, _ in info.value.bad] == [b, d]


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_policy_drops_bad_files_and_keeps_the_label_space(listing, workers):
    kept, bad = check_images(listing, policy="skip", workers=workers)
    assert kept.paths == tuple(listing.paths[i] for i in (0, 2, 4))
    assert kept.labels.tolist() == [0, 1, 2] and kept.classes == listing.classes
    assert [path for path, _ in bad] == [listing.paths[1], listing.paths[3]]
    assert bad[0][1].startswith("truncated JPEG") and bad[1][1].startswith("not an image")
    good = ImageList(kept.paths, kept.labels, kept.classes)
    assert check_images(good, workers=workers) == (good, [])


def test_many_bad_files_are_summarised_and_all_returned(tmp_path, capsys):
    paths = [_text(tmp_path / f"{i}.jpg") for i in range(25)] + [_good(tmp_path / "ok.jpg")]
    images = ImageList(paths, [0] * 26, ["x"])
    with pytest.raises(ImageReadError, match=r"25 of 26 images cannot be read(?s:.*)\.\.\. and 5 more problem") as info:
        check_images(images, workers=3, progress=True)
    assert len(info.value.bad) == 25 and str(info.value).count(": not an image: ") == 20
    assert "checking images" in capsys.readouterr().err
    kept, bad = check_images(images, policy="skip")
    assert kept.paths == (paths[-1],) and len(bad) == 25
    with pytest.raises(ImageReadError, match="every image is unreadable, so skipping them leaves nothing"):
        check_images(ImageList(paths[:3], [0] * 3, ["x"]), policy="skip")


def test_options_are_checked(listing):
    with pytest.raises(ValueError, match="policy must be one of error, skip, got 'ignore'"):
        check_images(listing, policy="ignore")
    for workers in (-1, True, 1.5):
        with pytest.raises(ValueError, match="workers must be an int >= 0"):
            check_images(listing, workers=workers)
    with pytest.raises(TypeError, match="progress must be True or False"):
        check_images(listing, progress="yes")
    with pytest.raises(TypeError, match="ImageList"):
        check_images(list(listing.paths))
    with pytest.raises(TypeError, match="RetrievalSplits"):
        check_splits(listing)


@pytest.fixture
def splits(tmp_path):
    """Train 2 images; query items 0, 1, 2; gallery: item 0 good + bad, item 1 only bad, item 2 none."""
    train = ImageList([_good(tmp_path / "t1.jpg"), _truncated(tmp_path / "t2.jpg")], [0, 0], ["t"])
    query = ImageList([_good(tmp_path / "q0.jpg"), _good(tmp_path / "q1.jpg"), _good(tmp_path / "q2.jpg")],
                      [0, 1, 2], ["0", "1", "2"])
    gallery = ImageList([_good(tmp_path / "g0.jpg"), _text(tmp_path / "g0b.jpg"), _truncated(tmp_path / "g1.jpg")],
                        [0, 0, 1], ["0", "1", "2"])
    return RetrievalSplits(train, query, gallery)


def test_check_splits_error_lists_bad_files_of_every_split(splits):
    with pytest.raises(ImageReadError, match=r"3 of 8 images cannot be read") as info:
        check_splits(splits)
    assert [path for path, _ in info.value.bad] == [splits.train.paths[1], *splits.gallery.paths[1:]]


def test_check_splits_skip_keeps_queries_that_lose_their_gallery_images(splits):
    with pytest.warns(UserWarning, match=r"left 1 query image\(s\) without a gallery image of their item"):
        checked, bad = check_splits(splits, policy="skip", workers=2)
    assert len(bad) == 3
    assert checked.train.paths == splits.train.paths[:1]
    assert checked.query.paths == splits.query.paths  # q1 stays: it is left out of Recall@K like q2
    assert checked.gallery.paths == splits.gallery.paths[:1]
    assert checked.queries_without_match == 2 and splits.queries_without_match == 1


def test_check_splits_skip_refuses_to_leave_nothing(splits, tmp_path):
    classes = ["0", "1", "2", "3"]  # the only readable gallery image shows item 3, which has no query
    no_match = RetrievalSplits(splits.train, ImageList(splits.query.paths, [0, 1, 2], classes),
                               ImageList([splits.gallery.paths[2], splits.gallery.paths[0]], [1, 3], classes))
    with pytest.raises(ImageReadError, match="without the unreadable images no query item has a gallery image"):
        check_splits(no_match, policy="skip")
    all_bad = RetrievalSplits(ImageList([_text(tmp_path / "x.jpg")], [0], ["t"]), splits.query, splits.gallery)
    with pytest.raises(ImageReadError, match="every train image is unreadable; fix or remove them"):
        check_splits(all_bad, policy="skip")


def test_check_splits_decodes_a_shared_file_once(splits, monkeypatch):
    calls = []
    decode = image_check.load_image
    monkeypatch.setattr(image_check, "load_image", lambda path, **kwargs: calls.append(path) or decode(path, **kwargs))
    same = RetrievalSplits(splits.train, splits.query, ImageList(splits.query.paths, [0, 1, 2], ["0", "1", "2"]))
    with pytest.raises(ImageReadError, match="1 of 5 images"):
        check_splits(same)
    assert sorted(calls) == sorted(set(splits.train.paths) | set(splits.query.paths))
