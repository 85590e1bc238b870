"""The detection commands: ``prodrec make-shelves`` (synthetic shelf and tray photos with COCO boxes) and
``prodrec detect train|eval`` (a product detector, ``docs/detection.md``)."""
from __future__ import annotations

import argparse
import json
from typing import Callable, Dict, List

from prodrec.cli.models import MODEL_FILE, load_detector_model, load_model
from prodrec.utils import ProdrecError

__all__ = ["add_commands"]


def add_commands(commands: "argparse._SubParsersAction") -> Dict[str, Callable[[argparse.Namespace], int]]:
    """Add ``make-shelves`` and ``detect`` to a ``prodrec`` subparsers object; returns ``{command: handler}``."""
    shelves = commands.add_parser("make-shelves", help="write synthetic shelf and tray photos with COCO product boxes")
    shelves.add_argument("root", metavar="DIR", help="folder for images/ and annotations.json")
    shelves.add_argument("--scenes", type=int, default=200, help="photos to write (default 200)")
    shelves.add_argument("--products", metavar="FOLDER",
                         help="product pictures: an In-shop folder or <label>/<image> folders (default: synthetic)")
    shelves.add_argument("--synthetic-items", type=int, default=200,
                         help="synthetic products when no --products (labels as make-synthetic's, same --seed)")
    shelves.add_argument("--random-objects", type=int, default=0, metavar="N",
                         help="also paste N random objects (irregular shapes and textures; labels object_XXXX)")
    shelves.add_argument("--width", type=int, default=640)
    shelves.add_argument("--height", type=int, default=480)
    shelves.add_argument("--seed", type=int, default=0)
    shelves.add_argument("--quiet", action="store_true", help="no progress bar")

    detect = commands.add_parser("detect", help="train and evaluate a product detector")
    actions = detect.add_subparsers(dest="detect_command", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train a product detector (no data given: built-in synthetic shelves)")
    train.add_argument("--config", help="detector YAML (Global / Arch / Optimizer / DataLoader sections)")
    _add_box_args(train, required=False)
    train.add_argument("--output", required=True, help="run folder (checkpoints/{best,last}.pt)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--image-size", type=int, help="longer side of the photos the detector sees (Arch.image_size)")
    train.add_argument("--detector", help="Arch.name, e.g. fcos_resnet18")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="auto, cpu, cuda, ...")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="Section.key=value",
                       help="override any config key (value parsed as YAML); repeatable")
    train.add_argument("--resume", nargs="?", const="auto", metavar="auto|PATH", help="continue a run")
    train.add_argument("--force", action="store_true", help="replace the run already in --output")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    evaluate = actions.add_parser("eval", help="COCO mAP of a detector on annotated photos")
    evaluate.add_argument("--checkpoint", required=True, help="a detector file or best.pt / last.pt")
    _add_box_args(evaluate, required=True)
    evaluate.add_argument("--batch-size", type=int, default=4)
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    export = actions.add_parser("export", help="export a detector to ONNX, checked against PyTorch")
    export.add_argument("--checkpoint", required=True, help="a detector file or best.pt / last.pt")
    export.add_argument("--output", required=True, help="det.onnx (its settings go to det.onnx.json)")
    export.add_argument("--opset", type=int, default=17)

    pipeline = actions.add_parser("eval-pipeline", help="detect -> recognise scored end to end: precision, recall, F1")
    pipeline.add_argument("--detector", required=True, help="a detector file or best.pt / last.pt")
    pipeline.add_argument("--index", required=True, help="gallery folder")
    pipeline.add_argument("--checkpoint", help=f"embedder or its export (default: the gallery's {MODEL_FILE})")
    _add_box_args(pipeline, required=True)
    pipeline.add_argument("--threshold", type=float, help="accept at this score (default: the gallery's threshold)")
    pipeline.add_argument("--thresholds", type=float, nargs="*", default=[0.3, 0.5, 0.7, 0.8, 0.9, 0.95],
                          help="also report these thresholds")
    pipeline.add_argument("--iou", type=float, default=0.5, help="overlap a box needs with its annotation (default 0.5)")
    pipeline.add_argument("--device", default="auto")
    pipeline.add_argument("--json", action="store_true", help="print one JSON object")
    return {"make-shelves": _make_shelves,
            "detect": lambda args: {"train": _train, "eval": _eval, "export": _export,
                                          "eval-pipeline": _eval_pipeline}[args.detect_command](args)}


