import pytest

from prodrec.losses import build_loss
from prodrec.paddle import Notes, Section
from prodrec.paddle import (backbone_mean_std, translate_arch, translate_losses, translate_metrics,
                                  translate_optimizer)

ARCH = {"name": "RecModel", "Backbone": {"name": "ResNet50_vd", "pretrained": False},
        "BackboneStopLayer": {"name": "flatten"}, "Neck": {"name": "FC", "embedding_size": 2048, "class_num": 512}}


def arch(head=None, global_=None, base_dir=None, **backbone):
    notes = Notes()
    data = {**ARCH, "Backbone": {**ARCH["Backbone"], **backbone}, **({"Head": head} if head else {})}
    return translate_arch(Section(data, "Arch", notes), Section(global_ or {}, "Global", notes), base_dir), notes


def optimizer(data, epochs=10):
    notes = Notes()
    return translate_optimizer(Section(data, "Optimizer", notes), epochs, notes), notes


def test_heads_take_paddleclas_defaults():
    native, notes = arch({"name": "ArcMargin", "embedding_size": 512, "class_num": 10})
    assert native["Head"] == {"name": "ArcMargin", "embedding_size": 512, "class_num": 10, "margin": 0.5,
                              "scale": 80.0, "easy_margin": False}
    assert native["Neck"] == {"name": "FC", "embedding_size": 2048, "class_num": 512} and notes.warnings == []
    assert arch()[0]["Head"] is None


def test_cosmargin_head_runs_as_pml_cosface():
    head = {"name": "CosMargin", "embedding_size": 512, "class_num": 10, "margin": 0.2}
    native, notes = arch(head)
    assert native["Head"] is None and notes.errors == []
    loss_notes = Notes()
    losses = translate_losses(Section({"Train": [{"CELoss": {"weight": 1.0, "epsilon": 0.1}}]}, "Loss", loss_notes),
                              head, loss_notes)
    assert losses["Train"] == [{"CosFaceLoss": {"weight": 1.0, "margin": 0.2, "scale": 64.0, "num_classes": 10,
                                                "embedding_size": 512}}]
    assert [w.split(":")[0] for w in loss_notes.warnings] == ["Loss.Train[0].CELoss.epsilon"]
    cosface = build_loss(losses["Train"], head=None, num_classes=10, embedding_size=512).terms["CosFaceLoss"].loss
    assert (type(cosface).__name__, tuple(cosface.W.shape), cosface.margin, cosface.scale) == (
        "CosFaceLoss", (512, 10), 0.2, 64.0)


def test_unsupported_architecture_is_an_error():
    _, notes = arch({"name": "CircleMargin"})
    assert [e.split(":")[0] for e in notes.errors] == ["Arch.Head.name"]
    notes = Notes()
    data = {**ARCH, "name": "DistillationModel", "Neck": {"name": "BNNeck"}, "BackboneStopLayer": {"name": "avg_pool"}}
    translate_arch(Section(data, "Arch", notes), Section({}, "Global", notes), None)
    assert sorted(e.split(":")[0] for e in notes.errors) == ["Arch.BackboneStopLayer.name", "Arch.Neck.name",
                                                             "Arch.name"]


def test_pretrained_paths_resolve_as_in_paddleclas(tmp_path):
    (tmp_path / "model.pdparams").write_bytes(b"")
    native, notes = arch(global_={"pretrained_model": "model"}, base_dir=str(tmp_path))
    assert native["Backbone"]["pretrained"] == str(tmp_path / "model.pdparams") and notes.errors == []
    native, notes = arch(pretrained=str(tmp_path / "model.pdparams"))
    assert native["Backbone"]["pretrained"] == str(tmp_path / "model.pdparams")
    _, notes = arch(global_={"pretrained_model": str(tmp_path / "missing")})
    assert notes.errors == [f"Global.pretrained_model: neither {tmp_path / 'missing'} nor "
                            f"{tmp_path / 'missing'}.pdparams exists"]
    native, notes = arch(pretrained=True)
    assert native["Backbone"]["pretrained"] is True and "timm's ImageNet weights" in notes.warnings[0]


