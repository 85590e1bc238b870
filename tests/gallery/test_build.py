import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("faiss")

from prodrec.data import read_inshop  # noqa: E402
from prodrec.data import make_synthetic_inshop  # noqa: E402
from prodrec.retrieval import extract_embeddings  # noqa: E402
from prodrec.gallery import add_images, build_gallery, embedder_info, read_gallery_list  # noqa: E402
from prodrec.models import Embedder  # noqa: E402


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = make_synthetic_inshop(tmp_path_factory.mktemp("synthetic"), items=6, views=3, image_size=32,
                                 progress=False).root
    return read_inshop(root)


def tiny_embedder(seed=0, embedding_size=16):
    torch.manual_seed(seed)
    return Embedder("resnet18d", embedding_size=embedding_size, image_size=32)


def test_read_gallery_list_takes_names_with_spaces_and_tab_lines(tmp_path):
    for name in ("a.jpg", "b c.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "gallery.txt").write_text("a.jpg sku1 Cola Zero 330 ml\n\nb c.jpg\tsku2\tOat milk  \nd.jpg sku3\n")
    assert read_gallery_list(tmp_path / "gallery.txt") == [
        (str(tmp_path / "a.jpg"), "sku1", "Cola Zero 330 ml"),
        (str(tmp_path / "b c.jpg"), "sku2", "Oat milk"),
        (str(tmp_path / "d.jpg"), "sku3", None),
    ]


def test_read_gallery_list_reports_every_problem(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "gallery.txt").write_text("a.jpg sku1\nlonely.jpg\nmissing.jpg sku2\na.jpg sku3\nx\ty\tz\tw\n")
    with pytest.raises(ValueError) as caught:
        read_gallery_list(tmp_path / "gallery.txt")
    message = str(caught.value)
    assert "4 problem(s)" in message
    for expected in ("gallery.txt:2: expected 'path label [product name]'", "gallery.txt:3: image not found",
                     "gallery.txt:4: duplicate image a.jpg (first listed on line 1)", "gallery.txt:5: expected"):
        assert expected in message
    with pytest.raises(FileNotFoundError, match="gallery list not found"):
        read_gallery_list(tmp_path / "nope.txt")


def test_build_indexes_the_embedded_gallery(splits):
    model = tiny_embedder()
    gallery = build_gallery(model, splits.gallery, progress=False)
    features = extract_embeddings(model, splits.gallery, progress=False)
    np.testing.assert_allclose(gallery.features, features, atol=1e-6)
    assert gallery.labels.tolist() == [splits.gallery.classes[i] for i in splits.gallery.labels]
    assert gallery.paths.tolist() == list(splits.gallery.paths) and gallery.names.tolist() == [None] * len(gallery)
    assert gallery.embedder_info == embedder_info(model)
    found = gallery.search(features, k=1)
    assert found.ids[:, 0].tolist() == list(range(len(gallery))) and np.allclose(found.scores, 1, atol=1e-5)


def test_build_from_list_and_folder(splits, tmp_path):
    model = tiny_embedder()
    lines = [f"{path} {splits.gallery.classes[label]} Product {label}"
             for path, label in zip(splits.gallery.paths, splits.gallery.labels)]
    (tmp_path / "gallery.txt").write_text("\n".join(lines) + "\n")
    from_list = build_gallery(model, read_gallery_list(tmp_path / "gallery.txt", image_root="/"),
                              index_type="IVF2,Flat", progress=False)
    assert from_list.index_type == "IVF2,Flat" and from_list.is_trained and len(from_list) == len(splits.gallery)
    assert from_list.names.tolist() == [f"Product {label}" for label in splits.gallery.labels]
    for path, label in zip(splits.gallery.paths, splits.gallery.labels):
        folder = tmp_path / "folder" / splits.gallery.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder)
    from_folder = build_gallery(model, tmp_path / "folder", progress=False)
    assert sorted(from_folder.labels) == sorted(from_list.labels)
    with pytest.raises(ValueError, match="is a file; pass a gallery list through read_gallery_list"):
        build_gallery(model, tmp_path / "gallery.txt")


