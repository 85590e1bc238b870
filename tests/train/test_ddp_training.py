"""``torchrun -m prodrec train`` on 2 CPU processes (gloo over loopback) against 1 process with the same global batch
(``Global.accumulate_steps=2``), and resuming a 2-process checkpoint on 1 process."""
import json
from contextlib import contextmanager
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prodrec.train import load_checkpoint
from prodrec.retrieval import classification_accuracy
from prodrec.cli import build_parser, train_overrides
from prodrec.config import load_config
from prodrec.data import make_synthetic_inshop, read_inshop
from prodrec.retrieval import evaluate
from prodrec.models import Embedder
from prodrec.train import build_model
from prodrec.train import train_metric

# 8 train items x 6 views = 48 images = 6 batches of 8 per epoch: 3 steps of 2 x 8 images; 24 queries.
SETTINGS = ["Arch.Backbone.name=test_resnet", "Global.image_size=32", "DataLoader.batch_size=8",
            "DataLoader.num_workers=0", "Global.print_batch_step=1", "Global.epochs=2", "Global.checkpoint_steps=1",
            "Global.checkpoint_minutes=0", "Metric.Eval=[{Recallk: {topk: [1, 5]}}, {mAP: {}}, {TopkAcc: {topk: [1, 5]}}]"]
# Weights and per-step losses came out bit-identical (float32 sums of two halves); the tolerance leaves room for
# another summation order yet catches a missing or doubled gradient.
WEIGHTS = dict(rtol=1e-5, atol=1e-6)
# The only difference: BatchNorm running statistics. DDP keeps rank 0's (6 updates by its own batches), accumulation
# updates them with every batch (12). With them swapped in, the metrics are identical (checked below). Measured on
# 24 queries after 6 steps: test_resnet recall@1 0.042 (1 query), recall@5 0.125 (3 queries), mAP 0.0027 apart;
# resnet18d 0.042, 0, 0.0066; on a fresh machine 4 queries on recall@5. Stated tolerance: 4 of the 24 queries
# on Recall@K (compared as whole queries, so it never sits on a float rounding boundary), 0.02 on mAP.
QUERIES, RECALL_QUERIES, MAP_TOLERANCE = 24, 4, 0.02
METRICS = ("recall@1", "recall@5", "mAP")


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    return make_synthetic_inshop(tmp_path_factory.mktemp("products"), items=16, views=6, image_size=32,
                                 progress=False).root


@pytest.fixture(scope="module")
def two_processes(products, tmp_path_factory, torchrun_env):
    """The run folder of ``torchrun --nproc_per_node=2 -m prodrec train`` and its output."""
    output = tmp_path_factory.mktemp("ddp") / "run"
    env = {**torchrun_env, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "prodrec",
               "train", "inshop_ce_triplet", "--data-root", str(products), "--output", str(output), "--quiet",
               *[arg for setting in SETTINGS for arg in ("--set", setting)]]
    done = subprocess.run(command, cwd=output.parent, env=env, capture_output=True, text=True, timeout=300)
    assert (output / "summary.json").is_file(), f"exit {done.returncode}\n{done.stderr[-3000:]}"
    return output, done.stdout


@pytest.fixture(scope="module")
def one_process(products, tmp_path_factory):
    output = tmp_path_factory.mktemp("single") / "run"
    with one_thread():
        train_metric(config(products, output, "Global.accumulate_steps=2"), progress=False)
    return output


