"""Synthetic shelf and checkout-tray photos with a COCO box for every product and its label.

A **shelf** scene is a back wall and 3-6 shelf boards, each row packed left to right with upright
products that sometimes overlap (the one in front hides part of its neighbour), price strips on the board
edges, and, now and then, a customer's hand-held object in front. A **tray** scene is a checkout surface
with 3-15 products lying at any angle, overlapping. Either is then seen through a camera: a perspective
tilt, a light gradient, colour cast, blur, noise and JPEG compression.

Products come from the synthetic product drawings (:mod:`prodrec.data.synthetic_drawing`; labels
``id_XXXXXXXX`` as :func:`~prodrec.data.make_synthetic_inshop` with the same seed names them) or from a folder
(:func:`read_product_pictures`). Each box is the visible part of its product after occlusion and the camera;
a product hidden for more than 70 % is left unannotated, as SKU-110K's annotators leave it.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from prodrec.data.synthetic_drawing import render_item

__all__ = ["ProductPicture", "SCENE_KINDS", "synthetic_products", "render_scene"]

ProductPicture = Tuple[str, np.ndarray]
"""A product's label and its picture: BGRA uint8, alpha 255 where the product is."""

_MIN_VISIBLE = 0.3
SCENE_KINDS = ("shelf", "tray")


def synthetic_products(count: int, seed: int, size: int = 128) -> List[ProductPicture]:
    """``count`` synthetic products, cropped to their silhouettes."""
    pictures = []
    for item in range(1, count + 1):
        bgra, (x0, y0, x1, y1), _ = render_item(seed, item, size)
        crop = bgra[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))]
        pictures.append((f"id_{item:08d}", np.clip(crop, 0, 255).astype(np.uint8)))
    return pictures


def render_scene(products: Sequence[ProductPicture], rng: np.random.Generator, *, width: int = 640,
                 height: int = 480, kind: str = "shelf") -> Tuple[np.ndarray, List[Tuple[Tuple[int, int, int, int], str]]]:
    """One scene (BGR uint8) and its visible product boxes ``((x1, y1, x2, y2), label)``, x2/y2 exclusive."""
    canvas = _background(rng, width, height, kind)
    instances = np.zeros((height, width), np.int32)  # which pasted product shows at each pixel (0: none)
    pasted: List[Tuple[str, int]] = []  # label and full pixel area of each product
    place = _shelf_rows if kind == "shelf" else _tray
    for label, picture, corners in place(products, rng, width, height, canvas):
        pasted.append((label, _paste(canvas, instances, picture, corners, len(pasted) + 1)))
    if rng.random() < 0.3:  # something held in front of the products
        _blob(canvas, instances, rng, width, height)
    canvas, instances = _camera(canvas, instances, rng)
    boxes = []
    counts = np.bincount(instances.ravel(), minlength=len(pasted) + 1)
    for number, (label, area) in enumerate(pasted, start=1):
        if area == 0 or counts[number] < _MIN_VISIBLE * area:
            continue
        x, y, w, h = cv2.boundingRect((instances == number).astype(np.uint8))
        if w >= 4 and h >= 4:
            boxes.append(((x, y, x + w, y + h), label))
    return canvas, boxes


