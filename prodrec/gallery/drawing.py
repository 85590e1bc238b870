"""A recognised photo as a picture: each region's box with its label and score (accepted regions in green,
unknown ones in grey), as ``prodrec search --draw`` writes it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence, Union

from PIL import Image, ImageDraw, ImageFont

from prodrec.data import as_rgb_array
from prodrec.gallery.recognizer import Recognition

__all__ = ["draw_recognitions"]

ACCEPTED, UNKNOWN_COLOR = (30, 180, 60), (150, 150, 150)


def draw_recognitions(image: Any, regions: Sequence[Recognition], path: Union[str, os.PathLike]) -> Path:
    """Write ``image`` (a path, PIL image or RGB array) with ``regions`` drawn on it to ``path`` (PNG by its suffix).
    The whole-photo region is drawn only when it is accepted."""
    picture = Image.fromarray(as_rgb_array(image))
    draw, font = ImageDraw.Draw(picture), ImageFont.load_default()
    width, height = picture.size
    for region in regions:
        x1, y1, x2, y2 = region.box
        if (x1, y1, x2, y2) == (0, 0, width, height) and not region.accepted:
            continue
        color = ACCEPTED if region.accepted else UNKNOWN_COLOR
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=color, width=2)
        text = f"{region.label} {region.score:.2f}"
        left, top, right, bottom = draw.textbbox((x1 + 2, y1 + 1), text, font=font)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=color)
        draw.text((x1 + 2, y1 + 1), text, fill=(255, 255, 255), font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
