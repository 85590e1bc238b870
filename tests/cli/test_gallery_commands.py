import json
import os

import pytest
import torch

pytest.importorskip("faiss")

from prodrec.cli import build_parser  # noqa: E402
from prodrec.cli.gallery import MODEL_FILE  # noqa: E402
from prodrec.gallery import read_inshop_boxes  # noqa: E402
from prodrec.retrieval import RERANK_METHODS  # noqa: E402


def test_build_info_search_remove_add(shop, tmp_path, run_cli):
    root, model, splits = shop
    gallery = tmp_path / "gallery"
    out = run_cli(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--type", "HNSW32",
               "--ef-search", "40", "--output", gallery, "--quiet"])
    assert f"indexed {len(splits.gallery)} images of 3 products (HNSW32)" in out
    assert (gallery / MODEL_FILE).is_file()
    info = json.loads(run_cli(["index", "info", "--index", gallery, "--json"]))
    assert info["images"] == len(splits.gallery) and info["ef_search"] == 40 and info["products"] == 3
    assert info["embedder"]["backbone"] == "resnet18d" and info["bytes_per_image"] > 16 * 4

    image, label = splits.gallery.paths[0], splits.gallery.classes[splits.gallery.labels[0]]
    found = json.loads(run_cli(["search", "--index", gallery, image, splits.query.paths[0], "--k", "3", "--json"]))
    (own,) = found[0]["regions"]
    assert own["label"] == label and own["accepted"] and own["score"] == pytest.approx(1, abs=1e-5)
    assert own["matches"][0] == {"label": label, "name": f"Product {splits.gallery.labels[0]}",
                                 "score": own["score"], "id": 0}
    assert len(found[1]["regions"][0]["matches"]) == 3
    assert f"{image} [0, 0, 32, 32]: {label} (Product" in run_cli(["search", "--index", gallery, image])
    reranked = json.loads(run_cli(["search", "--index", gallery, image, "--k", "3", "--rerank", "k-reciprocal", "--json"]))[0]["regions"][0]
    assert reranked["matches"][0]["id"] == 0 and reranked["matches"][1]["score"] != own["matches"][1]["score"]

    with pytest.raises(ValueError, match="HNSW32 index cannot remove"):
        run_cli(["index", "remove", "--index", gallery, "--label", label])
    removed = sum(1 for i in splits.gallery.labels if splits.gallery.classes[i] == label)
    assert f"removed {removed} images" in run_cli(["index", "remove", "--index", gallery, "--label", label,
                                               "--rebuild"])
    out = run_cli(["index", "add", "--index", gallery, "--folder", model.parent / "queries", "--quiet"])
    count = len(splits.gallery) - removed + len(splits.query)
    assert out == f"added {len(splits.query)} images (ids {len(splits.gallery)}..{count + removed - 1}); " \
                  f"the gallery holds {count}\n"
    assert json.loads(run_cli(["index", "info", "--index", gallery, "--json"]))["images"] == count


def test_rerank_choices_are_the_rerank_methods():
    search = build_parser()._subparsers._group_actions[0].choices["search"]
    (option,) = [action for action in search._actions if action.dest == "rerank"]
    assert sorted(option.choices) == sorted(RERANK_METHODS)


def test_search_crops_in_shop_boxes(shop, tmp_path, run_cli):
    root, model, splits = shop
    run_cli(["index", "build", "--checkpoint", model, "--folder", model.parent / "queries", "--output", tmp_path / "g",
         "--quiet"])
    image = splits.query.paths[0]
    key = os.path.relpath(image, root)
    found = json.loads(run_cli(["search", "--index", tmp_path / "g", image, "--inshop-boxes", root, "--json"]))
    assert found[0]["regions"][0]["box"] == list(read_inshop_boxes(root)[key])
    with pytest.raises(ValueError, match="no box in .* for 1 images"):
        run_cli(["search", "--index", tmp_path / "g", root / "gallery.txt", "--inshop-boxes", root])
    (tmp_path / "g" / MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="pass --checkpoint"):
        run_cli(["search", "--index", tmp_path / "g", image])
    assert run_cli(["search", "--index", tmp_path / "g", image, "--checkpoint", model]).startswith(image)


