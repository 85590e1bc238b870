"""Throughput of prodrec's hot paths, each beside a plain baseline measured in the same run.

    python benchmarks/throughput.py                                  # CPU-sized defaults, a couple of minutes
    python benchmarks/throughput.py --image-size 224 --batch-size 64 --iterations 50 --json gpu.json

Figures (ratio = how many times faster prodrec is than its baseline, so > 1 means prodrec is faster):

* ``train_step``: images/s of prodrec's training step (``_Run.train_epoch`` of ``train_metric``: the
  In-shop recipe's ArcMargin CE + TripletLossV2 and SGD, channels_last, AMP on GPU, per-step loss
  logging) vs a bare timm + pytorch-metric-learning loop (same model, losses and optimizer, fp32,
  default memory format), both on the same in-memory batch.
* ``embed``: images/s of ``Embedder.embed`` on that batch vs a bare timm forward in ``inference_mode``.
* ``extract``: images/s of ``extract_embeddings`` on JPEG files (decode + resize + forward, N workers)
  vs the same bare forward on in-memory tensors (the ratio is the cost of reading the images).
* ``loader``: images/s of the training data loader alone (cv2 decode + albumentations, PK sampler, N
  workers) vs PIL + torchvision transforms v2 with the same workers, on synthetic 256 px JPEGs.
* ``search_vs_torch`` / ``search_vs_numpy``: seconds of exact top-k search of Q x D queries in a G x D
  gallery of random L2-normalised vectors with ``knn_search`` (faiss) vs torch matmul + topk and numpy
  matmul + argpartition, both in chunks of queries.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import timm
import torch
from PIL import Image
from pytorch_metric_learning import distances, losses, miners, reducers
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from prodrec.config import load_config
from prodrec.data import ImageList, make_synthetic_inshop, read_inshop
from prodrec.evaluation import extract_embeddings
from prodrec.models import resolve_backbone_name
from prodrec.search import knn_search, l2_normalize
from prodrec.training import _Run, resolve_device

CHUNK = 2048  # queries per matmul in the search baselines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ResNet50_vd", help="timm name or PaddleClas alias")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10, help="timed batches per model figure")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches (and loader passes) first")
    parser.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    parser.add_argument("--items", type=int, default=128, help="items of the synthetic set (6 views each, half train)")
    parser.add_argument("--queries", type=int, default=14218, help="Q (default: the In-shop query split)")
    parser.add_argument("--gallery", type=int, default=12612, help="G (default: the In-shop gallery split)")
    parser.add_argument("--dim", type=int, default=512, help="D")
    parser.add_argument("--k", type=int, default=20, help="neighbours per query")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--json", help="write {figure: {value, baseline, ratio, unit}} to this file")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    problems = [f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}"
                for name, low in (("image_size", 32), ("batch_size", 2), ("iterations", 1), ("warmup", 0),
                                  ("workers", 0), ("queries", 1), ("gallery", 1), ("dim", 1), ("k", 1))
                if getattr(args, name) < low]
    if args.batch_size % 2:
        problems.append(f"--batch-size must be even (PK batches of 2 images per item), got {args.batch_size}")
    if args.items < max(4, args.batch_size):
        problems.append(f"--items must be >= 4 and >= --batch-size (half the items train, 2 per batch), "
                        f"got {args.items}")
    if args.k > args.gallery:
        problems.append(f"--k {args.k} is larger than --gallery {args.gallery}")
    if problems:
        parser.error("; ".join(problems))


def timed(step: Callable[[], object], iterations: int, warmup: int, device: torch.device) -> float:
    """Seconds for ``iterations`` calls of ``step`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(iterations):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


class BareModel(nn.Module):
    """timm backbone + linear neck, as anyone would write it."""

    def __init__(self, backbone: str, embedding_size: int = 512) -> None:
        super().__init__()
        self.backbone = timm.create_model(resolve_backbone_name(backbone), num_classes=0)
        self.neck = nn.Linear(self.backbone.num_features, embedding_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.neck(self.backbone(images))


class PilDataset(Dataset):
    """PIL decode + torchvision transforms v2 with the training augmentation of prodrec's loader."""

    def __init__(self, images: ImageList, image_size: int, mean, std) -> None:
        self.images = images
        self.transform = v2.Compose([
            v2.Resize((image_size, image_size)), v2.RandomHorizontalFlip(), v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std),
            v2.RandomErasing(p=0.5, scale=(0.02, 0.4), ratio=(0.3, 1 / 0.3)),
        ])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        with Image.open(self.images.paths[index]) as image:
            return self.transform(image.convert("RGB")), int(self.images.labels[index])


def loader_seconds(loader: DataLoader, passes: int, warmup: int) -> float:
    for _ in range(max(warmup, 1)):  # starts the (persistent) workers
        for _ in loader:
            pass
    started = time.perf_counter()
    for _ in range(passes):
        for _ in loader:
            pass
    return time.perf_counter() - started


def loader_figure(run: _Run, splits, args: argparse.Namespace, device: torch.device) -> tuple:
    """prodrec's training loader (as ``train_metric`` builds it) vs PIL + torchvision v2, same workers."""
    pil = DataLoader(PilDataset(splits.train, args.image_size, run.model.mean, run.model.std),
                     batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                     pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    passes = 2
    return (passes * len(run.train_loader) * args.batch_size / loader_seconds(run.train_loader, passes, args.warmup),
            passes * len(pil) * args.batch_size / loader_seconds(pil, passes, args.warmup), "images/s")


def training_figures(args: argparse.Namespace, root: Path, work: Path, device: torch.device) -> Dict[str, tuple]:
    splits = read_inshop(root)
    config = load_config("inshop_ce_triplet", overrides=[
        f"Arch.Backbone.name={args.backbone}", "Arch.Neck.embedding_size=auto", f"Global.image_size={args.image_size}",
        f"DataLoader.batch_size={args.batch_size}", f"DataLoader.num_workers={args.workers}",
        f"Global.device={device}", f"Global.output_dir={work}"])
    work.mkdir(parents=True, exist_ok=True)
    run = _Run(config, splits, work, progress=False)
    model, batch = run.model, args.batch_size
    images = torch.randn(batch, 3, args.image_size, args.image_size)
    labels = torch.arange(batch // 2).repeat_interleave(2) % splits.train.num_classes
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    figures = {"loader": loader_figure(run, splits, args, device)}

    def prodrec_steps(count: int) -> None:
        run.train_loader = [(images, labels)] * count
        run.train_epoch()

    bare = BareModel(args.backbone, model.embedding_size).to(device)
    head, sgd = config.Arch.Head, config.Optimizer  # the recipe's settings, written out with PML and torch
    arcface = losses.ArcFaceLoss(splits.train.num_classes, model.embedding_size, margin=math.degrees(head.margin),
                                 scale=head.scale).to(device)
    distance = distances.LpDistance(normalize_embeddings=True)
    triplet = losses.TripletMarginLoss(margin=config.Loss.Train[1]["TripletLossV2"]["margin"], distance=distance,
                                       reducer=reducers.MeanReducer())
    miner = miners.BatchHardMiner(distance=distance)
    optimizer = torch.optim.SGD([*bare.parameters(), *arcface.parameters()], lr=sgd.lr.learning_rate,
                                momentum=sgd.momentum, weight_decay=sgd.regularizer.coeff)

    def bare_step() -> None:
        x, y = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        embeddings = bare(x)
        loss = arcface(embeddings, y) + triplet(embeddings, y, miner(embeddings, y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    prodrec_steps(args.warmup)
    start = time.perf_counter()
    prodrec_steps(args.iterations)
    prodrec_seconds = time.perf_counter() - start  # train_epoch reads each step's loss, which synchronises
    bare.train()
    figures["train_step"] = (args.iterations * batch / prodrec_seconds,
                             args.iterations * batch / timed(bare_step, args.iterations, args.warmup, device),
                             "images/s")

    bare.eval()

    def bare_forward() -> None:
        with torch.inference_mode():
            bare(images.to(device, non_blocking=True))

    forward_rate = args.iterations * batch / timed(bare_forward, args.iterations, args.warmup, device)
    embed_seconds = timed(lambda: model.embed(images, batch_size=batch), args.iterations, args.warmup, device)
    figures["embed"] = (args.iterations * batch / embed_seconds, forward_rate, "images/s")
    everything = ImageList(splits.query.paths + splits.gallery.paths,
                           np.concatenate([splits.query.labels, splits.gallery.labels]), splits.query.classes)
    start = time.perf_counter()
    extract_embeddings(model, everything, batch_size=batch, num_workers=args.workers, device=device, progress=False)
    figures["extract"] = (len(everything) / (time.perf_counter() - start), forward_rate, "images/s")
    return figures


def search_figures(args: argparse.Namespace, device: torch.device) -> Dict[str, tuple]:
    rng = np.random.default_rng(0)
    queries = l2_normalize(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    gallery = l2_normalize(rng.standard_normal((args.gallery, args.dim), dtype=np.float32))
    gallery_t = torch.from_numpy(gallery).to(device)

    def with_torch(rows: np.ndarray) -> np.ndarray:
        found = [torch.topk(torch.from_numpy(rows[i:i + CHUNK]).to(device) @ gallery_t.T, args.k).indices.cpu()
                 for i in range(0, len(rows), CHUNK)]
        return torch.cat(found).numpy()

    def with_numpy(rows: np.ndarray) -> np.ndarray:
        found = []
        for i in range(0, len(rows), CHUNK):
            scores = rows[i:i + CHUNK] @ gallery.T
            top = np.argpartition(-scores, args.k - 1, axis=1)[:, :args.k]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
            found.append(np.take_along_axis(top, order, axis=1))
        return np.concatenate(found)

    methods = {"faiss": lambda rows: knn_search(rows, gallery, args.k)[1], "torch": with_torch, "numpy": with_numpy}
    seconds, top1 = {}, {}
    for name, method in methods.items():
        method(queries[:256])  # warm-up
        start = time.perf_counter()
        top1[name] = method(queries)[:, 0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[name] = time.perf_counter() - start
    for name in ("torch", "numpy"):
        agree = float(np.mean(top1[name] == top1["faiss"]))
        if agree < 0.999:
            raise RuntimeError(f"the {name} search found a different nearest neighbour than faiss for "
                               f"{1 - agree:.2%} of the queries; the comparison would be meaningless")
    return {"search_vs_torch": (seconds["faiss"], seconds["torch"], "s"),
            "search_vs_numpy": (seconds["faiss"], seconds["numpy"], "s")}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        device = resolve_device(args.device)
        resolve_backbone_name(args.backbone)
    except ValueError as error:
        parser.error(str(error))
    print(f"device {device}, torch {torch.__version__} with {torch.get_num_threads()} threads, {args.backbone}, "
          f"{args.image_size} px, batch {args.batch_size}, {args.iterations} timed iterations after {args.warmup}, "
          f"{args.workers} loader workers, search {args.queries} x {args.gallery} x {args.dim}, k {args.k}")
    with tempfile.TemporaryDirectory(prefix="prodrec-throughput-") as work:
        work = Path(work)
        info = make_synthetic_inshop(work / "data", items=args.items, views=6, image_size=256,
                                     progress=False)
        figures = training_figures(args, info.root, work / "run", device)
    figures.update(search_figures(args, device))
    results = {}
    print(f"\n{'figure':<16}{'prodrec':>12}{'baseline':>12}{'ratio':>9}  unit")
    for name, (value, baseline, unit) in figures.items():
        ratio = baseline / value if unit == "s" else value / baseline
        results[name] = {"value": value, "baseline": baseline, "ratio": ratio, "unit": unit}
        print(f"{name:<16}{value:>12.2f}{baseline:>12.2f}{ratio:>8.2f}x  {unit}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
