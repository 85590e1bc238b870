import json

from prodrec.data import read_coco


def test_make_shelves_writes_a_coco_set(tmp_path, run_cli):
    out = run_cli(["make-shelves", tmp_path / "shelves", "--scenes", 3, "--synthetic-items", 10, "--width", 256,
                   "--height", 192, "--seed", 2, "--random-objects", 4, "--quiet"])
    assert out.startswith("wrote 3 scenes with ") and "annotations.json" in out
    found = read_coco(tmp_path / "shelves" / "annotations.json", tmp_path / "shelves")
    assert len(found) == 3 and len(list((tmp_path / "shelves" / "images").glob("*.jpg"))) == 3
    labels = {a["product"] for a in json.loads((tmp_path / "shelves" / "annotations.json").read_text())["annotations"]}
    assert {label[:3] for label in labels} == {"id_", "obj"}


def test_detect_train_then_eval_on_coco_files(tmp_path, run_cli):
    import pytest

    pytest.importorskip("torchmetrics")
    pytest.importorskip("pycocotools")
    run_cli(["make-shelves", tmp_path / "shelves", "--scenes", 4, "--synthetic-items", 6, "--width", 160,
             "--height", 120, "--quiet"])
    ann, images = tmp_path / "shelves" / "annotations.json", tmp_path / "shelves"
    out = run_cli(["detect", "train", "--coco", ann, "--images", images, "--output", tmp_path / "run", "--epochs", 1,
                   "--image-size", 128, "--batch-size", 2, "--set", "Optimizer.lr.warmup_epoch=0", "--set",
                   "DataLoader.val_fraction=0.25", "--set", "DataLoader.num_workers=0", "--quiet"])
    assert out.startswith(f"detector in {tmp_path / 'run'}/checkpoints") and "map_50" in out
    metrics = json.loads(run_cli(["detect", "eval", "--checkpoint", tmp_path / "run" / "checkpoints" / "best.pt",
                                  "--coco", ann, "--images", images, "--json"]))
    assert {"map", "map_50", "map_75", "mar_100"} <= set(metrics) and metrics["photos"] == 4

    data = json.loads(ann.read_text())
    data["annotations"][0]["bbox"] = [150, 10, 40, 10]  # past the right edge
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation 1: box .* outside the image"):
        run_cli(["detect", "eval", "--checkpoint", tmp_path / "run" / "checkpoints" / "best.pt", "--coco",
                 tmp_path / "bad.json", "--images", images])
    skipped = json.loads(run_cli(["detect", "eval", "--checkpoint", tmp_path / "run" / "checkpoints" / "best.pt",
                                  "--coco", tmp_path / "bad.json", "--images", images, "--json", "--skip-bad-boxes"]))
    assert skipped["skipped_boxes"] == 1 and skipped["boxes"] == metrics["boxes"] - 1


def test_eval_pipeline_prints_precision_recall_f1_for_detected_and_given_boxes(tmp_path, run_cli):
    import pytest
    import torch

    pytest.importorskip("faiss")
    from prodrec.data import make_synthetic_inshop
    from prodrec.models import DetectorSettings, Embedder, ProductDetector

    run_cli(["make-shelves", tmp_path / "shelves", "--scenes", 2, "--synthetic-items", 6, "--width", 160,
             "--height", 120, "--seed", 4, "--quiet"])
    catalogue = make_synthetic_inshop(tmp_path / "set", items=6, views=2, image_size=32, seed=4, progress=False).root
    torch.manual_seed(0)
    Embedder("resnet18d", embedding_size=16, image_size=32).save(tmp_path / "model.pt")
    (tmp_path / "products").mkdir()
    for image in sorted(catalogue.glob("img/*/*/id_*/*.jpg")):
        label = image.parent.name
        (tmp_path / "products" / label).mkdir(exist_ok=True)
        (tmp_path / "products" / label / image.name).write_bytes(image.read_bytes())
    run_cli(["index", "build", "--checkpoint", tmp_path / "model.pt", "--folder", tmp_path / "products", "--output",
             tmp_path / "g", "--quiet"])
    ProductDetector(DetectorSettings("fcos_resnet18", image_size=96, score_threshold=0.0, max_detections=20)).save(
        tmp_path / "det.pt")
    args = ["detect", "eval-pipeline", "--detector", tmp_path / "det.pt", "--index", tmp_path / "g", "--coco",
            tmp_path / "shelves" / "annotations.json", "--images", tmp_path / "shelves"]
    result = json.loads(run_cli([*args, "--json", "--thresholds", "0.9"]))
    for kind in ("detected", "ground_truth_boxes"):
        assert {"precision", "recall", "f1"} <= set(result[kind]) and 0 <= result[kind]["f1"] <= 1
    assert result["threshold"] == 0.5 and [row["threshold"] for row in result["by_threshold"]] == [0.9]
    assert result["ground_truth_boxes"]["annotated"] == result["detected"]["annotated"] > 0
    assert "ground_truth_boxes" in run_cli(args)