def test_build_never_overwrites_silently_and_writers_take_turns(shop, tmp_path, run_cli):
    import subprocess
    import sys

    from prodrec.gallery import GalleryIndex
    from prodrec.utils import LockBusy

    root, model, splits = shop
    gallery = tmp_path / "gallery"
    build = ["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--output", gallery, "--quiet"]
    run_cli(build)
    with pytest.raises(ValueError, match=r"already holds a gallery; add images to it with `prodrec index add --index "
                                         r".*replace it with --force, or choose another --output folder"):
        run_cli(build)
    (root / "three.txt").write_text("\n".join((root / "gallery.txt").read_text().splitlines()[:3]) + "\n")
    assert "indexed 3 images" in run_cli([*build[:4], "--list", root / "three.txt", *build[6:], "--force"])
    assert len(GalleryIndex.load(gallery)) == 3
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="--output .*file is a file; give a folder"):
        run_cli([*build[:6], "--output", tmp_path / "file"])

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom prodrec.gallery import GalleryFolder\n"
                               "with GalleryFolder(sys.argv[1]).writing():\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n", str(gallery)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match=rf"another process \(pid {holder.pid}\) is writing the gallery"):
            run_cli(["index", "remove", "--index", gallery, "--id", "0", "--no-wait"])
    finally:
        holder.kill()
        holder.wait()
    assert "removed 1 images; the gallery holds 2" in run_cli(["index", "remove", "--index", gallery, "--id", "0"])


def test_index_add_over_a_file_size_limit_fails_in_one_line_and_keeps_the_gallery(shop, tmp_path, run_cli):
    import resource
    import subprocess
    import sys

    from prodrec.gallery import GalleryIndex

    root, model, splits = shop
    gallery = tmp_path / "gallery"
    run_cli(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--output", gallery, "--quiet"])
    before = GalleryIndex.load(gallery)
    limit = (gallery / "gen-000001" / "meta.npz").stat().st_size // 2  # the new meta.npz cannot be written

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    added = subprocess.run([sys.executable, "-m", "prodrec", "index", "add", "--index", str(gallery), "--folder",
                            str(model.parent / "queries"), "--quiet"], capture_output=True, text=True,
                           timeout=300, preexec_fn=small_files)
    assert added.returncode == 1 and "Traceback" not in added.stderr
    (line,) = added.stderr.strip().splitlines()
    assert line.startswith(f"prodrec index: error: could not save the gallery {gallery}: a file would pass the "
                           "file-size limit (ulimit -f)") and line.endswith("the gallery is unchanged (still gen-000001)")
    after = GalleryIndex.load(gallery)
    assert after.ids.tolist() == before.ids.tolist() and after.labels.tolist() == before.labels.tolist()


def test_search_with_a_detector_gives_a_region_per_box_and_draws_them(shop, tmp_path, run_cli):
    from PIL import Image

    from prodrec.models import DetectorSettings, ProductDetector

    root, model, splits = shop
    run_cli(["index", "build", "--checkpoint", model, "--list", root / "gallery.txt", "--output", tmp_path / "g",
             "--quiet"])
    torch.manual_seed(0)
    detector = ProductDetector(DetectorSettings("fcos_resnet18", image_size=64, score_threshold=0.0, max_detections=5))
    detector.save(tmp_path / "det.pt")
    photo = splits.query.paths[0]
    found = json.loads(run_cli(["search", "--index", tmp_path / "g", photo, "--detector", tmp_path / "det.pt",
                                "--draw", tmp_path / "drawn", "--json"]))
    regions = found[0]["regions"]
    assert 2 <= len(regions) <= 6 and regions[-1]["box"] == [0, 0, 32, 32]  # the whole photo comes last
    for region in regions:
        x1, y1, x2, y2 = region["box"]
        assert 0 <= x1 < x2 <= 32 and 0 <= y1 < y2 <= 32 and set(region) >= {"label", "accepted", "score", "matches"}
    (drawn,) = (tmp_path / "drawn").glob("*.png")
    assert Image.open(drawn).size == (32, 32)
    with pytest.raises(ValueError, match="choose one"):
        run_cli(["search", "--index", tmp_path / "g", photo, "--detector", tmp_path / "det.pt", "--inshop-boxes", root])
