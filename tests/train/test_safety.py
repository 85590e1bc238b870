import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from prodrec.losses import WeightedLoss
from prodrec.train import NonFiniteError, RunLock, StopSignals, all_finite
from prodrec.train import train_metric
from test_run import tiny_config


def test_run_lock_refuses_a_second_run(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RuntimeError, match=f"pid {os.getpid()}"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released on exit
        pass


HOLD_AND_FORK = """
import os, sys, time
from prodrec.train import RunLock
lock = RunLock(sys.argv[1]).__enter__()
child = os.fork()
if child == 0:  # like a DataLoader worker: inherits the open lock file, then outlives its parent a while
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


def test_a_killed_owner_releases_the_lock_while_its_forked_children_live(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", HOLD_AND_FORK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    child = int(owner.stdout.readline())
    try:
        with pytest.raises(RuntimeError, match=f"another training run \\(pid {owner.pid}\\)"):
            RunLock(tmp_path).__enter__()
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=30)
        os.kill(child, 0)  # the child still runs and still has the lock file open
        with RunLock(tmp_path):  # at once, no waiting for the child
            pass
    finally:
        for pid in (owner.pid, child):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_training_on_a_locked_folder_is_refused(tiny_inshop, tmp_path):
    with RunLock(tmp_path / "run"):
        with pytest.raises(RuntimeError, match="another training run"):
            train_metric(tiny_config(tiny_inshop, tmp_path / "run", "Global.epochs=1"), progress=False)


def test_stop_signals_are_recorded_and_handlers_restored():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.received == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_all_finite():
    weight = torch.nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([1.0, float("inf")])
    assert all_finite({"loss": 1.0}) and not all_finite({"loss": float("nan")})
    assert not all_finite({"loss": 1.0}, [weight])


@pytest.fixture
def nan_at_step_two(monkeypatch):
    calls = {"n": 0}
    original = WeightedLoss.forward

    def forward(self, embeddings, labels):
        total, terms = original(self, embeddings, labels)
        calls["n"] += 1
        return (total * float("nan"), terms) if calls["n"] == 2 else (total, terms)

    monkeypatch.setattr(WeightedLoss, "forward", forward)


def test_nan_loss_stops_with_the_step_and_the_fix(tiny_inshop, tmp_path, nan_at_step_two):
    with pytest.raises(NonFiniteError, match=r"step 2 \(epoch 1\).*loss nan.*on_nonfinite=skip"):
        train_metric(tiny_config(tiny_inshop, tmp_path / "run", "Global.epochs=1"), progress=False)


def test_nan_loss_skipped_and_counted(tiny_inshop, tmp_path, nan_at_step_two):
    result = train_metric(tiny_config(tiny_inshop, tmp_path / "run", "Global.epochs=1", "Global.on_nonfinite=skip"),
                          progress=False)
    assert result.summary["skipped_steps"] == 1
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["event"] == "skipped_step"] == [2]
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_sigterm_saves_a_checkpoint_and_resume_continues(tiny_inshop, tmp_path):
    output = tmp_path / "run"
    command = [sys.executable, "-m", "prodrec", "train", "--data-root", str(tiny_inshop), "--output", str(output),
               "--epochs", "50", "--image-size", "32", "--backbone", "test_resnet", "--batch-size", "8", "--quiet",
               "--set", "DataLoader.num_workers=0", "--set", "Global.print_batch_step=1", "--set", "Global.eval_interval=50"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = output / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and '"step"' in log.read_text()):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "SIGTERM" in err and "--resume" in err
    saved = torch.load(output / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] >= 1 and f"at step {saved['step']} (epoch {saved['epoch'] + 1}, batch {saved['batch']})" in err
    refusal = f"past Global.epochs=0; set Global.epochs .* to at least {saved['epoch'] + 1}"
    with pytest.raises(ValueError, match=refusal):
        train_metric(tiny_config(tiny_inshop, output, "Global.epochs=0"), resume=True, progress=False)
    epochs = saved["epoch"] + 1  # the signal may land in any epoch on a fast machine
    result = train_metric(tiny_config(tiny_inshop, output, f"Global.epochs={epochs}"), resume=True, progress=False)
    assert result.summary["epochs"] == epochs and (output / "summary.json").is_file()
    resumed = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines() if '"resume"' in line]
    assert [(r["step"], r["batch"]) for r in resumed] == [(saved["step"], saved["batch"])]