def _add_box_args(parser: argparse.ArgumentParser, required: bool) -> None:
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--coco", metavar="ANN.json", help="COCO detection annotations")
    source.add_argument("--sku110k", metavar="CSV", help="SKU-110K annotations")
    parser.add_argument("--images", help="folder the annotation file's images are in")
    parser.add_argument("--skip-bad-boxes", action="store_true",
                        help="leave out (and count) boxes outside their photo, inverted or empty, instead of stopping")


def _make_shelves(args: argparse.Namespace) -> int:
    from prodrec.data import make_shelves

    info = make_shelves(args.root, scenes=args.scenes, products=args.products, synthetic_items=args.synthetic_items,
                        random_objects=args.random_objects, seed=args.seed, width=args.width, height=args.height,
                        progress=not args.quiet)
    print(f"wrote {info.scenes} scenes with {info.boxes} product boxes ({info.boxes / info.scenes:.1f} a photo) of "
          f"{info.products} products; annotations: {info.annotations}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from prodrec.config import DetectionConfig, load_config
    from prodrec.detection import train_detector

    if args.images and not (args.coco or args.sku110k):
        raise ProdrecError("--images goes with --coco or --sku110k")
    overrides: List = [(key, value) for key, value in (
        ("Global.output_dir", args.output), ("Global.epochs", args.epochs), ("Arch.image_size", args.image_size),
        ("Arch.name", args.detector), ("DataLoader.batch_size", args.batch_size), ("Global.seed", args.seed),
        ("Global.device", args.device), ("DataLoader.coco", args.coco), ("DataLoader.sku110k", args.sku110k),
        ("DataLoader.images", args.images)) if value is not None]
    if args.skip_bad_boxes:
        overrides.append(("DataLoader.on_bad_box", "skip"))
    config = load_config(args.config, [*overrides, *args.overrides], schema=DetectionConfig)
    result = train_detector(config, resume=args.resume or False, overwrite=args.force, progress=not args.quiet)
    print(f"detector in {args.output}/checkpoints (best.pt: epoch {result.summary['best_epoch']}); "
          + " ".join(f"{key} {value:.4f}" for key, value in result.metrics.items()))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from prodrec.detection import evaluate_detector, read_boxes
    from prodrec.models import ProductDetector
    from prodrec.train import resolve_device

    if not args.images:
        raise ProdrecError("--images: the folder the annotation file's images are in")
    boxes = read_boxes(args.coco, args.sku110k, args.images, "skip" if args.skip_bad_boxes else "error")
    detector = ProductDetector.load(args.checkpoint).to(resolve_device(args.device))
    metrics = evaluate_detector(detector, boxes, batch_size=args.batch_size, progress=not args.json)
    result = {**metrics, "photos": len(boxes), "boxes": boxes.num_boxes, "skipped_boxes": boxes.skipped_boxes}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(" ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}" for key, value in result.items()))
    return 0


def _eval_pipeline(args: argparse.Namespace) -> int:
    import os

    from prodrec.detection import evaluate_pipeline, read_boxes
    from prodrec.gallery import Recognizer, open_gallery
    if not args.images:
        raise ProdrecError("--images: the folder the annotation file's images are in")
    if not 0 < args.iou <= 1:
        raise ProdrecError(f"--iou must be in (0, 1], got {args.iou}")
    boxes = read_boxes(args.coco, args.sku110k, args.images, "skip" if args.skip_bad_boxes else "error")
    gallery = open_gallery(args.index)
    model = load_model(args.checkpoint or os.path.join(args.index, MODEL_FILE), args.device)
    recognizer = Recognizer(model, gallery, threshold=args.threshold, detector=load_detector_model(args.detector, args.device))
    result = evaluate_pipeline(recognizer, boxes, thresholds=args.thresholds, iou=args.iou, progress=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['photos']} photos, IoU {result['iou']}")
    print(f"{'threshold':>10} {'boxes':>20} {'precision':>9} {'recall':>7} {'f1':>6}")
    for row in [result, *result["by_threshold"]]:
        for kind in ("detected", "ground_truth_boxes"):
            rates = row[kind]
            print(f"{row['threshold']:>10.4g} {kind:>20} {rates['precision']:>9.3f} {rates['recall']:>7.3f} "
                  f"{rates['f1']:>6.3f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from prodrec.models import ProductDetector, export_detector

    path = export_detector(ProductDetector.load(args.checkpoint), args.output, opset=args.opset)
    print(f"exported {args.checkpoint} to {path} (settings and parity check in {path}.json); use it as --detector {path}")
    return 0
