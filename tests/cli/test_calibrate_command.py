import json
import os

import pytest
import torch

pytest.importorskip("faiss")

from prodrec.cli import main  # noqa: E402
from prodrec.data import make_synthetic_inshop, read_inshop  # noqa: E402
from prodrec.gallery import GalleryFolder, GalleryIndex  # noqa: E402
from prodrec.models import Embedder  # noqa: E402


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A gallery list of half the synthetic products, and an unknown list of the other half's images."""
    folder = tmp_path_factory.mktemp("calibrate")
    root = make_synthetic_inshop(folder / "data", items=16, views=4, image_size=32, progress=False).root
    torch.manual_seed(0)
    model = Embedder("resnet18d", embedding_size=16, image_size=32).save(folder / "model.pt")
    splits = read_inshop(root)
    known = set(sorted(set(splits.gallery.labels.tolist()))[::2])
    rows = [(os.path.relpath(path, root), splits.gallery.classes[label], label in known)
            for images in (splits.gallery, splits.query) for path, label in zip(images.paths, images.labels)]
    (root / "gallery.txt").write_text("".join(f"{path} {label}\n" for path, label, held in rows[:len(splits.gallery)]
                                              if held))
    (root / "unknown.txt").write_text("".join(f"{path} {label}\n" for path, label, held in rows if not held))
    return root, model, splits


@pytest.fixture
def gallery(shop, tmp_path, run_cli):
    root, model, _ = shop
    run_cli(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--output", tmp_path / "g",
             "--quiet"])
    return tmp_path / "g"


def test_calibrate_stores_a_threshold_that_search_uses(shop, gallery, run_cli, tmp_path):
    root, _, splits = shop
    result = json.loads(run_cli(["index", "calibrate", "--index", gallery, "--far", "0.3", "--unknown",
                                 root / "unknown.txt", "--json", "--quiet", "--plot", tmp_path / "rates.png"]))
    assert result["stored"] and result["far"] <= 0.3 and result["known_queries"] == 8
    assert result["unknown_queries"] == 16 and 0 <= result["frr"] <= 1 and (tmp_path / "rates.png").is_file()
    info = json.loads(run_cli(["index", "info", "--index", gallery, "--json"]))
    assert info["calibration"]["threshold"] == result["threshold"] and info["calibration"]["changes_since"] == 0
    assert "calibrated on this gallery" in run_cli(["index", "info", "--index", gallery])

    for image in splits.query.paths[:6]:
        (region,) = json.loads(run_cli(["search", "--index", gallery, image, "--json"]))[0]["regions"]
        assert region["accepted"] == (region["score"] >= result["threshold"])
        (loose,) = json.loads(run_cli(["search", "--index", gallery, image, "--json", "--threshold", "-1"]))[0]["regions"]
        assert loose["accepted"]  # an explicit threshold wins

    run_cli(["index", "add", "--index", gallery, "--list", root / "unknown.txt", "--quiet"])
    info = json.loads(run_cli(["index", "info", "--index", gallery, "--json"]))
    assert info["calibration"]["threshold"] == result["threshold"] and info["calibration"]["changes_since"] == 16
    assert "older gallery: 16 images added or removed since" in run_cli(["index", "info", "--index", gallery])


def test_dry_run_reports_without_storing(gallery, run_cli):
    out = run_cli(["index", "calibrate", "--index", gallery, "--far", "0.4", "--dry-run"])
    assert out.startswith("threshold ") and "not stored (--dry-run)" in out
    assert json.loads(run_cli(["index", "info", "--index", gallery, "--json"]))["calibration"] is None


@pytest.mark.parametrize("argv, message", [
    (["--far", "1.5"], r"in \(0, 1\)"),
    (["--far", "0"], r"in \(0, 1\)"),
    (["--far", "0.001"], "cannot be backed by 8 queries"),
    (["--unknown", "missing.txt"], "not found"),
    (["--unknown", "broken.txt"], "nothere.jpg"),
    (["--unknown", "held.txt", "--allow-outside-root"], "images of 1 products the gallery holds"),
    (["--image-root", "."], "apply to --unknown images only"),
])
def test_bad_input_is_refused_and_changes_nothing(shop, gallery, run_cli, argv, message, tmp_path, monkeypatch):
    root, _, _ = shop
    first = (root / "gallery.txt").read_text().split("\n")[0]
    (tmp_path / "broken.txt").write_text("nothere.jpg a\n")
    (tmp_path / "held.txt").write_text(f"{root / first.split()[0]} {first.split()[1]}\n")
    monkeypatch.chdir(tmp_path)
    before = GalleryFolder(gallery).generation()
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_cli(["index", "calibrate", "--index", gallery, "--quiet"] + argv)
    assert GalleryFolder(gallery).generation() == before and GalleryIndex.load(gallery).calibration is None


def test_eval_open_set_reports_frr_at_fixed_far(shop, capsys):
    root, model, _ = shop

    def run_cli(argv):
        assert main([str(arg) for arg in argv]) == 0
        return capsys.readouterr().out

    metrics = json.loads(run_cli(["eval", "--checkpoint", model, "--data-root", root, "--open-set", "--json"]))
    assert metrics["open_set/known_queries"] + metrics["open_set/unknown_queries"] == 16
    assert metrics["frr@far=0.001"] is None and metrics["frr@far=0.1"] is None  # 16 queries back 0.17 at best
    assert "recall@1" in metrics
    out = run_cli(["eval", "--checkpoint", model, "--data-root", root, "--open-set"])
    assert "FRR at FAR 0.01: not measurable with these queries (smallest supported FAR 0.17)" in out
