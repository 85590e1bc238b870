"""Faults really done to training runs and saved indexes, and what survives them.

docs/reliability.md has the table (fault / what happens / steps lost). The training runs are tiny
(timm's ``test_resnet`` at 32 px, 48 synthetic images, 6 steps an epoch) and use one thread each
(bit-identical results need the same thread count; several threads on a busy machine are also ten
times slower), so the whole file runs in about a minute.
"""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from prodrec.train import CheckpointWriteError, load_checkpoint
from prodrec.cli import main
from prodrec.config import load_config
from prodrec.gallery import GalleryIndex
from prodrec.train import RunLock
from prodrec.train import train_metric

EPOCHS, STEPS_PER_EPOCH = 2, 6
# Some runs here stop after 1 epoch and are then extended to 2 (--epochs): with the schedule scaled to each
# length their learning rates would differ, so the schedule runs as written, without its warm-up (it never
# decays in 2 epochs).
TINY = ["Arch.Backbone.name=test_resnet", "Global.image_size=32", "DataLoader.batch_size=8",
        "Metric.Eval=[{Recallk: {topk: [1, 5]}}, {mAP: {}}]", "Global.print_batch_step=1",
        "Optimizer.lr.scale_schedule=false", "Optimizer.lr.warmup_epoch=0"]
TIMING = ("train_seconds", "train_images_per_second")
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread_deterministic():
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    from prodrec.data import make_synthetic_inshop

    return make_synthetic_inshop(tmp_path_factory.mktemp("products"), items=16, views=6, image_size=48,
                                 progress=False).root


