"""load_image on real files of every awkward kind: each one decodes correctly or raises ImageReadError naming
the file and the reason."""
import io
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

import prodrec.data.decode as decode
from prodrec.data import ImageReadError, load_image
from prodrec.data import read_image_folder

EXIF_ORIENTATION = 0x0112


def _photo(height=48, width=64):
    """Smooth colours (JPEG keeps them within a few levels) with a distinct colour per quadrant."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 60)], -1).astype(np.uint8)
    image[: height // 2, : width // 2, 2] = 230
    return image


def _save(path, image, fmt, **options):
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(path, fmt, **options)
    return str(path)


def _jpeg_bytes(image, **options):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def _fails(path, reason):
    with pytest.raises(ImageReadError, match=reason) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"cannot read image {path}: ")
    assert info.value.bad == [(os.fsdecode(path), message.split(": ", 1)[1])]
    return message


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_refused_at_every_cut(tmp_path, progressive):
    data = _jpeg_bytes(_photo(96, 128), progressive=progressive)
    for cut in (20, len(data) // 3, len(data) - 200, len(data) - 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.jpg"
        path.write_bytes(data[:cut])
        _fails(str(path), f"truncated JPEG: the data ends after {cut} bytes, before the end-of-image marker")


def test_truncation_check_does_not_rely_on_opencv(tmp_path, monkeypatch):
    """OpenCV 4 decodes a truncated JPEG to a half-grey image; the check must not depend on OpenCV refusing it."""
    monkeypatch.setattr(decode.cv2, "imdecode", lambda data, flags: np.full((8, 8, 3), 128, np.uint8))
    data = _jpeg_bytes(_photo())
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    _fails(str(tmp_path / "half.jpg"), "truncated JPEG")


def test_data_after_the_end_of_image_marker_is_allowed(tmp_path):
    data = _jpeg_bytes(_photo())
    (tmp_path / "clean.jpg").write_bytes(data)
    (tmp_path / "trailer.jpg").write_bytes(data + b"\x00camera trailer without a marker")
    assert np.array_equal(load_image(str(tmp_path / "trailer.jpg")), load_image(str(tmp_path / "clean.jpg")))


def test_truncated_and_corrupt_png(tmp_path):
    data = cv2.imencode(".png", _photo())[1].tobytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    _fails(str(tmp_path / "cut.png"), f"truncated PNG: the data ends after {len(data) // 2} bytes, before the IEND")
    corrupt = bytearray(data)
    start = corrupt.find(b"IDAT") + 10
    corrupt[start:start + 20] = bytes(20)
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    _fails(str(tmp_path / "corrupt.png"), r"corrupt or unsupported PNG data \(\d+ bytes; OpenCV cannot decode it\)")


def test_corrupt_jpeg_header(tmp_path):
    data = bytearray(_jpeg_bytes(_photo()))
    start = data.find(b"\xff\xc4") + 5  # inside the first Huffman table
    data[start:start + 35] = b"\xff" * 35
    (tmp_path / "header.jpg").write_bytes(bytes(data))
    _fails(str(tmp_path / "header.jpg"), r"corrupt JPEG header \(\d+ bytes; Pillow cannot read it\)")


@pytest.mark.parametrize("content, reason", [
    (b"", r"the file is empty \(0 bytes\)"),
    (b"just some text\n", r"not an image: no known image format \(15 bytes of text\)$"),
    (b"<!DOCTYPE html><html>Not Found</html>", r"\(37 bytes of HTML \(a web page saved under an image name\?\)\)"),
])
def test_empty_and_not_an_image(tmp_path, content, reason):
    (tmp_path / "photo.jpg").write_bytes(content)
    _fails(str(tmp_path / "photo.jpg"), reason)


def test_missing_file_folder_and_unreadable_permissions(tmp_path, monkeypatch):
    _fails(str(tmp_path / "nope.jpg"), "No such file or directory")
    _fails(str(tmp_path), "Is a directory")
    path = _save(tmp_path / "locked.jpg", _photo(), "JPEG")
    if os.geteuid() != 0:  # root reads any file, so the real chmod test runs for other users only
        os.chmod(path, 0)
        try:
            _fails(path, "Permission denied")
        finally:
            os.chmod(path, 0o644)

    def denied(file, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", file)

    monkeypatch.setattr(decode, "open", denied, raising=False)
    _fails(path, "Permission denied")


def test_cmyk_jpeg_gives_the_rgb_colours(tmp_path):
    photo = _photo()
    path = _save(tmp_path / "cmyk.jpg", Image.fromarray(photo).convert("CMYK"), "JPEG", quality=100)
    assert Image.open(path).mode == "CMYK"
    image = load_image(path)
    assert image.shape == photo.shape and np.abs(image.astype(int) - photo).mean() < 3


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 255, 256, 257 * 100, 32767, 32768, 65280, 65535]], np.uint16)
    expected = (levels >> 8).astype(np.uint8)  # the high byte: 257*k -> k, 0 -> 0, 65535 -> 255
    gray = tmp_path / "gray16.png"
    cv2.imwrite(str(gray), levels)
    assert load_image(str(gray))[0].tolist() == [[v] * 3 for v in expected[0].tolist()]
    color = tmp_path / "rgb16.png"
    cv2.imwrite(str(color), np.stack([levels, levels[:, ::-1], np.full_like(levels, 257 * 7)], -1))  # BGR
    image = load_image(str(color))
    assert image[0, :, 2].tolist() == expected[0].tolist() and image[0, :, 1].tolist() == expected[0, ::-1].tolist()
    assert (image[0, :, 0] == 7).all()
    random = np.random.default_rng(0).integers(0, 65536, (5, 7), dtype=np.uint16)
    cv2.imwrite(str(gray), random)
    assert np.abs(load_image(str(gray))[..., 0].astype(int) - np.round(random / 257)).max() <= 1


def test_palette_png_with_and_without_transparency(tmp_path):
    colours = np.array([[255, 0, 0], [0, 128, 255], [10, 200, 30]], np.uint8)
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette = Image.fromarray(indices, "P")
    palette.putpalette(colours.ravel().tolist())
    opaque = load_image(_save(tmp_path / "opaque.png", palette, "PNG"))
    assert np.array_equal(opaque, colours[indices])
    clear = load_image(_save(tmp_path / "clear.png", palette, "PNG", transparency=1))  # index 1 is transparent
    expected = colours[indices].copy()
    expected[indices == 1] = 255
    assert np.array_equal(clear, expected)


def test_alpha_is_composited_onto_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 40, 0)
    rgba[..., 3] = [[0, 128, 255], [255, 255, 0]]
    image = load_image(_save(tmp_path / "rgba.png", rgba, "PNG"))
    alpha = rgba[..., 3:] / 255
    assert np.abs(image - (rgba[..., :3] * alpha + 255 * (1 - alpha))).max() <= 1
    assert image[0, 0].tolist() == [255, 255, 255] and image[0, 2].tolist() == [200, 40, 0]
    gray_alpha = np.array([[[50, 0], [50, 255]]], np.uint8)
    assert load_image(_save(tmp_path / "la.png", Image.fromarray(gray_alpha, "LA"), "PNG"))[0].tolist() == [
        [255] * 3, [50] * 3]
    webp = load_image(_save(tmp_path / "rgba.webp", rgba, "WEBP", lossless=True))
    assert np.abs(webp.astype(int) - image).max() <= 1


def test_grayscale_png_and_jpeg(tmp_path):
    gray = _photo()[..., 0]
    png = load_image(_save(tmp_path / "gray.png", gray, "PNG"))
    assert png.shape == (*gray.shape, 3) and (png == gray[..., None]).all()
    jpeg = load_image(_save(tmp_path / "gray.jpg", gray, "JPEG", quality=100))
    assert (jpeg[..., 0] == jpeg[..., 2]).all() and np.abs(jpeg[..., 0].astype(int) - gray).max() <= 2


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    """Against Pillow's ImageOps.exif_transpose, for a JPEG (OpenCV path, also at reduced size) and an RGBA
    PNG (Pillow path)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    photo = _photo(64, 96)
    jpeg = _save(tmp_path / "rotated.jpg", photo, "JPEG", quality=100, exif=exif)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(jpeg)).convert("RGB")).astype(int)
    assert reference.shape[:2] == ((96, 64) if orientation >= 5 else (64, 96))
    image = load_image(jpeg)
    assert image.shape == reference.shape and np.abs(image - reference).mean() < 2
    half = load_image(jpeg, min_size=32)
    assert half.shape == (reference.shape[0] // 2, reference.shape[1] // 2, 3)
    assert np.abs(half - reference[::2, ::2]).mean() < 12
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[0, 0, 3] = 0
    png = _save(tmp_path / "rotated.png", rgba, "PNG", exif=exif)
    reference = np.asarray(ImageOps.exif_transpose(Image.open(png)))
    assert np.array_equal(load_image(png), np.where(reference[..., 3:] > 0, reference[..., :3], 255))


def test_decompression_bomb_limit(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", np.zeros((50, 60, 3), np.uint8), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _fails(path, r"too large: Image size \(3000 pixels\) exceeds limit of 2000 pixels, could be decompression bomb "
                 r"DOS attack. \(Pillow's limit is twice PIL.Image.MAX_IMAGE_PIXELS; raise that, or set it to None")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    assert load_image(path).shape == (50, 60, 3)


def test_opencv_pixel_limit_is_reported(tmp_path):
    """OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when cv2 loads: check it in a fresh interpreter."""
    path = _save(tmp_path / "image.png", np.zeros((20, 30, 3), np.uint8), "PNG")
    code = ("from prodrec.data import load_image, ImageReadError\n"
            f"try:\n    load_image({path!r})\nexcept ImageReadError as error:\n    print(error)\n")
    env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS="100")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert f"cannot read image {path}: OpenCV refused the 30x20 image" in result.stdout, result.stderr
    assert "OPENCV_IO_MAX_IMAGE_PIXELS" in result.stdout


def test_non_utf8_and_space_containing_file_names(tmp_path):
    folder = os.fsencode(tmp_path / "item one")
    os.mkdir(folder)
    good = os.path.join(folder, b"caf\xe9 photo.jpg")  # Latin-1 bytes: not UTF-8
    with open(good, "wb") as file:
        file.write(_jpeg_bytes(_photo()))
    assert load_image(good).shape == (48, 64, 3)
    assert load_image(os.fsdecode(good)).shape == (48, 64, 3)  # the surrogate-escaped str form
    listing = read_image_folder(tmp_path)
    assert listing.paths == (os.fsdecode(good),) and listing.classes == ("item one",)
    bad = os.path.join(folder, b"\xff\xfe broken.jpg")
    with open(bad, "wb") as file:
        file.write(b"not a picture")
    with pytest.raises(ImageReadError) as info:
        load_image(bad)
    message = str(info.value)
    message.encode("utf-8")  # printable on a UTF-8 stream despite the undecodable name
    assert f"{tmp_path}/item one/\\xff\\xfe broken.jpg: not an image" in message
    assert info.value.bad[0][0] == os.fsdecode(bad)
