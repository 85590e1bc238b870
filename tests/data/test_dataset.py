import cv2
import numpy as np
import pytest
import torch

from prodrec.data.dataset import ImageDataset, ImageList, ImageReadError, RetrievalSplits, load_image


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, image)
    assert ok
    encoded.tofile(str(path))
    return str(path)


def test_load_image_returns_rgb_from_bgr_file(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30
    image = load_image(_write(tmp_path / "a.png", bgr))
    assert image.dtype == np.uint8 and image.shape == (4, 5, 3)
    assert image[0, 0].tolist() == [30, 20, 10]


def test_load_image_reads_odd_paths(tmp_path):
    path = _write(tmp_path / "dir with spaces" / "ümlaut bild.jpg", np.full((6, 7, 3), 128, np.uint8))
    assert load_image(path).shape == (6, 7, 3)


def test_load_image_converts_gray_rgba_and_16_bit(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    image = load_image(_write(tmp_path / "gray.png", gray))
    assert image.shape == (3, 4, 3) and (image == gray[..., None]).all()

    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 1, 2, 3, 0
    assert load_image(_write(tmp_path / "rgba.png", bgra))[0, 0].tolist() == [3, 2, 1]

    deep = np.array([[0, 257 * 100, 65535]], np.uint16)
    image = load_image(_write(tmp_path / "deep.png", deep))
    assert image.dtype == np.uint8 and image[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize("content, reason", [(None, "No such file"), (b"", "empty"),
                                             (b"not an image at all", "not a decodable image")])
def test_load_image_errors_name_the_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        load_image(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


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
    paths = [_write(tmp_path / f"{i}.png", np.full((2, 3, 3), i, np.uint8)) for i in range(3)]
    dataset = ImageDataset(ImageList(paths, [2, 0, 1], ["a", "b", "c"]),
                           lambda image: torch.from_numpy(image).permute(2, 0, 1).float())
    assert len(dataset) == 3
    tensor, label = dataset[np.int64(2)]
    assert tensor.shape == (3, 2, 3) and (tensor == 2).all()
    assert label == 1 and type(label) is int
    with pytest.raises(TypeError, match="ImageList"):
        ImageDataset(paths, lambda image: image)
