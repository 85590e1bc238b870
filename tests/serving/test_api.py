"""prodrec serve's HTTP API on a real server (uvicorn on loopback) with a real gallery folder."""
import io
import json
import shutil
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from prodrec.serving import BatchingEmbedder, GalleryService, create_app
from prodrec.utils import LockBusy

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def jpeg(seed: int, size: int = 48) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_bomb() -> bytes:
    """A PNG header claiming 50,000 x 50,000 pixels: over Pillow's decompression-bomb limit."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture
def gallery_copy(shop_gallery, tmp_path):
    folder, model, splits = shop_gallery
    shutil.copytree(folder, tmp_path / "gallery")
    return tmp_path / "gallery", model, splits


@pytest.fixture
def served(gallery_copy, live_server):
    folder, model, splits = gallery_copy
    service = GalleryService(folder, BatchingEmbedder(model, max_batch=8, max_wait_ms=5))
    try:
        with live_server(create_app(service, token=TOKEN, max_upload_bytes=200_000)) as server:
            yield server, service, splits
    finally:
        service.close()


def test_recognize_answers_as_prodrec_search_does(served, gallery_copy, run_cli):
    server, service, splits = served
    folder = gallery_copy[0]
    image = splits.query.paths[0]
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["images"] == len(splits.gallery) and health["products"] == 6
    with open(image, "rb") as file:
        answer = httpx.post(server.url + "/recognize", files={"image": ("q.jpg", file, "image/jpeg")},
                            params={"k": 3})
    assert answer.status_code == 200
    printed = json.loads(run_cli(["search", "--index", folder, image, "--k", "3", "--json"]))
    assert answer.json()["regions"] == printed[0]["regions"]  # one code path
    assert len(answer.json()["regions"][0]["matches"]) == 3
    listing = httpx.get(server.url + "/products", params={"offset": 6, "limit": 5}).json()
    assert listing["total"] == 6 and len(listing["products"]) == 0
    first = httpx.get(server.url + "/products", params={"limit": 2}).json()["products"]
    assert len(first) == 2 and all(product["images"] == 2 for product in first)
    assert httpx.get(server.url + "/").text.startswith("<!doctype html>")
    assert httpx.get(server.url + "/docs").status_code == 200
    thumbnail = httpx.get(server.url + f"/images/{answer.json()['regions'][0]['matches'][0]['id']}/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'prodrec_requests_total{route="/recognize",status="200"} 1.0' in metrics
    assert "prodrec_batch_size_count 1.0" in metrics and f"prodrec_gallery_images {len(splits.gallery)}.0" in metrics


def test_writes_need_the_token_and_change_what_search_finds(served):
    server, service, _ = served
    photos = [("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))]
    files = [("images", photo) for photo in photos]
    assert httpx.post(server.url + "/products", data={"label": "new-sku"}, files=files).status_code == 401
    wrong = httpx.post(server.url + "/products", data={"label": "new-sku"}, files=files,
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong or missing token" in wrong.json()["error"]
    added = httpx.post(server.url + "/products", data={"label": "new-sku", "name": "Oat milk"}, files=files,
                       headers=AUTH)
    assert added.status_code == 201, added.text
    ids = added.json()["ids"]
    found = httpx.post(server.url + "/recognize", files={"image": ("q.jpg", photos[0][1])}).json()
    top = found["regions"][0]
    assert top["label"] == "new-sku" and top["name"] == "Oat milk" and top["matches"][0]["id"] in ids
    assert httpx.get(server.url + f"/images/{ids[0]}/thumbnail").status_code == 200  # kept under uploads/
    assert httpx.delete(server.url + f"/images/{ids[0]}", headers=AUTH).json() == {"removed": 1}
    assert httpx.delete(server.url + "/products/new-sku", headers=AUTH).json() == {"removed": 1}
    missing = httpx.delete(server.url + "/products/new-sku", headers=AUTH)
    assert missing.status_code == 404 and "no product 'new-sku'" in missing.json()["error"]
    assert "new-sku" not in {p["label"] for p in httpx.get(server.url + "/products").json()["products"]}


def test_without_a_token_writes_are_refused_and_say_how(gallery_copy, live_server):
    folder, model, _ = gallery_copy
    service = GalleryService(folder, model)
    try:
        with live_server(create_app(service)) as server:
            refused = httpx.delete(server.url + "/products/x", headers=AUTH)
            assert refused.status_code == 403 and "--token-file" in refused.json()["error"]
    finally:
        service.close()


@pytest.mark.parametrize("upload, status, message", [
    (b"", 400, "the file is empty"),
    (b"just some text\n", 400, "not an image"),
    (jpeg(3)[:-200], 400, "truncated JPEG"),
    (png_bomb(), 400, "too large"),
    (b"\xff" * 300_000, 413, "limited to 200,000"),
])
def test_bad_uploads_are_4xx_with_the_problem_never_500(served, upload, status, message):
    server, _, _ = served
    answer = httpx.post(server.url + "/recognize", files={"image": ("x.jpg", upload)})
    assert answer.status_code == status and message in answer.json()["error"]
    assert httpx.get(server.url + "/health").status_code == 200  # the worker lives on
    added = httpx.post(server.url + "/products", data={"label": "bad"}, files=[("images", ("x.jpg", upload))],
                       headers=AUTH)
    assert added.status_code == status


def test_searches_run_while_products_are_added(served):
    server, _, _ = served
    errors, answers, stop = [], [0], threading.Event()

    def search():
        with httpx.Client(base_url=server.url) as client:
            while not stop.is_set():
                reply = client.post("/recognize", files={"image": ("q.jpg", jpeg(7))})
                if reply.status_code != 200 or not reply.json()["regions"][0]["matches"]:
                    errors.append(reply.text)
                answers[0] += 1

    searchers = [threading.Thread(target=search) for _ in range(3)]
    for thread in searchers:
        thread.start()

    def add(number):
        reply = httpx.post(server.url + "/products", data={"label": f"sku-{number}"},
                           files=[("images", (f"{number}.jpg", jpeg(100 + number)))], headers=AUTH, timeout=60)
        if reply.status_code != 201:
            errors.append(reply.text)

    writers = [threading.Thread(target=add, args=(number,)) for number in range(6)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in searchers:
        thread.join()
    assert not errors and answers[0] > 0
    labels = {p["label"] for p in httpx.get(server.url + "/products").json()["products"]}
    assert {f"sku-{n}" for n in range(6)} <= labels


def test_one_server_per_gallery_and_only_with_its_model(gallery_copy):
    from prodrec.models import Embedder

    folder, model, _ = gallery_copy
    first = GalleryService(folder, model)
    try:
        with pytest.raises(LockBusy, match="another prodrec serve .* serves the gallery"):
            GalleryService(folder, model)
    finally:
        first.close()
    other = Embedder("test_resnet", embedding_size=16, image_size=32)
    with pytest.raises(ValueError, match="built with another model"):
        GalleryService(folder, other)
    GalleryService(folder, model).close()  # the refused one released the server lock


def test_an_acknowledged_add_survives_kill_9_of_the_server(gallery_copy, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    folder, _, _ = gallery_copy
    (tmp_path / "token").write_text(TOKEN + "\n")

    def start():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        process = subprocess.Popen([sys.executable, "-m", "prodrec", "serve", "--index", str(folder), "--port",
                                    str(port), "--token-file", str(tmp_path / "token")], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    return process, url
            except httpx.TransportError:
                time.sleep(0.1)
        process.kill()
        raise RuntimeError(f"the server did not start: {process.communicate()[1][-2000:]}")

    process, url = start()
    added = httpx.post(url + "/products", data={"label": "kept"}, files=[("images", ("k.jpg", jpeg(9)))],
                       headers=AUTH, timeout=60)
    os.kill(process.pid, signal.SIGKILL)  # right after the acknowledgement
    process.wait()
    assert added.status_code == 201
    process, url = start()  # the server lock of the killed one is gone with it
    try:
        labels = {p["label"] for p in httpx.get(url + "/products").json()["products"]}
        assert "kept" in labels
        found = httpx.post(url + "/recognize", files={"image": ("k.jpg", jpeg(9))}).json()["regions"][0]
        assert found["label"] == "kept" and found["matches"][0]["id"] == added.json()["ids"][0]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_read_only_servers_share_the_gallery_and_follow_its_writes(gallery_copy, live_server):
    folder, model, _ = gallery_copy
    writer = GalleryService(folder, model)
    reader = GalleryService(folder, model, read_only=True)
    try:
        with live_server(create_app(reader, token=TOKEN)) as server:
            refused = httpx.delete(server.url + "/products/x", headers=AUTH)
            assert refused.status_code == 403 and "read-only" in refused.json()["error"]
            writer.add_product("from-the-writer", [("w.jpg", jpeg(11))])
            labels = {p["label"] for p in httpx.get(server.url + "/products").json()["products"]}
            assert "from-the-writer" in labels  # the reader reloaded the new generation
    finally:
        reader.close()
        writer.close()


def test_recognize_uses_the_gallery_s_calibrated_threshold(served, gallery_copy):
    from prodrec.gallery import GalleryIndex

    server, service, splits = served
    assert httpx.get(server.url + "/health").json()["threshold"] == 0.5

    def recognize(**params):
        answer = httpx.post(server.url + "/recognize", files={"image": ("q.jpg", jpeg(7), "image/jpeg")}, params=params)
        return answer.json()["regions"][0]

    score = recognize()["score"]
    with GalleryIndex.update(gallery_copy[0]) as gallery:  # as prodrec index calibrate stores one
        from prodrec.gallery import calibrate_gallery

        calibration = calibrate_gallery(gallery, far=0.5, unknown_features=np.eye(16)[:4])
        gallery.calibration = type(calibration)(**{**calibration.to_json(), "threshold": score + 1e-3})
    health = httpx.get(server.url + "/health").json()
    assert health["threshold"] == pytest.approx(score + 1e-3) and health["calibrated"]
    assert not recognize()["accepted"]  # the stored threshold is the default now
    assert recognize(threshold=score - 1e-3)["accepted"]  # the request's own wins


def test_a_service_with_a_detector_answers_one_region_per_product(gallery_copy, live_server):
    from prodrec.models import Detections

    class TwoBoxes:
        def detect(self, images):
            return [Detections(np.array([[0, 0, 20, 20], [24, 24, 48, 48]], np.float32), np.array([0.9, 0.8], np.float32))
                    for _ in images]

    folder, model, splits = gallery_copy
    service = GalleryService(folder, BatchingEmbedder(model, max_batch=8, max_wait_ms=5), detector=TwoBoxes())
    try:
        with live_server(create_app(service, token=TOKEN)) as server:
            answer = httpx.post(server.url + "/recognize", files={"image": ("q.jpg", jpeg(3), "image/jpeg")})
        boxes = [region["box"] for region in answer.json()["regions"]]
        assert answer.status_code == 200 and boxes == [[0, 0, 20, 20], [24, 24, 48, 48], [0, 0, 48, 48]]
    finally:
        service.close()
