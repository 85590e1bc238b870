"""The Milvus backend's own promises: durable acknowledged adds, index types, and failures that name the fix."""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from prodrec.gallery import (MILVUS_INDEX_TYPES, MilvusGallery, create_milvus_gallery, open_gallery,
                             record_milvus_gallery)

if not all(importlib.util.find_spec(name) for name in ("pymilvus", "milvus_lite")):
    if os.environ.get("CI"):
        raise ImportError("CI installs the milvus extra: pymilvus and milvus-lite are missing")
    pytest.skip("the milvus extra is not installed", allow_module_level=True)


def unit(rows, dim, seed):
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return str(tmp_path_factory.mktemp("milvus") / "g.db")


def holder(code: str) -> subprocess.Popen:
    """Another process that runs ``code``, prints 'ready' and waits to be killed."""
    script = "import time, numpy as np\nfrom prodrec.gallery import MilvusGallery\n" + textwrap.dedent(code) + \
        "\nprint('ready', flush=True)\ntime.sleep(120)\n"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not process.stdout.readline().startswith("ready"):
        process.kill()
        raise AssertionError(process.communicate()[1][-2000:])
    return process


def test_an_acknowledged_add_survives_kill_9(tmp_path):
    uri = str(tmp_path / "durable.db")
    process = holder(f"""
        gallery = MilvusGallery.create({uri!r}, "durable", dim=4)
        gallery.add(np.eye(4, dtype=np.float32)[[0, 1, 2]], ["kept-a", "kept-b", "kept-c"])
    """)
    os.kill(process.pid, signal.SIGKILL)  # right after the acknowledgement
    process.wait()
    gallery = MilvusGallery(uri, "durable")
    assert len(gallery) == 3 and gallery.labels.tolist() == ["kept-a", "kept-b", "kept-c"]
    assert gallery.search(np.eye(4, dtype=np.float32)[[1]], k=1).labels[0, 0] == "kept-b"


@pytest.mark.parametrize("index_type", sorted(MILVUS_INDEX_TYPES))
def test_every_offered_index_type_builds_and_finds_each_image(home, index_type):
    gallery = MilvusGallery.create(home, f"t_{index_type.lower()}", dim=16, index_type=index_type.lower())
    x = unit(300, 16, 0)
    gallery.add(x, [f"p{i}" for i in range(300)])
    found = gallery.search(x[:50], k=1)
    assert gallery.index_type == index_type
    assert np.mean(found.labels[:, 0] == np.array([f"p{i}" for i in range(50)], dtype=object)) >= 0.9


def test_an_index_type_milvus_lite_cannot_build_is_refused_naming_the_ones_it_can(home):
    with pytest.raises(ValueError, match="Milvus Lite accepts index type IVF_PQ but cannot build it.*FLAT"):
        MilvusGallery.create(home, "pq", dim=8, index_type="IVF_PQ")
    with pytest.raises(ValueError, match="unknown Milvus index type 'Flat2'"):
        MilvusGallery.create(home, "odd", dim=8, index_type="Flat2")


def test_a_second_process_on_a_lite_folder_is_told_to_run_a_server(tmp_path):
    uri = str(tmp_path / "locked.db")
    process = holder(f"MilvusGallery.create({uri!r}, 'c', dim=4)")
    try:
        with pytest.raises(ValueError, match="another process has it open.*milvus-lite server --data-dir"):
            MilvusGallery(uri, "c")
    finally:
        process.kill()
        process.wait()


def test_an_unreachable_server_a_missing_collection_and_a_foreign_one_say_what_to_do(home, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ValueError, match=f"cannot reach the Milvus server at http://127.0.0.1:{port}.*--uri"):
        MilvusGallery(f"http://127.0.0.1:{port}", "c")
    gallery = create_milvus_gallery(tmp_path, dim=4, uri=home, collection="dropped")
    record_milvus_gallery(tmp_path, gallery)
    gallery._client.drop_collection("dropped")
    with pytest.raises(ValueError, match="collection 'dropped' does not exist.*--force"):
        open_gallery(tmp_path)
    from pymilvus import MilvusClient
    MilvusClient(home).create_collection("foreign", dimension=4)
    with pytest.raises(ValueError, match="not made by prodrec"):
        MilvusGallery(home, "foreign")
    with pytest.raises(ValueError, match="already exists.*--force"):
        MilvusGallery.create(home, "foreign", dim=4)
    with pytest.raises(ValueError, match="collection name is letters"):
        MilvusGallery.create(home, "no-dashes", dim=4)
    with pytest.raises(ValueError, match="a Milvus URI is"):
        MilvusGallery.create(str(tmp_path / "gallery.sqlite"), "c", dim=4)
    (tmp_path / "backend.json").write_text(json.dumps({"backend": "milvus", "uri": home}))
    with pytest.raises(ValueError, match="must name the backend, URI and collection"):
        open_gallery(tmp_path)


def test_long_labels_and_rerank_are_refused_with_the_reason(home):
    gallery = MilvusGallery.create(home, "limits", dim=4)
    with pytest.raises(ValueError, match="labels of up to 512 bytes"):
        gallery.add(unit(1, 4, 0), ["x" * 600])
    with pytest.raises(ValueError, match="re-ranking .* faiss galleries"):
        gallery.search(unit(1, 4, 0), k=1, rerank="qe")
    assert len(gallery) == 0


def test_credentials_come_from_the_environment_or_a_file_never_the_folder(monkeypatch, tmp_path):
    from prodrec.gallery.milvus_client import milvus_token

    monkeypatch.delenv("PRODREC_MILVUS_TOKEN", raising=False)
    monkeypatch.delenv("PRODREC_MILVUS_TOKEN_FILE", raising=False)
    assert milvus_token() == ""
    (tmp_path / "token").write_text("root:Milvus\n")
    monkeypatch.setenv("PRODREC_MILVUS_TOKEN_FILE", str(tmp_path / "token"))
    assert milvus_token() == "root:Milvus"
    monkeypatch.setenv("PRODREC_MILVUS_TOKEN", "api-key")
    assert milvus_token() == "api-key"
    monkeypatch.delenv("PRODREC_MILVUS_TOKEN")
    monkeypatch.setenv("PRODREC_MILVUS_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read the Milvus token file"):
        milvus_token()