@contextmanager
def one_thread():
    """As in the torchrun processes (OMP_NUM_THREADS=1): another count sums convolutions in another order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def config(root, output, *extra):
    return load_config("inshop_ce_triplet", overrides=[f"DataLoader.root={root}", f"Global.output_dir={output}",
                                                       *SETTINGS, *extra])


def records(output, event):
    lines = (output / "log.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == event]


def tensors(output):
    payload = load_checkpoint(output / "checkpoints" / "last.pt")
    return payload, {**payload["embedder"]["state_dict"], **{f"loss.{k}": v for k, v in payload["loss"].items()}}


def assert_same_record(first, second, rel):
    """Log records agree: the same keys, numbers within ``rel``, everything else exactly."""
    assert first.keys() == second.keys(), (first, second)
    for key, value in first.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert value == pytest.approx(second[key], rel=rel), (key, first, second)
        else:
            assert value == second[key], (key, first, second)


def test_two_processes_train_what_one_process_trains_on_the_same_global_batch(two_processes, one_process):
    ddp, single = tensors(two_processes[0]), tensors(one_process)
    assert ddp[0]["step"] == single[0]["step"] == 6 and ddp[0]["images_seen"] == single[0]["images_seen"] == 96
    steps = [records(run, "step") for run in (two_processes[0], one_process)]
    assert [r["step"] for r in steps[0]] == [r["step"] for r in steps[1]] == [1, 2, 3, 4, 5, 6]
    for first, second in zip(*steps):
        assert_same_record(first, second, rel=WEIGHTS["rtol"])
    statistics = [name for name in ddp[1] if "running_" in name or "num_batches_tracked" in name]
    for name, value in ddp[1].items():
        if name not in statistics:
            torch.testing.assert_close(value, single[1][name], **WEIGHTS, msg=name)
    assert any(not torch.equal(ddp[1][name], single[1][name]) for name in statistics)


def test_metrics_agree_and_differ_only_through_batchnorm_statistics(two_processes, one_process, products):
    summaries = [json.loads((run / "summary.json").read_text()) for run in (two_processes[0], one_process)]
    assert (summaries[0]["world_size"], summaries[1]["world_size"]) == (2, 1)
    for name in ("recall@1", "recall@5"):
        queries_apart = abs(round(summaries[0][name] * QUERIES) - round(summaries[1][name] * QUERIES))
        assert queries_apart <= RECALL_QUERIES, (name, summaries)
    assert abs(summaries[0]["mAP"] - summaries[1]["mAP"]) <= MAP_TOLERANCE, summaries
    # The 2-process weights with the 1-process BN statistics evaluate, in one process, to the 1-process metrics;
    # the 2-process weights as they are to the metrics the ranks computed on their shards.
    splits = read_inshop(products)
    model = Embedder.load(two_processes[0] / "checkpoints" / "last.pt")
    single = Embedder.load(one_process / "checkpoints" / "last.pt").state_dict()
    _, head = build_model(config(products, two_processes[0]), splits.train.num_classes)
    head.load_state_dict(tensors(two_processes[0])[0]["loss"])
    with one_thread():
        sharded = evaluate(model, splits.query, splits.gallery, ks=[1, 5], progress=False)
        sharded.update(classification_accuracy(model, head, splits.query, ks=[1, 5], progress=False))
        model.load_state_dict({name: single[name] if "running_" in name else value
                               for name, value in model.state_dict().items()})
        swapped = evaluate(model, splits.query, splits.gallery, ks=[1, 5], progress=False)
    for summary, metrics, names in zip(summaries, (sharded, swapped), ([*METRICS, "top1", "top5"], METRICS)):
        assert {name: metrics[name] for name in names} == pytest.approx({name: summary[name] for name in names},
                                                                         abs=1e-6)


def test_rank_0_alone_writes_the_run_folder(two_processes):
    output, stdout = two_processes
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*")) == [
        "checkpoints", "checkpoints/best.pt", "checkpoints/last.prev.pt", "checkpoints/last.pt", "config.yaml",
        "log.jsonl", "summary.json", "train.lock"]
    assert [r["step"] for r in records(output, "checkpoint")] == [1, 2, 3, 4, 5, 6]  # each written once
    assert [r["epoch"] for r in records(output, "eval")] == [1, 2]
    assert stdout.count("results in") == 1


def test_a_two_process_checkpoint_resumes_on_one_process(two_processes, products, tmp_path):
    output = Path(shutil.copytree(two_processes[0], tmp_path / "run"))
    (output / "checkpoints" / "last.pt").unlink()  # last.prev.pt: epoch 2 after 2 of its 3 steps (4 of 6 batches)
    with pytest.warns(UserWarning, match="last.pt is missing"):
        result = train_metric(config(products, output), resume=True, progress=False)
    assert records(output, "resume")[-1] | {"checkpoint": None} == {
        "event": "resume", "checkpoint": None, "epoch": 2, "batch": 4, "step": 5, "steps_lost": 1,
        "fallback": f"{output / 'checkpoints' / 'last.pt'} is missing"}
    payload = load_checkpoint(output / "checkpoints" / "last.pt")
    # on 1 process the last 2 batches of epoch 2 are 2 steps of 8 images; the schedule stands where 2 epochs end
    assert (payload["step"], payload["images_seen"], payload["step_batches"]) == (7, 96, 1)
    assert payload["scheduler"]["last_epoch"] == 12 and result.summary["epochs"] == 2
    assert [h["epoch"] for h in result.history] == [1, 2]
    assert [r["step"] for r in records(output, "step")][-2:] == [6, 7]


def test_train_flags_reach_the_config():
    args = build_parser().parse_args(["train", "--accumulate-steps", "4", "--cross-rank-mining", "--sync-batchnorm",
                                      "--compile"])
    g = load_config(args.config, overrides=train_overrides(args)).Global
    assert (g.accumulate_steps, g.cross_rank_mining, g.sync_batchnorm, g.compile) == (4, True, True, True)
    assert load_config().Global.accumulate_steps == 1


def test_accumulate_steps_beyond_an_epoch_is_refused(tiny_inshop, tmp_path):
    with pytest.raises(ValueError, match=r"Global.accumulate_steps=4 needs that many batches per process, but an "
                                         r"epoch gives each of 1 processes 3"):
        train_metric(config(tiny_inshop, tmp_path / "run", "Global.accumulate_steps=4"), progress=False)


def test_compile_option_reaches_the_model(tiny_inshop, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(module) or module)
    result = train_metric(config(tiny_inshop, tmp_path / "run", "Global.compile=true", "Global.epochs=1"),
                          progress=False)
    assert compiled == [result.model] and result.summary["epochs"] == 1


def test_topk_accuracy_of_the_head_is_evaluated_and_logged(tiny_inshop, tmp_path):
    output = tmp_path / "run"
    settings = config(tiny_inshop, output, "Global.epochs=1", "Arch.Head.name=FC", "Arch.Head.margin=null",
                      "Arch.Head.scale=null", "Metric.Eval=[{Recallk: {topk: [1]}}, {TopkAcc: {topk: [1, 3]}}]")
    result = train_metric(settings, progress=False)
    splits = read_inshop(tiny_inshop)
    _, head = build_model(settings, splits.train.num_classes)
    head.load_state_dict(tensors(output)[0]["loss"])
    expected = classification_accuracy(result.model, head, splits.query, ks=[1, 3], progress=False)
    assert {k: result.summary[k] for k in ("top1", "top3")} == pytest.approx({k: expected[k] for k in ("top1", "top3")})
    assert set(records(output, "eval")[0]) >= {"recall@1", "top1", "top3"}


@pytest.mark.parametrize("extra, message", [
    (["Metric.Eval=[{TopkAcc: {topk: [0]}}]"], "Metric.Eval.TopkAcc.topk: 0 is not a positive integer"),
    (["Metric.Eval=[{TopkAcc: {}}]", "Arch.Head=null"], "TopkAcc scores the classifier head, but Arch.Head is null"),
    (["Global.accumulate_steps=0"], "Global.accumulate_steps must be >= 1"),
])
def test_bad_topk_and_accumulation_settings_are_refused(extra, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=extra)
