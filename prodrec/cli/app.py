"""The ``prodrec`` command line: train, eval, embed, demo, make-synthetic, make-shelves, convert-paddle, export-config,
index, search.

Heavy libraries are imported inside the command functions so ``prodrec --help`` is instant.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from prodrec import __version__
from prodrec.cli.detect import add_commands as add_detect_commands
from prodrec.cli.gallery import add_commands as add_index_commands
from prodrec.cli.paddle import add_commands as add_paddle_commands
from prodrec.cli.results import add_commands as add_results_commands
from prodrec.cli.serve import add_commands as add_serve_commands
from prodrec.config import Override
from prodrec.utils import ProdrecError

__all__ = ["main", "build_parser", "train_overrides"]

DEFAULT_KS = [1, 5, 10, 20]
LOSS_CHOICES = {
    "ce": [{"CELoss": {"weight": 1.0}}],
    "ce+triplet": [{"CELoss": {"weight": 1.0}}, {"TripletLossV2": {"weight": 1.0, "margin": 0.5}}],
}


def _add_data_args(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--data-root", required=required, help="data folder (In-shop layout by default)")
    parser.add_argument("--dataset", choices=["inshop", "list", "folder", "aliproducts"], help="layout of --data-root")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prodrec", description="Product recognition by retrieval.")
    parser.add_argument("--version", action="version", version=f"prodrec {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train an embedder from a config")
    train.add_argument("config", nargs="?", default="inshop_ce_triplet",
                       help="YAML file (prodrec's or a PaddleClas config) or built-in config name "
                            "(default: inshop_ce_triplet, the seed's In-shop recipe)")
    _add_data_args(train, required=False)
    train.add_argument("--output", help="output folder (Global.output_dir)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--image-size", type=int)
    train.add_argument("--backbone", help="timm name or PaddleClas alias, e.g. resnet50d or ResNet50_vd")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--instances", type=int, help="images per item in a PK batch (DataLoader.sample_per_id)")
    train.add_argument("--loss", choices=sorted(LOSS_CHOICES), help="replace Loss.Train by CE or CE + TripletLossV2")
    train.add_argument("--head", choices=["fc", "arcmargin"], help="replace Arch.Head")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto, cpu, cuda, cuda:1, ...")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="Section.key=value",
                       help="override any config key (value parsed as YAML); repeatable. For a PaddleClas config "
                            "these are its own keys, list items by index as PaddleClas's -o "
                            "(DataLoader.Train.dataset.transform_ops.1.ResizeImage.size=64)")
    train.add_argument("--force", action="store_true", help="replace the run already in the output folder")
    train.add_argument("--resume", nargs="?", const="auto", metavar="auto|PATH",
                       help="continue from OUTPUT/checkpoints/last.pt (alone or 'auto'; see docs) or from PATH")
    train.add_argument("--checkpoint-steps", type=int, metavar="N", help="also write last.pt every N steps (0: off)")
    train.add_argument("--checkpoint-minutes", type=float, metavar="M",
                       help="write last.pt once M minutes passed since the last save (default 10; 0: off)")
    train.add_argument("--deterministic", action="store_true", default=None, help="deterministic algorithms")
    train.add_argument("--on-bad-image", choices=["error", "skip"], help="stop at an unreadable image, or skip it")
    train.add_argument("--confine-data-root", action="store_true", default=None,
                       help="refuse listed image paths outside the data root")
    train.add_argument("--accumulate-steps", type=int, metavar="A",
                       help="batches per process summed into one optimizer step (Global.accumulate_steps)")
    train.add_argument("--cross-rank-mining", action="store_true", default=None,
                       help="under torchrun: mine pairs/triplets over the global batch (Global.cross_rank_mining)")
    train.add_argument("--sync-batchnorm", action="store_true", default=None,
                       help="under torchrun on GPUs: batch-norm statistics over the global batch")
    train.add_argument("--compile", action="store_true", default=None, help="torch.compile the embedder")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("eval", help="Recall@K and mAP of a checkpoint on query vs gallery")
    evaluate.add_argument("--checkpoint", required=True, help="best.pt, last.pt or a saved Embedder")
    _add_data_args(evaluate, required=True)
    evaluate.add_argument("--k", type=int, nargs="+", default=DEFAULT_KS, help="Recall@K values")
    evaluate.add_argument("--no-map", action="store_true", help="skip mAP (needs the full ranking)")
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--open-set", action="store_true",
                          help="also FRR at FAR 0.1, 0.01, 0.001 with half the query products left out of the gallery")
    evaluate.add_argument("--seed", type=int, default=0, help="--open-set: which half of the products is unknown")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")

    embed = commands.add_parser("embed", help="write L2-normalised embeddings of images to a .npy file")
    embed.add_argument("--checkpoint", required=True)
    embed.add_argument("images", nargs="+", help="image files")
    embed.add_argument("--output", required=True, help="feats.npy")
    embed.add_argument("--batch-size", type=int, default=64)
    embed.add_argument("--device", default="auto")

    demo = commands.add_parser("demo", help="synthetic products -> train the In-shop recipe -> Recall@K table")
    demo.add_argument("--output", default="prodrec-demo", help="folder for data and run (default: prodrec-demo)")
    demo.add_argument("--epochs", type=int, default=8)
    demo.add_argument("--image-size", type=int, default=64)
    demo.add_argument("--items", type=int, default=300)
    demo.add_argument("--views", type=int, default=6)
    demo.add_argument("--backbone", default="ResNet50_vd")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true")

    synthetic = commands.add_parser("make-synthetic", help="write a synthetic product set in the In-shop layout")
    synthetic.add_argument("root")
    synthetic.add_argument("--items", type=int, default=200)
    synthetic.add_argument("--views", type=int, default=8)
    synthetic.add_argument("--image-size", type=int, default=96)
    synthetic.add_argument("--seed", type=int, default=0)

    for name, handler in add_index_commands(commands).items():  # index build|add|remove|info, search
        commands.choices[name].set_defaults(handler=handler)
    for name, handler in add_results_commands(commands).items():  # export, visualize
        commands.choices[name].set_defaults(handler=handler)
    for name, handler in add_paddle_commands(commands).items():  # convert-paddle, export-config
        commands.choices[name].set_defaults(handler=handler)
    for name, handler in add_serve_commands(commands).items():  # serve
        commands.choices[name].set_defaults(handler=handler)
    for name, handler in add_detect_commands(commands).items():  # make-shelves, detect
        commands.choices[name].set_defaults(handler=handler)
    return parser


def train_overrides(args: argparse.Namespace) -> List[Override]:
    """The typed ``(key, value)`` overrides that the convenience flags of ``prodrec train`` stand for, then
    ``--set``'s own ``Section.key=value`` strings (:func:`prodrec.config.load_config` takes both)."""
    return _flag_overrides(args) + list(args.overrides)


