"""Throughput of prodrec's hot paths, each beside a plain baseline measured in the same run, against issue 7's targets.

    python benchmarks/throughput.py                                  # CPU-sized defaults, several minutes
    python benchmarks/throughput.py --image-size 224 --batch-size 64 --iterations 50 --json gpu.json
    python benchmarks/throughput.py --profile /tmp/profiles          # also cProfile / torch.profiler reports

Every measure runs ``--rounds`` times (the evaluation one more), all measures in turn, and the best of each
counts, so a busy spell of other processes slows one round of everything rather than one side of a ratio.
Figures (``ratio`` as the target states it; ``met`` says whether the target holds):

* ``train_step`` (>= 0.9): images/s of prodrec's training step (``TrainingRun.train_epoch`` of ``train_metric``: the
  In-shop recipe's ArcMargin CE + TripletLossV2 and SGD, channels_last, AMP on GPU, per-step loss logging
  and checks) vs a bare timm + pytorch-metric-learning loop (same model, losses and optimizer, fp32,
  default memory format), both on the same in-memory batch.
* ``pipeline`` (>= 0.8): images/s of the same training epoch fed by prodrec's own loader (JPEG files, cv2
  decode, albumentations, PK sampler, N workers) vs the in-memory figure of ``train_step``.
* ``extract`` (>= 0.95): images/s of ``extract_embeddings`` on JPEG files (reduced-size JPEG decode, resize,
  forward, N workers; the synthetic query and gallery files repeated to 1,024 images) vs a bare timm forward in
  ``inference_mode`` on in-memory tensors.
* ``embed``: images/s of ``Embedder.embed`` on the in-memory batch vs that bare forward.
* ``loader``: images/s of the training loader alone vs PIL + torchvision transforms v2, same workers.
* ``eval_time`` (>= 1): seconds of the exact evaluation (``evaluate_embeddings``: Recall@1/5/10/20 and
  full-ranking mAP) of Q x G x D random labelled vectors vs torch matmul + topk (k 20) in chunks of queries;
  ratio = torch seconds / prodrec seconds.
* ``eval_memory`` (<= 1.5): peak resident memory of that evaluation, features included, over the features'
  size, measured in a fresh process (``VmHWM`` reset through ``/proc/self/clear_refs``); the baseline
  column is the same for the torch matmul + topk.
* ``knn``: seconds of ``knn_search`` top k (faiss) vs the torch matmul + topk.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import subprocess
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
from prodrec.retrieval import evaluate_embeddings, extract_embeddings
from prodrec.models import resolve_backbone_name
from prodrec.retrieval import knn_search, l2_normalize
from prodrec.train import MetricTask, TrainingRun, resolve_device

CHUNK = 2048  # queries per matmul in the torch search baseline
ITEMS = 3985  # In-shop's test items: the eval labels
EXTRACT_IMAGES = 1024  # at least this many images per extraction (the query and gallery files, repeated)
TARGETS = {"train_step": (">=", 0.9), "pipeline": (">=", 0.8), "extract": (">=", 0.95), "eval_time": (">=", 1.0),
           "eval_memory": ("<=", 1.5)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ResNet50_vd", help="timm name or PaddleClas alias")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10, help="timed batches per model figure")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches (and loader passes) first")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every measure, in turn; the best counts")
    parser.add_argument("--workers", type=int, default=2, help="data loader worker processes")
    parser.add_argument("--items", type=int, default=128, help="items of the synthetic set (6 views each, half train)")
    parser.add_argument("--queries", type=int, default=14218, help="Q (default: the In-shop query split)")
    parser.add_argument("--gallery", type=int, default=12612, help="G (default: the In-shop gallery split)")
    parser.add_argument("--dim", type=int, default=512, help="D")
    parser.add_argument("--k", type=int, default=20, help="neighbours per query of the torch baseline and knn")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--json", help="write {figure: {value, baseline, ratio, unit, target, met}} to this file")
    parser.add_argument("--profile", help="write cProfile (and torch.profiler) reports of each prodrec side here")
    parser.add_argument("--memory-case", choices=("prodrec", "torch"), help=argparse.SUPPRESS)  # internal
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    problems = [f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}"
                for name, low in (("image_size", 32), ("batch_size", 2), ("iterations", 1), ("warmup", 0),
                                  ("rounds", 1), ("workers", 0), ("queries", 1), ("gallery", 1), ("dim", 1), ("k", 1))
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


class Profiler:
    """With a folder, runs a call once more under cProfile (and torch.profiler for ``torch_ops``) and writes
    the report to ``<folder>/<name>.txt``; the timed runs are never profiled. Without a folder, does nothing."""

    def __init__(self, folder: Optional[str]) -> None:
        self.folder = Path(folder) if folder else None
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, call: Callable[[], object], *, torch_ops: bool = False) -> None:
        if self.folder is None:
            return
        report = io.StringIO()
        profile = cProfile.Profile()
        if torch_ops:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as operators:
                profile.runcall(call)
            report.write(operators.key_averages().table(sort_by="self_cpu_time_total", row_limit=25) + "\n")
        else:
            profile.runcall(call)
        pstats.Stats(profile, stream=report).sort_stats("tottime").print_stats(30)
        (self.folder / f"{name}.txt").write_text(report.getvalue(), encoding="utf-8")


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


def loader_figure(run: TrainingRun, splits, args: argparse.Namespace, device: torch.device) -> tuple:
    """prodrec's training loader (as ``train_metric`` builds it) vs PIL + torchvision v2, same workers."""
    pil = DataLoader(PilDataset(splits.train, args.image_size, run.model.mean, run.model.std),
                     batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                     pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    passes = 2
    return (passes * len(run.train_loader) * args.batch_size / loader_seconds(run.train_loader, passes, args.warmup),
            passes * len(pil) * args.batch_size / loader_seconds(pil, passes, args.warmup), "images/s")


def training_figures(args: argparse.Namespace, root: Path, work: Path, device: torch.device,
                     profiler: Profiler) -> Dict[str, tuple]:
    splits = read_inshop(root)
    config = load_config("inshop_ce_triplet", overrides=[
        f"Arch.Backbone.name={args.backbone}", "Arch.Neck.embedding_size=auto", f"Global.image_size={args.image_size}",
        f"DataLoader.batch_size={args.batch_size}", f"DataLoader.num_workers={args.workers}",
        f"Global.device={device}", f"Global.output_dir={work}"])
    work.mkdir(parents=True, exist_ok=True)
    run = TrainingRun(config, MetricTask(config, splits), work, progress=False)
    model, batch, files = run.model, args.batch_size, run.train_loader
    images = torch.randn(batch, 3, args.image_size, args.image_size)
    labels = torch.arange(batch // 2).repeat_interleave(2) % splits.train.num_classes
    if device.type == "cuda":
        images, labels = images.pin_memory(), labels.pin_memory()
    figures = {"loader": loader_figure(run, splits, args, device)}

    def prodrec_epoch(loader) -> float:
        """images/s of one ``train_epoch`` over ``loader``."""
        run.train_loader = loader
        started, seen = time.perf_counter(), run.images_seen
        run.train_epoch()
        run.next_epoch()
        return (run.images_seen - seen) / (time.perf_counter() - started)  # each step reads its loss: synchronised

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

    def bare_forward() -> None:
        with torch.inference_mode():
            bare(images.to(device, non_blocking=True))

    paths = (*splits.query.paths, *splits.gallery.paths)
    copies = -(-EXTRACT_IMAGES // len(paths))  # the loader's start-up then weighs like on a real gallery
    everything = ImageList(paths * copies, np.tile(np.concatenate([splits.query.labels, splits.gallery.labels]),
                                                    copies), splits.query.classes)

    def extract() -> float:
        started = time.perf_counter()
        extract_embeddings(model, everything, batch_size=batch, num_workers=args.workers,
                           progress=False, decode_size=model.image_size)
        return len(everything) / (time.perf_counter() - started)

    def rate(step: Callable[[], None]) -> float:
        return args.iterations * batch / timed(step, args.iterations, 0, device)

    def bare_rate(step: Callable[[], None], mode: bool) -> float:
        bare.train(mode)
        return rate(step)

    prodrec_epoch([(images, labels)] * args.warmup)
    prodrec_epoch(files)  # starts the persistent workers
    timed(bare_step, 0, args.warmup, device)
    measures = {"in_memory": lambda: prodrec_epoch([(images, labels)] * args.iterations),
                "bare_step": lambda: bare_rate(bare_step, True), "files": lambda: prodrec_epoch(files),
                "forward": lambda: bare_rate(bare_forward, False),
                "embed": lambda: rate(lambda: model.embed(images, batch_size=batch)), "extract": extract}
    best = best_of(measures, args.rounds)
    figures["train_step"] = (best["in_memory"], best["bare_step"], "images/s")
    figures["pipeline"] = (best["files"], best["in_memory"], "images/s")
    figures["embed"] = (best["embed"], best["forward"], "images/s")
    figures["extract"] = (best["extract"], best["forward"], "images/s")
    profiler("train_step", measures["in_memory"], torch_ops=True)
    profiler("train_step_bare", measures["bare_step"], torch_ops=True)
    profiler("pipeline", measures["files"])
    profiler("extract", extract)
    return figures


def best_of(measures: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, float]:
    """The best rate of each measure over ``rounds`` rounds that take them in turn: a busy spell on the machine
    then slows one round of every measure rather than all rounds of one."""
    best = {name: 0.0 for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            best[name] = max(best[name], measure())
    return best


def eval_data(args: argparse.Namespace) -> tuple:
    """Labelled unit vectors of In-shop's shape: item centres plus noise; every item has a gallery image."""
    rng = np.random.default_rng(0)
    items = min(ITEMS, args.gallery)
    gallery_labels = np.concatenate([np.arange(items), rng.integers(0, items, args.gallery - items)])
    query_labels = rng.integers(0, items, args.queries)
    centres = rng.standard_normal((items, args.dim), dtype=np.float32)
    noise = 2.0 / math.sqrt(args.dim / 512)
    gallery = l2_normalize(centres[gallery_labels] + noise * rng.standard_normal((args.gallery, args.dim),
                                                                                 dtype=np.float32))
    queries = l2_normalize(centres[query_labels] + noise * rng.standard_normal((args.queries, args.dim),
                                                                               dtype=np.float32))
    return queries, query_labels, gallery, gallery_labels


def torch_top_k(queries: np.ndarray, gallery: torch.Tensor, k: int, device: torch.device) -> np.ndarray:
    found = [torch.topk(torch.from_numpy(queries[i:i + CHUNK]).to(device) @ gallery.T, k).indices.cpu()
             for i in range(0, len(queries), CHUNK)]
    return torch.cat(found).numpy()


def memory_case(args: argparse.Namespace, device: torch.device) -> Dict[str, float]:
    """Peak resident memory of one evaluation in this (fresh) process, features included."""
    queries, query_labels, gallery, gallery_labels = eval_data(args)
    gallery_t = torch.from_numpy(gallery).to(device)
    gc.collect()
    status = Path("/proc/self/status")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = int(next(line for line in status.read_text().splitlines() if line.startswith("VmRSS")).split()[1])
    if args.memory_case == "prodrec":
        evaluate_embeddings(queries, query_labels, gallery, gallery_labels)
    else:
        torch_top_k(queries, gallery_t, args.k, device)
    peak = int(next(line for line in status.read_text().splitlines() if line.startswith("VmHWM")).split()[1])
    features = (queries.nbytes + gallery.nbytes) / 2**20
    return {"features_mib": features, "peak_mib": features + (peak - before) / 1024}


def search_figures(args: argparse.Namespace, argv: List[str], device: torch.device,
                   profiler: Profiler) -> Dict[str, tuple]:
    queries, query_labels, gallery, gallery_labels = eval_data(args)
    gallery_t = torch.from_numpy(gallery).to(device)
    methods = {"evaluate": lambda: evaluate_embeddings(queries, query_labels, gallery, gallery_labels),
               "torch": lambda: torch_top_k(queries, gallery_t, args.k, device),
               "knn": lambda: knn_search(queries, gallery, args.k)[1]}
    seconds = {name: math.inf for name in methods}
    for _ in range(args.rounds + 1):  # in turn, best of each: other processes on the machine disturb single runs
        for name, method in methods.items():
            started = time.perf_counter()
            method()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name] = min(seconds[name], time.perf_counter() - started)
    profiler("eval_time", methods["evaluate"])
    agree = float(np.mean(methods["torch"]()[:, 0] == methods["knn"]()[:, 0]))
    if agree < 0.999:
        raise RuntimeError(f"torch and faiss found different nearest neighbours for {1 - agree:.2%} of the queries")
    memory = {}
    for case in ("prodrec", "torch"):  # fresh processes; big freed blocks must not hide in malloc's heap
        completed = subprocess.run([sys.executable, __file__, *argv, "--memory-case", case], capture_output=True,
                                   text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
        if completed.returncode:
            raise RuntimeError(f"the memory measurement ({case}) failed:\n{completed.stderr[-4000:]}")
        memory[case] = json.loads(completed.stdout.strip().splitlines()[-1])
    features = memory["prodrec"]["features_mib"]
    return {"eval_time": (seconds["evaluate"], seconds["torch"], "s"),
            "eval_memory": (memory["prodrec"]["peak_mib"], memory["torch"]["peak_mib"], "MiB", features),
            "knn": (seconds["knn"], seconds["torch"], "s")}


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        device = resolve_device(args.device)
        resolve_backbone_name(args.backbone)
    except ValueError as error:
        parser.error(str(error))
    if args.memory_case:
        print(json.dumps(memory_case(args, device)))
        return 0
    profiler = Profiler(args.profile)
    print(f"device {device}, torch {torch.__version__} with {torch.get_num_threads()} threads, {args.backbone}, "
          f"{args.image_size} px, batch {args.batch_size}, {args.iterations} timed iterations after {args.warmup}, "
          f"{args.workers} loader workers, evaluation {args.queries} x {args.gallery} x {args.dim}, k {args.k}")
    with tempfile.TemporaryDirectory(prefix="prodrec-throughput-") as work:
        work = Path(work)
        info = make_synthetic_inshop(work / "data", items=args.items, views=6, image_size=256, progress=False)
        figures = training_figures(args, info.root, work / "run", device, profiler)
    figures.update(search_figures(args, argv, device, profiler))
    results = {}
    print(f"\n{'figure':<13}{'prodrec':>10}{'baseline':>10}{'ratio':>8}  {'target':<8}{'met':<5}unit")
    for name, (value, baseline, unit, *reference) in figures.items():
        if unit == "MiB":  # peak memory over the features' size
            ratio = value / reference[0]
        else:
            ratio = baseline / value if unit == "s" else value / baseline
        comparison, bound = TARGETS.get(name, ("", None))
        met = None if bound is None else bool(ratio >= bound if comparison == ">=" else ratio <= bound)
        results[name] = {"value": value, "baseline": baseline, "ratio": ratio, "unit": unit,
                         "target": f"{comparison} {bound}" if bound else None, "met": met}
        target = f"{comparison} {bound}" if bound else "-"
        print(f"{name:<13}{value:>10.2f}{baseline:>10.2f}{ratio:>7.2f}x  {target:<8}"
              f"{'-' if met is None else 'yes' if met else 'NO':<5}{unit}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
