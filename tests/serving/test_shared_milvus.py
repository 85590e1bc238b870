"""Two prodrec serve processes on one Milvus server (milvus-lite's own server on loopback) share the gallery:
each sees the other's adds and removes at once."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from test_api import AUTH, TOKEN, jpeg

if not all(importlib.util.find_spec(name) for name in ("pymilvus", "milvus_lite")):
    if os.environ.get("CI"):
        raise ImportError("CI installs the milvus extra: pymilvus and milvus-lite are missing")
    pytest.skip("the milvus extra is not installed", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(process: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if ready():
                return
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} did not start: {process.communicate()[1][-2000:]}")


@pytest.fixture
def milvus_server(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "server.db"),
                                "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for(process, lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, "milvus-lite server")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=30)


def serve(folder, tmp_path) -> tuple:
    port = free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    process = subprocess.Popen([sys.executable, "-m", "prodrec", "serve", "--index", str(folder), "--port", str(port),
                                "--token-file", str(tmp_path / "token")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(process, lambda: httpx.get(url + "/health").status_code == 200, "prodrec serve")
    return process, url


def labels_of(url: str) -> set:
    return {product["label"] for product in httpx.get(url + "/products", params={"limit": 1000}).json()["products"]}


def test_two_servers_on_one_milvus_see_each_other_s_adds_and_removes(shop_gallery, milvus_server, tmp_path, run_cli):
    folder, _, splits = shop_gallery
    shared = tmp_path / "shared"
    run_cli(["index", "migrate", folder, "--to", "milvus", "--uri", milvus_server, "--collection", "shop",
             "--output", shared, "--quiet"])
    first, second = serve(shared, tmp_path), serve(shared, tmp_path)
    try:
        (_, a), (_, b) = first, second
        assert httpx.get(a + "/health").json()["backend"] == "milvus"
        added = httpx.post(a + "/products", data={"label": "shared-new"}, files=[("images", ("n.jpg", jpeg(9)))],
                           headers=AUTH, timeout=60)
        assert added.status_code == 201
        assert "shared-new" in labels_of(b)
        found = httpx.post(b + "/recognize", files={"image": ("n.jpg", jpeg(9))}, timeout=60).json()["regions"][0]
        assert found["label"] == "shared-new" and found["matches"][0]["id"] == added.json()["ids"][0]

        other = splits.gallery.classes[splits.gallery.labels[0]]
        only = httpx.post(a + "/recognize", params={"filter": f'label == "{other}"'},
                          files={"image": ("n.jpg", jpeg(9))}, timeout=60).json()["regions"][0]
        assert {match["label"] for match in only["matches"]} == {other}
        bad = httpx.post(a + "/recognize", params={"filter": 'shop == "x"'}, files={"image": ("n.jpg", jpeg(9))})
        assert bad.status_code == 400 and "unknown field 'shop'" in bad.json()["error"]

        assert httpx.delete(b + "/products/shared-new", headers=AUTH, timeout=60).status_code == 200
        assert "shared-new" not in labels_of(a)
        again = httpx.post(a + "/recognize", files={"image": ("n.jpg", jpeg(9))}, timeout=60).json()["regions"][0]
        assert all(match["label"] != "shared-new" for match in again["matches"])
    finally:
        for process, _ in (first, second):
            process.terminate()
            process.wait(timeout=30)


def test_the_service_answers_changes_and_calibration_on_a_milvus_lite_gallery(shop_gallery, tmp_path, live_server,
                                                                              run_cli):
    from prodrec.serving import BatchingEmbedder, GalleryService, create_app

    folder, model, splits = shop_gallery
    lite = tmp_path / "lite"
    run_cli(["index", "migrate", folder, "--to", "milvus", "--output", lite, "--quiet"])
    service = GalleryService(lite, BatchingEmbedder(model, max_batch=8, max_wait_ms=5))
    try:
        with live_server(create_app(service, token=TOKEN)) as server:
            health = httpx.get(server.url + "/health").json()
            assert health["backend"] == "milvus" and health["images"] == len(splits.gallery)
            added = httpx.post(server.url + "/products", data={"label": "lite-new", "name": "Lite"},
                               files=[("images", ("n.jpg", jpeg(9)))], headers=AUTH, timeout=60)
            assert added.status_code == 201
            found = httpx.post(server.url + "/recognize", files={"image": ("n.jpg", jpeg(9))}).json()["regions"][0]
            assert found["label"] == "lite-new" and found["name"] == "Lite"
            assert httpx.get(server.url + f"/images/{added.json()['ids'][0]}/thumbnail").status_code == 200
            assert not httpx.get(server.url + "/health").json()["calibrated"]
            stored = json.loads(run_cli(["index", "calibrate", "--index", lite, "--far", "0.5", "--json"]))
            health = httpx.get(server.url + "/health").json()  # another writer's calibration reaches the service
            assert health["calibrated"] and health["threshold"] == stored["threshold"]
            assert httpx.delete(server.url + f"/images/{added.json()['ids'][0]}", headers=AUTH).status_code == 200
            assert "lite-new" not in labels_of(server.url)
    finally:
        service.close()
