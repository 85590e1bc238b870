import cv2
import numpy as np
import pytest

from prodrec.data import ImageReadError, load_image


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
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 1, 2, 3, 255
    bgra[0, 0, 3] = 0  # transparent: composited onto white
    image = load_image(_write(tmp_path / "rgba.png", bgra))
    assert image[0, 0].tolist() == [255, 255, 255] and image[0, 1].tolist() == [3, 2, 1]

    deep = np.array([[0, 257 * 100, 65535]], np.uint16)
    image = load_image(_write(tmp_path / "deep.png", deep))
    assert image.dtype == np.uint8 and image[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize("content, reason", [(None, "No such file"), (b"", "empty"),
                                             (b"not an image at all", "not an image")])
def test_load_image_errors_name_the_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        load_image(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)
    assert info.value.bad[0][0] == str(path) and reason in info.value.bad[0][1]


def test_load_image_min_size_picks_the_smallest_jpeg_scale_that_keeps_it(tmp_path):
    """1000x800 JPEG: libjpeg's scaled sizes are 500x400, 250x200, 125x100."""
    y, x = np.mgrid[0:800, 0:1000]
    photo = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    jpeg, png = _write(tmp_path / "p.jpg", photo), _write(tmp_path / "p.png", photo)
    expected = {None: (800, 1000), 1: (100, 125), 100: (100, 125), 101: (200, 250), 128: (200, 250),
                200: (200, 250), 201: (400, 500), 400: (400, 500), 401: (800, 1000), 5000: (800, 1000)}
    for min_size, shape in expected.items():
        assert load_image(jpeg, min_size=min_size).shape == (*shape, 3), min_size
    assert load_image(png, min_size=100).shape == (800, 1000, 3)  # only JPEG decodes at reduced size
    reduced = load_image(jpeg, min_size=128).astype(int)
    resized = cv2.resize(load_image(jpeg), (250, 200), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(reduced - resized).mean() < 6
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="min_size must be a positive int"):
            load_image(jpeg, min_size=bad)
