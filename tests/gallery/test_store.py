import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("faiss")

from prodrec.gallery import GalleryIndex  # noqa: E402

LOAD_AND_SEARCH = """
import sys, numpy as np
from prodrec.gallery import GalleryIndex
gallery = GalleryIndex.load(sys.argv[1])
result = gallery.search(np.load(sys.argv[2]), k=6)
np.savez(sys.argv[3], scores=result.scores, ids=result.ids, labels=result.labels.astype(str),
         names=np.array([n or "" for n in result.names.ravel()]), nprobe=gallery.nprobe or 0,
         ef_search=gallery.ef_search or 0, count=len(gallery), paths=gallery.paths.astype(str))
"""


def make_gallery(index_type="Flat", keep_features=True):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((300, 16))
    gallery = GalleryIndex(16, index_type=index_type, keep_features=keep_features)
    if not gallery.is_trained:
        gallery.train(features)
    labels = [f"sku-{i % 30}" for i in range(300)]
    names = [f"Product {i % 30} (500 ml)" if i % 2 else None for i in range(300)]
    paths = [f"/photos/{i}.jpg" for i in range(300)]
    ids = gallery.add(features, labels, names=names, paths=paths)
    gallery.remove(ids=ids[:20], rebuild=index_type.startswith("HNSW"))
    gallery.embedder_info = {"backbone": "resnet18d", "embedding_size": 16}
    return gallery, rng.standard_normal((40, 16)).astype(np.float32)


@pytest.mark.parametrize("index_type, knob", [("Flat", None), ("HNSW32", "ef_search"), ("IVF8,PQ4", "nprobe")])
def test_save_then_load_in_a_new_process_searches_the_same(tmp_path, index_type, knob):
    gallery, queries = make_gallery(index_type)
    if knob:
        setattr(gallery, knob, 5)
    gallery.save(tmp_path / "gallery")
    assert sorted(p.name for p in (tmp_path / "gallery").iterdir()) == ["CURRENT", "gen-000001", "write.lock"]
    assert sorted(p.name for p in (tmp_path / "gallery" / "gen-000001").iterdir()) == [
        "index.faiss", "meta.json", "meta.npz"]
    np.save(tmp_path / "queries.npy", queries)
    subprocess.run([sys.executable, "-c", LOAD_AND_SEARCH, str(tmp_path / "gallery"), str(tmp_path / "queries.npy"),
                    str(tmp_path / "out.npz")], check=True)
    expected = gallery.search(queries, k=6)
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_array_equal(got["ids"], expected.ids)
        np.testing.assert_array_equal(got["scores"], expected.scores)
        np.testing.assert_array_equal(got["labels"], expected.labels.astype(str))
        assert got["names"].tolist() == [n or "" for n in expected.names.ravel()]
        assert int(got["count"]) == 280 and got["paths"][0] == "/photos/20.jpg"
        if knob:
            assert int(got[knob]) == 5
    loaded = GalleryIndex.load(tmp_path / "gallery")
    assert loaded.embedder_info == gallery.embedder_info
    np.testing.assert_array_equal(loaded.features, gallery.features)
    assert loaded.add(queries[:1], ["new"]).tolist() == [300]  # the id counter survives


def test_gallery_without_features_round_trips(tmp_path):
    gallery, queries = make_gallery(keep_features=False)
    loaded = GalleryIndex.load(gallery.save(tmp_path / "g"))
    assert loaded.features is None and not loaded.keep_features
    np.testing.assert_array_equal(loaded.search(queries).ids, gallery.search(queries).ids)


def test_empty_gallery_round_trips(tmp_path):
    loaded = GalleryIndex.load(GalleryIndex(8).save(tmp_path / "g"))
    assert len(loaded) == 0 and loaded.search(np.ones((1, 8))).ids.tolist() == [[-1] * 5]


def test_truncated_index_file_is_refused(tmp_path):
    folder = make_gallery()[0].save(tmp_path / "g") / "gen-000001"
    data = (folder / "index.faiss").read_bytes()
    (folder / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"index\.faiss is damaged or was changed after saving"):
        GalleryIndex.load(folder)


def test_tampered_metadata_is_refused(tmp_path):
    gallery, _ = make_gallery()
    folder = gallery.save(tmp_path / "g") / "gen-000001"
    with np.load(folder / "meta.npz") as stored:
        arrays = dict(stored)
    arrays["labels"] = np.roll(arrays["labels"], 1)
    with open(folder / "meta.npz", "wb") as stream:
        np.savez(stream, **arrays)
    with pytest.raises(ValueError, match=r"meta\.npz is damaged or was changed after saving"):
        GalleryIndex.load(folder)


def test_metadata_that_disagrees_with_the_files_is_refused(tmp_path):
    folder = make_gallery()[0].save(tmp_path / "g") / "gen-000001"
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "count": 281}))
    with pytest.raises(ValueError, match="holds 280 vectors of dimension 16.*says 281"):
        GalleryIndex.load(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "index_type": "HNSW32"}))
    with pytest.raises(ValueError, match=r"in an IndexIDMap2 over IndexFlatIP .*in a HNSW32 \(IndexIDMap2 over IndexHNSWFlat"):
        GalleryIndex.load(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "metric": "l2"}))
    with pytest.raises(ValueError, match="inconsistent"):
        GalleryIndex.load(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(ValueError, match="version 2 is newer"):
        GalleryIndex.load(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "format": "other"}))
    with pytest.raises(ValueError, match="not a prodrec gallery file"):
        GalleryIndex.load(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "dim": "16", "metric": 3}))
    with pytest.raises(ValueError, match="'dim' must be int; 'metric' must be str"):
        GalleryIndex.load(folder)
    (folder / "meta.json").write_text("{")
    with pytest.raises(ValueError, match="meta.json is not valid JSON"):
        GalleryIndex.load(folder)
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / "index.faiss").unlink()
    with pytest.raises(FileNotFoundError, match=r"index\.faiss not found"):
        GalleryIndex.load(folder)
    with pytest.raises(FileNotFoundError, match="is not a saved gallery"):
        GalleryIndex.load(tmp_path / "nothing")


def test_saving_again_replaces_the_files(tmp_path):
    gallery, queries = make_gallery()
    folder = gallery.save(tmp_path / "g")
    gallery.remove(label="sku-25")
    gallery.save(folder)
    gallery.save(folder)
    # the current generation and the previous one; no temporaries
    assert sorted(p.name for p in folder.iterdir()) == ["CURRENT", "gen-000002", "gen-000003", "write.lock"]
    assert (folder / "CURRENT").read_text() == "gen-000003\n" and gallery.generation == "gen-000003"
    assert GalleryIndex.load(folder).generation == "gen-000003" and GalleryIndex(4).generation is None
    assert sorted(p.name for p in (folder / "gen-000003").iterdir()) == ["index.faiss", "meta.json", "meta.npz"]
    loaded = GalleryIndex.load(folder)
    assert "sku-25" not in set(loaded.labels) and len(loaded) == len(gallery)
