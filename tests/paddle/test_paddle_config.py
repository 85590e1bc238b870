import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from prodrec.cli import main
from prodrec.config import Config, ConfigError, load_config
from prodrec.models import Embedder
from prodrec.paddle import (apply_ppcls_overrides, convert_paddle_pretrained, is_ppcls_config,
                                  load_ppcls_config, read_ppcls_yaml, translate_ppcls_config)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "ppcls"
INSHOP = FIXTURES / "ResNet50_vd_Inshop.yaml"
ALIPRODUCT = FIXTURES / "ResNet50_vd_Aliproduct.yaml"
INSHOP_WEIGHTS = "product_ResNet50_vd_Aliproduct_v1.0_pretrained.pdparams"  # the file its pretrained_model URL names
EVAL_BLOCKS = ("DataLoader.Eval.Query", "DataLoader.Eval.Gallery")


def write_lists(root, train_items, train_views):
    """PaddleClas list-format data: ``train_items`` x ``train_views`` training images, 4 test items with 2 query
    and 2 gallery images."""
    rng = np.random.default_rng(0)
    files = {"train": [(item, view) for item in range(train_items) for view in range(train_views)],
             "query": [(item, view) for item in range(1000, 1004) for view in range(2)],
             "gallery": [(item, view) for item in range(1000, 1004) for view in range(2, 4)]}
    for split, images in files.items():
        lines = []
        for item, view in images:
            name = f"images/{item}/{split}_{view}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name), rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
            lines.append(f"{name} {item}")
        (root / f"{split}_list.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    return write_lists(tmp_path_factory.mktemp("ppcls_data"), train_items=6, train_views=4)


def data_overrides(root, *, eval_blocks=EVAL_BLOCKS):
    """The only keys the Done-when criterion lets us change: image_root and cls_label_path."""
    blocks = dict(zip(("DataLoader.Train", *eval_blocks), ("train", "query", "gallery")))
    return [override for block, split in blocks.items() for override in (
        f"{block}.dataset.image_root={root}", f"{block}.dataset.cls_label_path={root / f'{split}_list.txt'}")]


@pytest.fixture
def paddleclas_cache(tmp_path, monkeypatch):
    """A home folder whose PaddleClas download cache holds the In-shop config's pretrained weights."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / ".paddleclas" / "weights"
    cache.mkdir(parents=True)
    (cache / INSHOP_WEIGHTS).write_bytes(b"")
    return cache


def keys(warnings):
    return sorted(warning.split(": ", 1)[0] for warning in warnings)


def test_detects_paddleclas_layout():
    assert is_ppcls_config(read_ppcls_yaml(INSHOP)) and is_ppcls_config(read_ppcls_yaml(ALIPRODUCT))
    native = yaml.safe_load((Path(__file__).parents[2] / "prodrec" / "config" / "builtin" / "inshop_ce_triplet.yaml").read_text())
    assert not is_ppcls_config(native) and not is_ppcls_config(Config().to_dict())
    assert read_ppcls_yaml("inshop_ce_triplet") is None


def test_inshop_config_translates_with_only_data_paths_overridden(lists, paddleclas_cache):
    data = apply_ppcls_overrides(read_ppcls_yaml(INSHOP), data_overrides(lists))
    native, warnings = translate_ppcls_config(data)
    assert warnings == []  # prodrec honours every key of PaddleClas's own In-shop recipe
    config = Config.from_dict(native)
    g, arch, opt, loader = config.Global, config.Arch, config.Optimizer, config.DataLoader
    assert (g.epochs, g.eval_interval, g.save_interval, g.image_size) == (120, 10, 10, 224)
    assert (g.output_dir, g.device, g.amp) == ("./output/RecModel", "auto", "off")
    assert arch.Backbone.name == "ResNet50_vd"
    assert arch.Backbone.pretrained == str(paddleclas_cache / INSHOP_WEIGHTS)
    assert (arch.Neck.embedding_size, arch.Neck.class_num) == (2048, 512)
    head = arch.Head
    assert (head.name, head.class_num, head.margin, head.scale, head.easy_margin) == (
        "ArcMargin", 3997, 0.15, 30, False)
    assert config.Loss.Train == [{"CELoss": {"weight": 1.0}},
                                 {"TripletLossV2": {"weight": 1.0, "margin": 0.5, "normalize_feature": True}}]
    assert (opt.name, opt.momentum, opt.regularizer.coeff) == ("Momentum", 0.9, 0.0005)
    assert (opt.lr.name, opt.lr.learning_rate, opt.lr.milestones, opt.lr.gamma, opt.lr.warmup_epoch) == (
        "MultiStepDecay", 0.04, [30, 60, 70, 80, 90, 100], 0.5, 0)
    assert (loader.sampler, loader.batch_size, loader.sample_per_id, loader.small_items) == ("pk", 64, 2, "repeat")
    assert (loader.horizontal_flip, loader.random_erasing, loader.num_workers, loader.eval_batch_size) == (
        0.5, 0.5, 4, 64)
    assert (loader.dataset, loader.root) == ("list", str(lists))
    splits = ("train", "query", "gallery")
    assert loader.split_files() == ({split: str(lists / f"{split}_list.txt") for split in splits}, {})
    assert config.Metric.Eval == [{"Recallk": {"topk": [1, 5]}}]


def test_aliproduct_config_translates_and_names_what_differs(lists):
    data = apply_ppcls_overrides(read_ppcls_yaml(ALIPRODUCT), data_overrides(lists, eval_blocks=("DataLoader.Eval",)))
    native, warnings = translate_ppcls_config(data)
    config = Config.from_dict(native)
    assert (config.Arch.Head.name, config.Arch.Head.class_num, config.Arch.Backbone.pretrained) == ("FC", 50030, True)
    assert config.Loss.Train == [{"CELoss": {"weight": 1.0}}]
    assert (config.Optimizer.lr.name, config.Optimizer.lr.learning_rate, config.Optimizer.lr.eta_min) == (
        "Cosine", 0.05, 0.0)
    assert config.Optimizer.regularizer.coeff == 7e-05 and config.Optimizer.momentum == 0.9
    loader = config.DataLoader
    assert (loader.sampler, loader.batch_size, loader.horizontal_flip, loader.random_erasing) == (
        "random", 64, 0.5, 0.0)
    assert loader.query_list == loader.gallery_list == str(lists / "query_list.txt")
    assert (config.Global.eval_interval, config.Global.save_interval, config.Global.image_size) == (10, 1, 224)
    assert config.Metric.Eval == [{"Recallk": {"topk": [1, 5]}}]
    ops = "DataLoader.Train.dataset.transform_ops"
    assert keys(warnings) == sorted([
        "Global.eval_mode", "Arch.Backbone.pretrained", f"{ops}[1].RandCropImage", "DataLoader.Train.sampler.drop_last",
        "DataLoader.Eval", "DataLoader.Eval.dataset.transform_ops[1].ResizeImage.resize_short",
        "DataLoader.Eval.dataset.transform_ops[2].CropImage", "Metric.Eval[0].TopkAcc", "Metric.Train"])
    assert any("random resized crop (scale [0.08, 1.0]" in warning for warning in warnings)


def test_scale_strings_are_parsed_never_evaluated(lists, paddleclas_cache):
    data = read_ppcls_yaml(INSHOP)
    gallery_normalize = "DataLoader.Eval.Gallery.dataset.transform_ops.2.NormalizeImage"
    gallery_ops = data["DataLoader"]["Eval"]["Gallery"]["dataset"]["transform_ops"]
    assert gallery_ops[2]["NormalizeImage"]["scale"] == "1.0/255.0"  # as PaddleClas ships it
    assert translate_ppcls_config(apply_ppcls_overrides(data, data_overrides(lists)))[1] == []
    bad = apply_ppcls_overrides(data, data_overrides(lists) + [f"{gallery_normalize}.scale=__import__('os').getcwd()"])
    with pytest.raises(ConfigError, match=r"transform_ops\[2\]\.NormalizeImage\.scale.*never evaluates code"):
        translate_ppcls_config(bad)
    odd = apply_ppcls_overrides(data, data_overrides(lists) + [f"{gallery_normalize}.scale=2.0/255.0"])
    assert keys(translate_ppcls_config(odd)[1]) == [
        "DataLoader.Eval.Gallery.dataset.transform_ops[2].NormalizeImage.scale"]


def test_url_pretrained_model_is_a_clear_offline_error(lists, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    data = apply_ppcls_overrides(read_ppcls_yaml(INSHOP), data_overrides(lists))
    with pytest.raises(ConfigError) as error:
        translate_ppcls_config(data)
    message = str(error.value)
    assert "Global.pretrained_model: https://" in message and "does not download" in message
    assert "--set Global.pretrained_model=PATH.pdparams" in message and str(tmp_path / ".paddleclas") in message


def test_every_untranslatable_key_is_reported_at_once(lists, paddleclas_cache):
    data = apply_ppcls_overrides(read_ppcls_yaml(INSHOP), data_overrides(lists) + [
        "Loss.Train.1=MSMLoss: {weight: 1.0}", "Optimizer.name=RMSProp", "Arch.Head.name=CircleMargin"])
    with pytest.raises(ConfigError, match="3 problem") as error:
        translate_ppcls_config(data)
    for key in ("Loss.Train[1].MSMLoss", "Optimizer.name", "Arch.Head.name"):
        assert key in str(error.value)


def test_overrides_index_lists_like_paddleclas_o():
    ops = [{"DecodeImage": None}, {"ResizeImage": {"size": 224}}]
    data = {"DataLoader": {"Train": {"dataset": {"transform_ops": ops}}}}
    out = apply_ppcls_overrides(data, ["DataLoader.Train.dataset.transform_ops.1.ResizeImage.size=64",
                                       "Global.epochs=3"])
    assert out["DataLoader"]["Train"]["dataset"]["transform_ops"][1] == {"ResizeImage": {"size": 64}}
    assert out["Global"] == {"epochs": 3} and ops[1]["ResizeImage"]["size"] == 224  # the input is not changed
    with pytest.raises(ConfigError, match="is a list of 2; index it with 0..1"):
        apply_ppcls_overrides(data, ["DataLoader.Train.dataset.transform_ops.5.ResizeImage.size=64"])
    with pytest.raises(ConfigError, match="Section.key=value"):
        apply_ppcls_overrides(data, ["Global.epochs"])


def test_prodrec_train_runs_the_inshop_config_for_one_epoch(lists, tmp_path, capsys):
    out = tmp_path / "out"
    sets = data_overrides(lists) + [
        "Global.pretrained_model=null", f"Global.output_dir={out}", "Global.epochs=1", "Global.image_shape=[3, 32, 32]",
        "Arch.Backbone.name=ResNet18_vd", "Arch.Neck.embedding_size=512", "Arch.Head.class_num=6",
        "DataLoader.Train.sampler.batch_size=8", "DataLoader.Train.loader.num_workers=0",
        "DataLoader.Train.dataset.transform_ops.1.ResizeImage.size=32",
        *[f"{block}.dataset.transform_ops.1.ResizeImage.size=32" for block in EVAL_BLOCKS]]
    assert main(["train", str(INSHOP), "--quiet", *[f"--set={s}" for s in sets]]) == 0
    assert "warning" not in capsys.readouterr().err
    run = out / "RecModel"
    summary = json.loads((run / "summary.json").read_text())
    counts = (summary["epochs"], summary["num_train_images"], summary["num_query"], summary["num_gallery"])
    assert counts == (1, 24, 8, 8)
    saved = load_config(run / "config.yaml")
    assert (saved.Global.image_size, saved.Arch.Head.margin, saved.DataLoader.batch_size) == (32, 0.15, 8)
    assert Embedder.load(run / "checkpoints" / "last.pt").backbone_name == "resnet18d"


def test_paddleclas_flags_and_data_root_on_the_command_line(lists, tmp_path, capsys):
    assert main(["train", str(INSHOP), "--data-root", str(lists)]) == 1
    assert "--set DataLoader.Train.dataset.image_root=PATH" in capsys.readouterr().err
    config, _ = load_ppcls_config(ALIPRODUCT, overrides=data_overrides(lists, eval_blocks=("DataLoader.Eval",)),
                                  native_overrides=["Global.epochs=2", "Global.image_size=64"])
    assert (config.Global.epochs, config.Global.image_size, config.Arch.Head.class_num) == (2, 64, 50030)


def test_the_inshop_config_as_it_is_trains_on_fewer_classes_with_one_warning(tmp_path, capsys):
    """PaddleClas's In-shop yaml (Head.class_num 3997) on a 64-class folder: the extra logits are never a target."""
    root = write_lists(tmp_path / "data", train_items=64, train_views=2)
    output = tmp_path / "run"
    sets = [f"--set={s}" for s in data_overrides(root) + ["Global.pretrained_model=null"]]
    with pytest.warns(UserWarning) as caught:
        code = main(["train", str(INSHOP), *sets, "--epochs", "1", "--image-size", "32", "--output", str(output),
                     "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert [str(w.message) for w in caught if "class_num" in str(w.message)] == [
        "Arch.Head.class_num is 3997 but the training data has 64 classes (items): the head gets 3997 outputs and "
        "3933 of them are never a target (set Arch.Head.class_num to auto for a head of 64)"]
    assert "warning" not in capsys.readouterr().err  # the translation itself has nothing to say
    summary = json.loads((output / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["num_train_classes"] == 64


def test_a_shortened_paddleclas_run_scales_the_files_schedule(lists, paddleclas_cache):
    from prodrec.train import scale_schedule

    for overrides, native in [(["Global.epochs=8"], []), ([], ["Global.epochs=8"])]:
        config, _ = load_ppcls_config(INSHOP, overrides=data_overrides(lists) + overrides, native_overrides=native)
        assert (config.Global.epochs, config.Optimizer.lr.schedule_epochs) == (8, 120)
        assert scale_schedule(config.Optimizer.lr, 8).milestones == pytest.approx([2, 4, 14 / 3, 16 / 3, 6, 20 / 3])
    config, _ = load_ppcls_config(INSHOP, overrides=data_overrides(lists))
    assert scale_schedule(config.Optimizer.lr, 120).note is None


def test_export_config_writes_a_file_load_config_loads(lists, tmp_path, capsys):
    target = tmp_path / "aliproduct.yaml"
    sets = [f"--set={s}" for s in data_overrides(lists, eval_blocks=("DataLoader.Eval",))]
    assert main(["export-config", str(ALIPRODUCT), "--output", str(target), *sets]) == 0
    text = target.read_text()
    assert text.startswith(f"# prodrec config translated from the PaddleClas config {ALIPRODUCT}")
    assert "# warning: Metric.Eval[0].TopkAcc: classification accuracy is not computed" in text
    expected, _ = load_ppcls_config(ALIPRODUCT, overrides=[s[len("--set="):] for s in sets])
    assert load_config(target) == expected
    assert "warning: Global.eval_mode" in capsys.readouterr().err
    assert main(["export-config", str(ALIPRODUCT), *sets]) == 0
    assert capsys.readouterr().out == text


def test_pdparams_pretrained_model_is_converted_for_training(lists, tmp_path):
    torch = pytest.importorskip("torch")
    from test_weights import recmodel_params, write_pdparams

    backbone = Embedder("resnet50d", embedding_size=512).eval()
    head = {"head.fc.weight": np.zeros((512, 7), np.float32), "head.fc.bias": np.zeros(7, np.float32)}
    write_pdparams(tmp_path / "aliproduct.pdparams", recmodel_params(backbone.backbone, backbone.neck, head))
    data = apply_ppcls_overrides(read_ppcls_yaml(INSHOP), data_overrides(lists) + [
        f"Global.pretrained_model={tmp_path / 'aliproduct'}"])  # PaddleClas appends .pdparams itself
    config, warnings = load_ppcls_config(data)
    assert config.Arch.Backbone.pretrained == str(tmp_path / "aliproduct.pdparams") and warnings == []
    converted, notes = convert_paddle_pretrained(config, tmp_path / "converted")
    assert converted.Arch.Backbone.pretrained == str(tmp_path / "converted" / "aliproduct.pt")
    assert "head (fc, 7 classes) is not loaded" in notes[1]
    model = Embedder(converted.Arch.Backbone.name, pretrained=converted.Arch.Backbone.pretrained)
    for name, tensor in backbone.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor, msg=name)
    with pytest.raises(ValueError, match="--output"):
        convert_paddle_pretrained(config, None)