def _flag_overrides(args: argparse.Namespace) -> List[Override]:
    flags = {
        "DataLoader.root": args.data_root, "DataLoader.dataset": args.dataset, "Global.output_dir": args.output,
        "Global.epochs": args.epochs, "Global.image_size": args.image_size,
        "DataLoader.batch_size": args.batch_size, "DataLoader.sample_per_id": args.instances,
        "Global.seed": args.seed, "Global.device": args.device, "Global.checkpoint_steps": args.checkpoint_steps,
        "Global.checkpoint_minutes": args.checkpoint_minutes, "Global.deterministic": args.deterministic,
        "DataLoader.on_bad_image": args.on_bad_image, "DataLoader.confine_to_root": args.confine_data_root,
        "Global.accumulate_steps": args.accumulate_steps, "Global.cross_rank_mining": args.cross_rank_mining,
        "Global.sync_batchnorm": args.sync_batchnorm, "Global.compile": args.compile,
    }
    overrides: List[Override] = [(key, value) for key, value in flags.items() if value is not None]
    if args.backbone:
        overrides += [("Arch.Backbone.name", args.backbone), ("Arch.Neck.embedding_size", "auto")]
    if args.loss:
        overrides.append(("Loss.Train", LOSS_CHOICES[args.loss]))
    if args.head == "fc":
        overrides += [("Arch.Head.name", "FC"), ("Arch.Head.margin", None), ("Arch.Head.scale", None)]
    elif args.head == "arcmargin":
        overrides.append(("Arch.Head.name", "ArcMargin"))
    return overrides


def _print_metrics(title: str, rows: Dict[str, Optional[Dict[str, float]]]) -> None:
    columns = [k for k in next(r for r in rows.values() if r) if k.startswith(("recall@", "mAP"))]
    print(title)
    print(f"{'':12}" + "".join(f"{c:>11}" for c in columns))
    for name, metrics in rows.items():
        if metrics:
            print(f"{name:12}" + "".join(f"{100 * metrics[c]:>10.2f}%" for c in columns))


def _train(args: argparse.Namespace) -> int:
    from prodrec.config import load_config, read_config_file
    from prodrec.paddle import is_ppcls_config
    from prodrec.train import train_metric

    data = read_config_file(args.config)  # read once; its layout says whose names it uses
    config = _ppcls_config(args, data) if is_ppcls_config(data) else load_config(data, overrides=train_overrides(args))
    result = train_metric(config, resume=args.resume, overwrite=args.force, progress=not args.quiet)
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 reports
        return 0
    _print_metrics(f"results in {result.output_dir}", {"initial": result.initial_metrics, "final": result.metrics})
    return 0


def _ppcls_config(args: argparse.Namespace, data: dict):
    """A PaddleClas config: ``--set`` overrides its keys, the flags override the translated config's."""
    from prodrec.paddle import convert_paddle_pretrained, load_ppcls_config

    if args.data_root or args.dataset:
        raise ProdrecError("--data-root/--dataset do not apply to a PaddleClas config: set its image_root and "
                           "cls_label_path, e.g. --set DataLoader.Train.dataset.image_root=PATH")
    config, warnings = load_ppcls_config(data, overrides=args.overrides, native_overrides=_flag_overrides(args))
    for warning in warnings:
        print(f"prodrec train: warning: {warning}", file=sys.stderr)
    config, notes = convert_paddle_pretrained(config, Path(config.Global.output_dir) / "pretrained")
    for note in notes:
        print(f"prodrec train: note: {note}", file=sys.stderr)
    return config


