"""Fixtures of the command tests."""
import os
import shutil

import pytest
import torch

from prodrec.data import make_synthetic_inshop, read_inshop
from prodrec.models import Embedder


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A tiny In-shop set (6 items x 3 views, 32 px), a gallery list of it, its queries as <label>/<image>
    folders, and a small saved model: ``(root, model path, splits)``."""
    folder = tmp_path_factory.mktemp("cli")
    root = make_synthetic_inshop(folder / "data", items=6, views=3, image_size=32, progress=False).root
    torch.manual_seed(0)
    model_path = Embedder("resnet18d", embedding_size=16, image_size=32).save(folder / "model.pt")
    splits = read_inshop(root)
    lines = [f"{os.path.relpath(path, root)} {splits.gallery.classes[label]} Product {label}"
             for path, label in zip(splits.gallery.paths, splits.gallery.labels)]
    (root / "gallery.txt").write_text("\n".join(lines) + "\n")
    for number, (path, label) in enumerate(zip(splits.query.paths, splits.query.labels)):
        (folder / "queries" / splits.query.classes[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / "queries" / splits.query.classes[label] / f"{number}.jpg")
    return root, model_path, splits