def test_add_images_checks_the_model(splits):
    model = tiny_embedder()
    images = [(path, f"sku-{i}", f"name {i}") for i, path in enumerate(splits.query.paths)]
    gallery = build_gallery(model, images[:2], progress=False)
    assert gallery.names.tolist() == ["name 0", "name 1"]
    ids = add_images(gallery, model, [(path, "more") for path in splits.gallery.paths], progress=False)
    assert ids.tolist() == list(range(2, 2 + len(splits.gallery))) and len(gallery) == 2 + len(splits.gallery)
    with pytest.raises(ValueError, match="built with another model \\(differs in weights_sha256\\)"):
        add_images(gallery, tiny_embedder(seed=1), images[2:], progress=False)
    with pytest.raises(ValueError, match="makes 8-d features but the gallery holds 16-d"):
        add_images(gallery, tiny_embedder(embedding_size=8), images[2:], progress=False)
    with pytest.raises(ValueError) as caught:
        add_images(gallery, model, [("missing.jpg", "a"), (images[0][0], ""), ("x",)], progress=False)
    assert "3 problem(s)" in str(caught.value) and "item 0: image not found: 'missing.jpg'" in str(caught.value)
    assert len(gallery) == 2 + len(splits.gallery)


LIFECYCLE = """
import sys
import numpy as np
from prodrec.gallery import add_images
from prodrec.gallery import GalleryIndex
from prodrec.models import Embedder
folder, model_file, removed, out, *added = sys.argv[1:]
gallery, model = GalleryIndex.load(folder), Embedder.load(model_file)
new_ids = add_images(gallery, model, [(path, "new-product") for path in added], progress=False)
gallery.remove(label=removed)
gallery.save(folder)
gallery = GalleryIndex.load(folder)
result = gallery.search(model.embed(added).numpy(), k=5)
np.savez(out, ids=result.ids, scores=result.scores, new_ids=new_ids, labels=result.labels.astype(str))
"""


def test_synthetic_gallery_lives_through_save_reload_add_remove_in_a_new_process(splits, tmp_path):
    """The issue's round trip: build, save, reload elsewhere, add + remove, search == exact brute force."""
    model = tiny_embedder()
    model_file = model.save(tmp_path / "model.pt")
    gallery = build_gallery(model, splits.gallery, progress=False)
    gallery.save(tmp_path / "gallery")
    removed = gallery.labels[0]
    added = list(splits.query.paths)
    subprocess.run([sys.executable, "-c", LIFECYCLE, str(tmp_path / "gallery"), str(model_file), removed,
                    str(tmp_path / "out.npz"), *added], check=True)

    kept = gallery.labels != removed
    queries = extract_embeddings(model, splits.query, progress=False).astype(np.float64)
    with np.load(tmp_path / "out.npz") as got:
        ids, scores, new_ids, labels = got["ids"], got["scores"], got["new_ids"], got["labels"]
    assert new_ids.tolist() == list(range(len(gallery), len(gallery) + len(added)))
    expected_ids = np.concatenate([gallery.ids[kept], new_ids])
    expected_features = np.concatenate([gallery.features[kept], queries]).astype(np.float64)
    exact = queries @ expected_features.T
    best = -np.sort(-exact, axis=1)[:, :5]
    np.testing.assert_allclose(scores, best, atol=1e-5)  # the top-5 scores are brute force's
    column = {int(i): c for c, i in enumerate(expected_ids)}
    own = np.take_along_axis(exact, np.vectorize(column.get)(ids), axis=1)
    np.testing.assert_allclose(own, scores, atol=1e-5)  # each id carries its own exact score
    assert ids[:, 0].tolist() == new_ids.tolist()  # each query finds itself first
    assert removed not in set(labels.ravel())
