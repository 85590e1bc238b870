import json

import numpy as np
import pytest

from prodrec.config import load_config
from prodrec.data import ImageList, RetrievalSplits, make_synthetic_inshop, read_inshop
from prodrec.models import Embedder
from prodrec.training import train_metric

SMALL = [
    "Arch.Backbone.name=resnet18d", "Global.image_size=32", "DataLoader.batch_size=8", "DataLoader.num_workers=0",
    "Metric.Eval=[{Recallk: {topk: [1, 5]}}, {mAP: {}}]", "Global.print_batch_step=1",
]


def small_config(root, output, *extra):
    return load_config("inshop_ce_triplet", overrides=[f"DataLoader.root={root}", f"Global.output_dir={output}",
                                                       *SMALL, *extra])


def seen_image_splits(root) -> RetrievalSplits:
    """Train on views 1-6 of every item; search view 1 against view 2 (both seen in training).
    Learning to recognise unseen items takes far more steps than a unit test affords; that is
    measured by ``prodrec demo`` and ``benchmarks/ce_vs_triplet.py``."""
    splits = read_inshop(root)
    paths = splits.train.paths
    names = [splits.train.classes[label] for label in splits.train.labels]
    view = np.array([int(p.rsplit("/", 1)[1].split("_")[1]) for p in paths])
    parts = {}
    for part, mask in (("train", view <= 6), ("query", view == 1), ("gallery", view == 2)):
        parts[part] = ImageList.from_names([p for p, m in zip(paths, mask) if m], [n for n, m in zip(names, mask) if m],
                                           classes=splits.train.classes)
    return RetrievalSplits(**parts)


def test_training_raises_recall_above_the_untrained_model(tmp_path):
    root = make_synthetic_inshop(tmp_path / "data", items=16, views=8, image_size=48, progress=False).root
    config = small_config(root, tmp_path / "run", "Global.epochs=10", "Global.eval_before_train=true",
                          "Global.eval_interval=10", "Optimizer.name=AdamW", "Optimizer.lr.name=Constant",
                          "Optimizer.lr.learning_rate=0.001", "DataLoader.random_erasing=0", "DataLoader.batch_size=16")
    result = train_metric(config, data=seen_image_splits(root), progress=False)
    assert result.metrics["recall@1"] > result.initial_metrics["recall@1"] + 0.25
    assert result.metrics["mAP"] > result.initial_metrics["mAP"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    for key in ("recall@1", "recall@5", "mAP", "epochs", "train_seconds", "train_images_per_second"):
        assert key in summary
    assert summary["epochs"] == 10 and summary["train_images_per_second"] > 0


def test_run_folder_log_checkpoints_and_resume(tiny_inshop, tmp_path):
    output = tmp_path / "run"
    first = train_metric(small_config(tiny_inshop, output, "Global.epochs=1"), progress=False)
    assert (output / "checkpoints" / "last.pt").is_file() and (output / "checkpoints" / "best.pt").is_file()
    assert (output / "config.yaml").is_file()
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert {r["event"] for r in records} == {"step", "eval"}
    assert all(set(r) >= {"loss", "CELoss", "TripletLossV2", "lr", "step"} for r in records if r["event"] == "step")
    resumed = train_metric(small_config(tiny_inshop, output, "Global.epochs=2"), resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]
    torch_model = Embedder.load(output / "checkpoints" / "last.pt")
    assert torch_model.image_size == 32


def test_zero_epochs_evaluates_the_initial_model(tiny_inshop, tmp_path):
    result = train_metric(small_config(tiny_inshop, tmp_path / "run", "Global.epochs=0"), progress=False)
    assert result.metrics == result.initial_metrics
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["epochs"] == 0 and summary["train_seconds"] == 0
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["Arch.Head.class_num=3997"], "set Arch.Head.class_num to 6 or auto"),
        (["Arch.Neck.embedding_size=2048"], "outputs 512 features"),
        (["DataLoader.sample_per_id=3"], "batch"),
        (["DataLoader.sample_per_id=8", "DataLoader.batch_size=16", "DataLoader.small_items=error"], "small_items"),
        (["Global.device=cuda:0"], "no CUDA GPU"),
    ],
)
def test_inconsistent_settings_are_refused(tiny_inshop, tmp_path, extra, message):
    import torch

    if "cuda" in extra[0] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=message):
        train_metric(small_config(tiny_inshop, tmp_path / "run", "Global.epochs=1", *extra), progress=False)


def test_no_data_root_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="--data-root"):
        train_metric(load_config(overrides=[f"Global.output_dir={tmp_path}"]), progress=False)


def test_dropped_small_items_are_counted_in_the_log(tiny_inshop, tmp_path):
    from prodrec.data import read_inshop

    splits = read_inshop(tiny_inshop)
    keep = [i for i, label in enumerate(splits.train.labels) if not (label == 0 and i % 4 != 0)]  # item 0: 1 image
    train = ImageList.from_names([splits.train.paths[i] for i in keep],
                                 [splits.train.classes[splits.train.labels[i]] for i in keep],
                                 classes=splits.train.classes)
    data = RetrievalSplits(train=train, query=splits.query, gallery=splits.gallery)
    with pytest.warns(UserWarning, match="left out"):
        train_metric(small_config(tiny_inshop, tmp_path / "run", "Global.epochs=1", "DataLoader.small_items=drop"),
                     data=data, progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"event": "dropped_small_items", "images": 1, "items": 1} in records
