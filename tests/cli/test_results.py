import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from prodrec.data import read_inshop
from prodrec.retrieval import evaluate
from prodrec.models import Embedder
from prodrec.cli.results import CATEGORY_FILE
from prodrec.retrieval import GridLayout

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning",
                                        "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return Embedder("resnet18d", embedding_size=16, image_size=32).save(tmp_path_factory.mktemp("cli") / "model.pt")


def test_export_torchscript_and_onnx(checkpoint, tmp_path, run_cli):
    out = run_cli(["export", "--checkpoint", checkpoint, "--format", "torchscript", tmp_path / "e.pt"])
    assert out.startswith(f"wrote {tmp_path / 'e.pt'} (torchscript, input [batch, 3, 32, 32] -> [batch, 16]) and "
                          f"{tmp_path / 'e.pt.json'}\nmax abs difference to PyTorch ")
    assert out.endswith(" on batches of 2 and 3 (atol 0.0001)\n")
    pytest.importorskip("onnxruntime")
    out = run_cli(["export", "--checkpoint", checkpoint, tmp_path / "e.onnx", "--opset", "17", "--no-check"])
    assert out == f"wrote {tmp_path / 'e.onnx'} (onnx, opset 17, input [batch, 3, 32, 32] -> [batch, 16]) and " \
                  f"{tmp_path / 'e.onnx.json'}\n"
    with pytest.raises(ValueError, match="opset applies to format='onnx' only"):
        run_cli(["export", "--checkpoint", checkpoint, "--format", "torchscript", "--opset", "17", tmp_path / "x.pt"])


def test_visualize_draws_the_worst_queries_and_the_category_table(checkpoint, tiny_inshop, tmp_path,
                                                                    run_cli):
    splits = read_inshop(tiny_inshop)
    out = run_cli(["visualize", "--checkpoint", checkpoint, "--data-root", tiny_inshop, "--output", tmp_path,
               "--k", "3", "--queries", "5", "--per-page", "2", "--image-size", "40", "--quiet"])
    pages = sorted(tmp_path.glob("results_*.png"))
    assert [p.name for p in pages] == ["results_001.png", "results_002.png", "results_003.png"]
    layout = GridLayout.for_default_font(3, 40)
    assert [Image.open(p).size for p in pages] == [layout.page_size(2)] * 2 + [layout.page_size(1)]
    assert out.startswith(f"drew the 5 worst of {len(splits.query)} queries into 3 pages: ")

    rows = json.loads((tmp_path / f"{CATEGORY_FILE}.json").read_text())
    table = (tmp_path / f"{CATEGORY_FILE}.md").read_text()
    assert table in out and rows[-1]["category"] is None and rows[-1]["queries"] == len(splits.query)
    assert {row["category"].split("/")[0] for row in rows[:-1]} <= {"FOOD", "HOME"}
    assert sum(row["hits"] for row in rows[:-1]) == rows[-1]["hits"]
    expected = evaluate(Embedder.load(checkpoint), splits.query, splits.gallery, ks=[1], compute_map=False,
                        progress=False)
    assert rows[-1]["recall@1"] == pytest.approx(expected["recall@1"])
    assert f"| **all** | {len(splits.query)} |" in table and np.isfinite(rows[-1]["recall@1"])


def test_visualize_rejects_bad_counts_before_embedding(checkpoint, tmp_path, run_cli):
    with pytest.raises(ValueError, match="--per-page must be at least 1, got 0"):
        run_cli(["visualize", "--checkpoint", checkpoint, "--data-root", tmp_path / "none", "--output", tmp_path,
             "--per-page", "0"])


def test_visualize_without_categories_draws_only(checkpoint, tiny_inshop, tmp_path, run_cli):
    splits = read_inshop(tiny_inshop)
    for split in ("train", "query", "gallery"):
        listing = getattr(splits, split)
        for number, (path, label) in enumerate(zip(listing.paths[:6], listing.labels[:6])):
            folder = tmp_path / "data" / split / listing.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, folder / f"{number}.jpg")
    out = run_cli(["visualize", "--checkpoint", checkpoint, "--data-root", tmp_path / "data", "--dataset", "folder",
               "--output", tmp_path / "out", "--k", "2", "--quiet"])
    assert out.endswith("no per-category table: the query paths are not In-shop's img/GENDER/Category/id/file\n")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["results_001.png"]
