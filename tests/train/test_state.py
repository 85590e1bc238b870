import random

import numpy as np
import pytest
import torch

from prodrec.config import load_config
from prodrec.data import ImageList
from prodrec.train import check_data_order, data_order, rng_state, set_rng_state


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_survives_a_weights_only_round_trip(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"rng": rng_state()}, tmp_path / "state.pt")
    expected = _draws()
    _draws()
    set_rng_state(torch.load(tmp_path / "state.pt", weights_only=True)["rng"])
    assert _draws() == expected


def _listing(folder):
    return ImageList.from_names([f"{folder}/a/1.jpg", f"{folder}/b/2.jpg"], ["a", "b"])


def test_data_order_follows_settings_and_images_not_the_data_folder(tmp_path):
    config = load_config()
    order = data_order(config, _listing("/data/v1"))
    assert data_order(config, _listing("/mnt/copy/v1")) == order
    assert order["training images"].startswith("2 (sha256 ")
    assert data_order(config, ImageList.from_names(["/data/v1/a/1.jpg", "/data/v1/b/3.jpg"], ["a", "b"])) != order
    check_data_order(order, order, tmp_path / "last.pt")
    other = data_order(load_config(overrides=["DataLoader.batch_size=32", "Global.seed=5"]), _listing("/data/v1"))
    with pytest.raises(ValueError, match=r"cannot resume from .*last.pt: it was written for other batches \("
                                         r"Global.seed: 0 in the checkpoint, 5 now; DataLoader.batch_size: 64 in the "
                                         r"checkpoint, 32 now\)"):
        check_data_order(order, other, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="Global.seed: not recorded in the checkpoint"):
        check_data_order(None, order, tmp_path / "last.pt")
