import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def shop_gallery(tmp_path_factory):
    """A gallery folder (12 products of the tiny In-shop set) built with a small model, and the model."""
    import torch

    from prodrec.cli.gallery import MODEL_FILE
    from prodrec.data import make_synthetic_inshop, read_inshop
    from prodrec.gallery import build_gallery
    from prodrec.models import Embedder

    folder = tmp_path_factory.mktemp("serving")
    root = make_synthetic_inshop(folder / "data", items=12, views=4, image_size=48, progress=False).root
    splits = read_inshop(root)
    torch.manual_seed(0)
    model = Embedder("test_resnet", embedding_size=16, image_size=32).eval()
    gallery = build_gallery(model, splits.gallery, progress=False)
    gallery.save(folder / "gallery")
    model.save(folder / "gallery" / MODEL_FILE)
    return folder / "gallery", model, splits


class LiveServer:
    """A real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def live_server():
    return LiveServer
