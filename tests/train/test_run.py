import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from prodrec.train import load_checkpoint
from prodrec.config import load_config
from prodrec.data import ImageList, RetrievalSplits, make_synthetic_inshop, read_inshop
from prodrec.data import SeededSamples
from prodrec.models import Embedder
from prodrec.train import train_metric

SMALL = [
    "Arch.Backbone.name=resnet18d", "Global.image_size=32", "DataLoader.batch_size=8", "DataLoader.num_workers=0",
    "Metric.Eval=[{Recallk: {topk: [1, 5]}}, {mAP: {}}]", "Global.print_batch_step=1",
]


def records_of(output):
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


def tiny_config(root, output, *extra):
    """``small_config`` with timm's 0.4 M-parameter ``test_resnet``: for tests of the run's mechanics."""
    return small_config(root, output, "Arch.Backbone.name=test_resnet", *extra)


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
    first = train_metric(tiny_config(tiny_inshop, output, "Global.epochs=1"), progress=False)
    assert (output / "checkpoints" / "last.pt").is_file() and (output / "checkpoints" / "best.pt").is_file()
    assert (output / "config.yaml").is_file()
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    assert {r["event"] for r in records} == {"schedule", "step", "eval", "checkpoint"}  # schedule: scaled to 2 epochs
    assert all(set(r) >= {"loss", "CELoss", "TripletLossV2", "lr", "step"} for r in records if r["event"] == "step")
    assert [(r["epoch"], r["batch"], r["step"]) for r in records if r["event"] == "checkpoint"] == [(2, 0, 3)]
    resumed = train_metric(tiny_config(tiny_inshop, output, "Global.epochs=2"), resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0] == first.history[0]
    assert [r for r in records_of(output) if r["event"] == "resume"] == [
        {"event": "resume", "checkpoint": str(output / "checkpoints" / "last.pt"), "epoch": 2, "batch": 0, "step": 3,
         "steps_lost": 0, "fallback": None}]
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
        (["Arch.Head.class_num=5"], "labels would fall outside the head; set Arch.Head.class_num to 6 or auto"),
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


def test_a_head_wider_than_the_data_runs_with_a_warning(tiny_inshop, tmp_path):
    with pytest.warns(UserWarning, match="Arch.Head.class_num is 10 but the training data has 6 classes"):
        result = train_metric(small_config(tiny_inshop, tmp_path / "run", "Global.epochs=1", "Arch.Head.class_num=10"),
                              progress=False)
    head = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["loss"]
    assert [tuple(t.shape) for t in head.values() if t.dim() == 2] in ([(512, 10)], [(10, 512)])
    assert result.summary["epochs"] == 1


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


def test_step_checkpoints_hold_the_position_in_the_epoch(tiny_inshop, tmp_path):
    output = tmp_path / "run"
    train_metric(tiny_config(tiny_inshop, output, "Global.epochs=2", "Global.checkpoint_steps=2"), progress=False)
    saved = [(r["epoch"], r["batch"], r["step"]) for r in records_of(output) if r["event"] == "checkpoint"]
    assert saved == [(1, 2, 2), (2, 0, 3), (2, 1, 4), (3, 0, 6)]  # step 6 ends epoch 2: saved once, at its end
    previous = load_checkpoint(output / "checkpoints" / "last.prev.pt")
    assert (previous["epoch"], previous["batch"], previous["step"]) == (1, 1, 4)
    assert set(previous["epoch_sums"]) == {"loss", "CELoss", "TripletLossV2"}
    assert set(previous["rng"]) >= {"python", "numpy", "torch"} and previous["data_order"]["DataLoader.batch_size"] == 8


def test_resume_skips_the_finished_batches_without_loading_them(tiny_inshop, tmp_path, monkeypatch):
    output = tmp_path / "run"
    train_metric(tiny_config(tiny_inshop, output, "Global.epochs=1", "Global.checkpoint_steps=1"), progress=False)
    last = output / "checkpoints" / "last.pt"
    last.unlink()  # last.prev.pt: epoch 1 after 2 of its 3 batches
    with open(output / "log.jsonl", "a") as log:
        log.write('{"event": "step", "epoch": 1, "st')  # a line the kill cut short
    loaded = []
    original = SeededSamples.__getitem__
    monkeypatch.setattr(SeededSamples, "__getitem__", lambda self, item: loaded.append(item) or original(self, item))
    with pytest.warns(UserWarning, match=rf"{last} is missing\. Resumed from .*last.prev.pt \(step 2\); 1 steps"):
        result = train_metric(tiny_config(tiny_inshop, output, "Global.epochs=1"), resume="auto", progress=False)
    assert len(loaded) == 8 and result.summary["epochs"] == 1
    lines = (output / "log.jsonl").read_text().splitlines()
    after_cut = lines[lines.index('{"event": "step", "epoch": 1, "st') + 1]
    assert json.loads(after_cut)["event"] == "resume"  # on a line of its own


