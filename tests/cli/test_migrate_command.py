"""Every gallery command on a Milvus Lite gallery, and migrating between the backends."""
import importlib.util
import json
import os

import pytest

from prodrec.cli.gallery import MODEL_FILE

if not all(importlib.util.find_spec(name) for name in ("pymilvus", "milvus_lite")):
    if os.environ.get("CI"):
        raise ImportError("CI installs the milvus extra: pymilvus and milvus-lite are missing")
    pytest.skip("the milvus extra is not installed", allow_module_level=True)


def search(run_cli, gallery, image, *extra):
    return json.loads(run_cli(["search", "--index", gallery, image, "--k", "3", "--json", *extra]))[0]["regions"][0]


def test_every_gallery_command_works_on_milvus_lite(shop, tmp_path, run_cli):
    root, model, splits = shop
    gallery = tmp_path / "gallery"
    out = run_cli(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--backend", "milvus",
                   "--output", gallery, "--quiet"])
    assert f"indexed {len(splits.gallery)} images of 3 products (FLAT at {gallery / 'milvus.db'}, collection " \
           "prodrec_gallery)" in out
    assert json.loads((gallery / "backend.json").read_text()) == {"backend": "milvus", "uri": "milvus.db",
                                                                 "collection": "prodrec_gallery"}
    assert (gallery / MODEL_FILE).is_file() and not (gallery / "CURRENT").exists()
    info = json.loads(run_cli(["index", "info", "--index", gallery, "--json"]))
    assert info["backend"] == "milvus" and info["images"] == len(splits.gallery) and info["products"] == 3
    assert info["embedder"]["backbone"] == "resnet18d" and info["collection"] == "prodrec_gallery"

    image, label = splits.gallery.paths[0], splits.gallery.classes[splits.gallery.labels[0]]
    own = search(run_cli, gallery, image)
    assert own["label"] == label and own["score"] == pytest.approx(1, abs=1e-4)
    other = sorted(set(splits.gallery.classes) - {label})[0]
    assert {m["label"] for m in search(run_cli, gallery, image, "--filter", f'label == "{other}"')["matches"]} == {other}
    with pytest.raises(ValueError, match="unknown field"):
        run_cli(["search", "--index", gallery, image, "--filter", "shop == 1"])

    out = run_cli(["index", "add", "--index", gallery, "--folder", model.parent / "queries", "--quiet"])
    assert out.endswith(f"the gallery holds {len(splits.gallery) + len(splits.query)}\n")
    removed = sum(1 for i in splits.gallery.labels if splits.gallery.classes[i] == other)
    removed += sum(1 for i in splits.query.labels if splits.query.classes[i] == other)
    assert f"removed {removed} images" in run_cli(["index", "remove", "--index", gallery, "--label", other])
    calibrated = json.loads(run_cli(["index", "calibrate", "--index", gallery, "--far", "0.5", "--json"]))
    assert calibrated["stored"]
    info = json.loads(run_cli(["index", "info", "--index", gallery, "--json"]))
    assert info["calibration"]["threshold"] == calibrated["threshold"] and info["calibration"]["changes_since"] == 0
    assert search(run_cli, gallery, image)["label"] == label  # at the stored threshold

    with pytest.raises(ValueError, match="already holds a gallery"):
        run_cli(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--backend", "milvus",
                 "--output", gallery])
    with pytest.raises(ValueError, match="--uri and --collection name a Milvus gallery"):
        run_cli(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--uri", "x.db",
                 "--output", tmp_path / "other"])


def test_migrating_to_milvus_and_back_keeps_every_answer(shop, tmp_path, run_cli):
    root, model, splits = shop
    start, there, back = tmp_path / "faiss", tmp_path / "milvus", tmp_path / "back"
    run_cli(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--output", start, "--quiet"])
    run_cli(["index", "calibrate", "--index", start, "--far", "0.6"])
    moved = json.loads(run_cli(["index", "migrate", start, "--to", "milvus", "--output", there, "--uri",
                                tmp_path / "shared.db", "--collection", "moved", "--json", "--quiet"]))
    assert moved["images"] == len(splits.gallery) and moved["check"]["top1_label_agreement"] == 1.0
    assert moved["check"]["topk_labels_agreement"] == 1.0 and moved["check"]["max_score_difference"] < 1e-4
    returned = json.loads(run_cli(["index", "migrate", there, "--to", "faiss", "--type", "HNSW32", "--output", back,
                                   "--json", "--quiet"]))
    assert returned["check"]["top1_label_agreement"] == 1.0 and (back / "CURRENT").is_file()
    assert not (back / "backend.json").exists() and (back / MODEL_FILE).is_file()
    infos = [json.loads(run_cli(["index", "info", "--index", folder, "--json"])) for folder in (start, there, back)]
    assert len({info["images"] for info in infos}) == 1 and infos[2]["index_type"] == "HNSW32"
    assert len({json.dumps(info["calibration"]["threshold"]) for info in infos}) == 1
    assert {info["backend"] for info in infos} == {"faiss", "milvus"}
    for image in splits.query.paths[:4]:
        answers = [search(run_cli, folder, image) for folder in (start, there, back)]
        assert len({answer["label"] for answer in answers}) == 1
        assert max(a["score"] for a in answers) - min(a["score"] for a in answers) < 1e-4
    with pytest.raises(ValueError, match="--output must be a new gallery folder"):
        run_cli(["index", "migrate", start, "--to", "milvus", "--output", start])
