"""See retrieval results: query images beside their top-k gallery matches, and Recall@1 per product category.

:func:`draw_results` draws PNG pages, one row per query: the query (blue border), then its top-k gallery images
with a green (same item) or red (another item) border, the score and item id under each. Rows come worst first
(:func:`order_queries`). :func:`recall_at_1_by_category` splits Recall@1 by category, e.g. In-shop's
``gender/category`` folders (:func:`inshop_category`); :func:`category_table` renders it as markdown.
Scores are similarities (larger is better), as :func:`prodrec.retrieval.knn_search` returns with ``metric="ip"``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from prodrec.data import ImageList, load_image
from prodrec.utils import ProdrecError

__all__ = ["RIGHT_COLOR", "WRONG_COLOR", "QUERY_COLOR", "GridLayout", "first_hit_ranks", "order_queries",
           "draw_results", "inshop_category", "recall_at_1_by_category", "category_table"]

RIGHT_COLOR = (0, 170, 0)
WRONG_COLOR = (220, 30, 30)
QUERY_COLOR = (40, 90, 220)
_BACKGROUND, _TEXT = (255, 255, 255), (0, 0, 0)


@dataclass(frozen=True)
class GridLayout:
    """Geometry of a results page: a title line, then one row per query of ``k + 1`` bordered tiles, each
    with two text lines below it; the query column is set apart from the results by ``gap`` pixels.

    Page width is ``pad + (k + 1) * (image_size + 2 * border + pad) + gap``.
    """

    k: int
    image_size: int
    line_height: int
    border: int = 4
    pad: int = 6
    gap: int = 12

    @classmethod
    def for_default_font(cls, k: int, image_size: int) -> "GridLayout":
        """The layout :func:`draw_results` uses: text lines as tall as Pillow's default font needs."""
        _, top, _, bottom = ImageFont.load_default().getbbox("Ag_|")
        return cls(k=k, image_size=image_size, line_height=bottom - top + 3)

    @property
    def cell_width(self) -> int:
        return self.image_size + 2 * self.border

    @property
    def row_height(self) -> int:
        return self.cell_width + 2 * self.line_height + self.pad

    def page_size(self, rows: int) -> Tuple[int, int]:
        """``(width, height)`` of a page with ``rows`` queries."""
        width = self.pad + (self.k + 1) * (self.cell_width + self.pad) + self.gap
        return width, self.pad + self.line_height + self.pad + rows * self.row_height

    def cell_box(self, row: int, column: int) -> Tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` of a tile with its border (x1, y1 exclusive); column 0 is the query."""
        x0 = self.pad + column * (self.cell_width + self.pad) + (self.gap if column else 0)
        y0 = self.pad + self.line_height + self.pad + row * self.row_height
        return x0, y0, x0 + self.cell_width, y0 + self.cell_width


def _item_names(images: ImageList) -> np.ndarray:
    return np.asarray(images.classes, dtype=object)[images.labels]


def _check_ranking(query: ImageList, gallery: ImageList, ranked: np.ndarray, scores: np.ndarray) -> np.ndarray:
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.shape[0] != len(query) or ranked.shape[1] < 1 or ranked.dtype.kind not in "iu":
        raise ProdrecError(f"ranked must be an integer array [num_queries={len(query)}, k>=1] of gallery indices "
                           f"(knn_search's second output), got {ranked.dtype} {ranked.shape}")
    if np.shape(scores) != ranked.shape:
        raise ProdrecError(f"scores must have the shape of ranked {ranked.shape}, got {np.shape(scores)}")
    if ranked.min() < 0 or ranked.max() >= len(gallery):
        raise ProdrecError(f"ranked holds gallery indices outside 0..{len(gallery) - 1} "
                           f"({ranked.min()}..{ranked.max()}); rank against this gallery")
    return ranked


def first_hit_ranks(query: ImageList, gallery: ImageList, ranked: np.ndarray) -> np.ndarray:
    """1-based rank of each query's first same-item gallery image in ``ranked``; 0 when none is there.

    Items are compared by name (``classes``), so query and gallery need not share a label space.
    """
    ranked = _check_ranking(query, gallery, ranked, np.zeros(np.shape(ranked)))
    hits = _item_names(gallery)[ranked] == _item_names(query)[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def order_queries(query: ImageList, gallery: ImageList, ranked: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Query indices, worst first.

    The order: queries whose item has a gallery image before those whose item has none; then no
    same-item image in ``ranked`` at all, then by rank of the first same-item image, largest first;
    among equal ranks, a wrong top-1 with a higher score (a confident mistake) first, a right top-1 with
    a lower score (a narrow success) first; then by query index.
    """
    ranked = _check_ranking(query, gallery, ranked, scores)
    first = first_hit_ranks(query, gallery, ranked)
    in_gallery = np.isin(_item_names(query), _item_names(gallery))
    rank_key = np.where(first == 0, ranked.shape[1] + 1, first)
    top1 = np.asarray(scores, dtype=np.float64)[:, 0]
    confidence = np.where(first == 1, top1, -top1)
    return np.lexsort((np.arange(len(query)), confidence, -rank_key, ~in_gallery))


def draw_results(query: ImageList, gallery: ImageList, ranked: np.ndarray, scores: np.ndarray,
                 output_dir: Union[str, os.PathLike], *, k: int = 5, per_page: int = 8, worst_first: bool = True,
                 max_queries: Optional[int] = None, image_size: int = 96, prefix: str = "results") -> List[Path]:
    """Draw each query with its top-k gallery images into PNG pages ``output_dir/{prefix}_001.png``, ...

    Args:
        query: The query images.
        gallery: The gallery images ``ranked`` indexes.
        ranked: int ``[num_queries, >= k]`` gallery indices, best first (e.g. from
            :func:`prodrec.retrieval.knn_search`); columns beyond k only inform the order.
        scores: ``[num_queries, same]`` similarities of ``ranked``.
        output_dir: Folder for the pages (created).
        k: Gallery images shown per query.
        per_page: Queries (rows) per page.
        worst_first: Order rows by :func:`order_queries`; False keeps the query order.
        max_queries: Draw only the first this many rows of that order (None: all).
        image_size: Tile side in pixels; each image is fitted into it with its aspect ratio kept.
        prefix: File name prefix.

    Returns:
        The written PNG paths, in page order.
    """
    ranked = _check_ranking(query, gallery, ranked, scores)
    options = {"k": k, "per_page": per_page, "image_size": image_size}
    if max_queries is not None:
        options["max_queries"] = max_queries
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ProdrecError(f"{name} must be a positive integer, got {value!r}")
    if k > ranked.shape[1]:
        raise ProdrecError(f"k={k} but ranked has only {ranked.shape[1]} columns; search at least k neighbours")
    order = order_queries(query, gallery, ranked, scores) if worst_first else np.arange(len(query))
    order = order[:max_queries]
    first = first_hit_ranks(query, gallery, ranked)
    in_gallery = np.isin(_item_names(query), _item_names(gallery))
    query_items, gallery_items = _item_names(query), _item_names(gallery)
    font = ImageFont.load_default()
    layout = GridLayout.for_default_font(k, image_size)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pages = [order[start:start + per_page] for start in range(0, len(order), per_page)]
    written = []
    for number, rows in enumerate(pages, start=1):
        page = Image.new("RGB", layout.page_size(len(rows)), _BACKGROUND)
        draw = ImageDraw.Draw(page)
        title = (f"queries {number * per_page - per_page + 1}-{number * per_page - per_page + len(rows)} of "
                 f"{len(order)}{', worst first' if worst_first else ''} (page {number}/{len(pages)})")
        draw.text((layout.pad, layout.pad), title, fill=_TEXT, font=font)
        for row, q in enumerate(rows):
            if not in_gallery[q]:
                status = "not in gallery"
            else:
                status = f"first hit #{first[q]}" if first[q] else f"no hit in top {ranked.shape[1]}"
            _tile(page, draw, layout, row, 0, query.paths[q], QUERY_COLOR, (status, query_items[q]), font)
            for column in range(k):
                index = ranked[q, column]
                color = RIGHT_COLOR if gallery_items[index] == query_items[q] else WRONG_COLOR
                lines = (f"{scores[q, column]:.3f}", gallery_items[index])
                _tile(page, draw, layout, row, column + 1, gallery.paths[index], color, lines, font)
        path = output_dir / f"{prefix}_{number:03d}.png"
        page.save(path, optimize=True)
        written.append(path)
    return written


def _tile(page: Image.Image, draw: ImageDraw.ImageDraw, layout: GridLayout, row: int, column: int, path: str,
          color: Tuple[int, int, int], lines: Sequence[str], font: ImageFont.ImageFont) -> None:
    x0, y0, x1, y1 = layout.cell_box(row, column)
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=color)
    picture = ImageOps.pad(Image.fromarray(load_image(path)), (layout.image_size,) * 2, color=_BACKGROUND)
    page.paste(picture, (x0 + layout.border, y0 + layout.border))
    for number, line in enumerate(lines):
        text = str(line)
        while len(text) > 1 and draw.textlength(text, font=font) > layout.cell_width:
            text = text[:-1]
        draw.text((x0, y1 + 1 + number * layout.line_height), text, fill=_TEXT, font=font)


def inshop_category(path: Union[str, os.PathLike]) -> Optional[str]:
    """The product category of an In-shop image path, ``gender/category``; None if the path is not In-shop's.

    In-shop paths are ``.../img/<GENDER>/<Category>/<item id>/<file>``, e.g.
    ``img/WOMEN/Dresses/id_00000002/02_1_front.jpg`` -> ``"WOMEN/Dresses"`` (synthetic sets follow this too).
    """
    parts = Path(path).parts
    if len(parts) < 5 or parts[-5] != "img":
        return None
    return f"{parts[-4]}/{parts[-3]}"


def recall_at_1_by_category(query: ImageList, gallery: ImageList, ranked: np.ndarray, *,
                            categories: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    """Recall@1 of each query category, and over all queries.

    As in :func:`prodrec.retrieval.evaluate_embeddings`, a query whose item has no gallery image is left
    out of its category's Recall@1 (counted in ``queries`` but not in ``in_gallery``).

    Args:
        query: The query images.
        gallery: The gallery images ``ranked`` indexes.
        ranked: int ``[num_queries, >= 1]`` gallery indices, best first.
        categories: One category per query; default :func:`inshop_category` of each query path.

    Returns:
        One row per category, sorted, then one with category None for all queries; each row holds
        ``category``, ``queries``, ``in_gallery``, ``hits`` (right top-1) and ``recall@1`` (``hits /
        in_gallery``; None when ``in_gallery`` is 0).

    Raises:
        ValueError: ``categories`` has the wrong length, or a query path has no In-shop category (listed).
    """
    ranked = _check_ranking(query, gallery, ranked, np.zeros(np.shape(ranked)))
    if categories is None:
        categories = [inshop_category(path) for path in query.paths]
        unknown = [path for path, category in zip(query.paths, categories) if category is None]
        if unknown:
            raise ProdrecError(f"{len(unknown)} query paths have no In-shop category (.../img/GENDER/Category/id/"
                               f"file), e.g. {unknown[:20]}; pass categories=[one per query]")
    categories = [str(category) for category in categories]
    if len(categories) != len(query):
        raise ProdrecError(f"categories must give one category per query ({len(query)}), got {len(categories)}")
    hit = first_hit_ranks(query, gallery, ranked[:, :1]) == 1
    in_gallery = np.isin(_item_names(query), _item_names(gallery))
    names = np.asarray(categories, dtype=object)
    rows = [_row(category, hit[names == category], in_gallery[names == category])
            for category in sorted(set(categories))]
    return rows + [_row(None, hit, in_gallery)]


def _row(category: Optional[str], hit: np.ndarray, in_gallery: np.ndarray) -> Dict[str, object]:
    matched, hits = int(in_gallery.sum()), int(hit.sum())
    return {"category": category, "queries": int(len(hit)), "in_gallery": matched, "hits": hits,
            "recall@1": hits / matched if matched else None}


def category_table(rows: Sequence[Dict[str, object]]) -> str:
    """A markdown table of :func:`recall_at_1_by_category` rows (Recall@1 in %; the all-queries row as "all")."""
    lines = ["| category | queries | in gallery | right top-1 | Recall@1 (%) |", "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        recall = "-" if row["recall@1"] is None else f"{100 * row['recall@1']:.1f}"
        name = "**all**" if row["category"] is None else row["category"]
        lines.append(f"| {name} | {row['queries']} | {row['in_gallery']} | {row['hits']} | {recall} |")
    return "\n".join(lines) + "\n"
