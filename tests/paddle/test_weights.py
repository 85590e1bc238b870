import os
import pickle

import numpy as np
import pytest
import timm
import torch
from torch import nn

from prodrec.cli import main
from prodrec.losses import ArcMarginLoss, FCClassifierLoss
from prodrec.models import Embedder
from prodrec.paddle import PaddleWeightsError, convert_paddle_state, load_paddleclas, load_pdparams

BN = (("weight", "weight"), ("bias", "bias"), ("_mean", "running_mean"), ("_variance", "running_var"))


@pytest.fixture(scope="module")
def source():
    """A resnet50d + Linear neck with every BN tensor random (timm zero-inits some BN weights,
    and default statistics would hide a swap of mean and variance)."""
    torch.manual_seed(0)
    backbone = timm.create_model("resnet50d", pretrained=False, num_classes=0).eval()
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    neck = nn.Linear(2048, 512).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = backbone(images)
    return backbone, neck, images, features


def paddle_backbone(backbone, prefix):
    """The inverse mapping, timm resnet50d -> PaddleClas ResNet50_vd names, written out stage by stage."""
    sd = {name: tensor.numpy().copy() for name, tensor in backbone.state_dict().items()}
    out = {}

    def conv_bn(paddle, conv, bn):
        out[f"{prefix}{paddle}.conv.weight"] = sd[f"{conv}.weight"]
        for paddle_param, torch_param in BN:
            out[f"{prefix}{paddle}.bn.{paddle_param}"] = sd[f"{bn}.{torch_param}"]

    conv_bn("stem.0", "conv1.0", "conv1.1")
    conv_bn("stem.1", "conv1.3", "conv1.4")
    conv_bn("stem.2", "conv1.6", "bn1")
    block = 0
    for stage, depth in ((1, 3), (2, 4), (3, 6), (4, 3)):
        for index in range(depth):
            timm_block = f"layer{stage}.{index}"
            for paddle_conv, torch_conv in ((0, 1), (1, 2), (2, 3)):
                conv_bn(f"blocks.{block}.conv{paddle_conv}", f"{timm_block}.conv{torch_conv}",
                        f"{timm_block}.bn{torch_conv}")
            if index == 0:
                conv_bn(f"blocks.{block}.short", f"{timm_block}.downsample.1", f"{timm_block}.downsample.2")
            block += 1
    assert block == 16
    assert len(out) == len([name for name in sd if not name.endswith("num_batches_tracked")])
    return out


def recmodel_params(backbone, neck, head=None):
    params = paddle_backbone(backbone, "backbone.")
    params["neck.fc.weight"] = neck.weight.detach().numpy().T.copy()  # Paddle Linear: [in, out]
    params["neck.fc.bias"] = neck.bias.detach().numpy().copy()
    params.update(head or {})
    return params


def write_pdparams(path, params, protocol=4):
    """As paddle.save writes a state dict (protocol 4 by default; 2 in older Paddle and fluid)."""
    saved = dict(params)
    saved["StructuredToParameterName@@"] = {name: f"param_{i}" for i, name in enumerate(params)}
    with open(path, "wb") as handle:
        pickle.dump(saved, handle, protocol=protocol)
    return path


@pytest.fixture(scope="module")
def recmodel(source, tmp_path_factory):
    """A RecModel file with an ArcMargin head (protocol 2, as older Paddle wrote), and its conversion."""
    backbone, neck, _, _ = source
    arc = np.random.default_rng(0).normal(size=(512, 7)).astype(np.float32)
    path = write_pdparams(tmp_path_factory.mktemp("paddle") / "rec.pdparams",
                          recmodel_params(backbone, neck, {"head.weight": arc}), protocol=2)
    model, info = load_paddleclas(path, image_size=64)
    return path, arc, model, info


def test_recmodel_gives_the_source_features_and_head(source, recmodel):
    _, neck, images, features = source
    _, arc, model, info = recmodel
    # 55 conv layers (3 stem, 16 x 3 in blocks, 4 shortcuts), each with a BN of 4 tensors; neck; head
    assert (info["kind"], info["tensors"], info["embedding_size"]) == ("recmodel", 55 * 5 + 2 + 1, 512)
    assert info["head"]["type"] == "margin" and info["head"]["num_classes"] == 7
    head = ArcMarginLoss(7, 512)
    head.load_state_dict(info["head"]["state_dict"])
    np.testing.assert_array_equal(head.W.detach().numpy(), arc)

    with torch.no_grad():
        expected = neck(features)
        got = model.eval()(images)
    assert model.image_size == 64 and model.embedding_size == 512
    assert (got - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())


