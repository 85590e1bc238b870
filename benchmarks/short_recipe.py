"""Does the shipped recipe, shortened, learn as well as a plain loop? (issue 13)

Trains on the same data, with the same seed, model size and batch, for the same few epochs:

- ``recipe, milestones as written (0.1)``: the built-in ``inshop_ce_triplet`` recipe with ``--epochs N`` as
  prodrec 0.1 ran it: MultiStep milestones 30..100 of a 120-epoch run, never reached in N epochs, no warm-up.
- ``recipe, schedule scaled``: milestones scaled to N epochs, no warm-up.
- ``recipe as shipped``: scaled, with the recipe's warm-up (15 of 120 epochs, 1 of 8 when N is 8); also
  without random erasing, and with a cosine schedule after a 30 % warm-up (the one-cycle shape).
- ``--warmup W``: the scaled recipe with a warm-up of W epochs of the shortened run.
- ``plain timm + PML loop``: what a user writes without prodrec: timm ``resnet50d`` + a 512-d linear
  neck, pytorch-metric-learning ``ArcFaceLoss`` (m 0.15 rad, s 30) + ``TripletMarginLoss`` (m 0.5,
  batch-hard miner), ``MPerClassSampler``, albumentations resize + flip, SGD momentum 0.9 (weight decay
  5e-4) with a one-cycle LR peaking at the recipe's 0.04.

All use ResNet50_vd (timm ``resnet50d``) at 64 px, CE + Triplet on the ArcMargin head, batches of 32
(16 products x 2), from scratch, evaluated after every epoch with the same Recall@K / mAP code.
Writes ``results.json`` and ``results.md`` (a table ready to paste) to ``--output``.

    python benchmarks/photo_products.py STAMPS data/photo_products     # the real-photo set
    python benchmarks/short_recipe.py --data-root data/photo_products --output /tmp/short_recipe
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch

from prodrec.config import load_config
from prodrec.data import read_splits
from prodrec.retrieval import evaluate_embeddings
from prodrec.train import train_metric
from prodrec.utils import ProdrecError

KS = [1, 5, 10]
RECIPE = "inshop_ce_triplet"
VARIANTS: Dict[str, List[str]] = {
    "recipe, milestones as written (0.1)": ["Optimizer.lr.scale_schedule=false", "Optimizer.lr.warmup_epoch=0"],
    "recipe, schedule scaled": ["Optimizer.lr.warmup_epoch=0"],
    "recipe as shipped: scaled + warm-up 15 of 120 epochs": [],
    "recipe as shipped, no random erasing": ["DataLoader.random_erasing=0"],
    "recipe, cosine + 30% warm-up (the one-cycle shape)": ["Optimizer.lr.name=Cosine", "Optimizer.lr.warmup_epoch=36"],
}


def settings(args: argparse.Namespace) -> List[str]:
    return [f"DataLoader.dataset={args.dataset}", f"DataLoader.root={args.data_root}", f"Global.epochs={args.epochs}",
            f"Global.image_size={args.image_size}", "DataLoader.batch_size=32", "DataLoader.sample_per_id=2",
            f"Global.seed={args.seed}", "Arch.Backbone.name=ResNet50_vd", "Global.eval_interval=1",
            f"Global.save_interval={args.epochs}", f"Metric.Eval=[{{Recallk: {{topk: {KS}}}}}, {{mAP: {{}}}}]"]


def run_recipe(args: argparse.Namespace, name: str, extra: List[str]) -> Dict[str, Any]:
    output = Path(args.output) / "runs" / "".join(c if c.isalnum() else "_" for c in name)
    config = load_config(RECIPE, overrides=[*settings(args), f"Global.output_dir={output}", *extra])
    started = time.perf_counter()
    result = train_metric(config, progress=not args.quiet)
    curve = [record.get("metrics", {}).get("recall@1") for record in result.history]
    return {"metrics": result.metrics, "recall@1_by_epoch": curve, "seconds": time.perf_counter() - started,
            "command": f"prodrec train {RECIPE} --output {output} "
                       + " ".join(f"--set {shlex.quote(s)}" for s in [*settings(args), *extra])}


def plain_loop(args: argparse.Namespace) -> Dict[str, Any]:
    """A training loop as a user writes it from timm and pytorch-metric-learning alone."""
    import albumentations as A
    import cv2
    import timm
    from albumentations.pytorch import ToTensorV2
    from pytorch_metric_learning import losses, miners, samplers

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    splits = read_splits(args.dataset, args.data_root)
    backbone = timm.create_model("resnet50d", pretrained=False, num_classes=0)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(backbone.num_features, 512))
    classes = len(splits.train.classes)
    arcface = losses.ArcFaceLoss(classes, 512, margin=math.degrees(0.15), scale=30)
    triplet, miner = losses.TripletMarginLoss(margin=0.5), miners.BatchHardMiner()
    mean, std = backbone.pretrained_cfg["mean"], backbone.pretrained_cfg["std"]
    size = args.image_size
    train_ops = A.Compose([A.Resize(size, size), A.HorizontalFlip(p=0.5), A.Normalize(mean, std), ToTensorV2()])
    eval_ops = A.Compose([A.Resize(size, size), A.Normalize(mean, std), ToTensorV2()])

    def load(paths, ops):
        return torch.stack([ops(image=cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))["image"] for p in paths])

    labels = np.asarray(splits.train.labels)
    sampler = samplers.MPerClassSampler(labels, m=2, batch_size=32, length_before_new_iter=len(labels))
    steps = len(sampler) // 32
    optimizer = torch.optim.SGD([*model.parameters(), *arcface.parameters()], lr=0.04, momentum=0.9,
                                weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.04, total_steps=steps * args.epochs)
    paths = list(splits.train.paths)
    curve, started = [], time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = list(iter(sampler))
        for step in range(steps):
            batch = order[step * 32:(step + 1) * 32]
            images, targets = load([paths[i] for i in batch], train_ops), torch.as_tensor(labels[batch])
            features = model(images.contiguous(memory_format=torch.channels_last))
            loss = arcface(features, targets) + triplet(features, targets, miner(features, targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        metrics = evaluate_plain(model, splits, load, eval_ops)
        curve.append(metrics["recall@1"])
        if not args.quiet:
            print(f"plain loop epoch {epoch + 1}: recall@1 {metrics['recall@1']:.4f}", file=sys.stderr)
    return {"metrics": metrics, "recall@1_by_epoch": curve, "seconds": time.perf_counter() - started,
            "command": "benchmarks/short_recipe.py (plain_loop)"}


@torch.no_grad()
def evaluate_plain(model, splits, load, ops) -> Dict[str, float]:
    model.eval()
    features = []
    for listing in (splits.query, splits.gallery):
        paths = list(listing.paths)
        chunks = [model(load(paths[i:i + 64], ops)) for i in range(0, len(paths), 64)]
        features.append(torch.nn.functional.normalize(torch.cat(chunks), dim=1).numpy())
    names = [np.asarray(listing.classes)[listing.labels] for listing in (splits.query, splits.gallery)]
    codes = np.unique(np.concatenate(names), return_inverse=True)[1]  # one label space for both
    return evaluate_embeddings(features[0], codes[:len(names[0])], features[1], codes[len(names[0]):], ks=KS)


def table(results: Dict[str, Dict[str, Any]]) -> str:
    lines = ["| variant | R@1 | R@5 | R@10 | mAP | best epoch R@1 | train + eval s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, run in results.items():
        m, curve = run["metrics"], [v for v in run["recall@1_by_epoch"] if v is not None]
        best = max(range(len(curve)), key=curve.__getitem__)
        lines.append(f"| {name} | {100 * m['recall@1']:.1f} | {100 * m['recall@5']:.1f} | {100 * m['recall@10']:.1f} "
                     f"| {100 * m['mAP']:.1f} | {100 * curve[best]:.1f} (epoch {best + 1}) | {run['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="the set (photo_products.py writes one)")
    parser.add_argument("--dataset", default="list", help="layout of --data-root (default: list)")
    parser.add_argument("--output", default="short-recipe")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=float, nargs="*", default=[],
                        help="also run the scaled recipe with these warm-ups, in epochs of the shortened run")
    parser.add_argument("--only", nargs="*", help="run only the variants whose names start with these")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "OVERRIDE"),
                        help="also run the recipe with these Section.key=value overrides under this name")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    variants = dict(VARIANTS)
    for warmup in args.warmup:
        length = load_config(RECIPE).Optimizer.lr.schedule_epochs
        variants[f"recipe, scaled + {warmup:g} warm-up epoch"] = [
            f"Optimizer.lr.warmup_epoch={warmup * length / args.epochs:g}"]
    for name, *overrides in args.variant:
        variants[f"recipe, {name}"] = overrides
    names = [*variants, "plain timm + PML loop"]
    names = [n for n in names if not args.only or n.startswith(tuple(args.only))]
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results_file = output / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for name in names:
        results[name] = plain_loop(args) if name.startswith("plain") else run_recipe(args, name, variants[name])
        results_file.write_text(json.dumps(results, indent=1) + "\n")
        (output / "results.md").write_text(table(results))
        print(table(results))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (ProdrecError, FileNotFoundError) as error:  # data that is not there or not readable: say so
        raise SystemExit(f"short_recipe.py: error: {error}") from None
