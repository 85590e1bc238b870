"""Recognizer accuracy: known and unknown products at each acceptance threshold (PP-ShiTu accepts at 0.5).

    python benchmarks/recognition.py --output /tmp/recognition          # a synthetic set and a model trained here
    python benchmarks/recognition.py --data-root DATA --checkpoint runs/a/checkpoints/best.pt --output /tmp/rec

The test products of an In-shop-layout set (``--data-root``, or synthetic products made here) are split: the
gallery images of a ``--known`` fraction of them go into a ``Flat`` gallery, the others stay unknown. Every query
photo is then recognised with :class:`prodrec.Recognizer` (one image per call, as a checkout terminal would),
cropped to its In-shop box (``--regions boxes``) or whole. A query of a known product is right when the
recognizer accepts its label; a query of an unknown product is right when it answers ``unknown``.

Per threshold the table gives, for known products, the accepted-right / accepted-wrong / rejected shares, for
unknown products the falsely accepted share, and the accuracy over all queries. The default threshold's row is
what ``Recognizer`` returns; the other rows apply their threshold to the same top-1 scores, and the best
threshold (the highest accuracy over every score seen) shows what calibrating on such a split would give.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="recognition", help="folder for results (and the synthetic set)")
    parser.add_argument("--data-root", help="an In-shop-layout set (default: synthetic products made here)")
    parser.add_argument("--checkpoint", help="the model (best.pt or a saved Embedder; default: train one here)")
    parser.add_argument("--items", type=int, default=200, help="synthetic products (half train, half test)")
    parser.add_argument("--views", type=int, default=6, help="images per synthetic product")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs when no --checkpoint")
    parser.add_argument("--backbone", default="resnet18d")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch (2 images per product)")
    parser.add_argument("--known", type=float, default=0.5, help="share of test products put in the gallery")
    parser.add_argument("--regions", choices=["boxes", "whole"], default="boxes",
                        help="recognise the In-shop box of each query (default) or the whole photo")
    parser.add_argument("--threshold", type=float, default=0.5, help="the Recognizer's threshold (default 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def load_model(args: argparse.Namespace, root: Path, output: Path) -> tuple:
    """The embedder and a line saying where it came from."""
    from prodrec.cli import build_parser as cli_parser, train_overrides
    from prodrec.config import load_config
    from prodrec.models import Embedder
    from prodrec.train import train_metric

    if args.checkpoint:
        return Embedder.load(args.checkpoint).eval(), f"--checkpoint {args.checkpoint}"
    flags = cli_parser().parse_args([
        "train", "--data-root", str(root), "--output", str(output / "run"), "--epochs", str(args.epochs),
        "--image-size", str(args.image_size), "--backbone", args.backbone, "--seed", str(args.seed),
        "--batch-size", str(args.batch_size),
        "--loss", "ce+triplet", "--head", "fc", "--set", "Optimizer.name=AdamW", "--set",
        "Optimizer.lr.name=Cosine", "--set", "Optimizer.lr.learning_rate=0.002"])
    result = train_metric(load_config("inshop_ce_triplet", overrides=train_overrides(flags)), progress=False)
    return result.model.eval(), (f"{args.backbone} + FC head, CE + TripletLossV2, {args.image_size} px, trained "
                                 f"here for {args.epochs} epoch(s) (Recall@1 {100 * result.metrics['recall@1']:.1f})")


def outcome_shares(known: np.ndarray, right_label: np.ndarray, scores: np.ndarray,
                   threshold: float) -> Dict[str, float]:
    """Shares (percent) of the outcomes at ``threshold``, from each query's top-1 score and whether its label
    is right."""
    accepted = scores >= threshold
    unknown = ~known
    shares = {"known_right": accepted & known & right_label, "known_wrong": accepted & known & ~right_label,
              "known_rejected": ~accepted & known}
    result = {name: 100.0 * mask.sum() / max(known.sum(), 1) for name, mask in shares.items()}
    result["unknown_accepted"] = 100.0 * (accepted & unknown).sum() / max(unknown.sum(), 1)
    result["accuracy"] = 100.0 * ((accepted & known & right_label).sum() + (~accepted & unknown).sum()) / len(known)
    return result


def run(args: argparse.Namespace, argv: List[str]) -> Dict[str, Any]:
    from prodrec import Recognizer
    from prodrec.data import make_synthetic_inshop, read_inshop
    from prodrec.gallery import build_gallery
    from prodrec.gallery import read_inshop_boxes

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    root = Path(args.data_root) if args.data_root else make_synthetic_inshop(
        output / "data", items=args.items, views=args.views, image_size=max(96, args.image_size),
        seed=args.seed, progress=False).root
    model, source = load_model(args, root, output)
    splits = read_inshop(root)
    products = np.unique(splits.gallery.labels)
    chosen = np.random.default_rng(args.seed).permutation(products)[:max(1, round(args.known * len(products)))]
    in_gallery = np.isin(splits.gallery.labels, chosen)
    names = splits.gallery.classes
    gallery = build_gallery(model, [(path, names[label]) for path, label, keep in
                                    zip(splits.gallery.paths, splits.gallery.labels, in_gallery) if keep],
                            progress=False)
    keys = [Path(os.path.relpath(path, root)).as_posix() for path in splits.query.paths]
    boxes = read_inshop_boxes(root) if args.regions == "boxes" else {}
    missing = [key for key in keys if boxes and key not in boxes]
    if missing:
        raise ValueError(f"{len(missing)} queries have no box in Anno/list_bbox_inshop.txt (first: {missing[0]}); "
                         "use --regions whole")
    recognizer = Recognizer(model, gallery, threshold=args.threshold)
    truth = [splits.query.classes[label] for label in splits.query.labels]
    known = np.isin(splits.query.labels, chosen)
    answers, scores, top_labels = [], [], []
    started = time.perf_counter()
    for path, key in zip(splits.query.paths, keys):
        region = recognizer.recognize(path, [boxes[key]] if boxes else None)[0]
        answers.append(region.label)
        scores.append(region.score)
        top_labels.append(region.matches[0].label)
    seconds = time.perf_counter() - started
    scores_array, right_label = np.asarray(scores), np.asarray(top_labels) == np.asarray(truth)
    default = outcome_shares(known, right_label, scores_array, args.threshold)
    recognizer_right = np.where(known, np.asarray(answers) == np.asarray(truth), np.asarray(answers) == "unknown")
    assert abs(default["accuracy"] - 100.0 * recognizer_right.mean()) < 1e-9, "the sweep disagrees with Recognizer"
    best = max((outcome_shares(known, right_label, scores_array, t) | {"threshold": float(t)}
                for t in np.append(np.unique(scores_array), np.inf)), key=lambda row: row["accuracy"])
    return {
        "command": shlex.join(["python", os.path.relpath(__file__), *argv]), "model": source, "best": best,
        "regions": args.regions, "threshold": args.threshold, "known_products": int(len(chosen)),
        "unknown_products": int(len(products) - len(chosen)), "gallery_images": len(gallery),
        "known_queries": int(known.sum()), "unknown_queries": int((~known).sum()),
        "queries_per_second": len(truth) / seconds, "top1_label_right_known": 100.0 * right_label[known].mean(),
        "thresholds": [{"threshold": t, **outcome_shares(known, right_label, scores_array, t)}
                       for t in sorted({*THRESHOLDS, args.threshold})]}


def write_markdown(path: Path, results: Dict[str, Any]) -> None:
    lines = [f"Model: {results['model']}; regions: {results['regions']}. Gallery: {results['gallery_images']} images "
             f"of {results['known_products']} products; queries: {results['known_queries']} of those products and "
             f"{results['unknown_queries']} of {results['unknown_products']} products not in the gallery. Top-1 "
             f"label right for {results['top1_label_right_known']:.1f} % of the known products' queries; "
             f"{results['queries_per_second']:.1f} queries/s end to end (decode, crop, embed, search).", "",
             "| threshold | known: right | known: wrong label | known: rejected | unknown: accepted | accuracy |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in results["thresholds"]:
        mark = " (default)" if row["threshold"] == results["threshold"] else ""
        lines.append(f"| {row['threshold']:.2f}{mark} | {row['known_right']:.1f} | {row['known_wrong']:.1f} | "
                     f"{row['known_rejected']:.1f} | {row['unknown_accepted']:.1f} | {row['accuracy']:.1f} |")
    best = results["best"]
    lines += ["", f"The best threshold on these queries is {best['threshold']:.4f}: accuracy {best['accuracy']:.1f} % "
              f"(known products right {best['known_right']:.1f} %, unknown accepted {best['unknown_accepted']:.1f} %).",
              "", f"Command: `{results['command']}`"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if not 0 < args.known < 1:
        parser.error(f"--known must lie strictly between 0 and 1 (some products known, some not), got {args.known}")
    for name in ("items", "views", "image_size", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("checkpoint", "data_root"):
        if getattr(args, name) and not os.path.exists(getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)} not found")
    try:
        results = run(args, argv)
    except (ValueError, FileNotFoundError) as error:  # unreadable data, a model that does not fit it
        parser.error(str(error))
    output = Path(args.output)
    (output / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_markdown(output / "results.md", results)
    print((output / "results.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