def test_fc_head_is_transposed(source, tmp_path):
    backbone, neck, _, _ = source
    weight = np.arange(512 * 3, dtype=np.float32).reshape(512, 3)
    head = {"head.fc.weight": weight, "head.fc.bias": np.array([1, 2, 3], dtype=np.float32)}
    path = write_pdparams(tmp_path / "fc.pdparams", recmodel_params(backbone, neck, head))
    state, info = convert_paddle_state(load_pdparams(path))
    classifier = FCClassifierLoss(3, 512)
    classifier.load_state_dict(info["head"]["state_dict"])
    np.testing.assert_array_equal(classifier.fc.weight.detach().numpy(), weight.T)
    assert torch.equal(state["neck.weight"], neck.weight.detach())
    assert torch.equal(state["backbone.layer4.2.bn3.running_var"], backbone.layer4[2].bn3.running_var)


def test_imagenet_file_loads_the_backbone_and_drops_the_classifier(source, tmp_path):
    backbone, _, images, features = source
    params = paddle_backbone(backbone, "")
    params["fc.weight"] = np.zeros((2048, 1000), np.float32)
    params["fc.bias"] = np.zeros(1000, np.float32)
    path = write_pdparams(tmp_path / "ResNet50_vd_pretrained.pdparams", params)

    model, info = load_paddleclas(path, image_size=64)
    assert (info["kind"], info["dropped"], info["head"], info["embedding_size"]) == (
        "imagenet", ["fc.weight", "fc.bias"], None, None)
    assert model.embedding_size == 512
    with torch.no_grad():
        got = model.eval().backbone(images)
    assert (got - features).abs().max().item() < 1e-4 * max(1.0, features.abs().max().item())


def test_missing_extra_and_misshapen_tensors_are_reported_together(source):
    backbone, neck, _, _ = source
    params = recmodel_params(backbone, neck, {"head.weight": np.zeros((256, 4), np.float32)})
    del params["backbone.blocks.7.conv1.bn._mean"]
    params["backbone.blocks.16.conv0.conv.weight"] = np.zeros((1,), np.float32)
    params["backbone.stem.1.conv.weight"] = np.zeros((32, 32, 1, 1), np.float32)
    params["neck.extra"] = np.zeros((1,), np.float32)
    with pytest.raises(PaddleWeightsError) as error:
        convert_paddle_state(params)
    message = str(error.value)
    for expected in ("missing: backbone.blocks.7.conv1.bn._mean", "extra: backbone.blocks.16.conv0.conv.weight",
                     "extra: neck.extra", "wrong shape or type: backbone.stem.1.conv.weight",
                     "-> conv1.3.weight", "head.weight [256, 4]"):
        assert expected in message, expected


class RunsCode:
    def __init__(self, call, argument):
        self.call, self.argument = call, argument

    def __reduce__(self):
        return self.call, (self.argument,)


@pytest.mark.parametrize("call", ["os.system", "builtins.exec"])
def test_a_pickle_that_would_run_code_is_refused_unrun(call, tmp_path):
    marker = tmp_path / "ran"
    payload = RunsCode(os.system, f"touch {marker}") if call == "os.system" else RunsCode(
        exec, f"open({str(marker)!r}, 'w').close()")
    path = write_pdparams(tmp_path / "evil.pdparams", {"a": np.zeros(2, np.float32), "b": payload})
    with open(path, "rb") as handle:  # the payload is live: plain pickle runs it
        pickle.load(handle)
    assert marker.exists()
    marker.unlink()

    # pickle names builtins "__builtin__" under protocol 2, and os.system "posix.system" on Linux
    with pytest.raises(PaddleWeightsError, match=rf"references \w+\.{payload.call.__name__};"):
        load_pdparams(path)
    assert not marker.exists()
    assert main(["convert-paddle", str(path), str(tmp_path / "out.pt")]) == 1
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


def test_non_array_values_and_non_pickles_are_refused(tmp_path):
    path = write_pdparams(tmp_path / "lists.pdparams", {"w": [1.0, 2.0]})
    with pytest.raises(PaddleWeightsError, match="'w': list"):
        load_pdparams(path)
    (tmp_path / "text.pdparams").write_text("not a pickle")
    with pytest.raises(PaddleWeightsError, match="not a readable .pdparams"):
        load_pdparams(tmp_path / "text.pdparams")
    with pytest.raises(FileNotFoundError):
        load_pdparams(tmp_path / "absent.pdparams")


def test_cli_convert_paddle_round_trip(recmodel, tmp_path, capsys):
    path, _, direct, _ = recmodel
    assert main(["convert-paddle", str(path), str(tmp_path / "model.pt")]) == 0
    printed = capsys.readouterr().out
    assert "278 tensors" in printed and "recmodel" in printed and "'W': [512, 7]" in printed

    loaded = Embedder.load(tmp_path / "model.pt")
    assert loaded.image_size == 224 and loaded.embedding_size == 512
    for name, tensor in direct.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
