"""prodrec.train.ddp on 2 CPU processes (gloo over loopback), checked against one process on the full batch."""
import os
from datetime import timedelta

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from prodrec.config import HeadConfig
from prodrec.retrieval import ExactSearch, FaissSearch, evaluate_embeddings, l2_normalize
from prodrec.train import (EmbedderWithLoss, ShardedSearch, broadcast_buffers, cross_rank_loss, unwrap,
                           wrap_for_training)
from prodrec.train import init_distributed
from prodrec.losses import build_loss

WORLD = 2
HEADS = ("ArcMargin", "FC")
# float32 sums in another order (all-reduce, gathered batch). Measured with cross-rank mining: loss 1.2e-7 off (values
# 2-10), gradients 1.9e-6 off where they reach 15 (ArcMargin), i.e. ~1e-7 relative; without it: exactly equal.
# The tolerance leaves a wide margin yet catches any missing, halved or doubled term.
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
APPROX = dict(rel=TOLERANCE["rtol"], abs=TOLERANCE["atol"])


def toy(head: str, *, init_seed: int = 0):
    """A small embedder (no batch norm) with CE (``head``) + TripletLossV2, and a PK batch of 4 items x 2 images."""
    torch.manual_seed(init_seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))
    loss = build_loss([{"CELoss": {"weight": 1.0}}, {"TripletLossV2": {"weight": 1.0, "margin": 0.5}}],
                      head=HeadConfig(name=head, margin=0.15, scale=30.0), num_classes=4, embedding_size=8)
    images = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    return model, loss, images, labels


