import argparse
import json
import os
import shutil

import pytest
import torch

pytest.importorskip("faiss")

from prodrec.data import read_inshop  # noqa: E402
from prodrec.data.synthetic import make_synthetic_inshop  # noqa: E402
from prodrec.index_cli import MODEL_FILE, add_commands  # noqa: E402
from prodrec.models import Embedder  # noqa: E402
from prodrec.recognizer import read_inshop_boxes  # noqa: E402
from prodrec.rerank import RERANK_METHODS  # noqa: E402


def run(argv, capsys):
    """Parse ``argv`` with a parser that only has the index commands, run the handler, return its stdout."""
    parser = argparse.ArgumentParser(prog="prodrec")
    handlers = add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    assert handlers[args.command](args) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    root = make_synthetic_inshop(folder / "data", items=6, views=3, image_size=32, progress=False).root
    torch.manual_seed(0)
    model_path = Embedder("resnet18d", embedding_size=16, image_size=32).save(folder / "model.pt")
    splits = read_inshop(root)
    lines = [f"{os.path.relpath(path, root)} {splits.gallery.classes[label]} Product {label}"
             for path, label in zip(splits.gallery.paths, splits.gallery.labels)]
    (root / "gallery.txt").write_text("\n".join(lines) + "\n")
    for number, (path, label) in enumerate(zip(splits.query.paths, splits.query.labels)):
        (folder / "queries" / splits.query.classes[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / "queries" / splits.query.classes[label] / f"{number}.jpg")
    return root, model_path, splits


def test_build_info_search_remove_add(shop, tmp_path, capsys):
    root, model, splits = shop
    gallery = tmp_path / "gallery"
    out = run(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--type", "HNSW32",
               "--ef-search", "40", "--output", gallery, "--quiet"], capsys)
    assert f"indexed {len(splits.gallery)} images of 3 products (HNSW32)" in out
    assert (gallery / MODEL_FILE).is_file()
    info = json.loads(run(["index", "info", "--index", gallery, "--json"], capsys))
    assert info["images"] == len(splits.gallery) and info["ef_search"] == 40 and info["products"] == 3
    assert info["embedder"]["backbone"] == "resnet18d" and info["bytes_per_image"] > 16 * 4

    image, label = splits.gallery.paths[0], splits.gallery.classes[splits.gallery.labels[0]]
    found = json.loads(run(["search", "--index", gallery, image, splits.query.paths[0], "--k", "3", "--json"],
                           capsys))
    (own,) = found[0]["regions"]
    assert own["label"] == label and own["accepted"] and own["score"] == pytest.approx(1, abs=1e-5)
    assert own["matches"][0] == {"label": label, "name": f"Product {splits.gallery.labels[0]}",
                                 "score": own["score"], "id": 0}
    assert len(found[1]["regions"][0]["matches"]) == 3
    assert f"{image} [0, 0, 32, 32]: {label} (Product" in run(["search", "--index", gallery, image], capsys)
    reranked = json.loads(run(["search", "--index", gallery, image, "--k", "3", "--rerank", "k-reciprocal", "--json"],
                              capsys))[0]["regions"][0]
    assert reranked["matches"][0]["id"] == 0 and reranked["matches"][1]["score"] != own["matches"][1]["score"]

    with pytest.raises(ValueError, match="HNSW32 index cannot remove"):
        run(["index", "remove", "--index", gallery, "--label", label], capsys)
    removed = sum(1 for i in splits.gallery.labels if splits.gallery.classes[i] == label)
    assert f"removed {removed} images" in run(["index", "remove", "--index", gallery, "--label", label,
                                               "--rebuild"], capsys)
    out = run(["index", "add", "--index", gallery, "--folder", model.parent / "queries", "--quiet"], capsys)
    count = len(splits.gallery) - removed + len(splits.query)
    assert out == f"added {len(splits.query)} images (ids {len(splits.gallery)}..{count + removed - 1}); " \
                  f"the gallery holds {count}\n"
    assert json.loads(run(["index", "info", "--index", gallery, "--json"], capsys))["images"] == count


def test_rerank_choices_are_the_rerank_methods():
    parser = argparse.ArgumentParser(prog="prodrec")
    add_commands(parser.add_subparsers(dest="command"))
    search = parser._subparsers._group_actions[0].choices["search"]
    (option,) = [action for action in search._actions if action.dest == "rerank"]
    assert sorted(option.choices) == sorted(RERANK_METHODS)


def test_search_crops_in_shop_boxes(shop, tmp_path, capsys):
    root, model, splits = shop
    run(["index", "build", "--checkpoint", model, "--folder", model.parent / "queries", "--output", tmp_path / "g",
         "--quiet"], capsys)
    image = splits.query.paths[0]
    key = os.path.relpath(image, root)
    found = json.loads(run(["search", "--index", tmp_path / "g", image, "--inshop-boxes", root, "--json"], capsys))
    assert found[0]["regions"][0]["box"] == list(read_inshop_boxes(root)[key])
    with pytest.raises(ValueError, match="no box in .* for 1 images"):
        run(["search", "--index", tmp_path / "g", root / "gallery.txt", "--inshop-boxes", root], capsys)
    (tmp_path / "g" / MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="pass --checkpoint"):
        run(["search", "--index", tmp_path / "g", image], capsys)
    assert run(["search", "--index", tmp_path / "g", image, "--checkpoint", model], capsys).startswith(image)
