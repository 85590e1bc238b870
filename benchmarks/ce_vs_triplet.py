"""What does the triplet term buy? CE vs CE + TripletLossV2, on the FC and the ArcMargin head.

Trains the same model on the same data with the same seeds and schedule for each variant:
(a) CE on an FC head, (b) CE on the ArcMargin head, (c) CE + TripletLossV2 on FC, (d) CE +
TripletLossV2 on ArcMargin (the seed's In-shop recipe), plus "CE (ArcMargin) + NAME" for each
``--also NAME`` (a pytorch-metric-learning loss with its defaults, weight 1). Every run is evaluated
after every epoch. Writes to ``--output``: ``results.json`` (one record per variant and seed, the
settings and the command), ``results.md`` (mean ± std over seeds, ready to paste),
``recall_at_k.png`` and ``training_curves.png``.

    python benchmarks/ce_vs_triplet.py                                    # synthetic set, CPU-sized
    python benchmarks/ce_vs_triplet.py --data-root data/inshop --full     # the seed's recipe, for a GPU
    python benchmarks/ce_vs_triplet.py --also MultiSimilarityLoss --seeds 0 1 2 3 4

Defaults, sized for about 13 minutes on 2 CPU cores: the synthetic set of ``prodrec demo`` (300
items x 6 views, made in ``OUTPUT/data`` and reused), 64 px, 3 epochs, AdamW lr 0.002 with a cosine
schedule and batches of 32 (16 items x 2) as ``prodrec demo`` trains (from scratch in a few epochs,
where the recipe's SGD does not move; docs/decisions.md), 3 seeds: 12 runs. One run of 4 epochs took
86 s (21 s an epoch with its evaluation) with other jobs on the machine. The backbone is ``resnet18d``
(PaddleClas ResNet18_vd), not the seed's ResNet50_vd (``--backbone ResNet50_vd``): its training step
ran at 29 images/s at 64 px, 2.4x slower than resnet18d's (and it embeds 3.6x slower), so 12 runs of
3 epochs would take about 30 minutes.
``--full`` keeps the built-in recipe as it is: 224 px, 120 epochs, SGD momentum 0.9 with LR 0.04
halved at epochs 30..100, batches of 64 (32 items x 2), ResNet50_vd.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from tqdm.auto import tqdm

from prodrec.cli.app import LOSS_CHOICES, train_overrides
from prodrec.cli import build_parser as prodrec_parser
from prodrec.config import Config, load_config
from prodrec.data import DATASET_READERS, RetrievalSplits, make_synthetic_inshop, read_splits
from prodrec.losses import build_loss
from prodrec.train import train_metric

BASE_CONFIG = "inshop_ce_triplet"
# Each variant is the `prodrec train` flags --loss / --head, or explicit config overrides.
VARIANTS: Dict[str, Dict[str, Any]] = {
    "CE (FC)": {"loss": "ce", "head": "fc"},
    "CE (ArcMargin)": {"loss": "ce", "head": "arcmargin"},
    "CE + Triplet (FC)": {"loss": "ce+triplet", "head": "fc"},
    "CE + Triplet (ArcMargin)": {"loss": "ce+triplet", "head": "arcmargin"},
}
QUICK = {"backbone": "resnet18d", "image_size": 64, "epochs": 3, "items": 300, "views": 6}
# Without the built-in recipe's warm-up, as the figures in docs/benchmarks.md were measured.
QUICK_OVERRIDES = ["DataLoader.batch_size=32", "Optimizer.name=AdamW", "Optimizer.lr.name=Cosine",
                   "Optimizer.lr.learning_rate=0.002", "Optimizer.lr.warmup_epoch=0"]
KS = [1, 2, 5, 10, 20, 50]
TABLE = [("R@1", "recall@1"), ("R@5", "recall@5"), ("R@10", "recall@10"), ("R@20", "recall@20"), ("mAP", "mAP")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", help="data folder; without it the synthetic set is made in OUTPUT/data")
    parser.add_argument("--items", type=int, default=QUICK["items"], help="synthetic set: products (half train)")
    parser.add_argument("--views", type=int, default=QUICK["views"], help="synthetic set: images per product")
    parser.add_argument("--dataset", default="inshop", choices=sorted(DATASET_READERS), help="layout of --data-root")
    parser.add_argument("--image-size", type=int, help=f"default {QUICK['image_size']} (--full: the recipe's 224)")
    parser.add_argument("--epochs", type=int, help=f"default {QUICK['epochs']} (--full: the recipe's 120)")
    parser.add_argument("--backbone", help=f"timm name or PaddleClas alias; default {QUICK['backbone']} "
                                           "(--full: the recipe's ResNet50_vd)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", default="ce-vs-triplet", help="folder for results, runs and synthetic data")
    parser.add_argument("--also", nargs="+", default=[], metavar="PMLLossName",
                        help="extra variants: CE on ArcMargin + this pytorch-metric-learning loss (weight 1)")
    parser.add_argument("--full", action="store_true", help="the seed's recipe as it is (224 px, 120 epochs, SGD)")
    parser.add_argument("--device", help="auto (default), cpu, cuda, ...")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's checkpoints/ folder")
    return parser


def variants(also: List[str]) -> Dict[str, Dict[str, Any]]:
    table = dict(VARIANTS)
    for name in also:
        losses = LOSS_CHOICES["ce"] + [{name: {"weight": 1.0}}]
        table[f"CE (ArcMargin) + {name}"] = {"head": "arcmargin", "overrides": [f"Loss.Train={json.dumps(losses)}"]}
    return table


def run_config(args: argparse.Namespace, spec: Dict[str, Any], seed: int, output: Path, data_root: Path) -> Config:
    overrides = [*([] if args.full else QUICK_OVERRIDES), f"Metric.Eval=[{{Recallk: {{topk: {KS}}}}}, {{mAP: {{}}}}]",
                 "Global.eval_interval=1", f"Global.save_interval={args.epochs}", *spec.get("overrides", [])]
    argv = ["train", "--data-root", str(data_root), "--output", str(output), "--epochs", str(args.epochs),
            "--image-size", str(args.image_size), "--seed", str(seed), "--device", args.device,
            "--backbone", args.backbone]
    for flag, value in (("--dataset", args.dataset), ("--loss", spec.get("loss")), ("--head", spec.get("head"))):
        if value is not None:
            argv += [flag, value]
    for override in overrides:
        argv += ["--set", override]
    flags = prodrec_parser().parse_args(argv)  # the real `prodrec train` flags, so new ones get their defaults
    return load_config(BASE_CONFIG, overrides=train_overrides(flags))


def prepare_data(args: argparse.Namespace, output: Path) -> tuple:
    if args.data_root:
        return Path(args.data_root), None
    synthetic = {"items": args.items, "views": args.views, "image_size": max(96, args.image_size)}
    info = make_synthetic_inshop(output / "data", seed=0, **synthetic)
    return info.root, synthetic


def check_variants(args: argparse.Namespace, table: Dict[str, Dict[str, Any]], output: Path, data_root: Path,
                   splits: RetrievalSplits) -> Dict[str, Config]:
    """Every variant's config and loss, built once before training so a bad name fails at once."""
    configs = {}
    for name, spec in table.items():
        config = run_config(args, spec, args.seeds[0], output, data_root)
        build_loss(config.Loss.Train, head=config.Arch.Head, num_classes=splits.train.num_classes,
                   embedding_size=config.Arch.Neck.class_num)
        configs[name] = config
    return configs


