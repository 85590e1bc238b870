"""Decoding image files into RGB arrays, refusing broken ones with a message that names the file and the reason."""
from __future__ import annotations

import io
import os
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image, ImageOps
from prodrec.utils import ProdrecError, ProdrecTypeError

__all__ = ["decode_image", "ImageReadError", "load_image", "as_rgb_array", "printable_path"]


class ImageReadError(ProdrecError):
    """Image files could not be read or decoded; the message names each file and the reason.

    Attributes:
        bad: ``(path, reason)`` of every file the error is about.
    """

    def __init__(self, message: str, bad: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.bad = list(bad)


PathLike = Union[str, bytes, os.PathLike]
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
_PNG_END = b"IEND\xaeB`\x82"
_REDUCED_JPEG_FLAGS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                       (2, cv2.IMREAD_REDUCED_COLOR_2))


def load_image(path: PathLike, *, min_size: Optional[int] = None) -> np.ndarray:
    """Read an image file as an ``HxWx3`` uint8 RGB array.

    Any format whose header Pillow reads and whose pixels OpenCV decodes (JPEG, PNG, WebP, BMP, TIFF, GIF...).
    Grayscale, palette and CMYK images are converted to RGB, 16-bit ones scaled to 8 bits (``v >> 8``), the
    EXIF orientation is applied, and images with transparency (an alpha channel, transparent palette entries)
    are decoded by Pillow and composited onto white. Truncated JPEG and PNG files are refused. Images over
    Pillow's decompression-bomb limit (twice ``PIL.Image.MAX_IMAGE_PIXELS``) are refused before decoding;
    OpenCV's own limit (environment variable ``OPENCV_IO_MAX_IMAGE_PIXELS``) applies after.

    Args:
        path: The file; a ``str``, ``bytes`` or path-like object (file names need not be UTF-8).
        min_size: Decode a JPEG at 1/2, 1/4 or 1/8 scale, the smallest whose shorter side stays at least
            ``min_size`` (faster; for images that are resized down anyway). None decodes at full size.

    Raises:
        ImageReadError: The file is missing, unreadable, empty, truncated, not an image, too large or corrupt.
    """
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1):
        raise ProdrecError(f"load_image: min_size must be a positive int or None, got {min_size!r}")
    name = os.fsdecode(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise _read_error(name, error.strerror or str(error)) from error
    return decode_image(data, name, min_size=min_size)


def decode_image(data: bytes, name: str = "upload", *, min_size: Optional[int] = None) -> np.ndarray:
    """:func:`load_image` of bytes already in memory (an upload); ``name`` names them in errors."""
    if min_size is not None and (isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1):
        raise ProdrecError(f"decode_image: min_size must be a positive int or None, got {min_size!r}")
    if not data:
        raise _read_error(name, "the file is empty (0 bytes)")
    kind = next((kind for signature, kind in _SIGNATURES if data.startswith(signature)), None)
    if kind == "JPEG" and not _jpeg_ends(data):
        raise _read_error(name, f"truncated JPEG: the data ends after {len(data)} bytes, before the "
                                "end-of-image marker")
    if kind == "PNG" and data.rfind(_PNG_END) < 0:
        raise _read_error(name, f"truncated PNG: the data ends after {len(data)} bytes, before the IEND chunk")
    try:
        header = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise _read_error(name, f"too large: {error} (Pillow's limit is twice PIL.Image.MAX_IMAGE_PIXELS; "
                                "raise that, or set it to None, if you trust the file)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise _read_error(name, f"corrupt {kind} header ({len(data)} bytes; Pillow cannot read it)" if kind else
                          f"not an image: no known image format ({len(data)} bytes of {_content(data)})") from error
    with header:
        # 16-bit grayscale with a transparent colour key would be clipped by Pillow: OpenCV scales it.
        if header.has_transparency_data and not header.mode.startswith("I"):
            return _composite_on_white(name, header)
        return _decode(name, data, header, min_size)


def _content(data: bytes) -> str:
    """What non-image bytes look like, without quoting them (they may hold anything, terminal escapes too)."""
    head = data[:512]
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "HTML (a web page saved under an image name?)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not just a character cut at the 512-byte boundary
            return "binary data"
    return "text"


def _decode(name: str, data: bytes, header: Image.Image, min_size: Optional[int]) -> np.ndarray:
    """OpenCV decode (orientation, colour conversions, JPEG size reduction) to RGB."""
    flags = cv2.IMREAD_COLOR
    if min_size is not None and header.format in ("JPEG", "MPO"):
        shorter = min(header.size)
        # libjpeg's scaled sizes round up
        flags = next((flag for scale, flag in _REDUCED_JPEG_FLAGS if -(-shorter // scale) >= min_size), flags)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as error:
        width, height = header.size
        raise _read_error(name, f"OpenCV refused the {width}x{height} image ({error.err}); OpenCV's size limits "
                                "are the environment variables OPENCV_IO_MAX_IMAGE_PIXELS (default 2**30), "
                                "OPENCV_IO_MAX_IMAGE_WIDTH and _HEIGHT, read when cv2 is imported") from error
    if image is None:
        raise _read_error(name, f"corrupt or unsupported {header.format} data ({len(data)} bytes; OpenCV "
                                "cannot decode it)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _composite_on_white(name: str, header: Image.Image) -> np.ndarray:
    """Pillow decode of an image with transparency: EXIF orientation applied, composited onto white."""
    try:
        rgba = ImageOps.exif_transpose(header).convert("RGBA")
    except (OSError, SyntaxError, ValueError) as error:
        raise _read_error(name, f"corrupt {header.format} data: {error}") from error
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.array(Image.alpha_composite(white, rgba).convert("RGB"))


def _jpeg_ends(data: bytes) -> bool:
    """Whether a JPEG stream reaches its end-of-image marker (data after it is allowed)."""
    if data.endswith(b"\xff\xd9"):
        return True
    position = 2
    while position + 1 < len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte or marker without length
            position += 1 if marker == 0xFF else 2
            continue
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:  # entropy-coded data: runs to the next marker that is not a stuffed 0 or a restart
            while True:
                position = data.find(b"\xff", position)
                if position < 0 or position + 1 >= len(data):
                    return False
                follower = data[position + 1]
                if follower != 0 and not 0xD0 <= follower <= 0xD7:
                    break
                position += 2
    return False


def printable_path(name: str) -> str:
    """A file name with bytes that are not UTF-8 shown as ``\\xNN`` (printable on any UTF-8 stream)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _read_error(name: str, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image {printable_path(name)}: {reason}", [(name, reason)])


def as_rgb_array(image: Any) -> np.ndarray:
    """An HxWx3 uint8 RGB array from an image path, a PIL image or such an array (checked)."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(os.fspath(image))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ProdrecError(f"a numpy image must be HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        return image
    if hasattr(image, "convert"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    raise ProdrecTypeError(f"an image must be a path, a PIL image or an HxWx3 uint8 RGB array, got "
                           f"{type(image).__name__}")
