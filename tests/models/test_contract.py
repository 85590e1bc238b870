"""Every implementation of the embedding contract passes the same checks (as timm's tests run every model)."""
import numpy as np
import pytest
import torch
from PIL import Image

from prodrec.data import ImageList
from prodrec.models import Embedder, ExportedEmbedder, ImageEmbedder, export_embedder
from prodrec.retrieval import extract_embeddings
from prodrec.utils import ProdrecError, ProdrecTypeError

SIZE = 32


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return Embedder("test_resnet", embedding_size=16, image_size=SIZE).eval()


@pytest.fixture(scope="module", params=["pytorch", "onnx", "torchscript"])
def embedder(request, source, tmp_path_factory):
    if request.param == "pytorch":
        return source
    path = tmp_path_factory.mktemp(request.param) / ("model.onnx" if request.param == "onnx" else "model.pt")
    return ExportedEmbedder(export_embedder(source, path, format=request.param))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three photos of other sizes, as a path, a PIL image and an HWC uint8 array."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (40 + 8 * i, 50, 3), dtype=np.uint8) for i in range(3)]
    path = tmp_path_factory.mktemp("images") / "first.png"
    Image.fromarray(arrays[0]).save(path)
    return [str(path), Image.fromarray(arrays[1]), arrays[2]], arrays


def test_it_is_an_image_embedder_that_says_what_made_its_features(embedder, source):
    assert isinstance(embedder, ImageEmbedder)
    assert embedder.embedding_size == 16 and embedder.image_size == SIZE
    assert embedder.preprocessing == {"image_size": SIZE, "mean": list(source.mean), "std": list(source.std),
                                      "color": "RGB"}
    assert embedder.embedder_info == source.embedder_info  # an export stands for its source model


def test_any_image_form_gives_unit_float32_rows_on_the_cpu(embedder, images):
    inputs, arrays = images
    features = embedder.embed(inputs)
    assert features.dtype == torch.float32 and features.device.type == "cpu" and features.shape == (3, 16)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(embedder.embed(arrays), features)  # the same pixels, whatever the form


def test_batching_and_tensor_input_do_not_change_the_features(embedder, images):
    inputs, _ = images
    whole = embedder.embed(inputs, batch_size=3)
    torch.testing.assert_close(embedder.embed(inputs, batch_size=1), whole, atol=1e-5, rtol=0)
    batch = torch.cat(list(embedder.batches(inputs, 2)))
    assert batch.shape == (3, 3, SIZE, SIZE)
    torch.testing.assert_close(embedder.embed(batch), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(embedder.embed(batch[0]), whole[:1], atol=1e-5, rtol=0)
    assert embedder.embed([]).shape == (0, 16)


def test_the_evaluator_embeds_a_listing_as_embed_does(embedder, images, tmp_path):
    _, arrays = images
    paths = []
    for number, array in enumerate(arrays):
        paths.append(str(tmp_path / f"{number}.png"))
        Image.fromarray(array).save(paths[-1])
    listing = ImageList(paths, [0, 1, 1], ("a", "b"))
    features = extract_embeddings(embedder, listing, batch_size=2, progress=False)
    np.testing.assert_allclose(features, embedder.embed(paths).numpy(), atol=1e-5)


def test_bad_input_is_refused_with_the_fix(embedder, images):
    inputs, _ = images
    with pytest.raises(ProdrecTypeError, match="wrap a single image in a list"):
        embedder.embed(inputs[0])
    with pytest.raises(ProdrecError, match=r"expected a \[N, 3, "):
        embedder.embed(torch.zeros(2, 1, SIZE, SIZE))
    with pytest.raises(ProdrecError, match="batch_size must be a positive integer"):
        embedder.embed(inputs, batch_size=0)
