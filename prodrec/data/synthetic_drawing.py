"""Drawing of synthetic products and their photos (used by :mod:`prodrec.data.synthetic`).

A product is a silhouette (box, bottle, can, jar, bag or carton) with body colours from a small shared
palette, a pattern, a geometric logo and/or a printed brand string. A view warps it (pose, scale,
position) onto a background with clutter and changes lighting, blur and noise.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["KINDS", "VIEW_WORDS", "render_item", "render_view"]

# kind -> (department, category, clothes_type); clothes_type 1 = rigid, 2 = cylinder, 3 = flexible.
KINDS = {"box": ("HOME", "Boxes", 1), "carton": ("FOOD", "Cartons", 1), "jar": ("FOOD", "Jars", 1),
          "bottle": ("FOOD", "Bottles", 2), "can": ("FOOD", "Cans", 2), "bag": ("HOME", "Bags", 3)}
_ASPECTS = {"box": (0.7, 1.5), "carton": (1.6, 2.2), "jar": (0.9, 1.4), "bottle": (2.0, 3.0),
            "can": (1.3, 2.0), "bag": (1.1, 1.5)}  # height / width
VIEW_WORDS = ("front", "side", "back", "full", "additional")
_PALETTE = np.array([(235, 235, 230), (30, 30, 35), (200, 40, 40), (240, 200, 40), (40, 150, 70),
                     (40, 80, 190), (240, 130, 30), (120, 50, 150), (120, 75, 40), (60, 170, 190)],
                    np.float32)[:, ::-1]  # written as RGB, stored as BGR for cv2
_PATTERNS = ("plain", "stripes", "dots", "bands", "checks")
_LOGOS = ("circle", "ring", "triangle", "diamond", "star", "cross")
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)


def _colour(rng: np.random.Generator, *, avoid: int = -1) -> int:
    """A palette index different from ``avoid``."""
    if avoid < 0:
        return int(rng.integers(len(_PALETTE)))
    index = int(rng.integers(len(_PALETTE) - 1))
    return index + (index >= avoid)


def _pattern_mask(rng: np.random.Generator, size: int, period: float) -> np.ndarray:
    """A boolean pattern (stripes, dots, bands, checks or none) over a ``size`` square."""
    kind = _PATTERNS[int(rng.integers(len(_PATTERNS)))]
    y, x = np.ogrid[0:size, 0:size]
    y, x = y.astype(np.float32), x.astype(np.float32)
    if kind == "stripes":
        angle = np.deg2rad(rng.choice([0.0, 90.0, 45.0, -45.0]) + rng.uniform(-10, 10))
        return ((x * np.cos(angle) + y * np.sin(angle)) / period) % 1.0 < rng.uniform(0.3, 0.6)
    if kind == "dots":
        cell = (x / period) % 1.0 - 0.5, ((y / period) + 0.5 * (x // period)) % 1.0 - 0.5
        return cell[0] ** 2 + cell[1] ** 2 < rng.uniform(0.2, 0.35) ** 2
    if kind == "bands":
        mask = np.zeros((size, size), bool)
        for _ in range(int(rng.integers(1, 4))):
            top = rng.uniform(0.05, 0.9) * size
            mask |= (y >= top) & (y < top + rng.uniform(0.05, 0.15) * size)
        return mask
    if kind == "checks":
        return ((x // period) + (y // period)) % 2 == 1
    return np.zeros((size, size), bool)


def _draw_product(kind: str, rng: np.random.Generator, box: tuple, body: np.ndarray, img: np.ndarray,
                  mask: np.ndarray) -> tuple:
    """Draw the kind's silhouette into ``mask`` and its unpatterned parts (cap, lid, faces) into ``img``.

    Returns:
        The rectangle (x0, y0, x1, y1) where the brand is printed.
    """
    x0, y0, x1, y1 = box
    w, h, xc = x1 - x0, y1 - y0, (x0 + x1) / 2
    part = _PALETTE[_colour(rng)].tolist()

    def shape(points: list, colour: list | None = None) -> None:
        points = [np.round(np.array(points)).astype(np.int32)]
        cv2.fillPoly(mask, points, 255, cv2.LINE_AA)
        if colour is not None:
            cv2.fillPoly(img, points, colour, cv2.LINE_AA)

    def rect(left: float, top: float, right: float, bottom: float, colour: list | None = None) -> None:
        shape([(left, top), (right, top), (right, bottom), (left, bottom)], colour)

    if kind == "box":  # front face, lit top face, shaded side face
        d = w * rng.uniform(0.1, 0.2)
        rect(x0, y0 + d, x1 - d, y1)
        shape([(x0, y0 + d), (x0 + d, y0), (x1, y0), (x1 - d, y0 + d)], np.minimum(body * 1.25 + 20, 255).tolist())
        shape([(x1 - d, y0 + d), (x1, y0), (x1, y1 - d), (x1 - d, y1)], (body * 0.65).tolist())
        return x0, y0 + d, x1 - d, y1
    if kind == "carton":  # body, gable roof and fin
        g, f = h * rng.uniform(0.18, 0.28), h * 0.06
        rect(x0, y0 + g, x1, y1)
        shape([(x0, y0 + g), (x0 + 0.15 * w, y0 + f), (x1 - 0.15 * w, y0 + f), (x1, y0 + g)], part)
        rect(x0 + 0.15 * w, y0, x1 - 0.15 * w, y0 + f, part)
        return x0, y0 + g, x1, y1
    if kind == "bottle":  # body with curved shoulders, neck and cap
        neck, cap = w * rng.uniform(0.15, 0.22), y0 + h * rng.uniform(0.07, 0.12)
        shoulder, top = y0 + h * rng.uniform(0.3, 0.4), y0 + h * rng.uniform(0.15, 0.2)
        t = np.linspace(0, 1, 8)[:, None]
        curve = (1 - t) ** 2 * [x0, shoulder] + 2 * t * (1 - t) * [x0, top] + t ** 2 * [xc - neck, top]
        left = [(x0, y1), *curve.tolist(), (xc - neck, cap)]
        shape(left + [(2 * xc - px, py) for px, py in reversed(left)])
        rect(xc - 1.15 * neck, y0, xc + 1.15 * neck, cap, part)
        return x0, shoulder + 0.05 * h, x1, y1 - 0.05 * h
    if kind == "can":  # cylinder with a metal lid
        e = w * rng.uniform(0.08, 0.14)
        rect(x0, y0 + e, x1, y1 - e)
        axes = (round(w / 2), round(e))
        cv2.ellipse(mask, (round(xc), round(y1 - e)), axes, 0, 0, 360, 255, -1, cv2.LINE_AA)
        for target, colour in ((img, (185, 185, 190)), (mask, 255)):
            cv2.ellipse(target, (round(xc), round(y0 + e)), axes, 0, 0, 360, colour, -1, cv2.LINE_AA)
        return x0, y0 + 2 * e, x1, y1 - 2 * e
    if kind == "jar":  # body with bevelled corners under a lid
        lid, r = h * rng.uniform(0.1, 0.16), w * rng.uniform(0.08, 0.18)
        shape([(x0 + r, y0 + lid), (x1 - r, y0 + lid), (x1, y0 + lid + r), (x1, y1 - r), (x1 - r, y1),
               (x0 + r, y1), (x0, y1 - r), (x0, y0 + lid + r)])
        rect(x0 + 0.06 * w, y0, x1 - 0.06 * w, y0 + lid, part)
        return x0, y0 + lid + 0.15 * h, x1, y1 - 0.15 * h
    teeth, z = int(rng.integers(8, 15)), h * 0.04  # bag: a pouch with crimped top and bottom edges
    xs = np.linspace(x0 + 0.04 * w, x1 - 0.04 * w, 2 * teeth + 1)
    top_edge = [(x, y0 + z * (i % 2)) for i, x in enumerate(xs)]
    bottom_edge = [(x, y1 - z * (i % 2)) for i, x in enumerate(xs)][::-1]
    shape(top_edge + [(x1, (y0 + y1) / 2)] + bottom_edge + [(x0, (y0 + y1) / 2)])
    return x0 + 0.1 * w, y0 + 0.15 * h, x1 - 0.1 * w, y1 - 0.15 * h


def _print_brand(rng: np.random.Generator, img: np.ndarray, label: tuple, under: int) -> None:
    """Print a geometric logo and/or a brand string inside ``label`` on a background of palette colour ``under``."""
    x0, y0, x1, y1 = label
    w, h = x1 - x0, y1 - y0
    has_logo, has_text = [(True, True), (True, False), (False, True)][int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    if has_logo:
        logo, colour = _LOGOS[int(rng.integers(len(_LOGOS)))], _PALETTE[_colour(rng, avoid=under)].tolist()
        r = min(w, h) * (rng.uniform(0.18, 0.28) if has_text else rng.uniform(0.25, 0.4))
        cx, cy = (x0 + x1) / 2 + rng.uniform(-0.15, 0.15) * w, y0 + (0.3 if has_text else 0.5) * h
        radii = {"triangle": [r] * 3, "diamond": [r] * 4, "star": [r, 0.45 * r] * 5}.get(logo)
        if radii:
            angles = rng.uniform(0, 2 * np.pi) + np.arange(len(radii)) * 2 * np.pi / len(radii)
            pts = [(cx + q * np.cos(a), cy + q * np.sin(a)) for q, a in zip(radii, angles)]
            cv2.fillPoly(img, [np.round(np.array(pts)).astype(np.int32)], colour, cv2.LINE_AA)
        elif logo == "cross":
            for dx, dy in ((r, 0.35 * r), (0.35 * r, r)):
                cv2.rectangle(img, (round(cx - dx), round(cy - dy)), (round(cx + dx), round(cy + dy)), colour, -1)
        else:
            cv2.circle(img, (round(cx), round(cy)), round(r), colour, -1 if logo == "circle" else max(1, round(r / 3)),
                       cv2.LINE_AA)
    if has_text:
        brand = "".join(rng.choice(list("ABCDEFGHIKLMNOPRSTUVXZ"), int(rng.integers(3, 7))))
        font, colour = _FONTS[int(rng.integers(len(_FONTS)))], _PALETTE[_colour(rng, avoid=under)].tolist()
        thickness = max(1, round(w / 40 * rng.uniform(0.6, 1.4)))
        (tw, th), _ = cv2.getTextSize(brand, font, 1.0, thickness)
        scale = w * rng.uniform(0.6, 0.9) / tw
        origin = (round(x0 + (w - tw * scale) / 2), round(y0 + (0.78 if has_logo else 0.5) * h + th * scale / 2))
        cv2.putText(img, brand, origin, font, scale, colour, thickness, cv2.LINE_AA)


def render_item(seed: int, item: int, size: int) -> tuple:
    """The item's canonical picture: BGRA float32 image (alpha 0-255), product rectangle and kind."""
    rng = np.random.default_rng([seed, 0, item])
    kind = list(KINDS)[int(rng.integers(len(KINDS)))]
    aspect = rng.uniform(*_ASPECTS[kind])
    w, h = (0.9 * size / aspect, 0.9 * size) if aspect >= 1 else (0.9 * size, 0.9 * size * aspect)
    box = ((size - w) / 2, (size - h) / 2, (size + w) / 2, (size + h) / 2)
    body_index = _colour(rng)
    body, accent = _PALETTE[body_index], _PALETTE[_colour(rng, avoid=body_index)]
    img = np.where(_pattern_mask(rng, size, w * rng.uniform(0.12, 0.3))[..., None], accent, body).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    label = _draw_product(kind, rng, box, body, img, mask)
    under = body_index
    if rng.random() < 0.5:  # a label patch in its own colour under the brand
        under = _colour(rng, avoid=body_index)
        lx0, ly0, lx1, ly1 = label
        mx, my = (lx1 - lx0) * 0.08, (ly1 - ly0) * 0.08
        label = (lx0 + mx, ly0 + my, lx1 - mx, ly1 - my)
        cv2.rectangle(img, (round(label[0]), round(label[1])), (round(label[2]), round(label[3])),
                      _PALETTE[under].tolist(), -1)
    _print_brand(rng, img, label, under)
    img = img.astype(np.float32)
    if kind in ("bottle", "can", "jar"):  # cylinder shading with a highlight
        u = np.clip((np.arange(size) - box[0]) / w, 0, 1)
        light = 0.7 + 0.3 * np.sin(np.pi * u) + 0.25 * np.exp(-(((u - rng.uniform(0.2, 0.4)) / 0.06) ** 2))
        img *= light.astype(np.float32)[None, :, None]
    return cv2.merge([img, mask.astype(np.float32)]), box, kind