def step(module: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    total, terms = module(images, labels)
    total.backward()
    inner = unwrap(module)
    return {"total": total.item(), "terms": {name: value.item() for name, value in terms.items()},
            "params": {name: p.detach().clone() for name, p in inner.named_parameters()},
            "grads": {name: p.grad.clone() for name, p in inner.named_parameters()}}


def train_steps(ctx) -> dict:
    results = {}
    for head in HEADS:
        for cross_rank in (False, True):
            model, loss, images, labels = toy(head, init_seed=ctx.rank)  # DDP must start every rank from rank 0's
            part = ctx.shard(len(images))
            module = wrap_for_training(model, loss, ctx, cross_rank=cross_rank)
            results[head, cross_rank] = {"ddp": isinstance(module, DistributedDataParallel),
                                         **step(module, images[part.start:part.stop], labels[part.start:part.stop])}
    return results


def search_set():
    """An odd number of queries (unequal shards), some without a gallery match."""
    rng = np.random.default_rng(7)
    return (l2_normalize(rng.normal(size=(41, 8))), rng.integers(0, 14, 41), l2_normalize(rng.normal(size=(50, 8))),
            rng.integers(0, 12, 50))


SEARCHERS = {"exact": lambda: ExactSearch(block_bytes=4 * 50 * 6), "faiss": lambda: FaissSearch("Flat", top_k=20)}


def sharded_metrics(ctx) -> dict:
    return {name: evaluate_embeddings(*search_set(), ks=[1, 5], searcher=ShardedSearch(ctx, make()))
            for name, make in SEARCHERS.items()}


def worker(rank: int, port: int, folder) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with init_distributed("cpu", timeout=timedelta(seconds=60)) as ctx:
        torch.save({**train_steps(ctx), "search": sharded_metrics(ctx)}, folder / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, spawn_ranks):
    """What each of 2 spawned gloo processes computed."""
    return spawn_ranks(worker, tmp_path_factory.mktemp("ranks"), WORLD)


def single_process(head: str, images: torch.Tensor, labels: torch.Tensor) -> dict:
    model, loss, _, _ = toy(head)
    return step(EmbedderWithLoss(model, loss), images, labels)


@pytest.mark.parametrize("head", HEADS)
def test_cross_rank_mining_matches_one_process_on_the_global_batch(ranks, head):
    _, _, images, labels = toy(head)
    reference = single_process(head, images, labels)
    runs = [r[head, True] for r in ranks]
    assert all(run["ddp"] for run in runs)
    assert np.mean([run["total"] for run in runs]) == pytest.approx(reference["total"], **APPROX)
    # the triplet term is the global batch's on every rank; the CE term is each rank's half, averaged
    for run in runs:
        assert run["terms"]["TripletLossV2"] == pytest.approx(reference["terms"]["TripletLossV2"], **APPROX)
    assert np.mean([run["terms"]["CELoss"] for run in runs]) == pytest.approx(reference["terms"]["CELoss"],
                                                                                **APPROX)
    for run in runs:
        for name, grad in reference["grads"].items():  # the head's weights (loss.terms.CELoss.*) included
            torch.testing.assert_close(run["params"][name], reference["params"][name], rtol=0, atol=0)
            torch.testing.assert_close(run["grads"][name], grad, **TOLERANCE, msg=f"gradient of {name}")


@pytest.mark.parametrize("head", HEADS)
def test_without_cross_rank_mining_ddp_averages_the_ranks_half_batch_gradients(ranks, head):
    _, _, images, labels = toy(head)
    halves = [single_process(head, images[i * 4:(i + 1) * 4], labels[i * 4:(i + 1) * 4]) for i in range(WORLD)]
    global_batch = single_process(head, images, labels)
    for rank, run in enumerate(ranks):
        run = run[head, False]
        assert run["total"] == pytest.approx(halves[rank]["total"], **APPROX)
        for name in global_batch["grads"]:
            torch.testing.assert_close(run["grads"][name], (halves[0]["grads"][name] + halves[1]["grads"][name]) / 2,
                                       **TOLERANCE)
        # mining within each half gives a different triplet loss: the data tell the two modes apart
        assert abs(run["terms"]["TripletLossV2"] - global_batch["terms"]["TripletLossV2"]) > 1e-3


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_sharded_search_reports_the_one_process_metrics_on_every_rank(ranks, name):
    expected = evaluate_embeddings(*search_set(), ks=[1, 5], searcher=SEARCHERS[name]())
    assert expected["num_queries"] == 41 and expected["num_queries_without_match"] > 0
    for run in ranks:
        assert run["search"][name] == expected


def test_sharded_search_in_one_process_is_its_searcher(no_launch):
    with init_distributed("cpu") as ctx:
        for make in SEARCHERS.values():
            searcher = make()
            assert evaluate_embeddings(*search_set(), searcher=ShardedSearch(ctx, searcher)) == \
                evaluate_embeddings(*search_set(), searcher=searcher)


def test_single_process_wrap_is_plain_and_cross_rank_falls_back(no_launch):
    model, loss, images, labels = toy("ArcMargin")
    with init_distributed("cpu") as ctx:
        module = wrap_for_training(model, loss, ctx, cross_rank=True)
        with pytest.raises(ValueError, match="SyncBatchNorm runs on CUDA only"):
            wrap_for_training(model, loss, ctx, sync_batchnorm=True)
    assert type(module) is EmbedderWithLoss and unwrap(module) is module and module.model is model
    assert step(module, images, labels)["total"] == pytest.approx(single_process("ArcMargin", images, labels)["total"])


def test_cross_rank_loss_keeps_the_state_and_refuses_what_it_cannot_mine():
    _, loss, _, _ = toy("ArcMargin")
    crossed = cross_rank_loss(loss)
    assert crossed.state_dict().keys() == loss.state_dict().keys() == {"terms.CELoss.W"}
    assert crossed.terms["CELoss"] is loss.terms["CELoss"] and crossed.weights == loss.weights
    head = HeadConfig(name="FC")
    with pytest.raises(ValueError, match=r"needs a pair or triplet loss .* only \['CELoss'\]"):
        cross_rank_loss(build_loss([{"CELoss": {}}], head=head, num_classes=4, embedding_size=8))
    with pytest.raises(ValueError, match="ProxyAnchorLoss: cross-rank mining takes stateless"):
        cross_rank_loss(build_loss([{"ProxyAnchorLoss": {}}], head=head, num_classes=4, embedding_size=8))


def test_embedder_runs_under_autocast_and_the_loss_in_float32():
    model, loss, images, labels = toy("FC")
    seen = []
    model.register_forward_hook(lambda _module, _inputs, output: seen.append(output.dtype))
    total, _ = EmbedderWithLoss(model, loss, amp_dtype=torch.bfloat16)(images, labels)
    assert seen == [torch.bfloat16] and total.dtype == torch.float32


def test_compile_runs_the_embedder_through_torch_compile_and_keeps_the_state_dict(monkeypatch):
    model, loss, images, labels = toy("FC")
    compiled = []

    def spy(module):
        compiled.append(module)
        return lambda x: module(x) * 1.0

    monkeypatch.setattr(torch, "compile", spy)
    module = EmbedderWithLoss(model, loss, compile=True)
    assert compiled == [model]
    assert module.state_dict().keys() == EmbedderWithLoss(model, loss).state_dict().keys()
    assert len(list(module.parameters())) == len(list(model.parameters())) + len(list(loss.parameters()))
    total, _ = module(images, labels)
    assert total.item() == pytest.approx(EmbedderWithLoss(model, loss)(images, labels)[0].item())


def test_broadcast_buffers_in_a_single_process_changes_nothing(no_launch):
    model = nn.BatchNorm1d(3)
    model.running_mean += 1.5
    with init_distributed("cpu") as ctx:
        broadcast_buffers(model, ctx)
    assert model.running_mean.tolist() == [1.5] * 3
