import os
import socket
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO.parent / "shared" / "reference" / "paddleclas"
LAUNCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
"""The variables torchrun sets; tests of single processes remove them."""


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
    from prodrec.data import make_synthetic_inshop

    return make_synthetic_inshop(tmp_path_factory.mktemp("tiny_inshop"), items=12, views=4, image_size=48,
                                 progress=False).root


@pytest.fixture
def no_launch(monkeypatch):
    """An environment without torchrun's variables: a plain single process."""
    for key in LAUNCH_KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def torchrun_env():
    """The environment for launching ``torchrun``: no launch variables of our own, this checkout importable."""
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_KEYS}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="session")
def spawn_ranks():
    """``spawn_ranks(worker, folder, world)``: run ``worker(rank, port, folder)`` in ``world`` spawned processes
    (a free loopback port for gloo) and load what each saved as ``folder/rank{r}.pt``."""
    import torch
    import torch.multiprocessing as mp

    def spawn(worker, folder, world):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        mp.start_processes(worker, args=(port, folder), nprocs=world, join=True, start_method="spawn")
        return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(world)]

    return spawn


@pytest.fixture
def run_cli(capsys):
    """``run_cli(argv)``: run a ``prodrec`` command's handler in this process (its exceptions propagate),
    check that it returns 0, and give its stdout."""
    from prodrec.cli import build_parser

    def run(argv):
        args = build_parser().parse_args([str(a) for a in argv])
        assert args.handler(args) == 0
        return capsys.readouterr().out

    return run
