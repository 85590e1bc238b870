"""Random objects for shelf scenes: irregular silhouettes with natural-looking textures.

The synthetic products (:mod:`prodrec.data.synthetic_drawing`) are drawn packages: flat palette colours,
straight edges. A detector trained only on them learns those packages, not "a thing on a shelf". Random
objects (domain randomisation) break that: each is a smooth blob, a cluster of lobes or a thin tool-like
shape, textured with multi-scale coloured noise, now and then striped, and shaded as if round, with
labels ``object_XXXX``.
"""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np

__all__ = ["random_objects"]


def random_objects(count: int, seed: int, size: int = 128) -> List[Tuple[str, np.ndarray]]:
    """``count`` random objects as ``(label, BGRA uint8 picture)``, cropped to their silhouettes."""
    pictures = []
    for number in range(1, count + 1):
        rng = np.random.default_rng([seed, 13, number])
        mask = _silhouette(rng, size)
        picture = np.dstack([_texture(rng, size), mask])
        rows, columns = np.nonzero(mask >= 128)
        crop = picture[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
        pictures.append((f"object_{number:04d}", np.ascontiguousarray(crop)))
    return pictures


def _silhouette(rng: np.random.Generator, size: int) -> np.ndarray:
    """A filled shape (uint8, 255 inside) that fits the square: a wobbly blob, lobes, or a handle and head."""
    mask = np.zeros((size, size), np.uint8)
    centre = np.array([size / 2, size / 2])
    kind = rng.choice(["blob", "lobes", "tool"], p=[0.5, 0.3, 0.2])
    if kind == "blob":
        angles = np.linspace(0, 2 * np.pi, 90, endpoint=False)
        radius = np.ones_like(angles)
        for k in range(2, 7):
            radius += rng.uniform(0, 0.25 / k * 2) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
        stretch = rng.uniform(0.45, 1.0, 2)
        points = np.stack([np.cos(angles), np.sin(angles)], 1) * radius[:, None] * stretch / radius.max()
        cv2.fillPoly(mask, [np.round(centre + points * size * 0.45).astype(np.int32)], 255, cv2.LINE_AA)
    elif kind == "lobes":
        for _ in range(int(rng.integers(2, 6))):
            at = centre + rng.uniform(-0.22, 0.22, 2) * size
            axes = tuple(int(v) for v in rng.uniform(0.08, 0.25, 2) * size)
            cv2.ellipse(mask, tuple(int(v) for v in at), axes, rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    else:
        angle = rng.uniform(0, np.pi)
        direction = np.array([np.cos(angle), np.sin(angle)])
        start, end = centre - direction * size * 0.42, centre + direction * size * 0.1
        cv2.line(mask, tuple(int(v) for v in start), tuple(int(v) for v in end), 255,
                 max(2, int(rng.uniform(0.04, 0.12) * size)), cv2.LINE_AA)
        head = centre + direction * size * 0.25
        axes = tuple(int(v) for v in rng.uniform(0.08, 0.18, 2) * size)
        cv2.ellipse(mask, tuple(int(v) for v in head), axes, np.degrees(angle), 0, 360, 255, -1, cv2.LINE_AA)
    return mask


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multi-scale coloured noise between two random colours, shaded like a round surface (BGR uint8)."""
    field = np.zeros((size, size), np.float32)
    for cells in (2, 4, 8, 16, 32):
        noise = rng.standard_normal((cells, cells)).astype(np.float32)
        field += cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC) * rng.uniform(0.2, 1.0) / cells ** 0.5
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    dark, light = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    image = dark + field[..., None] * (light - dark)
    if rng.random() < 0.3:  # stripes on top, as animals and printed goods have
        period, angle = rng.uniform(0.05, 0.2) * size, rng.uniform(0, np.pi)
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        marks = np.sin((x * np.cos(angle) + y * np.sin(angle)) / period * 2 * np.pi) > rng.uniform(0.3, 0.8)
        image[marks] = image[marks] * 0.4 + rng.uniform(0, 255, 3).astype(np.float32) * 0.6
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) - size / 2) / (size / 2)
    light_from = rng.uniform(-0.6, 0.6, 2)
    shade = 1.15 - 0.5 * np.clip(np.hypot(x - light_from[0], y - light_from[1]), 0, 1.4) ** 2 * rng.uniform(0.3, 0.8)
    return np.clip(image * shade[..., None], 0, 255).astype(np.uint8)
