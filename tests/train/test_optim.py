"""The per-step LR schedule against a slow obvious formula, and its scaling to a run's length."""
import json
import math
import warnings

import pytest
import torch

from prodrec.config import LRConfig, load_config
from prodrec.train import build_scheduler, scale_schedule

STEPS_PER_EPOCH = 10


def lrs(config: LRConfig, epochs: int):
    """The LR each step of the run trains with."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    scheduler = build_scheduler(optimizer, config, epochs=epochs, steps_per_epoch=STEPS_PER_EPOCH)
    seen = []
    for _ in range(epochs * STEPS_PER_EPOCH):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler.step()
    return seen


def expected_lr(step, config, *, milestones, warmup_steps, total):
    """Linear warm-up from warmup_start_lr, then the named schedule over the steps after it."""
    base = config.learning_rate
    if step < warmup_steps:
        start = config.warmup_start_lr
        return start + (base - start) * step / warmup_steps
    after = step - warmup_steps
    if config.name == "MultiStepDecay":
        return base * config.gamma ** sum(1 for m in milestones if m <= step)
    if config.name == "Cosine":
        span = total - warmup_steps
        return config.eta_min + (base - config.eta_min) * (1 + math.cos(math.pi * after / span)) / 2
    return base


@pytest.mark.parametrize("name", ["MultiStepDecay", "Cosine", "Constant"])
@pytest.mark.parametrize("warmup", [0, 1, 0.5])
def test_every_schedule_with_and_without_warmup_matches_the_formula(name, warmup):
    config = LRConfig(name=name, learning_rate=0.1, milestones=[2, 3], gamma=0.5, warmup_epoch=warmup,
                      warmup_start_lr=0.01, eta_min=0.001)
    got = lrs(config, epochs=4)
    warmup_steps = round(warmup * STEPS_PER_EPOCH)
    want = [expected_lr(step, config, milestones=[20, 30], warmup_steps=warmup_steps, total=40) for step in range(40)]
    assert got == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_a_shortened_recipe_scales_milestones_and_warmup():
    config = LRConfig(milestones=[30, 60, 70, 80, 90, 100], warmup_epoch=15, schedule_epochs=120)
    length = scale_schedule(config, 8)
    assert length.milestones == pytest.approx([2, 4, 14 / 3, 16 / 3, 6, 20 / 3]) and length.warmup_epochs == 1
    assert length.note == ("Optimizer.lr: milestones 30,60,70,80,90,100 of 120 epochs scaled to 2,4,4.67,5.33,6,6.67 "
                           "of 8; warm-up of 15 of 120 epochs scaled to 1 of 8 (Optimizer.lr.scale_schedule=false "
                           "keeps them as written)")
    milestone_steps = [20, 40, 47, 53, 60, 67]  # rounded to steps
    want = [expected_lr(step, config, milestones=milestone_steps, warmup_steps=10, total=80) for step in range(80)]
    assert lrs(config, epochs=8) == pytest.approx(want, rel=1e-6, abs=1e-9)  # LinearLR starts at 1e-8 x lr


def test_at_the_recipes_own_length_or_with_scaling_off_nothing_changes():
    recipe = LRConfig(milestones=[30, 60], warmup_epoch=2, schedule_epochs=120)
    for config, epochs in [(recipe, 120), (LRConfig(milestones=[30, 60], warmup_epoch=2, schedule_epochs=120,
                                                    scale_schedule=False), 8), (LRConfig(milestones=[30, 60], warmup_epoch=2), 8)]:
        length = scale_schedule(config, epochs)
        assert (length.milestones, length.warmup_epochs, length.note) == ([30, 60], 2, None)
    assert set(lrs(LRConfig(milestones=[30, 60], schedule_epochs=120, scale_schedule=False), 8)) == {0.04}


def test_load_config_records_the_length_the_schedule_was_written_for(tmp_path):
    assert load_config("inshop_ce_triplet", overrides=["Global.epochs=8"]).Optimizer.lr.schedule_epochs == 120
    assert load_config(overrides=["Global.epochs=8"]).Optimizer.lr.schedule_epochs == 120  # the defaults' recipe
    own = tmp_path / "short.yaml"
    own.write_text("Global: {epochs: 10}\nOptimizer: {lr: {milestones: [5, 8]}}\n")
    assert load_config(own, overrides=["Global.epochs=20"]).Optimizer.lr.schedule_epochs == 10
    assert load_config(own, overrides=["Optimizer.lr.schedule_epochs=auto"]).Optimizer.lr.schedule_epochs == "auto"
    saved = load_config("inshop_ce_triplet", overrides=["Global.epochs=8"]).to_dict()
    assert load_config(saved).Optimizer.lr.schedule_epochs == 120  # a run's config.yaml keeps it


@pytest.mark.parametrize("override, message", [
    ("Optimizer.lr.warmup_epoch=-1", "warmup_epoch must be >= 0"),
    ("Optimizer.lr.schedule_epochs=0", "schedule_epochs >= 1"),
])
def test_bad_schedule_lengths_are_refused(override, message):
    from prodrec.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_a_warmup_as_long_as_the_run_is_refused():
    with pytest.raises(ValueError, match="must end before the run's 4 epochs"):
        lrs(LRConfig(name="Cosine", warmup_epoch=4), epochs=4)


def test_a_shortened_run_says_once_in_its_log_how_the_schedule_was_scaled(tiny_inshop, tmp_path, capsys):
    from prodrec.train import train_metric
    from test_run import small_config

    output = tmp_path / "run"
    train_metric(small_config(tiny_inshop, output, "Global.epochs=1"), progress=True)
    notes = [r for r in map(json.loads, (output / "log.jsonl").read_text().splitlines()) if r["event"] == "schedule"]
    assert [n["note"] for n in notes] == [scale_schedule(load_config("inshop_ce_triplet").Optimizer.lr, 1).note]
    assert "milestones 30,60,70,80,90,100 of 120 epochs scaled to 0.25,0.5,0.58,0.67,0.75,0.83 of 1" in notes[0]["note"]
    assert capsys.readouterr().err.count("prodrec train: Optimizer.lr: milestones") == 1
