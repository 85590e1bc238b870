import cv2
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import prodrec.models.embedder as models
from prodrec.models import Embedder, resolve_backbone_name


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return Embedder("resnet18d", embedding_size=16, image_size=32)


def test_paddle_alias_and_timm_names():
    assert resolve_backbone_name("ResNet50_vd") == "resnet50d"
    assert resolve_backbone_name("resnet18d") == "resnet18d"
    with pytest.raises(ValueError, match="unknown backbone 'ResNet51_vd'"):
        resolve_backbone_name("ResNet51_vd")


def test_architecture_is_recmodel():
    model = Embedder("ResNet50_vd")
    assert model.backbone_name == "resnet50d" and model.num_features == 2048
    assert isinstance(model.neck, torch.nn.Linear) and (model.neck.in_features, model.neck.out_features) == (2048, 512)
    cfg = timm.create_model("resnet50d").pretrained_cfg
    assert model.image_size == cfg["input_size"][-1]
    assert model.mean == tuple(cfg["mean"]) and model.std == tuple(cfg["std"])
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():  # backbone ends at global pool + flatten; the neck has no BN/activation
        torch.testing.assert_close(model(x), model.neck(model.backbone.forward_head(model.backbone.forward_features(x))))


def test_forward_and_embed(small):
    x = torch.randn(3, 3, 32, 32)
    small.eval()
    raw = small(x)
    emb = small.embed(x)
    assert raw.shape == emb.shape == (3, 16)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(raw.detach(), dim=1))
    assert small.embed(x[0]).shape == (1, 16)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        small(torch.randn(3, 32, 32))


def test_embed_paths_pil_and_arrays_agree(small, tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (40, 50, 3), dtype=np.uint8) for _ in range(3)]
    paths = []
    for i, array in enumerate(arrays):
        path = tmp_path / f"img {i}.png"  # lossless, so all three inputs are the same pixels
        cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    from_arrays = small.embed(arrays, batch_size=2)
    torch.testing.assert_close(small.embed(paths), from_arrays)
    torch.testing.assert_close(small.embed([Image.fromarray(a) for a in arrays]), from_arrays)
    with pytest.raises(TypeError, match="wrap a single image in a list"):
        small.embed(paths[0])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        small.embed([arrays[0].astype(np.float32)])


def test_save_load_round_trip(small, tmp_path):
    path = small.save(tmp_path / "model.pt")
    loaded = Embedder.load(path)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.embed(x), small.embed(x))
    assert loaded.preprocessing == small.preprocessing
    with pytest.raises(FileNotFoundError):
        Embedder.load(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a prodrec model file"):
        Embedder.load(tmp_path / "other.pt")
    (tmp_path / "broken.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="may be corrupt"):
        Embedder.load(tmp_path / "broken.pt")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_from_local_backbone_file(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model("resnet18d", num_classes=1000)  # with its ImageNet classifier, which is dropped
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    model = Embedder("resnet18d", embedding_size=8, pretrained=path)
    for name, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, state[name])


def test_pretrained_from_prodrec_file_loads_backbone_and_neck(small, tmp_path):
    path = small.save(tmp_path / "aliproduct.pt")
    model = Embedder("resnet18d", embedding_size=16, pretrained=path)
    torch.testing.assert_close(model.neck.weight, small.neck.weight)
    with pytest.raises(ValueError, match="set embedding_size=16"):
        Embedder("resnet18d", embedding_size=8, pretrained=path)


def test_pretrained_file_of_another_architecture_is_refused(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="does not fit backbone 'resnet18d'"):
        Embedder("resnet18d", pretrained=tmp_path / "w.pth")
    with pytest.raises(FileNotFoundError):
        Embedder("resnet18d", pretrained=tmp_path / "missing.pth")


def test_pretrained_true_offline_fails_fast_with_fix(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "_hub_reachable", lambda: False)
    with pytest.raises(RuntimeError, match="pass a local weights file"):
        Embedder("resnet18d", pretrained=True)


def test_bad_embedding_size():
    with pytest.raises(ValueError, match="embedding_size"):
        Embedder("resnet18d", embedding_size=0)