def mean_std(values: List[float], scale: float = 1.0, digits: int = 1) -> str:
    values = np.asarray(values, dtype=float) * scale
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def describe(settings: Dict[str, Any]) -> str:
    data = (f"synthetic {settings['synthetic']['items']} items x {settings['synthetic']['views']} views"
            if settings["synthetic"] else f"{settings['dataset']} data in {settings['data_root']}")
    return (f"{settings['backbone']}, {settings['image_size']} px, {settings['epochs']} epochs, "
            f"{settings['optimizer']}, batch {settings['batch']}, {data}, {settings['device']}")


def write_markdown(path: Path, records: List[Dict[str, Any]], settings: Dict[str, Any], command: str) -> None:
    seeds = ", ".join(str(s) for s in settings["seeds"])
    lines = ["| variant | " + " | ".join(label for label, _ in TABLE) + " | train s | img/s |",
             "| --- |" + " ---: |" * (len(TABLE) + 2)]
    for name in settings["variants"]:
        runs = [r for r in records if r["variant"] == name]
        if runs:
            cells = [mean_std([r["metrics"][key] for r in runs], 100) for _, key in TABLE]
            cells += [mean_std([r["train_seconds"] for r in runs], digits=0),
                      mean_std([r["train_images_per_second"] for r in runs])]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Recall@K and mAP in % on query vs gallery, mean ± sample std over seeds {seeds}; "
                  f"{describe(settings)}.", "", f"Command: `{command}`", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("the benchmark plots need matplotlib: pip install matplotlib "
                          "(or pip install -e '.[dev]')") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plots(output: Path, records: List[Dict[str, Any]], settings: Dict[str, Any]) -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    names = [n for n in settings["variants"] if any(r["variant"] == n for r in records)]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in names:
        recalls = np.array([[r["metrics"][f"recall@{k}"] for k in KS] for r in records if r["variant"] == name]) * 100
        axis.errorbar(KS, recalls.mean(0), yerr=recalls.std(0, ddof=1) if len(recalls) > 1 else None,
                      marker="o", capsize=3, label=name)
    axis.set(xscale="log", xlabel="K", ylabel="Recall@K (%)", title="Recall@K, mean ± std over seeds")
    axis.set_xticks(KS, [str(k) for k in KS])
    axis.grid(alpha=0.3)
    axis.legend()
    figure.text(0.5, 0.005, describe(settings), ha="center", fontsize=7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(output / "recall_at_k.png", dpi=120)
    plt.close(figure)

    figure, (loss_axis, recall_axis) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name in names:
        runs = [r for r in records if r["variant"] == name]
        epochs = [e["epoch"] for e in runs[0]["epochs"]]
        for axis, values in ((loss_axis, [[e["loss"]["loss"] for e in r["epochs"]] for r in runs]),
                             (recall_axis, [[100 * e["metrics"]["recall@1"] for e in r["epochs"]] for r in runs])):
            values = np.asarray(values)
            line, = axis.plot(epochs, values.mean(0), marker="o", label=name)
            if len(values) > 1:
                spread = values.std(0, ddof=1)
                axis.fill_between(epochs, values.mean(0) - spread, values.mean(0) + spread, color=line.get_color(),
                                  alpha=0.15)
    loss_axis.set(xlabel="epoch", ylabel="training loss (sum of the terms)", title="Loss per epoch")
    recall_axis.set(xlabel="epoch", ylabel="Recall@1 (%)", title="Recall@1 per epoch (query vs gallery)")
    for axis in (loss_axis, recall_axis):
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    recall_axis.legend(fontsize=8)
    figure.text(0.5, 0.005, f"mean ± std over seeds; {describe(settings)}", ha="center", fontsize=7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(output / "training_curves.png", dpi=120)
    plt.close(figure)


def run_record(name: str, seed: int, result: Any, wall_seconds: float) -> Dict[str, Any]:
    return {
        "variant": name, "seed": seed, "metrics": result.metrics, "best_metrics": result.best_metrics,
        "train_seconds": result.summary["train_seconds"],
        "train_images_per_second": result.summary["train_images_per_second"],
        "wall_seconds": round(wall_seconds, 3), "output_dir": str(result.output_dir), "epochs": result.history,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    command = shlex.join(["python", os.path.relpath(__file__), *argv])
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.full:
        recipe = load_config(BASE_CONFIG)
        args.epochs = args.epochs or recipe.Global.epochs
        args.image_size = args.image_size or recipe.Global.image_size
    else:
        args.epochs = args.epochs or QUICK["epochs"]
        args.image_size = args.image_size or QUICK["image_size"]
        args.backbone = args.backbone or QUICK["backbone"]
    _pyplot()  # fail now, not after the training runs, when matplotlib is missing
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    table = variants(args.also)
    try:
        data_root, synthetic = prepare_data(args, output)
        splits = read_splits(args.dataset, data_root)
        configs = check_variants(args, table, output, data_root, splits)
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.error(str(error))
    sample = next(iter(configs.values()))
    settings = {
        "backbone": sample.Arch.Backbone.name, "image_size": sample.Global.image_size, "epochs": sample.Global.epochs,
        "optimizer": f"{sample.Optimizer.name} lr {sample.Optimizer.lr.learning_rate} {sample.Optimizer.lr.name}",
        "batch": f"{sample.DataLoader.batch_size} ({sample.DataLoader.sample_per_id} per item)",
        "seeds": args.seeds, "dataset": args.dataset, "data_root": str(data_root), "synthetic": synthetic,
        "full": args.full, "num_train": len(splits.train), "num_query": len(splits.query),
        "num_gallery": len(splits.gallery), "variants": {name: spec for name, spec in table.items()}, "device": None,
    }
    records: List[Dict[str, Any]] = []
    runs = [(name, seed) for seed in args.seeds for name in table]
    for name, seed in tqdm(runs, desc="runs", unit="run"):
        slug = name.lower().replace(" + ", "+").replace(" ", "-").replace("(", "").replace(")", "")
        run_dir = output / "runs" / slug / f"seed{seed}"
        started = time.perf_counter()
        result = train_metric(run_config(args, table[name], seed, run_dir, data_root), data=splits, progress=False)
        records.append(run_record(name, seed, result, time.perf_counter() - started))
        settings["device"] = result.summary["device"]
        if not args.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        m = result.metrics
        tqdm.write(f"{name}, seed {seed}: R@1 {100 * m['recall@1']:.1f}  R@5 {100 * m['recall@5']:.1f}  "
                   f"mAP {100 * m['mAP']:.1f}  train {result.summary['train_seconds']:.0f} s "
                   f"({result.summary['train_images_per_second']:.0f} img/s)")
        (output / "results.json").write_text(
            json.dumps({"command": command, "settings": settings, "runs": records}, indent=2), encoding="utf-8")
    write_markdown(output / "results.md", records, settings, command)
    write_plots(output, records, settings)
    print((output / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {output / 'results.json'}, results.md, recall_at_k.png, training_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
