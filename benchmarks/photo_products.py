"""A product set made from real photographs of objects, for measuring what training learns.

The synthetic generator's products are easy to tell apart; real product photos are not. This script
takes cut-out photographs of objects (PNG with transparency: one object per file, e.g. the photo
stamps of Debian's ``tuxpaint-stamps-default`` package, which hold fruit, coins of one currency,
birds, tools, ...) and makes each object a product. Each view pastes the object's photo onto a
scene built from other photos (a blurred, enlarged photo as the background, other objects as
clutter, sometimes in front of the product), at another size, angle, perspective, lighting, blur
and JPEG quality, as a shelf or a hand-held phone would see it. The set is written in PaddleClas's
list format (``train_list.txt``, ``query_list.txt``, ``gallery_list.txt``: ``path label`` lines;
``prodrec train --dataset list``). Half the products train, the other half are searched: each test
product's views split into query and gallery.

    apt-get download tuxpaint-stamps-default && dpkg-deb -x tuxpaint-stamps-default_*.deb stamps
    python benchmarks/photo_products.py stamps/usr/share/tuxpaint/stamps data/photo_products

Drawings are left out: files under folders whose path matches ``--exclude`` (cartoons, letters,
symbols by default) and files with fewer than ``--min-colours`` distinct colours.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np
from tqdm.auto import tqdm

EXCLUDE = r"cartoon|alphabet|roadsign|flags|chess|shapes|math|music|symbols/(?!money)"


def colour_count(rgba: np.ndarray) -> int:
    """Distinct colours (5 bits a channel) among the opaque pixels: a few hundred or more for a photograph."""
    pixels = rgba[..., :3][rgba[..., 3] > 128].astype(np.int32) >> 3
    return len(np.unique(pixels[:, 0] * 1024 + pixels[:, 1] * 32 + pixels[:, 2]))


def find_objects(folder: Path, *, exclude: str = EXCLUDE, min_colours: int = 150, min_side: int = 40) -> List[Path]:
    """The cut-out photographs under ``folder``, sorted: 4-channel PNGs of at least ``min_side`` pixels."""
    found = []
    for path in sorted(folder.rglob("*.png")):
        if re.search(exclude, path.relative_to(folder).as_posix()):
            continue
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None or image.ndim != 3 or image.shape[2] != 4 or min(image.shape[:2]) < min_side:
            continue
        if colour_count(image) >= min_colours:
            found.append(path)
    return found


def crop_to_object(rgba: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(rgba[..., 3] > 16)
    return rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def paste(canvas: np.ndarray, rgba: np.ndarray, rng: np.random.Generator, *, side: float, centre, angle: float,
          skew: float) -> None:
    """Alpha-blend ``rgba`` onto ``canvas``: longer side ``side`` x canvas, rotated, perspective-skewed."""
    size = canvas.shape[0]
    scale = side * size / max(rgba.shape[:2])
    h, w = rgba.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    moved = (corners - [w / 2, h / 2]) * scale
    moved += rng.uniform(-skew, skew, moved.shape) * scale * max(w, h)
    turn = np.deg2rad(angle)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    moved = moved @ rotation.T + np.asarray(centre) * size
    warp = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    layer = cv2.warpPerspective(rgba, warp, (size, size), flags=cv2.INTER_AREA, borderValue=(0, 0, 0, 0))
    alpha = layer[..., 3:4].astype(np.float32) / 255
    canvas[:] = (layer[..., :3] * alpha + canvas * (1 - alpha)).astype(np.uint8)


def background(pool: Sequence[np.ndarray], rng: np.random.Generator, size: int) -> np.ndarray:
    """A blurred, enlarged piece of a random photo, under a random light gradient."""
    photo = pool[rng.integers(len(pool))]
    rgb = photo[..., :3].astype(np.float32)
    alpha = photo[..., 3:4].astype(np.float32) / 255
    rgb = rgb * alpha + rng.uniform(40, 220, 3) * (1 - alpha)
    h, w = rgb.shape[:2]
    ch, cw = max(int(h * rng.uniform(0.2, 0.5)), 2), max(int(w * rng.uniform(0.2, 0.5)), 2)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    piece = cv2.resize(rgb[y:y + ch, x:x + cw], (size, size), interpolation=cv2.INTER_CUBIC)
    piece = cv2.GaussianBlur(piece, (0, 0), rng.uniform(2, 6))
    ramp = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.2), size, dtype=np.float32)
    light = ramp[:, None] if rng.random() < 0.5 else ramp[None, :]
    return np.clip(piece * light[..., None], 0, 255).astype(np.uint8)


def view(product: np.ndarray, pool: Sequence[np.ndarray], rng: np.random.Generator, size: int) -> np.ndarray:
    """One photo of ``product`` in a scene of other photos (BGR, ``size`` x ``size``)."""
    canvas = background(pool, rng, size)
    for _ in range(rng.integers(0, 2)):  # clutter behind the product
        paste(canvas, pool[rng.integers(len(pool))], rng, side=rng.uniform(0.3, 0.6),
              centre=rng.uniform(0.0, 1.0, 2), angle=rng.uniform(-40, 40), skew=0.05)
    paste(canvas, product, rng, side=rng.uniform(0.55, 0.9), centre=rng.uniform(0.4, 0.6, 2),
          angle=rng.uniform(-20, 20), skew=0.08)
    if rng.random() < 0.2:  # something in front of it
        edge = rng.choice([0.05, 0.95])
        centre = (edge, rng.uniform(0.2, 0.8)) if rng.random() < 0.5 else (rng.uniform(0.2, 0.8), edge)
        paste(canvas, pool[rng.integers(len(pool))], rng, side=rng.uniform(0.2, 0.4), centre=centre,
              angle=rng.uniform(-40, 40), skew=0.05)
    image = canvas.astype(np.float32)
    image = (image - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-30, 30)  # contrast, brightness
    image = image * rng.uniform(0.85, 1.15, 3)  # white balance
    image = 255 * (np.clip(image, 0, 255) / 255) ** rng.uniform(0.75, 1.33)
    sigma = rng.uniform(0, 1.2)
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image += rng.normal(0, rng.uniform(0, 6), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_photo_products(objects: Sequence[Path], root: Path, *, views: int = 12, size: int = 128, seed: int = 0,
                        progress: bool = True) -> dict:
    """Write the set into ``root`` (list format) and return its counts."""
    if len(objects) < 8:
        raise SystemExit(f"found {len(objects)} object photos; need at least 8 (check the folder and --exclude)")
    if views < 2:
        raise SystemExit("--views must be at least 2 (a test product needs a query and a gallery view)")
    rng = np.random.default_rng(seed)
    images = [crop_to_object(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)) for path in objects]
    order = rng.permutation(len(objects))
    train = set(order[: len(objects) // 2].tolist())
    lists = {"train": [], "query": [], "gallery": []}
    with tqdm(total=len(objects) * views, disable=not progress, desc="photo products", unit="img") as bar:
        for item, product in enumerate(images):
            pool = images[:item] + images[item + 1:]
            for number in range(views):
                name = f"images/{item:04d}/{number}.jpg"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                image = view(product, pool, rng, size)
                cv2.imwrite(str(root / name), image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 96))])
                split = "train" if item in train else "query" if number < views // 2 else "gallery"
                lists[split].append(f"{name} {item}")
                bar.update()
    for split, lines in lists.items():
        (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
    names = {item: path.relative_to(path.parents[1]).as_posix() for item, path in enumerate(objects)}
    (root / "products.json").write_text(json.dumps(names, indent=1) + "\n")
    return {"products": len(objects), "train_products": len(train), **{k: len(v) for k, v in lists.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("objects", type=Path, help="folder of cut-out object photos (PNG with transparency)")
    parser.add_argument("output", type=Path, help="folder to write the set into (list format)")
    parser.add_argument("--views", type=int, default=12)
    parser.add_argument("--size", type=int, default=128, help="side of the square images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exclude", default=EXCLUDE, help="regular expression of paths to leave out")
    parser.add_argument("--min-colours", type=int, default=150)
    args = parser.parse_args(argv)
    objects = find_objects(args.objects, exclude=args.exclude, min_colours=args.min_colours)
    counts = make_photo_products(objects, args.output, views=args.views, size=args.size, seed=args.seed)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