def _eval(args: argparse.Namespace) -> int:
    from prodrec.data import read_splits
    from prodrec.retrieval import evaluate_embeddings, extract_embeddings, open_set_rates
    from prodrec.models import Embedder
    from prodrec.train import resolve_device

    device = resolve_device(args.device)
    model = Embedder.load(args.checkpoint).to(device)
    splits = read_splits(args.dataset or "inshop", args.data_root)
    features = {name: extract_embeddings(model, images, batch_size=args.batch_size, progress=not args.json,
                                         desc=f"embed {name}")
                for name, images in (("query", splits.query), ("gallery", splits.gallery))}
    metrics = evaluate_embeddings(features["query"], splits.query.labels, features["gallery"], splits.gallery.labels,
                                  ks=args.k, compute_map=not args.no_map)
    if args.open_set:
        metrics.update(open_set_rates(features["query"], splits.query.labels, features["gallery"],
                                      splits.gallery.labels, seed=args.seed))
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    _print_metrics(f"{args.checkpoint} on {args.data_root}", {"eval": metrics})
    if args.open_set:
        print(f"open set: {metrics['open_set/known_queries']} queries of gallery products, "
              f"{metrics['open_set/unknown_queries']} of products left out (seed {args.seed})")
        for key in [key for key in metrics if key.startswith("frr@")]:
            far, frr = key.split("=")[1], metrics[key]
            print(f"  FRR at FAR {far}: " + (f"{100 * frr:.2f}% (threshold {metrics['threshold@far=' + far]:.4f})"
                                             if frr is not None else "not measurable with these queries (smallest "
                                             f"supported FAR {metrics['open_set/min_supported_far']:.2g})"))
    return 0


def _embed(args: argparse.Namespace) -> int:
    import numpy as np

    from prodrec.models import Embedder
    from prodrec.train import resolve_device

    device = resolve_device(args.device)
    model = Embedder.load(args.checkpoint).to(device)
    features = model.embed(args.images, batch_size=args.batch_size).numpy()
    np.save(args.output, features)
    print(f"wrote {features.shape[0]} x {features.shape[1]} embeddings to {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from prodrec.config import load_config
    from prodrec.data import make_synthetic_inshop
    from prodrec.train import train_metric

    started = time.perf_counter()
    root = Path(args.output)
    info = make_synthetic_inshop(root / "data", items=args.items, views=args.views, image_size=96,
                                 seed=args.seed, progress=not args.quiet)
    print(f"synthetic products: {info.num_train} train / {info.num_query} query / {info.num_gallery} gallery "
          f"images in {info.root}")
    overrides = [
        f"DataLoader.root={info.root}", f"Global.output_dir={root / 'run'}", f"Global.epochs={args.epochs}",
        f"Global.image_size={args.image_size}", f"Arch.Backbone.name={args.backbone}", f"Global.seed={args.seed}",
        "Global.eval_before_train=true", "DataLoader.batch_size=32",
        # From scratch on a few hundred images AdamW converges where the recipe's SGD (tuned for an
        # ImageNet-initialised 120-epoch run) barely moves in 8 epochs.
        "Optimizer.name=AdamW", "Optimizer.lr.name=Cosine", "Optimizer.lr.learning_rate=0.002",
    ]
    config = load_config("inshop_ce_triplet", overrides=overrides)
    result = train_metric(config, overwrite=True, progress=not args.quiet)  # the demo's own folder
    _print_metrics(f"{args.backbone} + ArcMargin, CELoss + TripletLossV2, {args.image_size} px, "
                   f"{args.epochs} epochs (query vs gallery)",
                   {"untrained": result.initial_metrics, "trained": result.metrics})
    print(f"train images/s {result.summary['train_images_per_second']}, wall time "
          f"{time.perf_counter() - started:.0f} s; run folder {result.output_dir}")
    return 0


def _make_synthetic(args: argparse.Namespace) -> int:
    from prodrec.data import make_synthetic_inshop

    info = make_synthetic_inshop(args.root, items=args.items, views=args.views, image_size=args.image_size,
                                 seed=args.seed)
    print(f"{info.num_images} images ({info.num_train} train, {info.num_query} query, {info.num_gallery} gallery) "
          f"in {info.root}")
    return 0


COMMANDS = {"train": _train, "eval": _eval, "embed": _embed, "demo": _demo, "make-synthetic": _make_synthetic}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return (getattr(args, "handler", None) or COMMANDS[args.command])(args)
    except (ProdrecError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as error:
        # Input prodrec refuses, or a path that is not there; anything else is a bug and raises.
        print(f"prodrec {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(f"prodrec {args.command}: interrupted{': ' + str(error) if str(error) else ''}", file=sys.stderr)
        return 130
