"""BatchingEmbedder against the model it wraps."""
import threading

import numpy as np
import pytest
import torch

from prodrec.models import Embedder
from prodrec.serving import BatchingEmbedder


def test_concurrent_callers_share_forwards_and_get_their_own_rows():
    torch.manual_seed(0)
    model = Embedder("test_resnet", embedding_size=8, image_size=32).eval()
    sizes = []
    batched = BatchingEmbedder(model, max_batch=16, max_wait_ms=200, observe=sizes.append)
    images = [np.random.default_rng(n).integers(0, 256, (40, 40, 3), dtype=np.uint8) for n in range(8)]
    expected = model.embed(images)
    got, start = [None] * 8, threading.Barrier(8)

    def embed(number):
        start.wait()
        got[number] = batched.embed([images[number]])

    threads = [threading.Thread(target=embed, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    torch.testing.assert_close(torch.cat(got), expected, atol=1e-5, rtol=0)
    assert sum(sizes) == 8 and len(sizes) < 8  # some forwards took several callers
    assert batched.embedder_info == model.embedder_info and batched.embedding_size == 8


def test_a_lone_caller_does_not_wait_and_failures_reach_the_caller():
    model = Embedder("test_resnet", embedding_size=8, image_size=32).eval()
    sizes = []
    batched = BatchingEmbedder(model, max_batch=16, max_wait_ms=60_000, observe=sizes.append)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    assert batched.embed([image]).shape == (1, 8) and sizes == [1]  # a 60 s wait would time the test out
    with pytest.raises(RuntimeError, match="rank 4"):  # the model raises; the caller gets it, the worker lives on
        batched.embed_batch(torch.zeros(1, 3, 5))
    assert batched.embed([image]).shape == (1, 8)