def test_losses_map_or_fail_by_name():
    notes = Notes()
    head = {"name": "FC"}
    train = [{"CELoss": {"weight": 1.0, "epsilon": 0.1}}, {"TripletLoss": {"weight": 0.5}},
             {"TripletLossV2": {"margin": 0.3, "feature_from": "backbone"}}, {"CenterLoss": {"weight": 1.0}}]
    native = translate_losses(Section({"Train": train, "Eval": [{"CELoss": {"weight": 1.0}}]}, "Loss", notes), head,
                              notes)
    assert native == {"Train": [{"CELoss": {"weight": 1.0, "epsilon": 0.1}},
                                {"TripletLossV2": {"weight": 0.5, "margin": 1.0, "normalize_feature": False}},
                                {"TripletLossV2": {"weight": 1.0, "margin": 0.3, "normalize_feature": True}}],
                      "Eval": [{"CELoss": {"weight": 1.0}}]}
    assert [e.split(":")[0] for e in notes.errors] == ["Loss.Train[2].TripletLossV2.feature_from",
                                                       "Loss.Train[3].CenterLoss"]
    notes = Notes()
    translate_losses(Section({"Train": [{"CELoss": None}]}, "Loss", notes), None, notes)
    assert notes.errors == ["Loss.Train[0].CELoss: CELoss needs Arch.Head (ArcMargin, FC or CosMargin)"]


@pytest.mark.parametrize("lr, expected", [
    ({"name": "MultiStepDecay", "learning_rate": 0.1, "milestones": [3, 6]},
     {"name": "MultiStepDecay", "learning_rate": 0.1, "milestones": [3, 6], "gamma": 0.1}),  # PaddleClas's gamma
    ({"name": "Piecewise", "decay_epochs": [3, 6], "values": [0.1, 0.01, 0.001]},
     {"name": "MultiStepDecay", "learning_rate": 0.1, "milestones": [3, 6], "gamma": 0.1}),
    ({"name": "Step", "learning_rate": 0.2, "step_size": 4, "gamma": 0.5},
     {"name": "MultiStepDecay", "learning_rate": 0.2, "milestones": [4, 8], "gamma": 0.5}),
    ({"name": "Cosine", "learning_rate": 0.05, "eta_min": 1e-4}, {"name": "Cosine", "learning_rate": 0.05,
                                                                  "eta_min": 1e-4}),
])
def test_learning_rate_schedules(lr, expected):
    native, notes = optimizer({"name": "Momentum", "momentum": 0.8, "lr": lr, "regularizer": {"name": "L2",
                                                                                             "coeff": 1e-4}})
    assert notes.errors == [] and notes.warnings == []
    assert {k: v for k, v in native["lr"].items() if not k.startswith("warmup")} == expected
    assert (native["momentum"], native["regularizer"]) == (0.8, {"name": "L2", "coeff": 1e-4})


def test_optimizer_settings_prodrec_cannot_honour():
    native, notes = optimizer({"name": "Momentum", "use_nesterov": True, "lr": {
        "name": "Cosine", "learning_rate": 0.1, "warmup_epoch": 2, "by_epoch": True}})
    assert native["regularizer"] is None and native["lr"]["warmup_epoch"] == 2
    assert sorted(w.split(":")[0] for w in notes.warnings) == ["Optimizer.lr.by_epoch", "Optimizer.lr.warmup_epoch",
                                                               "Optimizer.use_nesterov"]
    native, notes = optimizer({"name": "AdamW", "beta2": 0.99, "weight_decay": 0.05, "lr": {"name": "Constant",
                                                                                          "learning_rate": 1e-3}})
    assert (native["betas"], native["regularizer"]["coeff"], notes.warnings) == ([0.9, 0.99], 0.05, [])
    _, notes = optimizer({"name": "RMSProp", "lr": {"name": "Piecewise", "decay_epochs": [1, 2],
                                                    "values": [0.1, 0.05, 0.01]}, "regularizer": {"name": "L1"}})
    assert sorted(e.split(":")[0] for e in notes.errors) == ["Optimizer.lr", "Optimizer.name",
                                                             "Optimizer.regularizer.name"]


def test_metrics():
    notes = Notes()
    native = translate_metrics(Section({"Eval": [{"Recallk": {"topk": [5, 1]}}, {"mAP": {}}, {"TopkAcc": {"topk": 1}},
                                                 {"mINP": {}}], "Train": [{"TopkAcc": {}}]}, "Metric", notes), notes)
    assert native == {"Eval": [{"Recallk": {"topk": [1, 5]}}, {"mAP": {}}]}
    assert [w.split(":")[0] for w in notes.warnings] == ["Metric.Eval[2].TopkAcc", "Metric.Eval[3]", "Metric.Train"]


def test_backbone_mean_std_comes_from_timm():
    assert backbone_mean_std("ResNet50_vd") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert backbone_mean_std("not_a_model") is None and backbone_mean_std(None) is None
