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
