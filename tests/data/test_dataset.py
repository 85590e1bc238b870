from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from prodrec.data import ImageDataset, ImageList, RetrievalSplits
from prodrec.data.packed_paths import PackedPaths


def test_image_list_coerces_and_validates():
    images = ImageList(["/a.jpg", "/b.jpg"], [1, 0], ["x", "y"])
    assert images.paths == ("/a.jpg", "/b.jpg") and images.classes == ("x", "y")
    assert images.labels.dtype == np.int64 and not images.labels.flags.writeable
    assert len(images) == 2 and images.num_classes == 2
    with pytest.raises(ValueError, match="one entry per path"):
        ImageList(("/a.jpg",), np.array([0, 0]), ("x",))
    with pytest.raises(ValueError, match=r"0\.\.0"):
        ImageList(("/a.jpg",), np.array([1]), ("x",))
    with pytest.raises(ValueError, match="unique"):
        ImageList(("/a.jpg",), np.array([0]), ("x", "x"))


def test_image_list_from_names():
    images = ImageList.from_names(["/1", "/2", "/3"], ["b", "a", "b"])
    assert images.classes == ("a", "b") and images.labels.tolist() == [1, 0, 1]
    shared = ImageList.from_names(["/1"], ["b"], classes=["a", "b", "c"])
    assert shared.labels.tolist() == [1] and shared.num_classes == 3
    with pytest.raises(ValueError, match="'z'"):
        ImageList.from_names(["/1"], ["z"], classes=["a"])


def test_retrieval_splits_share_label_space_and_count_unmatched_queries():
    train = ImageList.from_names(["/t"], ["t"])
    query = ImageList.from_names(["/q1", "/q2", "/q3"], ["a", "b", "b"], classes=["a", "b"])
    gallery = ImageList.from_names(["/g1"], ["a"], classes=["a", "b"])
    assert RetrievalSplits(train, query, gallery).queries_without_match == 2
    with pytest.raises(ValueError, match="label space"):
        RetrievalSplits(train, query, ImageList.from_names(["/g1"], ["a"]))


def test_image_dataset_returns_transformed_image_and_label(tmp_path):
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    for i, path in enumerate(paths):
        assert cv2.imwrite(path, np.full((2, 3, 3), i, np.uint8))
    dataset = ImageDataset(ImageList(paths, [2, 0, 1], ["a", "b", "c"]),
                           lambda image: torch.from_numpy(image).permute(2, 0, 1).float())
    assert len(dataset) == 3
    tensor, label = dataset[np.int64(2)]
    assert tensor.shape == (3, 2, 3) and (tensor == 2).all()
    assert label == 1 and type(label) is int
    with pytest.raises(TypeError, match="ImageList"):
        ImageDataset(paths, lambda image: image)


def test_image_dataset_decode_size(tmp_path):
    path = str(tmp_path / "big.jpg")
    assert cv2.imwrite(path, np.full((400, 600, 3), 90, np.uint8))
    images = ImageList([path], [0], ["a"])
    assert ImageDataset(images, np.shape)[0][0] == (400, 600, 3)
    assert ImageDataset(images, np.shape, decode_size=100)[0][0] == (100, 150, 3)
    with pytest.raises(ValueError, match="decode_size must be a positive int"):
        ImageDataset(images, np.shape, decode_size=0)


def test_image_list_decodes_bytes_paths():
    images = ImageList([b"/data/caf\xe9.jpg", "/data/b.jpg"], [0, 0], ["x"])
    assert images.paths == ("/data/caf\udce9.jpg", "/data/b.jpg")


def test_image_list_keeps_its_paths_packed():
    images = ImageList((p for p in ["/a.jpg", Path("/b.jpg")]), [0, 0], ["x"])
    assert isinstance(images.paths, PackedPaths) and images.paths[1] == "/b.jpg" and type(images.paths[1]) is str
    assert ImageList(images.paths, [0, 0], ["x"]).paths is images.paths  # already packed: shared, not copied
    assert ImageList([], [], ["x"]).paths == ()
