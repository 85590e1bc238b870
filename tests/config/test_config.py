import pytest
import yaml

from prodrec.config import Config, ConfigError, builtin_config_names, load_config

# The seed's snippets, verbatim (PaddleClas product_recognition doc).
ALIPRODUCT_ARCH = """
Arch:
  name: RecModel
  Backbone:
    name: ResNet50_vd
    pretrained: True
  BackboneStopLayer:
    name: flatten_0
  Neck:
    name: FC
    embedding_size: 2048
    class_num: 512
  Head:
    name: FC
    embedding_size: 512
    class_num: 50030
"""
INSHOP_ARCH = """
Arch:
  name: RecModel
  infer_output_key: features
  infer_add_softmax: False
  Backbone:
    name: ResNet50_vd
    pretrained: False
  BackboneStopLayer:
    name: flatten_0
  Neck:
    name: FC
    embedding_size: 2048
    class_num: 512
  Head:
    name: ArcMargin
    embedding_size: 512
    class_num: 3997
    margin: 0.15
    scale: 30
"""
INSHOP_LOSS = """
Loss:
  Train:
    - CELoss:
        weight: 1.0
    - TripletLossV2:
        weight: 1.0
        margin: 0.5
  Eval:
    - CELoss:
        weight: 1.0
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_seed_snippets_load_verbatim(tmp_path):
    ali = load_config(write(tmp_path, ALIPRODUCT_ARCH))
    assert ali.Arch.Head.name == "FC" and ali.Arch.Head.class_num == 50030
    assert ali.Arch.BackboneStopLayer.name == "flatten_0" and ali.Arch.Backbone.pretrained is True
    inshop = load_config(write(tmp_path, INSHOP_ARCH + INSHOP_LOSS))
    head = inshop.Arch.Head
    assert (head.name, head.class_num, head.margin, head.scale) == ("ArcMargin", 3997, 0.15, 30.0)
    assert inshop.Arch.Neck.embedding_size == 2048 and inshop.Arch.Neck.class_num == 512
    assert inshop.Loss.Train == [{"CELoss": {"weight": 1.0}}, {"TripletLossV2": {"weight": 1.0, "margin": 0.5}}]


@pytest.mark.parametrize("name", builtin_config_names())
def test_builtin_configs_load_and_round_trip(name):
    config = load_config(name)
    assert Config.from_dict(config.to_dict()) == config
    assert Config.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


def test_builtin_recipes_follow_the_seed():
    inshop = load_config("inshop_ce_triplet")
    assert inshop.Optimizer.lr.milestones == [30, 60, 70, 80, 90, 100] and inshop.Optimizer.lr.gamma == 0.5
    assert inshop.Optimizer.regularizer.coeff == pytest.approx(5e-4)
    assert inshop.DataLoader.batch_size == 64 and inshop.DataLoader.sample_per_id == 2
    assert [next(iter(e)) for e in load_config("inshop_ce").Loss.Train] == ["CELoss"]
    ali = load_config("aliproduct_ce")
    assert ali.Arch.Head.name == "FC" and ali.Optimizer.lr.name == "Cosine" and ali.Optimizer.lr.learning_rate == 0.05
    assert ali.DataLoader.random_erasing == 0.0


def test_overrides_parse_yaml_values():
    config = load_config(overrides=["Global.epochs=3", "Arch.Head.name=FC", "Arch.Head.margin=null",
                                    "Arch.Head.scale=null", "Loss.Train=[{CELoss: {weight: 2}}]"])
    assert config.Global.epochs == 3 and config.Arch.Head.name == "FC"
    assert config.Loss.Train == [{"CELoss": {"weight": 2}}]


@pytest.mark.parametrize(
    "data,message",
    [
        ({"Global": {"epoch": 3}}, "unknown config key 'Global.epoch'"),
        ({"Arch": {"Neck": {"size": 3}}}, "unknown config key 'Arch.Neck.size'"),
        ({"Bogus": {}}, "unknown config key 'Bogus'"),
        ({"Global": {"epochs": "ten"}}, "Global.epochs: expected int"),
        ({"Global": {"epochs": True}}, "Global.epochs: expected an integer"),
        ({"Global": {"epochs": -1}}, "Global.epochs must be >= 0"),
        ({"Arch": {"Head": {"name": "Softmax"}}}, "Arch.Head.name: 'Softmax' is not one of"),
        ({"Arch": {"Head": {"name": "FC", "margin": 0.1}}}, "margin and scale belong to the ArcMargin head"),
        ({"Loss": {"Train": []}}, "Loss.Train is empty"),
        ({"Loss": {"Train": [{"CELoss": {}, "TripletLossV2": {}}]}}, r"Loss.Train\[0\]"),
        ({"Metric": {"Eval": [{"Precision": {}}]}}, "unknown metric 'Precision'"),
        ({"DataLoader": {"random_erasing": 2}}, r"probability in \[0, 1\]"),
        ({"Optimizer": {"lr": {"name": "Poly"}}}, "Optimizer.lr.name"),
        ({"Global": 3}, "Global: expected a mapping"),
        ({"Global": {"checkpoint_steps": -1}}, "Global.checkpoint_steps must be >= 0"),
        ({"Global": {"checkpoint_minutes": -0.5}}, "Global.checkpoint_minutes must be >= 0"),
        ({"Global": {"seed": -1}}, "Global.seed must be >= 0"),
        ({"DataLoader": {"on_bad_image": "ignore"}}, r"DataLoader.on_bad_image: 'ignore' is not one of \['error', "),
        ({"DataLoader": {"confine_to_root": "yes"}}, "DataLoader.confine_to_root: expected bool"),
    ],
)
def test_bad_configs_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        load_config(data)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="inshop_ce_triplet"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "Global: [unclosed"))
    with pytest.raises(ConfigError, match="must look like Section.key=value"):
        load_config(overrides=["Global.epochs"])


def test_recall_ks_and_map():
    config = load_config({"Metric": {"Eval": [{"Recallk": {"topk": [5, 1]}}]}})
    assert config.recall_ks() == [1, 5] and not config.wants_map()


def test_reliability_keys_default_and_load():
    default = load_config()
    assert (default.Global.checkpoint_steps, default.Global.checkpoint_minutes) == (0, 10.0)
    assert (default.DataLoader.on_bad_image, default.DataLoader.confine_to_root) == ("error", False)
    config = load_config(overrides=["Global.checkpoint_steps=500", "Global.checkpoint_minutes=2",
                                    "DataLoader.on_bad_image=skip", "DataLoader.confine_to_root=true"])
    assert config.Global.checkpoint_steps == 500 and config.Global.checkpoint_minutes == 2.0
    assert config.DataLoader.on_bad_image == "skip" and config.DataLoader.confine_to_root is True
