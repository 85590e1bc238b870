import numpy as np
import pytest
from PIL import Image

from prodrec.data import read_inshop
from prodrec.data import ImageList
from prodrec.retrieval import (QUERY_COLOR, RIGHT_COLOR, WRONG_COLOR, GridLayout, category_table, draw_results,
                               first_hit_ranks, inshop_category, order_queries, recall_at_1_by_category)


@pytest.fixture(scope="module")
def splits(tiny_inshop):
    return read_inshop(tiny_inshop)


def names(images):
    return [images.classes[label] for label in images.labels]


@pytest.fixture(scope="module")
def case(splits):
    """Four queries with a hand-made ranking: q0 right at 1 (0.9), q1 never right (top 0.8), q2 first right
    at rank 3 (top 0.7), q3 right at 1 (0.6). Worst first: q1, q2, q3, q0."""
    query = ImageList(splits.query.paths[:4], splits.query.labels[:4], splits.query.classes)
    gallery, items, gallery_items = splits.gallery, names(query), np.array(names(splits.gallery))
    ranked = []
    for q, pattern in enumerate(["RWWW", "WWWW", "WWRW", "RWWW"]):
        right = list(np.flatnonzero(gallery_items == items[q]))
        wrong = list(np.flatnonzero(gallery_items != items[q]))
        ranked.append([right.pop(0) if mark == "R" else wrong.pop(0) for mark in pattern])
    scores = np.array([[0.9, 0.5, 0.4, 0.3], [0.8, 0.5, 0.4, 0.3], [0.7, 0.5, 0.4, 0.3], [0.6, 0.5, 0.4, 0.3]])
    return query, gallery, np.array(ranked), scores


