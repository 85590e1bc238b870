import json
import subprocess
import sys

import numpy as np
import pytest

from prodrec import __version__
from prodrec.cli import build_parser, main, train_overrides
from prodrec.config import load_config
from prodrec.utils import ProdrecError


def test_version_and_lazy_start():
    out = subprocess.run([sys.executable, "-m", "prodrec", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"prodrec {__version__}"
    code = "import sys, prodrec.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "prodrec.cli must not import torch"


def test_train_flags_become_config_overrides():
    args = build_parser().parse_args([
        "train", "--data-root", "d", "--epochs", "3", "--image-size", "64", "--backbone", "resnet18d",
        "--batch-size", "16", "--instances", "4", "--loss", "ce", "--head", "fc", "--seed", "7",
        "--set", "Global.eval_interval=2",
    ])
    config = load_config(args.config, overrides=train_overrides(args))
    assert config.DataLoader.root == "d" and config.Global.epochs == 3 and config.Global.image_size == 64
    assert config.Arch.Backbone.name == "resnet18d" and config.Arch.Neck.embedding_size == "auto"
    assert (config.DataLoader.batch_size, config.DataLoader.sample_per_id, config.Global.seed) == (16, 4, 7)
    assert config.Loss.Train == [{"CELoss": {"weight": 1.0}}]
    assert config.Arch.Head.name == "FC" and config.Arch.Head.margin is None
    assert config.Global.eval_interval == 2


def test_reliability_flags_become_config_overrides():
    parser = build_parser()
    args = parser.parse_args(["train", "--checkpoint-steps", "100", "--checkpoint-minutes", "2.5", "--deterministic",
                              "--on-bad-image", "skip", "--confine-data-root"])
    config = load_config(args.config, overrides=train_overrides(args))
    assert (config.Global.checkpoint_steps, config.Global.checkpoint_minutes, config.Global.deterministic) == \
        (100, 2.5, True)
    assert config.DataLoader.on_bad_image == "skip" and config.DataLoader.confine_to_root is True
    plain = parser.parse_args(["train"])
    assert load_config(plain.config, overrides=train_overrides(plain)) == load_config("inshop_ce_triplet")
    assert [parser.parse_args(["train", *flag]).resume for flag in ([], ["--resume"], ["--resume", "auto"],
                                                                   ["--resume", "runs/a/checkpoints/last.prev.pt"])] \
        == [None, "auto", "auto", "runs/a/checkpoints/last.prev.pt"]


def test_train_then_eval_reproduces_summary_then_embed(tiny_inshop, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data-root", str(tiny_inshop), "--output", str(out), "--epochs", "1",
                 "--image-size", "32", "--backbone", "resnet18d", "--batch-size", "8",
                 "--set", "DataLoader.num_workers=0", "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--data-root", str(tiny_inshop),
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("recall@1", "recall@5", "recall@10", "recall@20", "mAP"):
        assert metrics[key] == pytest.approx(summary[key], abs=1e-9), key

    images = sorted(str(p) for p in tiny_inshop.glob("img/*/*/*/*.jpg"))[:3]
    assert main(["embed", "--checkpoint", str(out / "checkpoints" / "best.pt"), *images,
                 "--output", str(tmp_path / "f.npy")]) == 0
    features = np.load(tmp_path / "f.npy")
    assert features.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_make_synthetic(tmp_path, capsys):
    assert main(["make-synthetic", str(tmp_path / "s"), "--items", "6", "--views", "3", "--image-size", "32"]) == 0
    assert (tmp_path / "s" / "Eval" / "list_eval_partition.txt").is_file()
    assert "18 images" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--data-root", "x", "--set", "Global.epoch=1"], "unknown config key 'Global.epoch'"),
        (["train", "missing.yaml", "--data-root", "x"], "config file 'missing.yaml' not found"),
        (["eval", "--checkpoint", "nope.pt", "--data-root", "x"], "not found"),
    ],
)
def test_errors_are_one_line_messages(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_dataset_choices_match_the_registered_readers_and_the_config_schema():
    import typing

    from prodrec.config import DataLoaderConfig
    from prodrec.data import DATASET_READERS

    commands = build_parser()._subparsers._group_actions[0].choices
    schema = typing.get_args(typing.get_type_hints(DataLoaderConfig)["dataset"])
    assert sorted(schema) == sorted(DATASET_READERS)
    for name in ("train", "eval", "visualize"):
        dataset = next(a for a in commands[name]._actions if a.dest == "dataset")
        assert sorted(dataset.choices) == sorted(DATASET_READERS), name


@pytest.mark.parametrize("error, shown", [
    (ProdrecError("Global.epochs must be >= 0, got -1"), True),
    (FileNotFoundError("file 'x.pt' not found"), True),
    (ValueError("operands could not be broadcast together"), False),  # a bug, not refused input
    (TypeError("unsupported operand type(s)"), False),
    (RuntimeError("CUDA error: an illegal memory access"), False),
])
def test_the_cli_prints_refused_input_and_lets_bugs_raise(monkeypatch, capsys, error, shown):
    from prodrec.cli import app

    def fail(args):
        raise error

    monkeypatch.setitem(app.COMMANDS, "make-synthetic", fail)
    if shown:
        assert main(["make-synthetic", "somewhere"]) == 1
        assert capsys.readouterr().err == f"prodrec make-synthetic: error: {error}\n"
    else:
        with pytest.raises(type(error)):
            main(["make-synthetic", "somewhere"])


def test_serve_refuses_bad_settings_before_loading_anything(tmp_path):
    from prodrec.cli import main

    (tmp_path / "empty-token").write_text("\n")
    for flags, message in ((["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
                           (["--port", "70000"], "--port in 1..65535"),
                           (["--token-file", str(tmp_path / "empty-token")], "is empty; write the token into it")):
        args = build_parser().parse_args(["serve", "--index", str(tmp_path), *flags])
        with pytest.raises(ValueError, match=message):
            args.handler(args)
    assert main(["serve", "--index", str(tmp_path), "--port", "0"]) == 1
