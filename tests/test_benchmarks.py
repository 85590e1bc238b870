"""The benchmark scripts run end to end with tiny settings and write what they promise."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from prodrec.models import Embedder

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_script(name, *args, cwd):
    completed = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], cwd=cwd,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


def load_script(name):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), BENCHMARKS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mean_std_is_the_sample_standard_deviation():
    ce_vs_triplet = load_script("ce_vs_triplet.py")
    assert ce_vs_triplet.mean_std([0.1, 0.2], 100) == "15.0 ± 7.1"
    assert ce_vs_triplet.mean_std([12.0], digits=0) == "12"


def test_ce_vs_triplet_trains_every_variant_and_writes_table_plots_and_records(tmp_path):
    output = tmp_path / "bench"
    stdout = run_script("ce_vs_triplet.py", "--items", 32, "--views", 4, "--image-size", 32, "--epochs", 1,
                        "--seeds", 0, "--backbone", "resnet18d", "--also", "MultiSimilarityLoss", "--output", output,
                        cwd=tmp_path)
    expected = {  # variant -> (head, losses)
        "CE (FC)": ("FC", ["CELoss"]),
        "CE (ArcMargin)": ("ArcMargin", ["CELoss"]),
        "CE + Triplet (FC)": ("FC", ["CELoss", "TripletLossV2"]),
        "CE + Triplet (ArcMargin)": ("ArcMargin", ["CELoss", "TripletLossV2"]),
        "CE (ArcMargin) + MultiSimilarityLoss": ("ArcMargin", ["CELoss", "MultiSimilarityLoss"]),
    }
    results = json.loads((output / "results.json").read_text())
    assert [run["variant"] for run in results["runs"]] == list(expected)
    assert "--also MultiSimilarityLoss" in results["command"] and results["command"].startswith("python ")
    assert results["settings"]["synthetic"]["items"] == 32 and results["settings"]["epochs"] == 1
    for run in results["runs"]:
        assert {"recall@1", "recall@5", "recall@10", "recall@20", "mAP"} <= set(run["metrics"])
        assert run["train_seconds"] > 0 and run["train_images_per_second"] > 0
        assert [epoch["epoch"] for epoch in run["epochs"]] == [1]
        assert {"loss", "CELoss"} <= set(run["epochs"][0]["loss"]) and "recall@1" in run["epochs"][0]["metrics"]
        config = yaml.safe_load((Path(run["output_dir"]) / "config.yaml").read_text())
        head, losses = expected[run["variant"]]
        assert config["Arch"]["Head"]["name"] == head and [next(iter(e)) for e in config["Loss"]["Train"]] == losses
        assert (config["Arch"]["Backbone"]["name"], config["Global"]["image_size"], config["Global"]["seed"]) == (
            "resnet18d", 32, 0)
        if head == "ArcMargin":
            assert (config["Arch"]["Head"]["margin"], config["Arch"]["Head"]["scale"]) == (0.15, 30)
        assert not (Path(run["output_dir"]) / "checkpoints").exists()
    table = (output / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| variant", "| ---"))]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(expected)
    assert all(len(row.split(" | ")) == 8 for row in rows)
    assert f"Command: `{results['command']}`" in table and table.splitlines()[0] in stdout
    for picture in ("recall_at_k.png", "training_curves.png"):
        assert (output / picture).read_bytes()[:8] == PNG_SIGNATURE


def test_ce_vs_triplet_rejects_an_unknown_loss_before_training(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "ce_vs_triplet.py"), "--items", "8", "--views", "2", "--image-size", "32",
         "--also", "NoSuchLoss", "--output", str(tmp_path / "bench")], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2 and "unknown loss 'NoSuchLoss'" in completed.stderr
    assert not (tmp_path / "bench" / "runs").exists()


def test_throughput_reports_every_figure_beside_its_baseline(tmp_path):
    stdout = run_script("throughput.py", "--backbone", "resnet18d", "--image-size", 32, "--batch-size", 4,
                        "--iterations", 1, "--warmup", 1, "--workers", 0, "--items", 8, "--queries", 300,
                        "--gallery", 200, "--dim", 16, "--json", tmp_path / "out.json", cwd=tmp_path)
    figures = json.loads((tmp_path / "out.json").read_text())
    assert set(figures) == {"loader", "train_step", "pipeline", "embed", "extract", "eval_time", "eval_memory", "knn"}
    for name, figure in figures.items():
        assert set(figure) == {"value", "baseline", "ratio", "unit", "target", "met"}
        assert figure["value"] > 0 and figure["baseline"] > 0
        if figure["unit"] != "MiB":  # memory is a ratio to the features' size, not to the baseline
            faster = figure["baseline"] / figure["value"] if figure["unit"] == "s" else figure["value"] / figure["baseline"]
            assert figure["ratio"] == pytest.approx(faster, rel=1e-2, abs=1e-3)
        assert figure["met"] in (None, True, False)
        assert any(line.startswith(name) for line in stdout.splitlines())


def test_recognition_outcome_shares_on_a_hand_worked_case():
    recognition = load_script("recognition.py")
    known = np.array([True, True, True, False, False])
    right_label = np.array([True, False, True, False, True])
    scores = np.array([0.9, 0.8, 0.4, 0.7, 0.2])
    shares = recognition.outcome_shares(known, right_label, scores, 0.5)
    assert shares["known_right"] == pytest.approx(100 / 3) and shares["known_wrong"] == pytest.approx(100 / 3)
    assert shares["known_rejected"] == pytest.approx(100 / 3) and shares["unknown_accepted"] == 50.0
    assert shares["accuracy"] == pytest.approx(40.0)  # query 0 accepted right, query 4 rejected as unknown


def test_recognition_trains_builds_a_partial_gallery_and_sweeps_thresholds(tmp_path):
    stdout = run_script("recognition.py", "--items", 16, "--views", 3, "--image-size", 32, "--epochs", 1,
                        "--batch-size", 8, "--known", 0.5, "--output", tmp_path / "rec", cwd=tmp_path)
    results = json.loads((tmp_path / "rec" / "results.json").read_text())
    assert results["known_products"] == results["unknown_products"] == 4  # 8 test products
    assert results["known_queries"] > 0 and results["unknown_queries"] > 0 and results["regions"] == "boxes"
    assert [row["threshold"] for row in results["thresholds"]] == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98]
    assert results["best"]["accuracy"] >= max(row["accuracy"] for row in results["thresholds"])
    for row in results["thresholds"]:
        assert row["known_right"] + row["known_wrong"] + row["known_rejected"] == pytest.approx(100.0)
    accepted = [row["unknown_accepted"] for row in results["thresholds"]]
    assert accepted == sorted(accepted, reverse=True)
    assert "| 0.50 (default) |" in stdout and (tmp_path / "rec" / "results.md").read_text() in stdout


def test_recognition_names_a_data_root_that_is_not_in_shop(tmp_path):
    (tmp_path / "empty").mkdir()
    model = tmp_path / "model.pt"
    torch.manual_seed(0)
    Embedder("resnet18d", embedding_size=8, image_size=32).save(model)
    done = subprocess.run([sys.executable, str(BENCHMARKS / "recognition.py"), "--data-root", str(tmp_path / "empty"),
                           "--checkpoint", str(model), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "recognition.py: error:" in done.stderr and str(tmp_path / "empty") in done.stderr


def write_cutouts(folder, count, rng):
    """``count`` noisy, many-coloured cut-out objects (PNG with transparency), and two drawings to leave out."""
    import cv2

    for number in range(count):
        image = np.zeros((60, 50, 4), np.uint8)
        image[..., :3] = rng.integers(0, 256, (60, 50, 3))
        cv2.ellipse(image, (25, 30), (20, 26), 0, 0, 360, (0, 0, 0, 255), -1)  # the opaque object
        image[..., :3] = np.where(image[..., 3:] > 0, rng.integers(0, 256, (60, 50, 3)), 0)
        (folder / "photos").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "photos" / f"object{number}.png"), image)
    flat = np.zeros((60, 50, 4), np.uint8)
    flat[10:50, 10:40] = (0, 200, 255, 255)  # one colour: a drawing
    cv2.imwrite(str(folder / "photos" / "drawing.png"), flat)
    (folder / "cartoon").mkdir()
    cv2.imwrite(str(folder / "cartoon" / "busy.png"), cv2.imread(str(folder / "photos" / "object0.png"),
                                                                 cv2.IMREAD_UNCHANGED))


def test_colour_count_tells_photographs_from_drawings():
    photo_products = load_script("photo_products.py")
    image = np.zeros((2, 3, 4), np.uint8)
    image[0, :, :3] = [[0, 0, 0], [8, 0, 0], [7, 0, 0]]  # 8 and 7 differ in 5-bit colour, 0 and 7 do not
    image[0, :, 3] = 255
    image[1, :, :3] = 200  # transparent: not counted
    assert photo_products.colour_count(image) == 2


def test_photo_products_writes_a_list_format_set_of_disjoint_products(tmp_path):
    from prodrec.data import read_splits

    write_cutouts(tmp_path / "objects", 10, np.random.default_rng(0))
    out = run_script("photo_products.py", tmp_path / "objects", tmp_path / "set", "--views", "4", "--size", "64",
                     cwd=tmp_path)
    assert json.loads(out.strip().splitlines()[-1]) == {"products": 10, "train_products": 5, "train": 20,
                                                        "query": 10, "gallery": 10}
    names = json.loads((tmp_path / "set" / "products.json").read_text())
    assert sorted(names.values()) == [f"photos/object{n}.png" for n in range(10)]  # no drawing, no cartoon
    splits = read_splits("list", tmp_path / "set")
    train, query, gallery = ({str(splits_.classes[label]) for label in splits_.labels}
                             for splits_ in (splits.train, splits.query, splits.gallery))
    assert query == gallery and not train & query and len(train) == 5
    import cv2

    assert cv2.imread(splits.query.paths[0]).shape == (64, 64, 3)


def test_short_recipe_trains_every_variant_and_writes_the_table(tmp_path):
    write_cutouts(tmp_path / "objects", 32, np.random.default_rng(1))  # 16 train products: one P x K batch
    run_script("photo_products.py", tmp_path / "objects", tmp_path / "set", "--views", "4", "--size", "48",
               cwd=tmp_path)
    run_script("short_recipe.py", "--data-root", tmp_path / "set", "--output", tmp_path / "bench", "--epochs", "2",
               "--image-size", "32", "--warmup", "0.5", "--quiet", cwd=tmp_path)
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert list(results) == ["recipe, milestones as written (0.1)", "recipe, schedule scaled",
                             "recipe as shipped: scaled + warm-up 15 of 120 epochs",
                             "recipe as shipped, no random erasing", "recipe, cosine + 30% warm-up (the one-cycle shape)",
                             "recipe, scaled + 0.5 warm-up epoch", "plain timm + PML loop"]
    for run in results.values():
        assert len(run["recall@1_by_epoch"]) == 2 and 0 <= run["metrics"]["recall@1"] <= 1
    logs = {name: (tmp_path / "bench" / "runs" / name / "log.jsonl").read_text() for name in
            ("recipe__milestones_as_written__0_1_", "recipe__schedule_scaled")}
    assert "scaled to" not in logs["recipe__milestones_as_written__0_1_"] and "scaled to" in logs["recipe__schedule_scaled"]
    table = (tmp_path / "bench" / "results.md").read_text()
    assert table.startswith("| variant | R@1 |") and table.count("\n") == 9


def test_short_recipe_names_missing_data_instead_of_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "short_recipe.py"), "--data-root", str(tmp_path / "none"),
                           "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.startswith("short_recipe.py: error: ") and "Traceback" not in done.stderr


def test_gallery_add_prints_the_cost_of_a_durable_add(tmp_path):
    out = run_script("gallery_add.py", "--sizes", "5", "50", "--dim", "8", "--repeat", "1", cwd=tmp_path)
    rows = [line for line in out.splitlines() if line.startswith("| 5") or line.startswith("| 50")]
    assert len(rows) == 2 and all(line.endswith(" ms |") for line in rows)


def test_serve_load_reports_rates_latencies_and_ratios(tmp_path):
    pytest.importorskip("fastapi")
    out = run_script("serve_load.py", "--backbone", "test_resnet", "--image-sizes", "32", "--concurrency", "1", "2",
                     "--backends", "torch", "--duration", "1", "--gallery", "20", "--output", tmp_path / "out",
                     cwd=tmp_path)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["rows"]) == 4 and all(row["errors"] == 0 and row["requests"] > 0 for row in results["rows"])
    assert set(results["ratios"]["32-torch"]) == {"service_vs_bare", "batching_gain", "single_latency"}
    assert "| 32 | torch | on | 2 |" in out and (tmp_path / "out" / "results.md").is_file()


def test_calibration_check_splits_products_three_ways_and_measures_unseen_ones(tmp_path):
    from prodrec.data import make_synthetic_inshop

    root = make_synthetic_inshop(tmp_path / "data", items=24, views=4, image_size=32, progress=False).root
    torch.manual_seed(0)
    Embedder("resnet18d", embedding_size=16, image_size=32).save(tmp_path / "model.pt")
    stdout = run_script("calibration_check.py", "--data-root", root, "--dataset", "inshop", "--checkpoint",
                        tmp_path / "model.pt", "--far", 0.5, 0.3, "--seeds", 0, 1, "--output", tmp_path / "out",
                        "--plot", tmp_path / "plot.png", cwd=tmp_path)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(row["seed"], row["far_target"]) for row in rows] == [(0, 0.5), (0, 0.3), (1, 0.5), (1, 0.3)]
    for row in rows:
        assert row["calibration_far"] <= row["far_target"] and row["calibration_queries"] == 24
        assert 0 <= row["measured_far"] <= 1 and row["test_queries"] == 12 + 12  # 6 products' queries, 3 unknown
    assert "| 0.3 |" in stdout and (tmp_path / "plot.png").read_bytes().startswith(PNG_SIGNATURE)
    gallery, calibration, test = load_script("calibration_check.py").split_products(np.arange(10), 0, 0.5)
    assert len(gallery) == 5 and len(calibration) == 2 and len(test) == 3
    assert not set(gallery) & set(calibration) and not set(calibration) & set(test)


def test_detector_choice_times_and_trains_each_detector(tmp_path):
    pytest.importorskip("torchmetrics")
    stdout = run_script("detector_choice.py", "--output", tmp_path / "choice", "--detectors", "fcos_resnet18",
                        "ssdlite_mobilenet_v3", "--image-size", 96, "--scenes", 10, "--minutes", 0.01,
                        "--speed-photos", 1, cwd=tmp_path)
    rows = json.loads((tmp_path / "choice" / "results.json").read_text())
    assert [row["detector"] for row in rows] == ["fcos_resnet18", "ssdlite_mobilenet_v3"]
    for row in rows:
        assert row["photos_per_second"] > 0 and row["step_seconds"] > 0 and row["epochs"] >= 1
        assert 0 <= row["map_50"] <= 1 and "mar_100" in row
    assert "| fcos_resnet18 |" in stdout and "9 training / 1 validation scenes" in stdout


def test_shelf_pipeline_times_a_sparse_and_a_dense_photo(tmp_path):
    pytest.importorskip("faiss")
    from prodrec.gallery import build_gallery
    from prodrec.models import DetectorSettings, ProductDetector

    torch.manual_seed(0)
    model = Embedder("resnet18d", embedding_size=16, image_size=32)
    pictures = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(pictures)
    build_gallery(model, [(str(pictures), "red", None)], progress=False).save(tmp_path / "g")
    model.save(tmp_path / "g" / "embedder.pt")
    ProductDetector(DetectorSettings("ssdlite_mobilenet_v3", image_size=96, max_detections=10)).save(tmp_path / "d.pt")
    stdout = run_script("shelf_pipeline.py", "--detector", tmp_path / "d.pt", "--index", tmp_path / "g", "--scenes", 3,
                        "--repeat", 1, "--products", 30, 150, "--output", tmp_path / "out", cwd=tmp_path)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [row["target"] for row in rows] == [30, 150]
    # Two timings taken one after the other: on a busy machine either can be the larger, so only their presence counts.
    assert all(row["pipeline_seconds"] > 0 and row["detect_seconds"] > 0 and row["regions"] >= 1 for row in rows)
    assert "| products in the photo |" in stdout


def test_gallery_backends_measures_each_backend_and_writes_the_table(tmp_path):
    if importlib.util.find_spec("milvus_lite") is None:
        pytest.skip("the milvus extra is not installed")
    output = tmp_path / "backends"
    run_script("gallery_backends.py", "--sizes", 2000, "--dim", 16, "--queries", 40, "--seconds", 1,
               "--configs", "faiss Flat", "Milvus Lite HNSW", "--output", output, cwd=tmp_path)
    rows = json.loads((output / "results.json").read_text())
    assert [row["config"] for row in rows] == ["faiss Flat", "Milvus Lite HNSW"]
    for row in rows:
        assert row["visible_after_add"] and row["recall_at_10"] > 0.9 and row["qps_batch1"] > 0 and row["disk_mb"] > 0
    assert "| 2,000 | Milvus Lite HNSW |" in (output / "results.md").read_text()
    assert not list(output.glob("backends-*"))