def border_color(page, layout, row, column):
    x0, y0, x1, y1 = layout.cell_box(row, column)
    return page.getpixel((x0 + 1, (y0 + y1) // 2)), page.getpixel(((x0 + x1) // 2, y0 + 1))


def slow_order(query, gallery, ranked, scores):
    query_items, gallery_items = names(query), names(gallery)
    keys = []
    for q in range(len(query)):
        first = next((rank for rank, g in enumerate(ranked[q], start=1) if gallery_items[g] == query_items[q]), None)
        confidence = scores[q][0] if first == 1 else -scores[q][0]
        keys.append((query_items[q] not in gallery_items, -(first or ranked.shape[1] + 1), confidence, q))
    return [key[-1] for key in sorted(keys)]


def test_first_hit_ranks_and_worst_first_order_by_hand(case):
    query, gallery, ranked, scores = case
    assert first_hit_ranks(query, gallery, ranked).tolist() == [1, 0, 3, 1]
    assert order_queries(query, gallery, ranked, scores).tolist() == [1, 2, 3, 0]


def test_order_matches_a_slow_sort_with_ties_and_unmatched_queries(splits):
    rng = np.random.default_rng(0)
    paths = list(splits.query.paths) + list(splits.train.paths[:6])
    query = ImageList.from_names(paths, names(splits.query) + ["not-in-gallery"] * 6)
    ranked = rng.integers(0, len(splits.gallery), size=(len(query), 3))
    scores = np.round(rng.uniform(0, 1, size=ranked.shape), 1)
    expected = slow_order(query, splits.gallery, ranked, scores)
    assert order_queries(query, splits.gallery, ranked, scores).tolist() == expected
    assert sorted(expected[-6:]) == list(range(len(splits.query), len(query)))  # items not in the gallery last


def test_pages_have_the_expected_size_borders_and_order(case, tmp_path):
    query, gallery, ranked, scores = case
    pages = draw_results(query, gallery, ranked, scores, tmp_path, k=4, per_page=3, image_size=48)
    assert [p.name for p in pages] == ["results_001.png", "results_002.png"]
    layout = GridLayout.for_default_font(4, 48)
    first, second = Image.open(pages[0]).convert("RGB"), Image.open(pages[1]).convert("RGB")
    width = 6 + 5 * (48 + 2 * 4 + 6) + 12
    assert first.size == layout.page_size(3) and first.size[0] == width == second.size[0]
    assert first.size[1] - second.size[1] == 2 * layout.row_height
    # page 1 rows: q1 (never right), q2 (right at 3), q3; page 2: q0
    assert border_color(first, layout, 0, 0) == (QUERY_COLOR, QUERY_COLOR)
    assert all(border_color(first, layout, 0, c) == (WRONG_COLOR,) * 2 for c in range(1, 5))
    assert [border_color(first, layout, 1, c)[0] for c in range(1, 5)] == [WRONG_COLOR, WRONG_COLOR, RIGHT_COLOR,
                                                                           WRONG_COLOR]
    assert border_color(first, layout, 2, 1) == (RIGHT_COLOR,) * 2 == border_color(second, layout, 0, 1)
    x0, y0, x1, y1 = layout.cell_box(0, 1)
    assert first.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) not in (RIGHT_COLOR, WRONG_COLOR)


def test_query_order_and_limit(case, tmp_path):
    query, gallery, ranked, scores = case
    layout = GridLayout.for_default_font(2, 32)
    (page,) = draw_results(query, gallery, ranked, scores, tmp_path / "given", k=2, worst_first=False, image_size=32)
    page = Image.open(page).convert("RGB")
    assert page.size == layout.page_size(4)
    assert [border_color(page, layout, row, 1)[0] for row in range(4)] == [RIGHT_COLOR, WRONG_COLOR, WRONG_COLOR,
                                                                          RIGHT_COLOR]
    (page,) = draw_results(query, gallery, ranked, scores, tmp_path / "worst", k=2, max_queries=2, image_size=32,
                           prefix="worst")
    assert page.name == "worst_001.png" and Image.open(page).size == layout.page_size(2)


def test_bad_input(case, tmp_path):
    query, gallery, ranked, scores = case
    with pytest.raises(ValueError, match="k=5 but ranked has only 4 columns"):
        draw_results(query, gallery, ranked, scores, tmp_path, k=5)
    with pytest.raises(ValueError, match="per_page must be a positive integer"):
        draw_results(query, gallery, ranked, scores, tmp_path, per_page=0)
    with pytest.raises(ValueError, match="scores must have the shape of ranked"):
        draw_results(query, gallery, ranked, scores[:, :2], tmp_path)
    with pytest.raises(ValueError, match="gallery indices outside"):
        draw_results(query, gallery, ranked + len(gallery), scores, tmp_path)
    with pytest.raises(ValueError, match=r"ranked must be an integer array \[num_queries=4"):
        order_queries(query, gallery, ranked[:3], scores[:3])


def test_inshop_category():
    assert inshop_category("img/WOMEN/Dresses/id_00000002/02_1_front.jpg") == "WOMEN/Dresses"
    assert inshop_category("/data/inshop/img/MEN/Denim/id_00000080/01_1_front.jpg") == "MEN/Denim"
    assert inshop_category("photos/cola.jpg") is None
    assert inshop_category("img/WOMEN/02_1_front.jpg") is None


def test_recall_by_category_equals_a_slow_loop(splits):
    rng = np.random.default_rng(1)
    paths = list(splits.query.paths) + list(splits.train.paths[:3])
    query = ImageList.from_names(paths, names(splits.query) + ["not-in-gallery"] * 3)
    ranked = rng.integers(0, len(splits.gallery), size=(len(query), 2))
    gallery_items, query_items = names(splits.gallery), names(query)
    ranked[::2, 0] = [gallery_items.index(item) if item in gallery_items else 0 for item in query_items[::2]]
    categories = [inshop_category(path) for path in paths]
    assert len(set(categories)) > 1
    expected = []
    for category in [*sorted(set(categories)), None]:
        chosen = [q for q in range(len(query)) if category is None or categories[q] == category]
        matched = [q for q in chosen if query_items[q] in gallery_items]
        hits = [q for q in matched if gallery_items[ranked[q, 0]] == query_items[q]]
        expected.append({"category": category, "queries": len(chosen), "in_gallery": len(matched),
                         "hits": len(hits), "recall@1": len(hits) / len(matched) if matched else None})
    assert recall_at_1_by_category(query, splits.gallery, ranked) == expected
    assert 0 < expected[-1]["hits"] < expected[-1]["in_gallery"] < expected[-1]["queries"]

    explicit = recall_at_1_by_category(query, splits.gallery, ranked, categories=["all"] * len(query))
    assert explicit[0] == {**expected[-1], "category": "all"}
    with pytest.raises(ValueError, match="one category per query"):
        recall_at_1_by_category(query, splits.gallery, ranked, categories=["a"])
    odd = ImageList.from_names(["/photos/a.jpg"], [query_items[0]])
    with pytest.raises(ValueError, match=r"1 query paths have no In-shop category .*'/photos/a.jpg'"):
        recall_at_1_by_category(odd, splits.gallery, ranked[:1])


def test_category_table_by_hand():
    rows = [{"category": "FOOD/Cans", "queries": 4, "in_gallery": 4, "hits": 1, "recall@1": 0.25},
            {"category": "HOME/Bags", "queries": 2, "in_gallery": 0, "hits": 0, "recall@1": None},
            {"category": None, "queries": 6, "in_gallery": 4, "hits": 1, "recall@1": 0.25}]
    assert category_table(rows) == (
        "| category | queries | in gallery | right top-1 | Recall@1 (%) |\n"
        "| --- | ---: | ---: | ---: | ---: |\n"
        "| FOOD/Cans | 4 | 4 | 1 | 25.0 |\n"
        "| HOME/Bags | 2 | 0 | 0 | - |\n"
        "| **all** | 6 | 4 | 1 | 25.0 |\n")
