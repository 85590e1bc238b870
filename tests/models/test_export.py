import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from prodrec.data import read_inshop  # noqa: E402
from prodrec.data import load_image  # noqa: E402
from prodrec.models import ExportedEmbedder, export_embedder, metadata_path  # noqa: E402
from prodrec.gallery import build_gallery  # noqa: E402
from prodrec.models import Embedder  # noqa: E402
from prodrec.gallery import Recognizer  # noqa: E402
from prodrec.cli import main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning",
                                        "ignore::DeprecationWarning")
SUFFIX = {"onnx": "onnx", "torchscript": "pt"}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Embedder("resnet18d", embedding_size=16, image_size=32).eval()


@pytest.fixture(scope="module", params=["onnx", "torchscript"])
def exported(request, model, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / f"embedder.{SUFFIX[request.param]}"
    return export_embedder(model, path, format=request.param)


def test_metadata_records_the_contract_and_the_check(model, exported):
    meta = json.loads(metadata_path(exported).read_text())
    assert metadata_path(exported).name == exported.name + ".json"
    assert meta["input"] == {"name": "images", "shape": ["batch", 3, 32, 32], "dtype": "float32", "layout": "NCHW"}
    assert meta["output"]["shape"] == ["batch", 16] and meta["output"]["l2_normalized"]
    prep = meta["preprocessing"]
    assert (prep["image_size"], prep["mean"], prep["std"], prep["color"]) == (32, list(model.mean),
                                                                              list(model.std), "RGB")
    assert prep["resize"] == {"height": 32, "width": 32, "keep_aspect_ratio": False, "interpolation": "bilinear"}
    assert meta["check"]["batch_sizes"] == [2, 3] and 0 <= meta["check"]["max_abs_diff"] <= 1e-4
    assert meta["embedder"]["backbone"] == "resnet18d"
    assert (meta["onnx_opset"] is None) == exported.name.endswith(".pt")
    assert sorted(p.name for p in exported.parent.iterdir()) == sorted([exported.name, exported.name + ".json"])


def test_exported_embed_matches_pytorch_for_every_input_kind(model, exported, tiny_inshop):
    runner = ExportedEmbedder(exported)
    assert (runner.image_size, runner.embedding_size, runner.mean) == (32, 16, model.mean)
    paths = list(read_inshop(tiny_inshop).query.paths[:5])
    expected = model.embed(paths)
    np.testing.assert_allclose(runner.embed(paths, batch_size=2), expected, atol=1e-4)
    np.testing.assert_allclose(runner.embed([load_image(p) for p in paths]), expected, atol=1e-4)
    np.testing.assert_allclose(runner.embed([Image.open(p) for p in paths[:1]]), expected[:1], atol=1e-4)
    batch = torch.randn(7, 3, 32, 32)
    np.testing.assert_allclose(runner.embed(batch), model.embed(batch), atol=1e-4)
    np.testing.assert_allclose(runner.embed(batch[0]), model.embed(batch[:1]), atol=1e-4)
    with pytest.raises(ValueError, match=r"expected a \[N, 3, 32, 32\]"):
        runner.embed(torch.zeros(1, 3, 64, 64))
    with pytest.raises(TypeError, match="wrap a single image in a list"):
        runner.embed(paths[0])


def test_documented_preprocessing_reproduces_the_features(model, tiny_inshop, tmp_path):
    """Only the JSON, OpenCV and onnxruntime: what a deployment without prodrec does."""
    path = export_embedder(model, tmp_path / "e.onnx", check=False)
    meta = json.loads(metadata_path(path).read_text())
    prep = meta["preprocessing"]
    paths = list(read_inshop(tiny_inshop).gallery.paths[:3])
    images = []
    for image_path in paths:
        rgb = cv2.cvtColor(cv2.imread(image_path), cv2.COLOR_BGR2RGB)
        resized = cv2.resize(rgb, (prep["resize"]["width"], prep["resize"]["height"]), interpolation=cv2.INTER_LINEAR)
        normalised = (resized.astype(np.float32) * prep["scale"] - prep["mean"]) / prep["std"]
        images.append(normalised.transpose(2, 0, 1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    features = session.run([meta["output"]["name"]], {meta["input"]["name"]: np.stack(images).astype(np.float32)})[0]
    np.testing.assert_allclose(features, model.embed(paths), atol=1e-4)
    assert "check" not in meta


def test_gallery_search_from_the_exported_model_equals_pytorch(model, exported, tiny_inshop):
    splits = read_inshop(tiny_inshop)
    runner = ExportedEmbedder(exported)
    reference = build_gallery(model, splits.gallery, progress=False)
    expected = reference.search(model.embed(list(splits.query.paths)).numpy(), k=5)
    found = reference.search(runner.embed(list(splits.query.paths)).numpy(), k=5)
    np.testing.assert_array_equal(found.ids, expected.ids)
    np.testing.assert_allclose(found.scores, expected.scores, atol=1e-4)

    exported_gallery = build_gallery(runner, splits.gallery, batch_size=3, progress=False)
    assert exported_gallery.embedder_info == reference.embedder_info
    from_exported = exported_gallery.search(runner.embed(list(splits.query.paths)).numpy(), k=5)
    np.testing.assert_array_equal(from_exported.ids, expected.ids)
    np.testing.assert_array_equal(from_exported.labels, expected.labels)

    query = splits.query.paths[0]
    by_model, by_export = Recognizer(model, reference).recognize(query), Recognizer(runner, reference).recognize(query)
    assert [m.id for m in by_export[0].matches] == [m.id for m in by_model[0].matches]
    assert by_export[0].score == pytest.approx(by_model[0].score, abs=1e-4)


def test_cli_searches_with_the_exported_model_and_builds_only_with_the_pytorch_one(model, exported, tiny_inshop,
                                                                                  tmp_path, capsys):
    splits = read_inshop(tiny_inshop)
    listing = tmp_path / "gallery.txt"
    listing.write_text("".join(f"{path} {splits.gallery.classes[label]}\n"
                               for path, label in zip(splits.gallery.paths, splits.gallery.labels)))
    model_file = model.save(tmp_path / "model.pt")
    build = ["index", "build", "--list", str(listing), "--allow-outside-root", "--quiet", "--checkpoint"]
    assert main([*build, str(model_file), "--output", str(tmp_path / "gallery")]) == 0
    ids = []
    for checkpoint in (model_file, exported):
        capsys.readouterr()
        assert main(["search", "--index", str(tmp_path / "gallery"), "--checkpoint", str(checkpoint), "--json",
                     str(splits.query.paths[0])]) == 0
        ids.append([match["id"] for match in json.loads(capsys.readouterr().out)[0]["regions"][0]["matches"]])
    assert ids[0] == ids[1] and len(ids[0]) == 5
    assert main([*build, str(exported), "--output", str(tmp_path / "other")]) == 1
    assert "is an exported model, but the gallery folder keeps the PyTorch model" in capsys.readouterr().err


def test_a_failed_check_raises_and_writes_nothing(model, tmp_path, monkeypatch):
    opened = ExportedEmbedder._open
    monkeypatch.setattr(ExportedEmbedder, "_open",
                        staticmethod(lambda *args: (lambda batch, run=opened(*args): run(batch) + 1e-3)))
    with pytest.raises(RuntimeError, match=r"differ from PyTorch's by up to 0.001 \(> atol=0.0001\)"):
        export_embedder(model, tmp_path / "e.pt", format="torchscript")
    assert list(tmp_path.iterdir()) == []


def test_a_changed_or_incomplete_export_is_refused(model, tmp_path):
    path = export_embedder(model, tmp_path / "e.pt", format="torchscript", check=False)
    with open(path, "ab") as stream:
        stream.write(b"x")
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        ExportedEmbedder(path)
    path = export_embedder(model, tmp_path / "f.pt", format="torchscript", check=False)
    meta = json.loads(metadata_path(path).read_text())
    metadata_path(path).write_text(json.dumps({key: value for key, value in meta.items() if key != "embedder"}))
    with pytest.raises(ValueError, match=r"lacks the keys \['embedder'\]"):
        ExportedEmbedder(path)
    metadata_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="f.pt.json not found"):
        ExportedEmbedder(path)


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_embedder(model, tmp_path / "e.tflite", format="tflite")
    with pytest.raises(ValueError, match="opset applies to format='onnx' only"):
        export_embedder(model, tmp_path / "e.pt", format="torchscript", opset=17)
    with pytest.raises(ValueError, match="is a folder"):
        export_embedder(model, tmp_path)
    with pytest.raises(ValueError, match="atol must be a positive number"):
        export_embedder(model, tmp_path / "e.onnx", atol=0)
    with pytest.raises(TypeError, match="must be a prodrec Embedder"):
        export_embedder(torch.nn.Linear(2, 2), tmp_path / "e.onnx")


def test_opset_is_honoured(model, tmp_path):
    path = export_embedder(model, tmp_path / "e.onnx", opset=17, check=False)
    assert json.loads(metadata_path(path).read_text())["onnx_opset"] == 17