def test_resume_auto_without_a_checkpoint_starts_a_new_run(tiny_inshop, tmp_path):
    with pytest.warns(UserWarning, match=r"resume: no checkpoint in .*checkpoints; starting a new run"):
        result = train_metric(tiny_config(tiny_inshop, tmp_path / "run", "Global.epochs=1"), resume=True,
                              progress=False)
    assert result.summary["epochs"] == 1


def test_resume_from_a_path_and_with_other_batches_refused(tiny_inshop, tmp_path):
    train_metric(tiny_config(tiny_inshop, tmp_path / "a", "Global.epochs=1"), progress=False)
    checkpoint = tmp_path / "a" / "checkpoints" / "last.pt"
    moved = shutil.copytree(tiny_inshop, tmp_path / "moved")  # the data folder may move between runs
    result = train_metric(tiny_config(moved, tmp_path / "b", "Global.epochs=2"), resume=checkpoint, progress=False)
    assert [h["epoch"] for h in result.history] == [1, 2]
    with pytest.raises(ValueError, match=rf"cannot resume from {checkpoint}: it was written for other batches "
                                         r"\(DataLoader.batch_size: 8 in the checkpoint, 4 now\)"):
        train_metric(tiny_config(tiny_inshop, tmp_path / "c", "DataLoader.batch_size=4"), resume=str(checkpoint),
                     progress=False)


def test_bad_images_skipped_are_listed_and_counted(tiny_inshop, tmp_path):
    root = Path(shutil.copytree(tiny_inshop, tmp_path / "data"))
    splits = read_inshop(root)
    broken = splits.train.paths[0]
    Path(broken).write_bytes(b"not a jpeg")
    result = train_metric(tiny_config(root, tmp_path / "run", "Global.epochs=1", "DataLoader.on_bad_image=skip"),
                          progress=False)
    lines = (tmp_path / "run" / "skipped_images.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{broken}\t")
    assert result.summary["skipped_images"] == 1 and result.summary["num_train_images"] == len(splits.train) - 1
    clean = train_metric(tiny_config(tiny_inshop, tmp_path / "clean", "Global.epochs=0"), progress=False)
    assert clean.summary["skipped_images"] == 0 and not (tmp_path / "clean" / "skipped_images.txt").exists()


def test_confine_to_root_reaches_the_reader(tiny_inshop, tmp_path):
    root = Path(shutil.copytree(tiny_inshop, tmp_path / "data"))
    partition = root / "Eval" / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    inside = lines[2].split()[0]
    shutil.copy(root / inside, tmp_path / "outside.jpg")
    partition.write_text("\n".join([*lines[:2], lines[2].replace(inside, "img/../../outside.jpg"), *lines[3:]]) + "\n")
    with pytest.raises(ValueError, match="outside.jpg"):
        train_metric(tiny_config(root, tmp_path / "run", "Global.epochs=0", "DataLoader.confine_to_root=true"),
                     progress=False)


def test_a_run_extended_with_more_epochs_continues_on_the_new_schedule(tiny_inshop, tmp_path):
    """A finished run resumed with --epochs doubled: the schedule is scaled anew and placed by the steps done."""
    from prodrec.train import build_optimizer, build_scheduler

    output = tmp_path / "run"
    train_metric(tiny_config(tiny_inshop, output, "Global.epochs=1"), progress=False)
    extended = tiny_config(tiny_inshop, output, "Global.epochs=2")
    train_metric(extended, resume=True, progress=False)
    steps = [r for r in records_of(output) if r["event"] == "step"]
    # the 2-epoch schedule stepped from the start gives the LRs the extended run logged (each after its step)
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], extended.Optimizer)
    scheduler = build_scheduler(optimizer, extended.Optimizer.lr, epochs=2, steps_per_epoch=len(steps) // 2)
    expected = []
    for _ in range(len(steps)):
        optimizer.step()
        scheduler.step()
        expected.append(optimizer.param_groups[0]["lr"])
    assert [r["lr"] for r in steps[len(steps) // 2:]] == pytest.approx(expected[len(steps) // 2:])


def test_a_new_run_over_another_is_refused_unless_replaced(tiny_inshop, tmp_path):
    output = tmp_path / "run"
    config = tiny_config(tiny_inshop, output, "Global.epochs=1")
    first = train_metric(config, progress=False)
    checkpoint = (output / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"holds another training run \(checkpoints/last.pt\); continue it with "
                                         r"--resume .*replace it with --force .*another --output folder"):
        train_metric(config, progress=False)
    assert (output / "checkpoints" / "last.pt").read_bytes() == checkpoint  # nothing was touched
    again = train_metric(config, overwrite=True, progress=False)
    assert [r["event"] for r in records_of(output)].count("resume") == 0 and again.metrics == first.metrics
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="output_dir .*file is a file; give a folder"):
        train_metric(tiny_config(tiny_inshop, tmp_path / "file"), progress=False)