def _background(rng: np.random.Generator, width: int, height: int, kind: str) -> np.ndarray:
    base = rng.uniform(40, 220, 3)
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = base
    canvas *= np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.1), width, dtype=np.float32)[None, :, None]
    grain = rng.standard_normal((height // 8 + 1, width // 8 + 1)).astype(np.float32) * rng.uniform(3, 12)
    canvas += cv2.resize(grain, (width, height), interpolation=cv2.INTER_CUBIC)[..., None]
    if kind == "tray" and rng.random() < 0.5:  # a conveyor belt's ribs
        period = int(rng.integers(12, 30))
        canvas[:, (np.arange(width) % period) < period // 4] *= 0.8
    return canvas


def _shelf_rows(products, rng, width, height, canvas):
    """Products standing on 3-6 boards, packed left to right, each row mostly one product repeated (facings)."""
    rows = int(rng.integers(3, 7))
    board = max(6, height // (rows * 9))
    edge = np.linspace(0, height, rows + 1).astype(int)
    board_colour = rng.uniform(60, 230, 3)
    for row in range(rows):
        top, bottom = edge[row], edge[row + 1] - board
        canvas[bottom:edge[row + 1]] = board_colour * rng.uniform(0.85, 1.0)
        if rng.random() < 0.7:  # price strip on the board's front edge
            canvas[bottom + board // 4: edge[row + 1] - board // 4, :] = rng.uniform(180, 255, 3)
        product_height = (bottom - top) * rng.uniform(0.6, 0.95)
        x = rng.uniform(-0.02, 0.04) * width
        label, picture = products[int(rng.integers(len(products)))]
        while x < width:
            if rng.random() < 0.35:  # the next facing is another product
                label, picture = products[int(rng.integers(len(products)))]
            scale = product_height * rng.uniform(0.85, 1.0) / picture.shape[0]
            w, h = picture.shape[1] * scale, picture.shape[0] * scale
            y1 = bottom - rng.uniform(0, 0.03) * h
            corners = np.array([(x, y1 - h), (x + w, y1 - h), (x + w, y1), (x, y1)], np.float32)
            corners += rng.uniform(-0.03, 0.03, (4, 2)).astype(np.float32) * (w, h)
            yield label, picture, corners
            x += w * rng.uniform(0.82, 1.12) + (rng.uniform(0, 0.5) * w if rng.random() < 0.1 else 0)


def _tray(products, rng, width, height, canvas):
    """3-15 products lying at any angle on a checkout surface, some over others."""
    for _ in range(int(rng.integers(3, 16))):
        label, picture = products[int(rng.integers(len(products)))]
        scale = rng.uniform(0.15, 0.4) * min(width, height) / max(picture.shape[:2])
        w, h = picture.shape[1] * scale, picture.shape[0] * scale
        local = np.array([(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)], np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]], np.float32)
        centre = rng.uniform((0.1 * width, 0.1 * height), (0.9 * width, 0.9 * height))
        yield label, picture, (local @ rotation + centre).astype(np.float32)


def _paste(canvas: np.ndarray, instances: np.ndarray, picture: np.ndarray, corners: np.ndarray, number: int) -> int:
    """Warp ``picture`` onto ``corners`` of the canvas; returns its pixel area in the canvas."""
    h, w = picture.shape[:2]
    source = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float32)
    x0, y0 = np.floor(np.maximum(corners.min(0), 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(corners.max(0), (canvas.shape[1], canvas.shape[0]))).astype(int)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0
    matrix = cv2.getPerspectiveTransform(source, corners - np.float32((x0, y0)))
    warped = cv2.warpPerspective(picture, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    alpha = warped[..., 3:4].astype(np.float32) / 255
    region = canvas[y0:y1, x0:x1]
    region[:] = region * (1 - alpha) + warped[..., :3] * alpha
    shows = alpha[..., 0] >= 0.5
    instances[y0:y1, x0:x1][shows] = number
    return int(shows.sum())


def _blob(canvas: np.ndarray, instances: np.ndarray, rng: np.random.Generator, width: int, height: int) -> None:
    """An out-of-focus object in front (a hand, a basket's rim): it hides what is behind it."""
    centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
    axes = (int(rng.uniform(0.05, 0.15) * width), int(rng.uniform(0.05, 0.2) * height))
    mask = np.zeros(instances.shape, np.uint8)
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1)
    canvas[mask > 0] = rng.uniform(30, 220, 3)
    instances[mask > 0] = 0


def _camera(canvas: np.ndarray, instances: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A perspective tilt, a light gradient and colour cast, blur, noise; instances follow the geometry."""
    height, width = instances.shape
    source = np.array([(0, 0), (width, 0), (width, height), (0, height)], np.float32)
    target = (source + rng.uniform(-0.06, 0.06, (4, 2)) * (width, height)).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(source, target)
    fill = tuple(float(v) for v in canvas.reshape(-1, 3).mean(0))
    canvas = cv2.warpPerspective(canvas, matrix, (width, height), borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    instances = cv2.warpPerspective(instances.astype(np.float32), matrix, (width, height), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.int32)
    light = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(0.9, 1.3), height, dtype=np.float32)[:, None, None]
    canvas = canvas * light * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    if rng.random() < 0.5:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.4, 1.5))
    canvas += rng.standard_normal(canvas.shape).astype(np.float32) * np.float32(rng.uniform(0, 6))
    return np.clip(canvas, 0, 255).astype(np.uint8), instances