def render_view(seed: int, item: int, view: int, size: int, product: tuple) -> tuple:
    """One photo of the product: BGR uint8 image and its bounding box (x1, y1, x2, y2), x2/y2 exclusive."""
    bgra, (x0, y0, x1, y1), _ = product
    rng = np.random.default_rng([seed, 1, item, view])
    src = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float32)
    corners = (src - src.mean(0)) * rng.uniform(0.9, 1.1, 2) + rng.uniform(-0.08, 0.08, (4, 2)) * (x1 - x0, y1 - y0)
    angle = np.deg2rad(rng.uniform(-15, 15))
    corners = corners @ np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    corners *= rng.uniform(0.65, 0.95) * size / (corners.max(0) - corners.min(0)).max()
    low, high = -corners.min(0), size - corners.max(0)
    dst = (corners + rng.uniform(low, np.maximum(low, high))).astype(np.float32)
    warped = cv2.warpPerspective(bgra, cv2.getPerspectiveTransform(src, dst), (size, size), flags=cv2.INTER_LINEAR)
    alpha = cv2.extractChannel(warped, 3)
    x, y, w, h = cv2.boundingRect((alpha >= 128).astype(np.uint8))

    def colour() -> np.ndarray:
        return (_PALETTE[_colour(rng)] + rng.uniform(-40, 40, 3)) if rng.random() < 0.5 else rng.uniform(0, 255, 3)

    c1, c2 = colour(), colour()
    corner_colours = c1 + rng.uniform(0, 1, (2, 2, 1)) * (c2 - c1)  # a gradient in a random direction
    bg = cv2.resize(corner_colours.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:  # a patterned surface (shelf, cloth)
        shade = _pattern_mask(rng, size, size * rng.uniform(0.05, 0.2)).astype(np.uint8)
        bg = cv2.copyTo(bg * np.float32(0.7), shade, bg)
    for _ in range(int(rng.integers(0, 4))):
        _clutter(rng, bg, size, colour())
    img = cv2.blendLinear(cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR), bg, alpha, 255 - alpha)
    if rng.random() < 0.15:  # something in front of the product
        _clutter(rng, img, size, colour(), near=(x + w / 2, y + h / 2))
    contrast, mean = rng.uniform(0.8, 1.2), np.mean(cv2.mean(img)[:3])
    gain = contrast * rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, 3)  # brightness and colour cast
    offset = (mean * (1 - contrast)) * gain / contrast + rng.uniform(-20, 20)
    img = cv2.transform(img, np.hstack([np.diag(gain), offset[:, None]]))
    if rng.random() < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    if rng.random() < 0.35:
        noise = rng.standard_normal((size, size), dtype=np.float32) * np.float32(rng.uniform(2, 7))
        img += cv2.merge([noise] * 3)
    return np.rint(np.clip(img, 0, 255, out=img)).astype(np.uint8), (x, y, x + w, y + h)


def _clutter(rng: np.random.Generator, img: np.ndarray, size: int, colour: np.ndarray, near: tuple = ()) -> None:
    """Draw one random shape (rectangle, circle or line) into ``img``, centred on ``near`` when given."""
    centre = np.array(near) + rng.uniform(-0.25, 0.25, 2) * size if near else rng.uniform(0, size, 2)
    r = rng.uniform(0.05, 0.12 if near else 0.3) * size
    cx, cy, colour = round(centre[0]), round(centre[1]), colour.tolist()
    shape = int(rng.integers(3))
    if shape == 0:
        top = cy - round(r * rng.uniform(0.3, 1))
        cv2.rectangle(img, (cx - round(r), top), (cx + round(r), cy + round(r)), colour, -1)
    elif shape == 1:
        cv2.circle(img, (cx, cy), round(r), colour, -1, cv2.LINE_AA)
    else:
        end = (round(cx + r * rng.uniform(-2, 2)), round(cy + r * rng.uniform(-2, 2)))
        cv2.line(img, (cx, cy), end, colour, max(1, round(size / 40)), cv2.LINE_AA)
