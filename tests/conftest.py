import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "reference" / "paddleclas"


def load_reference(name: str):
    path = REFERENCE_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} not found (the PaddleClas reference vectors live only in the prodrec dev workspace)")
    return np.load(path)


@pytest.fixture(scope="session")
def components():
    return load_reference("components.npz")


@pytest.fixture(scope="session")
def retrieval_reference():
    return load_reference("retrieval.npz")


@pytest.fixture(scope="session")
def tiny_inshop(tmp_path_factory):
    """A tiny synthetic product set in the In-shop layout (12 items x 4 views, 48 px)."""
    from prodrec.data.synthetic import make_synthetic_inshop

    return make_synthetic_inshop(tmp_path_factory.mktemp("tiny_inshop"), items=12, views=4, image_size=48,
                                 progress=False).root
