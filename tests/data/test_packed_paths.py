import os
import pickle
import random

import numpy as np
import pytest

from prodrec.data import packed_paths
from prodrec.data.packed_paths import PackedPaths, PathPacker


def _paths(count, seed=0):
    """Absolute paths under a few folders, some non-ASCII, one with os.fsdecode's escape, a lone surrogate."""
    rng = random.Random(seed)
    paths = [f"/data/{rng.choice(['train', 'val'])}/{rng.randrange(30):05d}/{rng.getrandbits(40):010x}"
             f"{rng.choice(['', '', 'é', ' 名'])}.jpg" for _ in range(count)]
    return paths + [os.fsdecode(b"/data/\xff.jpg"), "\ud800", "relative.jpg", ""]


@pytest.fixture(params=[3, 1 << 16], ids=["block3", "block64k"])
def block(request, monkeypatch):
    monkeypatch.setattr(packed_paths, "_BLOCK", request.param)
    return request.param


def test_a_packed_sequence_reads_back_the_paths_it_was_given(block):
    paths = _paths(200)
    packed = PackedPaths(iter(paths))
    assert len(packed) == len(paths) and list(packed) == paths and [packed[i] for i in range(len(paths))] == paths
    assert all(type(path) is str for path in packed)
    assert packed[-1] == paths[-1] and packed[np.int64(5)] == paths[5] and packed[10:3:-2] == tuple(paths[10:3:-2])
    with pytest.raises(IndexError, match="out of range for 204 paths"):
        packed[204]
    with pytest.raises(TypeError):
        packed["0"]
    assert paths[7] in packed and packed.index(paths[7]) == paths.index(paths[7])


def test_equal_to_the_tuple_of_its_paths_and_picklable(block):
    paths = _paths(50)
    packed = PackedPaths(paths)
    assert packed == tuple(paths) and tuple(paths) == packed and hash(packed) == hash(tuple(paths))
    assert packed != paths and packed != tuple(paths[:-1]) and packed != tuple(paths[:-1]) + ("x",)
    assert pickle.loads(pickle.dumps(packed)) == packed == PackedPaths(reversed(paths[::-1]))
    assert PackedPaths() == () and list(PackedPaths()) == [] and repr(PackedPaths(["a"])) == "PackedPaths(['a'], 1 paths)"


def test_the_packer_takes_batches_relative_to_a_prefix_or_whole(block):
    packer = PathPacker()
    packer.extend(["a.jpg", "b/c.jpg"], "/root/")
    packer.extend([])
    packer.extend(["/else/x.jpg", "/root/d.jpg", "/elsewhere/y.jpg"])
    packer.extend(["é.jpg"], "/root/")
    assert list(packer.packed()) == ["/root/a.jpg", "/root/b/c.jpg", "/else/x.jpg", "/root/d.jpg",
                                     "/elsewhere/y.jpg", "/root/é.jpg"]


def test_a_packed_path_costs_its_utf8_bytes_after_the_common_prefix():
    paths = [f"/a/long/data/root/train/{i % 50:05d}/{i:032x}.jpg" for i in range(100_000)]
    packed = PackedPaths(paths)
    stored = sum(map(len, packed._data)) + packed._ends.itemsize * len(packed._ends)
    assert stored < 45 * len(paths)  # a str in a tuple costs over 120 bytes here
    assert packed._prefixes[0] == "/a/long/data/root/train/000"