@pytest.fixture(scope="module")
def straight(products, tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce (checkpoints every step, as the CLI runs)."""
    output = tmp_path_factory.mktemp("straight") / "run"
    train_metric(tiny_config(products, output, "Global.checkpoint_steps=1"), progress=False)
    return output


def tiny_config(root, output, *extra):
    return load_config("inshop_ce_triplet", overrides=[f"DataLoader.root={root}", f"Global.output_dir={output}",
                                                       "DataLoader.num_workers=0", f"Global.epochs={EPOCHS}",
                                                       "Global.deterministic=true", *TINY, *extra])


def train_command(root, output, *extra):
    sets = [part for override in TINY for part in ("--set", override)]
    return [sys.executable, "-m", "prodrec", "train", "--data-root", str(root), "--output", str(output), "--quiet",
            "--epochs", str(EPOCHS), "--deterministic", "--checkpoint-steps", "1", *sets,
            "--set", "DataLoader.num_workers=0", *extra]


def records(output):
    lines = (Path(output) / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def wait_for_step(process, log, step, offset):
    """Until ``log`` shows a step record >= ``step`` written after byte ``offset`` (this process's records)."""
    wait_for_event(process, log, "step", offset, lambda record: record["step"] >= step)


def wait_for_event(process, log, event, offset, accept=lambda record: True):
    """Until ``log`` shows an ``event`` record that ``accept`` takes, written after byte ``offset``."""
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        if log.is_file():
            with open(log, encoding="utf-8") as handle:
                handle.seek(offset)
                if any(r.get("event") == event and accept(r) for r in map(_json, handle.read().splitlines())):
                    return
        time.sleep(0.01)
    raise AssertionError(f"the run logged no {event}: {process.stderr.read() if process.stderr else ''}")


def _json(line):
    try:
        return json.loads(line)
    except ValueError:
        return {}  # a line the kill cut short


def assert_same_run(a, b, context):
    first, second = (load_checkpoint(Path(run) / "checkpoints" / "last.pt") for run in (a, b))
    tensors = {**first["embedder"]["state_dict"], **{f"loss.{k}": v for k, v in first["loss"].items()}}
    others = {**second["embedder"]["state_dict"], **{f"loss.{k}": v for k, v in second["loss"].items()}}
    assert tensors.keys() == others.keys()
    different = [name for name in tensors if not torch.equal(tensors[name], others[name])]
    assert not different, f"{context}: {len(different)} tensors differ, e.g. {different[:3]}"
    for state in first["optimizer"]["state"]:
        for key, value in first["optimizer"]["state"][state].items():
            assert torch.equal(value, second["optimizer"]["state"][state][key]), (context, state, key)
    assert first["history"] == second["history"] and first["best"] == second["best"], context
    summaries = [json.loads((Path(run) / "summary.json").read_text()) for run in (a, b)]
    assert [{k: v for k, v in s.items() if k not in TIMING} for s in summaries[:1]] == \
        [{k: v for k, v in s.items() if k not in TIMING} for s in summaries[1:]], context


def kill_and_resume(products, straight, tmp_path, count, jitter):
    """SIGKILL a training ``count`` times, each once the log shows a random step (then up to ``jitter``
    seconds later), resume it to the end; it must end as the straight run did."""
    total = EPOCHS * STEPS_PER_EPOCH
    rng = random.Random(uuid.uuid4().int)
    kills = sorted(rng.sample(range(2, total), count))  # from step 2 on, so step 1's checkpoint exists
    killed, context = tmp_path / "killed", f"SIGKILL after steps {kills} (+ up to {jitter} s)"
    for number, step in enumerate(kills):
        log = killed / "log.jsonl"
        offset = log.stat().st_size if log.is_file() else 0
        resume = ["--resume"] if number else []
        # Killed runs load with 2 workers, the others with none: the batches must not care.
        process = subprocess.Popen(train_command(products, killed, *resume, "--set", "DataLoader.num_workers=2"),
                                   stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
        wait_for_step(process, log, step, offset)
        time.sleep(rng.uniform(0, jitter))
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finished = subprocess.run(train_command(products, killed, "--resume"), capture_output=True, text=True, timeout=300,
                              env=ONE_THREAD)
    assert finished.returncode == 0, finished.stderr
    assert_same_run(straight, killed, context)
    resumed = [r for r in records(killed) if r["event"] == "resume"]
    # Step N is logged after step N - 1's checkpoint is on disk, so at most the steps from N on are lost.
    assert len(resumed) == count and all(r["step"] >= kill - 1 for r, kill in zip(resumed, kills)), (context, resumed)
    print(f"{context}: resumed at steps {[r['step'] for r in resumed]}, lost {[r['steps_lost'] for r in resumed]}")
    assert not list((killed / "checkpoints").glob(".*.tmp")), "temporaries of cut-short writes are removed"


def test_sigkill_at_random_steps_then_resume_ends_bit_identical(products, straight, tmp_path):
    kill_and_resume(products, straight, tmp_path, count=3, jitter=0.0)


@pytest.mark.slow
def test_sigkill_at_random_moments_many_times(products, straight, tmp_path):
    """Also mid-step, mid-evaluation and mid-rename, ten times."""
    kill_and_resume(products, straight, tmp_path, count=10, jitter=0.5)


def test_a_run_killed_right_after_a_checkpoint_resumes_at_once_with_loader_workers(products, tmp_path):
    """kill -9 as soon as a checkpoint is logged, while 2 DataLoader workers run, and resume with no pause."""
    output, log = tmp_path / "run", tmp_path / "run" / "log.jsonl"
    for number in range(3):
        offset = log.stat().st_size if log.is_file() else 0
        resume = ["--resume"] if number else []
        process = subprocess.Popen(train_command(products, output, *resume, "--set", "DataLoader.num_workers=2"),
                                   stderr=subprocess.PIPE, text=True, env=ONE_THREAD)
        wait_for_event(process, log, "checkpoint", offset)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finished = subprocess.run(train_command(products, output, "--resume", "--set", "DataLoader.num_workers=2"),
                              capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert finished.returncode == 0, finished.stderr
    assert len([r for r in records(output) if r["event"] == "resume"]) == 3
    assert (output / "summary.json").is_file()


def test_sigterm_mid_epoch_then_resume_is_bit_identical(products, straight, tmp_path, monkeypatch):
    """In-process: the SIGTERM handler saves the position inside the epoch (and no step checkpoints are
    written, so checkpoints do not change the run either)."""
    from prodrec.losses import WeightedLoss

    calls = {"n": 0}
    original = WeightedLoss.forward

    def forward(self, embeddings, labels):
        calls["n"] += 1
        if calls["n"] == 8:  # epoch 2, batch 2
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, embeddings, labels)

    monkeypatch.setattr(WeightedLoss, "forward", forward)
    with pytest.raises(KeyboardInterrupt, match=r"SIGTERM at step 8 \(epoch 2, batch 2\)"):
        train_metric(tiny_config(products, tmp_path / "stopped"), progress=False)
    monkeypatch.setattr(WeightedLoss, "forward", original)
    train_metric(tiny_config(products, tmp_path / "stopped"), resume=True, progress=False)
    assert_same_run(straight, tmp_path / "stopped", "SIGTERM at step 8")


def test_corrupt_last_checkpoint_is_refused_and_the_previous_one_used(products, straight, tmp_path, capsys):
    output = tmp_path / "run"
    train_metric(tiny_config(products, output, "Global.epochs=1", "Global.checkpoint_steps=1"), progress=False)
    last = output / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    args = ["train", "--data-root", str(products), "--output", str(output), "--epochs", str(EPOCHS), "--quiet",
            "--deterministic", *[part for item in [*TINY, "DataLoader.num_workers=0"] for part in ("--set", item)]]
    with pytest.warns(UserWarning, match=rf"{last} cannot be read .*corrupt.*\(moved to last.refused.pt\)\. "
                                         rf"Resumed from {last.parent / 'last.prev.pt'} \(step 5\); 1 steps logged"):
        assert main([*args, "--resume"]) == 0
    assert (output / "checkpoints" / "last.refused.pt").is_file()
    resumed = [r for r in records(output) if r["event"] == "resume"]
    assert [(r["step"], r["steps_lost"]) for r in resumed] == [(5, 1)]
    assert_same_run(straight, output, "resumed from last.prev.pt")

    for name in ("last.pt", "last.prev.pt"):
        (output / "checkpoints" / name).write_bytes(b"not a checkpoint")
    assert main([*args, "--resume"]) == 1
    assert "cannot resume: no readable checkpoint" in capsys.readouterr().err
    assert main([*args, "--resume", str(output / "checkpoints" / "last.pt")]) == 1
    assert f"{output / 'checkpoints' / 'last.pt'} cannot be read" in capsys.readouterr().err


def _mount_tmpfs(folder, size):
    folder.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount, which needs root (CI runs as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"mount -t tmpfs is not permitted here ({done.stderr.strip()}); the simulated full disk runs")


def test_real_full_disk_during_a_checkpoint_write(products, tmp_path):
    disk = tmp_path / "small_disk"
    _mount_tmpfs(disk, "9m")  # ~2.5 checkpoints of this model: the third write (last + prev + new) fails
    try:
        output = disk / "run"
        checkpoints = output / "checkpoints"
        with pytest.raises(CheckpointWriteError, match=rf"the disk is full: cannot write checkpoint {checkpoints}/"
                                                       rf"last.pt \(\d+ bytes free on the file system of "
                                                       rf"{checkpoints}\); last.pt is unchanged"):
            train_metric(tiny_config(products, output, "Global.epochs=1", "Global.checkpoint_steps=1"), progress=False)
        assert load_checkpoint(checkpoints / "last.pt")["step"] == 2 and load_checkpoint(checkpoints / "last.prev.pt")
        assert sorted(p.name for p in checkpoints.iterdir()) == ["last.prev.pt", "last.pt"]
        subprocess.run(["mount", "-o", "remount,size=40m", str(disk)], check=True)  # space freed: resume
        train_metric(tiny_config(products, output, "Global.epochs=1", "Global.checkpoint_steps=1"), resume=True,
                     progress=False)
        assert [(r["step"], r["steps_lost"]) for r in records(output) if r["event"] == "resume"] == [(2, 1)]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_simulated_full_disk_during_a_checkpoint_write(products, tmp_path, monkeypatch):
    writes = {"n": 0}
    save = torch.save

    def fills_the_disk(obj, stream, *args, **kwargs):
        writes["n"] += 1
        if writes["n"] == 3:
            stream.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fills_the_disk)
    output = tmp_path / "run"
    with pytest.raises(CheckpointWriteError, match="the disk is full: cannot write checkpoint .*last.pt is unchanged"):
        train_metric(tiny_config(products, output, "Global.epochs=1", "Global.checkpoint_steps=1"), progress=False)
    assert load_checkpoint(output / "checkpoints" / "last.pt")["step"] == 2
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["last.prev.pt", "last.pt"]


def test_a_second_training_on_the_same_folder_is_refused(products, tmp_path):
    output = tmp_path / "run"
    first = subprocess.Popen(train_command(products, output, "--epochs", "50"), stderr=subprocess.PIPE, text=True,
                             env=ONE_THREAD)
    try:
        wait_for_step(first, output / "log.jsonl", 1, 0)
        with pytest.raises(RuntimeError, match=rf"another training run \(pid {first.pid}\) is using {output}"):
            train_metric(tiny_config(products, output), resume=True, progress=False)
        assert first.poll() is None, "the first run goes on"
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    with RunLock(output):  # the killed run left no stale lock
        pass


@pytest.mark.parametrize("name", ["index.faiss", "meta.npz", "meta.json"])
def test_truncated_index_file_is_refused(tmp_path, name):
    features = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    gallery = GalleryIndex(16)
    gallery.add(features / np.linalg.norm(features, axis=1, keepdims=True), [f"item{i % 5}" for i in range(50)])
    gallery_folder = gallery.save(tmp_path / "gallery")
    folder = gallery_folder / (gallery_folder / "CURRENT").read_text().strip()
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    message = "not valid JSON.*the gallery folder is damaged" if name == "meta.json" else \
        rf"{name} is damaged or was changed after saving: its sha256"
    with pytest.raises(ValueError, match=message):
        GalleryIndex.load(gallery_folder)
