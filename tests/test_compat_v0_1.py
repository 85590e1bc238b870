"""Checkpoints, galleries and exports written by prodrec 0.1 load and give the answers 0.1 gave."""
from pathlib import Path

import numpy as np
import pytest

from prodrec import Embedder, GalleryIndex
from prodrec.models import ExportedEmbedder

V0_1 = Path(__file__).parent / "fixtures" / "v0_1"
EXPECTED = np.load(V0_1 / "expected.npz")


def queries():
    return [str(V0_1 / "images" / line.split()[0]) for line in (V0_1 / "query_list.txt").read_text().splitlines()]


def test_a_0_1_training_checkpoint_embeds_as_it_did():
    features = Embedder.load(V0_1 / "last.pt").embed(queries()).numpy()
    np.testing.assert_allclose(features, EXPECTED["features"], atol=1e-5)


@pytest.mark.parametrize("name, key", [("embedder.onnx", "onnx"), ("embedder.ts", "torchscript")])
def test_a_0_1_export_embeds_as_it_did(name, key):
    features = ExportedEmbedder(V0_1 / name).embed(queries()).numpy()
    np.testing.assert_allclose(features, EXPECTED[key], atol=1e-5)


def test_a_0_1_gallery_answers_as_it_did():
    result = GalleryIndex.load(V0_1 / "gallery").search(EXPECTED["features"], k=5)
    np.testing.assert_allclose(result.scores, EXPECTED["scores"], atol=1e-6)
    assert (result.ids == EXPECTED["ids"]).all()  # neighbouring scores are at least 2.6e-5 apart: no ties to allow for
    assert (result.labels.astype(str) == EXPECTED["labels"]).all()
    assert (result.names.astype(str) == EXPECTED["names"]).all()


def test_the_0_1_files_answer_through_the_command_line(capsys):
    from prodrec.cli import main

    assert main(["search", "--index", str(V0_1 / "gallery"), queries()[0], "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert EXPECTED["labels"][0][0] in out
